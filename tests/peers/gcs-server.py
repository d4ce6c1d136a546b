#!/usr/bin/env python3
# gcs-server.py - a loopback STAND-IN for Google Cloud Storage, for tests only.
#
# WHAT IT STANDS IN FOR.  There is no GCS emulator on this machine, so this
# server implements, from Google's published documentation, the subset of
# the Cloud Storage JSON and XML APIs that watchcache's GCS store uses, and
# the subset Google's own Node client (@google-cloud/storage) uses for the
# same operations (tests/peers/gcs-node-check.js drives it with that client
# to show the subset is served faithfully).  A test that passes against it
# is "stub-verified", NOT verified against GCS.
#
# JSON API (Authorization: Bearer TOKEN; wrong token 401, --forbid-token 403):
#   POST /upload/storage/v1/b/B/o?uploadType=media&name=N       simple upload
#   POST /upload/storage/v1/b/B/o?uploadType=multipart          multipart/related
#   POST /upload/storage/v1/b/B/o?uploadType=resumable[&name=N] session start
#        -> 200 + Location: session URI (...&upload_id=ID)
#   PUT  SESSION  Content-Range: bytes A-B/T | A-B/* | A-*/T | A-*/* (the
#        body is the rest of the object) | */T | */* (a status query)
#        -> 308 Resume Incomplete + Range: bytes=0-K (none when nothing is
#           stored), or 200 with the object resource when complete.
#        Of a non-final chunk only whole 256 KiB units are kept (the 308's
#        Range says how far), a chunk may not start past the stored size
#        (400), and an overlap is skipped, as GCS does.  DELETE SESSION
#        cancels it (499).
#   GET  /storage/v1/b/B/o/N[?alt=media] (also /download/storage/v1/...)
#        metadata JSON, or the media with Range (206 + Content-Range, 416)
#        and x-goog-hash: crc32c=..,md5=..
#   GET  /storage/v1/b/B/o?prefix=P&pageToken=T&maxResults=M   objects list
#   DELETE /storage/v1/b/B/o/N                                 204 / 404
#   Errors are GCS-shaped: {"error":{"code":..,"message":..,"errors":[{
#   "domain":"global","reason":..,"message":..}]}}.
#
# XML API with HMAC keys (--hmac ID:SECRET): V4 signatures in the
# Authorization header, both GOOG4-HMAC-SHA256 (x-goog-date, scope
# DATE/REGION/storage/goog4_request, key "GOOG4"+secret) and
# AWS4-HMAC-SHA256 (x-amz-date, .../s3/aws4_request, "AWS4"+secret), which
# GCS's interoperability API accepts; the canonical request is rebuilt here
# (query sorted and RFC 3986-encoded by the server, so a client that does
# not canonicalise its query fails), 15 min clock skew, and a hex
# x-goog/x-amz-content-sha256 must match the body.  403
# SignatureDoesNotMatch / InvalidAccessKeyId as XML <Error>.
#   PUT /B/N (simple upload), POST /B/N with x-goog-resumable: start
#   (201 + Location; the session URI needs no signature, as in GCS) and the
#   same chunk protocol as above, GET/HEAD /B/N (Range), DELETE /B/N,
#   GET /B?list-type=2&prefix=P&continuation-token=T&max-keys=M
#   [&encoding-type=url] (ListBucketResult).
#
# WHAT IT DOES NOT IMPLEMENT: buckets API (buckets are made by --bucket),
# IAM/ACLs, object versioning (only the live generation exists: a read of
# another ?generation= is 404), preconditions other than
# ifGenerationMatch on an upload's first request, compose/rewrite/copy, XML multipart (uploadId) uploads,
# signed URLs (query-string auth), service-account/JWT token exchange,
# delimiter/prefixes in lists, TLS, HTTP/2, batch requests.  Objects live
# in memory.
#
# TEST CONTROL (no auth, under /_gcs/):
#   POST /_gcs/fault  {"match":"SUBSTR","action":A,"count":N,"status":S}
#        the next N requests whose "METHOD PATH?QUERY" contains SUBSTR get
#        A: "status" (answer S with a JSON/XML error body, 429 with
#        Retry-After: 0), "drop" (read the request, close without an
#        answer: nothing is stored), "truncate" (media GET: headers and
#        half the body, then close), "short" (resumable chunk: store only
#        256 KiB less than sent, answer 308 with that Range), "corrupt"
#        (media GET: the first byte flipped, headers as usual), "norange"
#        (media GET: the Range header ignored, 200 and all of it), "lie" (the
#        chunk that completes an upload: report a wrong crc32c).
#   GET  /_gcs/log       every request so far, "METHOD PATH?QUERY [Content-Range]
#                        {Range} STATUS"
#   GET  /_gcs/state     {"sessions": open resumable sessions, "objects":..}
#   POST /_gcs/reset     forget faults and the log
# A header line "Authorization" is never logged.
#
# Usage: gcs-server.py [--port 0] [--bucket B]... [--token T]
#            [--forbid-token T] [--hmac ID:SECRET] [--max-page N]
# Prints "GCS_ENDPOINT=http://127.0.0.1:PORT" on stdout once listening and
# exits when stdin reaches EOF (so it never outlives the test that started
# it) or on SIGTERM.  Loopback only.

