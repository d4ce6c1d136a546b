// gcs-node-check.js - drive tests/peers/gcs-server.py with Google's own Node
// client (@google-cloud/storage, pointed at it with apiEndpoint) to show
// that the stand-in serves the JSON-API subset the way a real client uses
// it: simple (multipart) and resumable uploads (one request, and chunked
// with chunkSize), list with prefix and page tokens, download whole and
// ranged (the client checks crc32c/md5 from x-goog-hash), delete, a 404, a
// wrong token (401), and a resumable upload and a list that each meet an
// injected 503 that the client retries.
//
// Usage: node gcs-node-check.js ENDPOINT TOKEN BUCKET   (NODE_PATH: the
// install made by tests/peers/gcs-node-check).  Exit status 0: all passed.
'use strict';

const assert = require('assert');
const crypto = require('crypto');
const http = require('http');
const {Storage} = require('@google-cloud/storage');
const {OAuth2Client} = require('google-auth-library');

const [endpoint, token, bucketName] = process.argv.slice(2);
if (!bucketName) {
  console.error('usage: gcs-node-check.js ENDPOINT TOKEN BUCKET');
  process.exit(2);
}

function client(tok) {
  const auth = new OAuth2Client();
  // A fixed access token with a far expiry: the client sends it as
  // "Authorization: Bearer TOKEN" and never tries to refresh it.
  auth.setCredentials({access_token: tok, expiry_date: Date.now() + 3600e3});
  return new Storage({
    apiEndpoint: endpoint,
    projectId: 'wcache-test',
    authClient: auth,
    useAuthWithCustomEndpoint: true,
    retryOptions: {autoRetry: true, maxRetries: 4, retryDelayMultiplier: 1.1,
                   totalTimeout: 60, maxRetryDelay: 2},
  });
}

function ctl(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(endpoint + path, {method}, res => {
      let d = '';
      res.on('data', c => (d += c));
      res.on('end', () => resolve(JSON.parse(d)));
    });
    req.on('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

let passed = 0, failed = 0;
async function step(name, fn) {
  try {
    await fn();
    passed++;
    console.log('ok   ' + name);
  } catch (e) {
    failed++;
    console.log('FAIL ' + name + ': ' + (e && e.stack ? e.stack : e));
  }
}

(async () => {
  const storage = client(token);
  const bucket = storage.bucket(bucketName);
  const small = crypto.randomBytes(1000);
  const big = crypto.randomBytes(3 * 256 * 1024 + 12345);

  await step('simple upload (multipart) and read back', async () => {
    await bucket.file('node/small.bin').save(small, {resumable: false});
    const [got] = await bucket.file('node/small.bin').download();
    assert(got.equals(small));
  });

  // File#save() does not hand useAuthWithCustomEndpoint on to its resumable
  // upload (7.22.0: startResumableUpload_ leaves it out), so against a custom
  // endpoint the session would be opened without a token.  The documented
  // two-step form does pass it: open the session with createResumableUpload()
  // (authenticated), then upload to its URI, which is its own credential.
  async function resumable(name, data, opts) {
    // A fresh client each time: File#save() turns autoRetry off in the
    // client's shared retryOptions for an upload without a precondition.
    const f = client(token).bucket(bucketName).file(name);
    const [uri] = await f.createResumableUpload({preconditionOpts: {ifGenerationMatch: 0}});
    assert(/upload_id=/.test(uri), 'session URI ' + uri);
    await f.save(data, {resumable: true, uri, preconditionOpts: {ifGenerationMatch: 0}, ...opts});
  }

  await step('resumable upload in one request', async () => {
    await resumable('node/big1.bin', big, {});
    const [got] = await bucket.file('node/big1.bin').download();
    assert(got.equals(big));
  });

  await step('resumable upload in 256 KiB chunks', async () => {
    await resumable('node/big2.bin', big, {chunkSize: 256 * 1024});
    const [meta] = await bucket.file('node/big2.bin').getMetadata();
    assert.strictEqual(Number(meta.size), big.length);
    const [got] = await bucket.file('node/big2.bin').download();
    assert(got.equals(big));
  });

  await step('resumable chunk answered 503 once is retried', async () => {
    await ctl('POST', '/_gcs/fault', {match: '[bytes 262144-', action: 'status',
                                      status: 503, count: 1});
    await resumable('node/big3.bin', big, {chunkSize: 256 * 1024});
    const [got] = await bucket.file('node/big3.bin').download();
    assert(got.equals(big));
    const log = await ctl('GET', '/_gcs/log');
    assert(log.some(l => l.includes('[bytes 262144-') && l.endsWith(' 503')), 'no 503 seen');
  });

  await step('ranged download', async () => {
    const [got] = await bucket.file('node/big1.bin').download({start: 1000, end: 300000});
    assert(got.equals(big.subarray(1000, 300001)));
  });

  await step('list with prefix, page by page', async () => {
    for (let i = 0; i < 5; i++)
      await bucket.file(`node/list/${i}`).save(Buffer.from(String(i)), {resumable: false});
    const names = [];
    let query = {prefix: 'node/list/', maxResults: 2, autoPaginate: false};
    let pages = 0;
    while (query) {
      const [files, next] = await bucket.getFiles(query);
      names.push(...files.map(f => f.name));
      pages++;
      query = next;
    }
    assert.deepStrictEqual(names, [0, 1, 2, 3, 4].map(i => `node/list/${i}`));
    assert.strictEqual(pages, 3);
  });

  await step('list answered 503 once is retried', async () => {
    await ctl('POST', '/_gcs/fault', {match: 'GET /storage/v1/b/' + bucketName + '/o?',
                                      action: 'status', status: 503, count: 1});
    // A fresh client: File#save() leaves autoRetry off in the shared
    // retryOptions when an upload has no precondition.
    const [files] = await client(token).bucket(bucketName).getFiles({prefix: 'node/list/'});
    assert.strictEqual(files.length, 5);
  });

  await step('delete, then 404', async () => {
    await bucket.file('node/small.bin').delete();
    const [exists] = await bucket.file('node/small.bin').exists();
    assert.strictEqual(exists, false);
    await assert.rejects(bucket.file('node/small.bin').download(), e => e.code === 404);
  });

  await step('wrong token is refused with 401', async () => {
    const bad = client('not-the-token').bucket(bucketName);
    await assert.rejects(bad.file('node/big1.bin').download(), e => e.code === 401);
  });

  await step('upload precondition (ifGenerationMatch=0 on an existing object) gives 412',
             async () => {
    await assert.rejects(bucket.file('node/big1.bin').createResumableUpload(
        {preconditionOpts: {ifGenerationMatch: 0}}), e => e.code === 412);
  });

  await step('no resumable session left open', async () => {
    const st = await ctl('GET', '/_gcs/state');
    assert.strictEqual(st.sessions, 0);
  });

  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})().catch(e => {
  console.error(e);
  process.exit(1);
});