import argparse
import base64
import datetime
import email.utils
import hashlib
import hmac
import http.server
import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape as xml_escape

CHUNK_UNIT = 256 * 1024

# --- CRC32C (Castagnoli), which GCS reports in x-goog-hash and "crc32c" ---
_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def b64(b):
    return base64.b64encode(b).decode()


class Obj:
    def __init__(self, bucket, name, data, ctype, gen):
        self.bucket, self.name, self.data = bucket, name, bytes(data)
        self.ctype = ctype or "application/octet-stream"
        self.gen = gen
        self.md5 = hashlib.md5(self.data).digest()
        self._crc = None
        self.created = datetime.datetime.now(datetime.timezone.utc)

    @property
    def crc(self):
        if self._crc is None:
            self._crc = crc32c(self.data).to_bytes(4, "big")
        return self._crc

    def resource(self, base):
        q = urllib.parse.quote(self.name, safe="")
        ts = self.created.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return {
            "kind": "storage#object",
            "id": "%s/%s/%d" % (self.bucket, self.name, self.gen),
            "selfLink": "%s/storage/v1/b/%s/o/%s" % (base, self.bucket, q),
            "mediaLink": "%s/download/storage/v1/b/%s/o/%s?generation=%d&alt=media"
            % (base, self.bucket, q, self.gen),
            "name": self.name,
            "bucket": self.bucket,
            "generation": str(self.gen),
            "metageneration": "1",
            "contentType": self.ctype,
            "storageClass": "STANDARD",
            "size": str(len(self.data)),
            "md5Hash": b64(self.md5),
            "crc32c": b64(self.crc),
            "etag": b64(self.md5[:8]),
            "timeCreated": ts,
            "updated": ts,
        }

    def goog_hash(self):
        return "crc32c=%s,md5=%s" % (b64(self.crc), b64(self.md5))


class Session:
    def __init__(self, bucket, name, ctype, xml):
        self.bucket, self.name, self.ctype, self.xml = bucket, name, ctype, xml
        self.data = bytearray()
        self.done = None  # the Obj once complete


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.buckets = {b: {} for b in args.bucket}
        self.sessions = {}
        self.faults = []
        self.log = []
        self.gen = 1000
        self.args = args

    def next_gen(self):
        self.gen += 1
        return self.gen


class Drop(Exception):
    pass


def parse_content_range(v):
    """bytes A-B/T, bytes A-*/T, bytes */T -> (start|None, end|None, total|None)."""
    if not v or not v.startswith("bytes "):
        raise ValueError("Content-Range must start with 'bytes '")
    rng, _, total = v[6:].strip().partition("/")
    total = None if total == "*" else int(total)
    if rng == "*":
        return None, None, total
    a, _, b = rng.partition("-")
    return int(a), (None if b == "*" else int(b)), total


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gcs-stand-in/1"

    def log_message(self, fmt, *a):  # quiet: the test reads /_gcs/log
        pass

    # ---- plumbing ----
    @property
    def st(self):
        return self.server.state

    def base(self):
        return "http://%s:%d" % self.server.server_address[:2]

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, code, body=b"", ctype="application/json; charset=UTF-8", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.status = code
        self.record()
        self.send_response(code, "Resume Incomplete" if code == 308 else None)
        for k, v in headers:
            self.send_header(k, v)
        if body or code not in (204, 304):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def json_error(self, code, reason, msg):
        if self.xml_api:
            return self.xml_error(code, reason, msg)
        self.send(code, {"error": {"code": code, "message": msg,
                                   "errors": [{"domain": "global", "reason": reason,
                                               "message": msg}]}})

    def xml_error(self, code, xcode, msg):
        body = ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code>"
                "<Message>%s</Message></Error>" % (xcode, xml_escape(msg)))
        self.send(code, body, "application/xml; charset=UTF-8")

    def handle_one_request(self):
        self.status = None
        self.xml_api = False
        self.line = None
        super().handle_one_request()

    def record(self):
        # Logged before the answer goes out, so a test that reads the log
        # right after its request returned always finds it there.
        if self.line is not None:
            with self.st.lock:
                self.st.log.append("%s %s" % (self.line, self.status))
            self.line = None

    def dispatch(self):
        u = urllib.parse.urlsplit(self.path)
        self.rawpath, self.rawquery = u.path, u.query
        self.q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        line = "%s %s" % (self.command, self.path)
        if self.headers.get("Content-Range"):
            line += " [%s]" % self.headers["Content-Range"]
        if self.headers.get("Range"):
            line += " {%s}" % self.headers["Range"]
        if self.rawpath.startswith("/_gcs/"):
            return self.control()
        self.line = line
        fault = None
        with self.st.lock:
            for f in self.st.faults:
                if f["count"] > 0 and f["match"] in line:
                    f["count"] -= 1
                    fault = f
                    break
        try:
            self.route(fault)
        except Drop:
            self.status = "dropped"
            self.close_connection = True
        finally:
            self.record()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = dispatch

    # ---- test control ----
    def control(self):
        body = self.read_body()
        p = self.rawpath
        with self.st.lock:
            if p == "/_gcs/fault" and self.command == "POST":
                f = json.loads(body)
                f.setdefault("count", 1)
                self.st.faults.append(f)
                out = {"ok": True}
            elif p == "/_gcs/log":
                out = list(self.st.log)
            elif p == "/_gcs/state":
                out = {"sessions": sum(1 for s in self.st.sessions.values() if s.done is None),
                       "objects": sum(len(b) for b in self.st.buckets.values())}
            elif p == "/_gcs/reset" and self.command == "POST":
                self.st.faults.clear()
                self.st.log.clear()
                out = {"ok": True}
            else:
                out = None
        if out is None:
            self.send(404, {"error": "no such control"})
        else:
            self.send(200, out)

    # ---- routing ----
    def route(self, fault):
        p = self.rawpath
        json_api = p.startswith("/storage/v1/") or p.startswith("/upload/storage/v1/") \
            or p.startswith("/download/storage/v1/")
        self.xml_api = not json_api
        session = "upload_id" in self.q
        body = self.read_body()
        if fault:
            act = fault.get("action", "status")
            if act == "drop":
                raise Drop()
            if act == "status":
                code = int(fault.get("status", 503))
                hdrs = [("Retry-After", "0")] if code == 429 else []
                if self.xml_api:
                    return self.xml_error(code, "InternalError" if code >= 500 else "Error",
                                          "injected failure %d" % code)
                self.send(code, {"error": {"code": code, "message": "injected failure",
                                           "errors": [{"domain": "global",
                                                       "reason": "backendError",
                                                       "message": "injected failure"}]}},
                          headers=hdrs)
                return
        if session:  # the session URI is its own credential, as in GCS
            return self.chunk(body, fault)
        if not self.auth(body):
            return
        if json_api:
            return self.json_route(body, fault)
        return self.xml_route(body, fault)

    # ---- auth ----
    def auth(self, body):
        a = self.headers.get("Authorization", "")
        if not self.xml_api or a.startswith("Bearer "):
            if not a.startswith("Bearer "):
                self.json_error(401, "required", "Anonymous caller does not have "
                                "storage.objects access.")
                return False
            tok = a[7:].strip()
            if self.st.args.forbid_token and tok == self.st.args.forbid_token:
                self.json_error(403, "forbidden", "caller does not have permission")
                return False
            if tok != self.st.args.token:
                self.json_error(401, "authError", "Invalid Credentials")
                return False
            return True
        return self.sigv4(a, body)

    def sigv4(self, a, body):
        algo, _, rest = a.partition(" ")
        if algo not in ("GOOG4-HMAC-SHA256", "AWS4-HMAC-SHA256") or not self.st.args.hmac:
            self.xml_error(403, "AccessDenied", "unsupported or missing Authorization")
            return False
        pfx = "goog" if algo.startswith("GOOG4") else "amz"
        parts = dict(kv.strip().split("=", 1) for kv in rest.split(",") if "=" in kv)
        try:
            cred = parts["Credential"].split("/")
            key_id, date, region, service, term = cred
            signed = parts["SignedHeaders"].split(";")
            sig = parts["Signature"]
        except (KeyError, ValueError):
            self.xml_error(400, "AuthorizationHeaderMalformed", "malformed Authorization")
            return False
        kid, secret = self.st.args.hmac.split(":", 1)
        if key_id != kid:
            self.xml_error(403, "InvalidAccessKeyId", "The access key is not known")
            return False
        want_term = "goog4_request" if pfx == "goog" else "aws4_request"
        if term != want_term or service not in ("storage", "s3"):
            self.xml_error(400, "AuthorizationHeaderMalformed", "bad credential scope")
            return False
        stamp = self.headers.get("x-%s-date" % pfx, "")
        try:
            t = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc)
        except ValueError:
            self.xml_error(403, "AccessDenied", "missing or bad x-%s-date" % pfx)
            return False
        if abs((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()) > 900 \
                or stamp[:8] != date:
            self.xml_error(403, "RequestTimeTooSkewed", "request time too skewed")
            return False
        if "host" not in signed:
            self.xml_error(403, "SignatureDoesNotMatch", "host must be signed")
            return False
        for h in self.headers.keys():
            hl = h.lower()
            if hl.startswith("x-%s-" % pfx) and hl not in signed:
                self.xml_error(403, "SignatureDoesNotMatch", "unsigned %s header" % hl)
                return False
        ph = self.headers.get("x-%s-content-sha256" % pfx)
        if ph is None:
            ph = hashlib.sha256(body).hexdigest()
        elif ph != "UNSIGNED-PAYLOAD" and ph != hashlib.sha256(body).hexdigest():
            self.xml_error(400, "BadDigest", "x-%s-content-sha256 does not match" % pfx)
            return False
        enc = lambda s: urllib.parse.quote(s, safe="-_.~")
        pairs = sorted((enc(k), enc(v)) for k, v in
                       urllib.parse.parse_qsl(self.rawquery, keep_blank_values=True))
        cq = "&".join("%s=%s" % kv for kv in pairs)
        ch = "".join("%s:%s\n" % (h, " ".join((self.headers.get(h) or "").split()))
                     for h in signed)
        creq = "\n".join([self.command, self.rawpath, cq, ch, ";".join(signed), ph])
        scope = "/".join([date, region, service, term])
        sts = "\n".join([algo, stamp, scope, hashlib.sha256(creq.encode()).hexdigest()])
        k = (algo.split("-")[0] + secret).encode()
        for m in (date, region, service, term):
            k = hmac.new(k, m.encode(), hashlib.sha256).digest()
        want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig):
            self.xml_error(403, "SignatureDoesNotMatch",
                           "The request signature we calculated does not match. "
                           "Canonical request: " + creq)
            return False
        return True

    # ---- helpers ----
    def bucket(self, b):
        bk = self.st.buckets.get(b)
        if bk is None:
            if self.xml_api:
                self.xml_error(404, "NoSuchBucket", "The specified bucket does not exist.")
            else:
                self.json_error(404, "notFound", "The specified bucket does not exist.")
        return bk

    def store(self, bucket, name, data, ctype):
        with self.st.lock:
            o = Obj(bucket, name, data, ctype, self.st.next_gen())
            self.st.buckets[bucket][name] = o
        return o

    def obj_headers(self, o):
        return [("x-goog-hash", o.goog_hash()), ("x-goog-generation", str(o.gen)),
                ("x-goog-stored-content-length", str(len(o.data))),
                ("ETag", '"%s"' % o.md5.hex()),
                ("Last-Modified", email.utils.format_datetime(o.created, usegmt=True))]

    def media(self, o, fault):
        if self.q.get("generation") not in (None, str(o.gen)):
            # Only the live generation is kept here; an older one is gone.
            return self.json_error(404, "notFound", "No such object generation.")
        data = o.data
        rng = self.headers.get("Range")
        if fault and fault.get("action") == "norange":
            rng = None
        code, hdrs = 200, self.obj_headers(o)
        if rng:
            try:
                unit, _, spec = rng.partition("=")
                a, _, b = spec.partition("-")
                if unit.strip() != "bytes" or "," in spec:
                    raise ValueError
                if a == "":
                    a, b = max(0, len(data) - int(b)), len(data) - 1
                else:
                    a, b = int(a), (int(b) if b else len(data) - 1)
            except ValueError:
                a, b = 0, len(data) - 1
                rng = None
            if rng:
                if a >= len(data):
                    return self.json_error(416, "requestedRangeNotSatisfiable",
                                           "The requested range cannot be satisfied.")
                b = min(b, len(data) - 1)
                code = 206
                hdrs.append(("Content-Range", "bytes %d-%d/%d" % (a, b, len(data))))
                data = data[a:b + 1]
        if fault and fault.get("action") == "corrupt" and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if fault and fault.get("action") == "truncate":
            self.status = "%d truncated" % code
            self.record()
            self.send_response(code)
            for k, v in hdrs:
                self.send_header(k, v)
            self.send_header("Content-Type", o.ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send(code, data, o.ctype, hdrs)

    # ---- resumable sessions (both APIs) ----
    def new_session(self, bucket, name, ctype, xml):
        sid = secrets.token_urlsafe(18)
        with self.st.lock:
            self.st.sessions[sid] = Session(bucket, name, ctype, xml)
        if xml:
            return "%s/%s/%s?upload_id=%s" % (self.base(), bucket,
                                              urllib.parse.quote(name, safe="/~"), sid)
        return "%s/upload/storage/v1/b/%s/o?uploadType=resumable&name=%s&upload_id=%s" % (
            self.base(), bucket, urllib.parse.quote(name, safe=""), sid)

    def chunk(self, body, fault):
        self.xml_api = not self.rawpath.startswith("/upload/")
        sid = self.q["upload_id"]
        with self.st.lock:
            s = self.st.sessions.get(sid)
        if s is None:
            return self.json_error(404, "notFound", "No such upload session.")
        if self.command == "DELETE":
            with self.st.lock:
                self.st.sessions.pop(sid, None)
            return self.send(499, b"")
        if self.command != "PUT":
            return self.json_error(405, "methodNotAllowed", "PUT to a session URI")
        if s.done is not None:
            return self.finished(s)
        try:
            start, end, total = parse_content_range(self.headers.get("Content-Range"))
        except ValueError as e:
            if self.headers.get("Content-Range") is None and not body:
                start, end, total = None, None, None
            elif self.headers.get("Content-Range") is None:
                start, end, total = 0, len(body) - 1, len(body)
            else:
                return self.json_error(400, "invalid", "Bad Content-Range: %s" % e)
        have = len(s.data)
        if start is not None:
            if end is None:
                # "bytes A-*/*": a single streamed request whose body runs to
                # the object's end (how Google's Node client sends an upload
                # of unknown size without chunkSize): it completes the upload.
                end = start + len(body) - 1
                if total is None:
                    total = end + 1
            if end - start + 1 != len(body):
                return self.json_error(400, "invalid", "Content-Range length %d does not match "
                                       "the body's %d bytes" % (end - start + 1, len(body)))
            if start > have:
                return self.json_error(400, "invalid", "Chunk starts at %d but only %d bytes "
                                       "are stored" % (start, have))
            final = total is not None and end + 1 == total
            if total is not None and end + 1 > total:
                return self.json_error(400, "invalid", "Chunk past the declared size")
            new = body[have - start:]
            if not final:
                # GCS persists a non-final chunk in whole 256 KiB units only
                # and says in the 308's Range how far it got; the client
                # must send the rest again.
                new = new[:len(new) - (have + len(new)) % CHUNK_UNIT]
            if fault and fault.get("action") == "short" and not final and len(new) > CHUNK_UNIT:
                new = new[:len(new) - CHUNK_UNIT]
            s.data += new
        if total is not None and len(s.data) == total:
            o = self.store(s.bucket, s.name, s.data, s.ctype)
            s.done = o
            s.data = bytearray()
            return self.finished(s, fault is not None and fault.get("action") == "lie")
        if total is not None and len(s.data) > total:
            return self.json_error(400, "invalid", "More bytes than the declared size")
        hdrs = [("Range", "bytes=0-%d" % (len(s.data) - 1))] if s.data else []
        self.send(308, b"", "text/plain", hdrs)

    def finished(self, s, lie=False):
        o = s.done
        if lie:  # report a checksum other than the stored bytes'
            o = Obj(o.bucket, o.name, o.data, o.ctype, o.gen)
            o._crc = bytes(b ^ 0x5A for b in o.crc)
        if s.xml:
            return self.send(200, b"", "text/plain", self.obj_headers(o))
        self.send(200, o.resource(self.base()))

    # ---- JSON API ----
    def json_route(self, body, fault):
        parts = self.rawpath.split("/")
        # /upload/storage/v1/b/B/o   /storage/v1/b/B/o[/N]   /download/storage/v1/b/B/o/N
        if parts[1] in ("upload", "download"):
            parts = parts[1:]
        if len(parts) < 6 or parts[1:3] != ["storage", "v1"] or parts[3] != "b" \
                or parts[5] != "o":
            return self.json_error(404, "notFound", "Not Found")
        bname = urllib.parse.unquote(parts[4])
        name = urllib.parse.unquote("/".join(parts[6:])) if len(parts) > 6 else None
        bk = self.bucket(bname)
        if bk is None:
            return
        if self.rawpath.startswith("/upload/"):
            if self.command != "POST":
                return self.json_error(405, "methodNotAllowed", "use POST")
            return self.upload(bname, body)
        if name is None:
            if self.command != "GET":
                return self.json_error(405, "methodNotAllowed", "Method not allowed")
            return self.list_json(bname, bk)
        with self.st.lock:
            o = bk.get(name)
        if o is None:
            return self.json_error(404, "notFound", "No such object: %s/%s" % (bname, name))
        if self.command == "DELETE":
            with self.st.lock:
                bk.pop(name, None)
            return self.send(204, b"")
        if self.command in ("GET", "HEAD"):
            if self.q.get("alt") == "media":
                return self.media(o, fault)
            return self.send(200, o.resource(self.base()))
        return self.json_error(405, "methodNotAllowed", "Method not allowed")

    def precondition_failed(self, bname, name, want):
        """ifGenerationMatch: the object's generation, 0 for "absent"."""
        if want is None:
            return False
        with self.st.lock:
            o = self.st.buckets[bname].get(name)
        if str(o.gen if o else 0) == want:
            return False
        self.json_error(412, "conditionNotMet", "At least one of the pre-conditions you "
                        "specified did not hold.")
        return True

    def upload(self, bname, body):
        ut = self.q.get("uploadType")
        cond = self.q.get("ifGenerationMatch")
        ctype = self.headers.get("Content-Type", "")
        if ut == "media":
            name = self.q.get("name")
            if not name:
                return self.json_error(400, "required", "Required parameter: name")
            if self.precondition_failed(bname, name, cond):
                return
            return self.send(200, self.store(bname, name, body, ctype).resource(self.base()))
        if ut == "multipart":
            meta, data, mctype = self.multipart(body, ctype)
            if meta is None:
                return self.json_error(400, "invalid", "Malformed multipart body")
            name = meta.get("name") or self.q.get("name")
            if not name:
                return self.json_error(400, "required", "Required parameter: name")
            if self.precondition_failed(bname, name, cond):
                return
            o = self.store(bname, name, data, meta.get("contentType") or mctype)
            return self.send(200, o.resource(self.base()))
        if ut == "resumable":
            meta = {}
            if body:
                try:
                    meta = json.loads(body)
                except ValueError:
                    return self.json_error(400, "parseError", "Parse Error")
            name = meta.get("name") or self.q.get("name")
            if not name:
                return self.json_error(400, "required", "Required parameter: name")
            if self.precondition_failed(bname, name, cond):
                return
            loc = self.new_session(bname, name, meta.get("contentType") or
                                   self.headers.get("X-Upload-Content-Type"), False)
            return self.send(200, b"", "text/plain", [("Location", loc)])
        return self.json_error(400, "invalid", "Unknown uploadType %r" % ut)

    @staticmethod
    def multipart(body, ctype):
        b = None
        for p in ctype.split(";"):
            k, _, v = p.strip().partition("=")
            if k == "boundary":
                b = v.strip('"')
        if not b:
            return None, None, None
        segs = body.split(b"--" + b.encode())
        parts = []
        for seg in segs[1:]:
            if seg.startswith(b"--"):
                break
            seg = seg[2:] if seg.startswith(b"\r\n") else seg
            head, _, content = seg.partition(b"\r\n\r\n")
            if content.endswith(b"\r\n"):
                content = content[:-2]
            h = {}
            for line in head.split(b"\r\n"):
                k, _, v = line.decode("latin-1").partition(":")
                h[k.strip().lower()] = v.strip()
            parts.append((h, content))
        if len(parts) != 2:
            return None, None, None
        try:
            meta = json.loads(parts[0][1])
        except ValueError:
            return None, None, None
        return meta, parts[1][1], parts[1][0].get("content-type")

    def page(self, bk, prefix, token, maxn):
        with self.st.lock:
            names = sorted(n for n in bk if n.startswith(prefix) and n > token)
        cap = min(maxn, self.st.args.max_page)
        return [bk[n] for n in names[:cap] if n in bk], len(names) > cap

    def list_json(self, bname, bk):
        token = ""
        if self.q.get("pageToken"):
            try:
                token = base64.urlsafe_b64decode(self.q["pageToken"]).decode()
            except ValueError:
                return self.json_error(400, "invalid", "Invalid pageToken")
        try:
            maxn = int(self.q.get("maxResults") or 1000)
        except ValueError:
            return self.json_error(400, "invalid", "Invalid maxResults")
        objs, more = self.page(bk, self.q.get("prefix", ""), token, maxn)
        out = {"kind": "storage#objects"}
        if objs:
            out["items"] = [o.resource(self.base()) for o in objs]
        if more:
            out["nextPageToken"] = base64.urlsafe_b64encode(objs[-1].name.encode()).decode()
        self.send(200, out)

    # ---- XML API ----
    def xml_route(self, body, fault):
        bname, _, raw = self.rawpath[1:].partition("/")
        bname, name = urllib.parse.unquote(bname), urllib.parse.unquote(raw)
        bk = self.bucket(bname)
        if bk is None:
            return
        if not name:
            if self.command != "GET":
                return self.xml_error(405, "MethodNotAllowed", "Method not allowed")
            return self.list_xml(bname, bk)
        if self.command == "PUT":
            o = self.store(bname, name, body, self.headers.get("Content-Type"))
            return self.send(200, b"", "text/plain", self.obj_headers(o))
        if self.command == "POST":
            if self.headers.get("x-goog-resumable") != "start":
                return self.xml_error(400, "InvalidArgument", "POST needs x-goog-resumable")
            loc = self.new_session(bname, name, self.headers.get("Content-Type"), True)
            return self.send(201, b"", "text/plain", [("Location", loc)])
        with self.st.lock:
            o = bk.get(name)
        if o is None:
            if self.command == "DELETE":
                return self.xml_error(404, "NoSuchKey", "The specified key does not exist.")
            return self.xml_error(404, "NoSuchKey", "The specified key does not exist.")
        if self.command == "DELETE":
            with self.st.lock:
                bk.pop(name, None)
            return self.send(204, b"")
        if self.command in ("GET", "HEAD"):
            return self.media(o, fault)
        return self.xml_error(405, "MethodNotAllowed", "Method not allowed")

    def list_xml(self, bname, bk):
        if self.q.get("list-type") != "2":
            return self.xml_error(400, "InvalidArgument", "only list-type=2 is served here")
        token = ""
        if self.q.get("continuation-token"):
            try:
                token = base64.urlsafe_b64decode(self.q["continuation-token"]).decode()
            except ValueError:
                return self.xml_error(400, "InvalidArgument", "Invalid continuation token")
        try:
            maxn = int(self.q.get("max-keys") or 1000)
        except ValueError:
            return self.xml_error(400, "InvalidArgument", "Invalid max-keys")
        prefix = self.q.get("prefix", "")
        objs, more = self.page(bk, prefix, token, maxn)
        # encoding-type=url (botocore asks for it): keys come percent-encoded.
        url = self.q.get("encoding-type") == "url"
        key = (lambda k: urllib.parse.quote(k, safe="/")) if url else (lambda k: k)
        x = ["<?xml version='1.0' encoding='UTF-8'?>",
             '<ListBucketResult xmlns="http://doc.s3.amazonaws.com/2006-03-01">',
             "<Name>%s</Name><Prefix>%s</Prefix><KeyCount>%d</KeyCount>"
             "<MaxKeys>%d</MaxKeys><IsTruncated>%s</IsTruncated>"
             % (xml_escape(bname), xml_escape(key(prefix)), len(objs), maxn,
                "true" if more else "false")]
        if url:
            x.append("<EncodingType>url</EncodingType>")
        if more:
            x.append("<NextContinuationToken>%s</NextContinuationToken>"
                     % base64.urlsafe_b64encode(objs[-1].name.encode()).decode())
        for o in objs:
            x.append("<Contents><Key>%s</Key><Generation>%d</Generation>"
                     "<MetaGeneration>1</MetaGeneration><LastModified>%s</LastModified>"
                     '<ETag>"%s"</ETag><Size>%d</Size></Contents>'
                     % (xml_escape(key(o.name)), o.gen,
                        o.created.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                        o.md5.hex(), len(o.data)))
        x.append("</ListBucketResult>")
        self.send(200, "".join(x), "application/xml; charset=UTF-8")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that hangs up mid-request (as the tests make ours do) is
        # not news; anything else is printed as usual.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description="loopback GCS stand-in for tests")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bucket", action="append", default=[])
    ap.add_argument("--token", default="test-token")
    ap.add_argument("--forbid-token", default=None)
    ap.add_argument("--hmac", default=None, help="ACCESS_ID:SECRET for the XML API")
    ap.add_argument("--max-page", type=int, default=1000,
                    help="largest page a list returns, whatever maxResults asks")
    args = ap.parse_args()
    srv = Server(("127.0.0.1", args.port), Handler)
    srv.state = State(args)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    print("GCS_ENDPOINT=http://127.0.0.1:%d" % srv.server_address[1], flush=True)

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
