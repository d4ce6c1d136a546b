/*
 * store_s3.c - the S3 snapshot store (s3://bucket/prefix) over libcurl.
 *
 * Signing is libcurl's own AWS Signature V4 (CURLOPT_AWS_SIGV4).  libcurl
 * 7.88 leaves three things to us, and a wrong one is SignatureDoesNotMatch:
 * the x-amz-content-sha256 header (we send the body's SHA-256 when the body
 * is in memory, UNSIGNED-PAYLOAD otherwise), a canonical query (parameters
 * sorted, values RFC 3986-encoded, "uploads=" with its '='), and object keys
 * percent-encoded in the path.
 *
 * Uploads below one part are one PUT; larger ones are multipart uploads
 * whose parts go out on up to parallel_parts threads while the writer
 * fills the next, each part's SHA-256 signed (the server checks the body)
 * and its ETag checked against its MD5.  Any failure aborts the upload so
 * that no parts are left behind.  Downloads resume with a ranged GET from
 * the byte where a transfer broke, pinned to the object's ETag (If-Match).
 *
 * Credentials are copied into the libcurl handle and nowhere else: no
 * message of this file formats one, and libcurl's verbose mode is never on.
 */
#include "store_s3.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_PARTS 10000
#define MIN_PART (5ull << 20)
#define MAX_PART (5ull << 30)
#define DEFAULT_PART (8ull << 20)
#define REPLY_MAX (16u << 20) /* a bigger XML reply or error body is refused */

typedef struct s3 {
    char *endpoint; /* scheme://host[:port] */
    char *host;     /* into endpoint */
    int path_style;
    char *region;
    char *sigv4;   /* "aws:amz:REGION:s3" */
    char *userpwd; /* "AKID:SECRET", or NULL: anonymous */
    char *token_hdr;
    CURL *curl; /* the caller's thread */
} s3;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

typedef struct buf {
    wcache_store *st;
    char *p;
    size_t n, cap;
    int over;
} buf;

static int buf_add(buf *b, const void *d, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        if (b->n + n + 1 > REPLY_MAX) {
            b->over = 1;
            return -1;
        }
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *np = wci_malloc(&b->st->a, nc);
        if (!np)
            return -1;
        if (b->n)
            memcpy(np, b->p, b->n);
        wci_free(&b->st->a, b->p);
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

static int buf_str(buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

static void buf_free(buf *b)
{
    wci_free(&b->st->a, b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* RFC 3986: everything but A-Z a-z 0-9 - _ . ~ (and '/' when keep_slash). */
static int enc(buf *b, const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~' || (keep_slash && ch == '/')) {
            if (buf_add(b, s, 1))
                return -1;
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            if (buf_add(b, e, 3))
                return -1;
        }
    }
    return 0;
}

static void hexstr(const unsigned char *d, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* A canonical query for SigV4 from name/value pairs that the caller gives
 * in sorted order (libcurl 7.88 signs the query as sent); a NULL value
 * skips its pair.  Values are RFC 3986-encoded, '/' included. */
static int query(buf *qs, const char *const *kv, int npairs)
{
    int e = 0, first = 1;
    for (int i = 0; i < npairs; i++) {
        if (!kv[2 * i + 1])
            continue;
        e |= buf_str(qs, first ? "" : "&") | buf_str(qs, kv[2 * i]) | buf_str(qs, "=") |
             enc(qs, kv[2 * i + 1], 0);
        first = 0;
    }
    if (e)
        buf_free(qs);
    return e ? WCACHE_ENOMEM : WCACHE_OK;
}

static int digest(const char *alg, const void *d, size_t n, unsigned char *out)
{
    unsigned len = 0;
    return EVP_Digest(d, n, out, &len, strcmp(alg, "md5") ? EVP_sha256() : EVP_md5(), NULL) == 1
               ? 0
               : -1;
}

static void b64(const unsigned char *d, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, d, (int)n);
}

/* ------------------------------------------------------------------------ */
/* One request                                                              */
/* ------------------------------------------------------------------------ */

typedef struct req {
    const char *method; /* GET PUT POST DELETE HEAD */
    const char *key;    /* full key; NULL: the bucket */
    const char *query;  /* canonical (sorted, encoded) or NULL */
    const void *body;   /* PUT / POST body in memory */
    size_t body_len;
    int sign_body; /* 1: x-amz-content-sha256 is the body's hash */
    const char *range;
    const char *if_match;
    /* A GET's 2xx body goes to sink, after the skip first bytes. */
    wcache_snap_sink_fn sink;
    void *sink_ud;
    int sink_rc;
    /* A resumed GET: the body must be bytes from resume_from of the object
     * whose ETag is resume_etag, else it is refused before the sink sees
     * a byte (bad_resume). */
    uint64_t resume_from;
    const char *resume_etag;
    int checked, bad_resume;
    wci_store_halt *halt; /* NULL, or the stop of a transfer on our thread */
    /* results */
    long status;
    buf reply; /* any body that is not sunk */
    char etag[WCI_STORE_ETAG_MAX];
    int64_t content_length; /* -1 unknown */
    int64_t range_start, range_total;
    int64_t retry_after_ms;
    size_t body_off; /* read position of an upload body */
    uint64_t sunk;
    int tries;       /* attempts made by do_req */
    char s3code[64]; /* the S3 error code of a failed answer */
} req;

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    req *r = ud;
    size_t len = size * n;
    char line[512];
    size_t l = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, p, l);
    line[l] = '\0';
    while (l && (line[l - 1] == '\r' || line[l - 1] == '\n'))
        line[--l] = '\0';
    if (!strncmp(line, "HTTP/", 5)) { /* a new response (after 100, redirects) */
        r->etag[0] = '\0';
        r->content_length = -1;
        r->range_start = r->range_total = -1;
        r->retry_after_ms = 0;
        return len;
    }
    char *c = strchr(line, ':');
    if (!c)
        return len;
    *c = '\0';
    char *v = c + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (!strcasecmp(line, "etag")) {
        size_t vl = strlen(v);
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
            v[vl - 1] = '\0';
            v++;
        }
        snprintf(r->etag, sizeof r->etag, "%s", v);
    } else if (!strcasecmp(line, "content-length")) {
        r->content_length = strtoll(v, NULL, 10);
    } else if (!strcasecmp(line, "content-range")) {
        long long a, b, t;
        if (sscanf(v, "bytes %lld-%lld/%lld", &a, &b, &t) == 3) {
            r->range_start = a;
            r->range_total = t;
        }
    } else if (!strcasecmp(line, "retry-after")) {
        long long s = strtoll(v, NULL, 10);
        if (s > 0 && s < 3600)
            r->retry_after_ms = s * 1000;
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    req *r = ud;
    size_t len = size * n;
    long st = r->status; /* set from the status line by on_header_status */
    if (r->sink && st >= 200 && st < 300) {
        if (r->resume_from && !r->checked) {
            r->checked = 1;
            if (st != 206 || r->range_start != (int64_t)r->resume_from ||
                (r->etag[0] && r->resume_etag[0] && strcmp(r->etag, r->resume_etag))) {
                r->bad_resume = 1;
                return 0;
            }
        }
        r->sink_rc = r->sink(p, len, r->sink_ud);
        if (r->sink_rc != WCACHE_OK)
            return 0; /* abort the transfer */
        r->sunk += len;
        return len;
    }
    return buf_add(&r->reply, p, len) ? 0 : len;
}

static size_t on_read(char *p, size_t size, size_t n, void *ud)
{
    req *r = ud;
    size_t room = size * n, left = r->body_len - r->body_off;
    size_t k = left < room ? left : room;
    memcpy(p, (const char *)r->body + r->body_off, k);
    r->body_off += k;
    return k;
}

/* The status line arrives before the body: remember it for on_body. */
static size_t on_header_status(char *p, size_t size, size_t n, void *ud)
{
    req *r = ud;
    if (size * n > 9 && !strncmp(p, "HTTP/", 5)) {
        const char *sp = memchr(p, ' ', size * n);
        if (sp)
            r->status = strtol(sp + 1, NULL, 10);
    }
    return on_header(p, size, n, ud);
}

static int build_url(wcache_store *st, const req *q, buf *u)
{
    s3 *s = st->be;
    int e = 0;
    if (s->path_style) {
        e |= buf_str(u, s->endpoint);
        e |= buf_str(u, "/");
        e |= buf_str(u, st->bucket);
    } else {
        const char *sep = strstr(s->endpoint, "://");
        e |= buf_add(u, s->endpoint, (size_t)(sep + 3 - s->endpoint));
        e |= buf_str(u, st->bucket);
        e |= buf_str(u, ".");
        e |= buf_str(u, sep + 3);
    }
    if (q->key) {
        e |= buf_str(u, "/");
        e |= enc(u, q->key, 1);
    } else if (!s->path_style) {
        e |= buf_str(u, "/");
    }
    if (q->query) {
        e |= buf_str(u, "?");
        e |= buf_str(u, q->query);
    }
    return e ? WCACHE_ENOMEM : WCACHE_OK;
}

/* Perform q once on curl.  Returns the CURLcode; q->status etc. filled. */
static CURLcode perform(wcache_store *st, CURL *curl, req *q)
{
    s3 *s = st->be;
    const wcache_store_opts *o = &st->o;
    buf url = {st, NULL, 0, 0, 0};
    buf_free(&q->reply);
    q->reply.st = st;
    q->status = 0;
    q->etag[0] = '\0';
    q->content_length = q->range_start = q->range_total = -1;
    q->retry_after_ms = 0;
    q->body_off = 0;
    q->sink_rc = WCACHE_OK;
    q->checked = q->bad_resume = 0;
    if (build_url(st, q, &url) != WCACHE_OK)
        return CURLE_OUT_OF_MEMORY;
    curl_easy_reset(curl);
    struct curl_slist *h = NULL;
    char line[256];
    if (q->sign_body) {
        unsigned char d[32];
        char hx[65];
        digest("sha256", q->body ? q->body : "", q->body_len, d);
        hexstr(d, 32, hx);
        snprintf(line, sizeof line, "x-amz-content-sha256: %s", hx);
        h = curl_slist_append(h, line);
        unsigned char m[16];
        char mb[32];
        digest("md5", q->body ? q->body : "", q->body_len, m);
        b64(m, 16, mb);
        snprintf(line, sizeof line, "Content-MD5: %s", mb);
        h = curl_slist_append(h, line);
    } else {
        h = curl_slist_append(h, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    }
    h = curl_slist_append(h, "Expect:");
    if (s->token_hdr)
        h = curl_slist_append(h, s->token_hdr);
    if (q->range) {
        snprintf(line, sizeof line, "Range: %s", q->range);
        h = curl_slist_append(h, line);
    }
    if (q->if_match && q->if_match[0]) {
        snprintf(line, sizeof line, "If-Match: \"%.200s\"", q->if_match);
        h = curl_slist_append(h, line);
    }
    if (!strcmp(q->method, "POST"))
        h = curl_slist_append(h, "Content-Type: application/xml");
    curl_easy_setopt(curl, CURLOPT_URL, url.p);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    if (s->userpwd) {
        curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, s->sigv4);
        curl_easy_setopt(curl, CURLOPT_USERPWD, s->userpwd);
    }
    if (o->ca_file)
        curl_easy_setopt(curl, CURLOPT_CAINFO, o->ca_file);
    if (o->ca_path)
        curl_easy_setopt(curl, CURLOPT_CAPATH, o->ca_path);
    if (o->tls_insecure) {
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    long ct = (long)(o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000);
    long idle = (long)((o->timeout_ms > 0 ? o->timeout_ms : 30000) + 999) / 1000;
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, ct);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, idle);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header_status);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, q);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, q);
    wci_store_halt_curl(curl, q->halt);
    if (!strcmp(q->method, "PUT")) {
        curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(curl, CURLOPT_READDATA, q);
        curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->body_len);
    } else if (!strcmp(q->method, "POST")) {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, q->body ? q->body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
    } else if (!strcmp(q->method, "HEAD")) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(q->method, "DELETE")) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    CURLcode cc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status)
        q->status = status;
    curl_slist_free_all(h);
    buf_free(&url);
    return cc;
}

static int curl_retryable(CURLcode cc)
{
    return cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_COULDNT_CONNECT ||
           cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_PARTIAL_FILE ||
           cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR || cc == CURLE_GOT_NOTHING ||
           cc == CURLE_SSL_CONNECT_ERROR || cc == CURLE_HTTP2 || cc == CURLE_HTTP2_STREAM;
}

/* The error of a finished request: names the method, bucket, key and
 * status, and the S3 error code and message when the body has them. */
static int http_error(wcache_store *st, req *q)
{
    wci_s3_reply r;
    memset(&r, 0, sizeof r);
    if (q->reply.n)
        (void)wci_s3_parse(q->reply.p, q->reply.n, &r, NULL, NULL);
    snprintf(q->s3code, sizeof q->s3code, "%s", r.code);
    int code = q->status == 404 && (!r.code[0] || !strcmp(r.code, "NoSuchKey"))
                   ? WCACHE_ENOTFOUND
                   : WCACHE_EHTTP;
    const char *hint = "";
    if (q->status == 403 || !strcmp(r.code, "InvalidAccessKeyId"))
        hint = " (check the credentials and the region)";
    return wci_store_err(st, code, "s3: %s s3://%s/%s: HTTP %ld%s%s%s%.200s%s", q->method,
                         st->bucket, q->key ? q->key : "", q->status, r.code[0] ? " " : "",
                         r.code, r.message[0] ? ": " : "", r.message, hint);
}

/* S3 answers 400 RequestTimeout when a request body stalled: transient. */
static int request_timeout(const req *q)
{
    wci_s3_reply r;
    return q->status == 400 && q->reply.n &&
           wci_s3_parse(q->reply.p, q->reply.n, &r, NULL, NULL) == WCACHE_OK &&
           !strcmp(r.code, "RequestTimeout");
}

static int stopped(wcache_store *st, const req *q)
{
    return wci_store_err(st, WCACHE_ESTOPPED, "s3: %s s3://%s/%s: stopped after %d tries",
                         q->method, st->bucket, q->key ? q->key : "", q->tries);
}

/* Perform q with retries.  WCACHE_OK on a 2xx (or on allow_404 and a 404,
 * with q->status telling which). */
static int do_req(wcache_store *st, CURL *curl, req *q)
{
    int max = wci_store_max_retries(st);
    for (int attempt = 0;; attempt++) {
        q->tries = attempt + 1;
        CURLcode cc = perform(st, curl, q);
        if (wci_store_halted(q->halt))
            return stopped(st, q);
        if (cc == CURLE_OUT_OF_MEMORY)
            return WCACHE_ENOMEM;
        if (q->sink_rc != WCACHE_OK)
            return q->sink_rc;
        if (q->reply.over)
            return wci_store_err(st, WCACHE_ECORRUPT, "s3: %s s3://%s/%s: reply over %u bytes",
                                 q->method, st->bucket, q->key ? q->key : "", REPLY_MAX);
        int retry;
        if (cc != CURLE_OK) {
            retry = curl_retryable(cc);
            if (!retry || attempt >= max)
                return wci_store_err(st, WCACHE_ECURL, "s3: %s s3://%s/%s: %s (after %d tries)",
                                     q->method, st->bucket, q->key ? q->key : "",
                                     curl_easy_strerror(cc), attempt + 1);
        } else if (q->status >= 200 && q->status < 300) {
            return WCACHE_OK;
        } else {
            retry = wci_store_status_retryable(q->status) || request_timeout(q);
            if (!retry || attempt >= max)
                return http_error(st, q);
        }
        wci_store_log(st, WCACHE_LOG_INFO, "s3: %s s3://%s/%s: %s %ld; retry %d of %d",
                      q->method, st->bucket, q->key ? q->key : "",
                      cc != CURLE_OK ? curl_easy_strerror(cc) : "HTTP", q->status, attempt + 1,
                      max);
        if (wci_store_backoff(st, q->halt, attempt + 1, q->retry_after_ms) != WCACHE_OK)
            return stopped(st, q);
    }
}

static void req_init(req *q, wcache_store *st, const char *method, const char *key)
{
    memset(q, 0, sizeof *q);
    q->reply.st = st;
    q->method = method;
    q->key = key;
}

/* ------------------------------------------------------------------------ */
/* Open: endpoint, region, credentials                                      */
/* ------------------------------------------------------------------------ */

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* Strip blanks at both ends, in place. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

typedef struct creds {
    char akid[256], secret[256], token[4096], region[64];
} creds;

/* The profile's section of an AWS INI file (credentials or config). */
static int read_ini(wcache_store *st, const char *path, const char *section, creds *c,
                    int required)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        if (!required && errno == ENOENT)
            return WCACHE_OK;
        return wci_store_err(st, WCACHE_ESYS, "s3: credentials file %.300s: %s", path,
                             strerror(errno));
    }
    char line[4400];
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        char *l = trim(line);
        if (l[0] == '#' || l[0] == ';' || !l[0])
            continue;
        if (l[0] == '[') {
            char *e = strchr(l, ']');
            if (e)
                *e = '\0';
            char *name = trim(l + 1);
            if (!strncmp(name, "profile ", 8))
                name = trim(name + 8);
            in = !strcmp(name, section);
            continue;
        }
        char *eq = strchr(l, '=');
        if (!in || !eq)
            continue;
        *eq = '\0';
        char *k = trim(l), *v = trim(eq + 1);
        if (!strcmp(k, "aws_access_key_id"))
            snprintf(c->akid, sizeof c->akid, "%s", v);
        else if (!strcmp(k, "aws_secret_access_key"))
            snprintf(c->secret, sizeof c->secret, "%s", v);
        else if (!strcmp(k, "aws_session_token"))
            snprintf(c->token, sizeof c->token, "%s", v);
        else if (!strcmp(k, "region"))
            snprintf(c->region, sizeof c->region, "%s", v);
    }
    fclose(f);
    return WCACHE_OK;
}

static int find_creds(wcache_store *st, creds *c)
{
    const wcache_store_opts *o = &st->o;
    memset(c, 0, sizeof *c);
    if (o->access_key_id || o->secret_access_key) {
        snprintf(c->akid, sizeof c->akid, "%s", o->access_key_id ? o->access_key_id : "");
        snprintf(c->secret, sizeof c->secret, "%s",
                 o->secret_access_key ? o->secret_access_key : "");
        snprintf(c->token, sizeof c->token, "%s", o->session_token ? o->session_token : "");
        return WCACHE_OK;
    }
    if (env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY")) {
        snprintf(c->akid, sizeof c->akid, "%s", env("AWS_ACCESS_KEY_ID"));
        snprintf(c->secret, sizeof c->secret, "%s", env("AWS_SECRET_ACCESS_KEY"));
        snprintf(c->token, sizeof c->token, "%s",
                 env("AWS_SESSION_TOKEN") ? env("AWS_SESSION_TOKEN") : "");
        return WCACHE_OK;
    }
    const char *profile = o->profile ? o->profile : env("AWS_PROFILE");
    if (!profile)
        profile = "default";
    const char *file =
        o->credentials_file ? o->credentials_file : env("AWS_SHARED_CREDENTIALS_FILE");
    char def[1024];
    if (!file && env("HOME")) {
        snprintf(def, sizeof def, "%s/.aws/credentials", env("HOME"));
        file = def;
    }
    int rc = file ? read_ini(st, file, profile, c, o->credentials_file != NULL) : WCACHE_OK;
    if (rc == WCACHE_OK && !c->region[0]) {
        const char *cfg = env("AWS_CONFIG_FILE");
        char dc[1024];
        if (!cfg && env("HOME")) {
            snprintf(dc, sizeof dc, "%s/.aws/config", env("HOME"));
            cfg = dc;
        }
        creds cc;
        memset(&cc, 0, sizeof cc);
        if (cfg && read_ini(st, cfg, profile, &cc, 0) == WCACHE_OK)
            memcpy(c->region, cc.region, sizeof c->region);
    }
    return rc;
}

static void s3_free(wcache_store *st, s3 *s)
{
    if (!s)
        return;
    if (s->curl)
        curl_easy_cleanup(s->curl);
    wci_free(&st->a, s->endpoint);
    wci_free(&st->a, s->region);
    wci_free(&st->a, s->sigv4);
    if (s->userpwd) {
        explicit_bzero(s->userpwd, strlen(s->userpwd));
        wci_free(&st->a, s->userpwd);
    }
    if (s->token_hdr) {
        explicit_bzero(s->token_hdr, strlen(s->token_hdr));
        wci_free(&st->a, s->token_hdr);
    }
    wci_free(&st->a, s);
    curl_global_cleanup();
}

static int s3_open(wcache_store *st)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return wci_store_err(st, WCACHE_ECURL, "s3: curl_global_init failed");
    s3 *s = wci_calloc(&st->a, 1, sizeof *s);
    if (!s) {
        curl_global_cleanup();
        return WCACHE_ENOMEM;
    }
    creds *c = wci_calloc(&st->a, 1, sizeof *c);
    int rc = c ? find_creds(st, c) : WCACHE_ENOMEM;
    const char *region = st->o.region ? st->o.region : env("AWS_REGION");
    if (!region)
        region = env("AWS_DEFAULT_REGION");
    if (!region && c && c->region[0])
        region = c->region;
    if (!region)
        region = "us-east-1";
    for (const char *q = region; *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '-'))
            rc = wci_store_err(st, WCACHE_EINVAL, "s3: bad region name");
    const char *ep = st->o.endpoint ? st->o.endpoint : env("AWS_ENDPOINT_URL_S3");
    if (!ep)
        ep = env("AWS_ENDPOINT_URL");
    char def[128];
    if (!ep) {
        snprintf(def, sizeof def, "https://s3.%s.amazonaws.com", region);
        ep = def;
    }
    if (rc == WCACHE_OK && strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8))
        rc = wci_store_err(st, WCACHE_EINVAL,
                           "s3: endpoint '%.200s' is not http:// or https://", ep);
    if (rc == WCACHE_OK) {
        size_t n = strlen(ep);
        while (n && ep[n - 1] == '/')
            n--;
        s->endpoint = wci_memdup(&st->a, ep, n);
        s->region = wci_store_strdup(st, region);
        size_t sl = strlen(region) + 16;
        s->sigv4 = wci_malloc(&st->a, sl);
        if (s->sigv4)
            snprintf(s->sigv4, sl, "aws:amz:%s:s3", region);
        s->curl = curl_easy_init();
        if (!s->endpoint || !s->region || !s->sigv4 || !s->curl)
            rc = WCACHE_ENOMEM;
    }
    if (rc == WCACHE_OK && c->akid[0]) {
        if (!c->secret[0])
            rc = wci_store_err(st, WCACHE_EINVAL, "s3: an access key id without a secret");
        size_t ul = strlen(c->akid) + strlen(c->secret) + 2;
        s->userpwd = rc == WCACHE_OK ? wci_malloc(&st->a, ul) : NULL;
        if (rc == WCACHE_OK && !s->userpwd)
            rc = WCACHE_ENOMEM;
        if (rc == WCACHE_OK)
            snprintf(s->userpwd, ul, "%s:%s", c->akid, c->secret);
        if (rc == WCACHE_OK && c->token[0]) {
            size_t tl = strlen(c->token) + 32;
            s->token_hdr = wci_malloc(&st->a, tl);
            if (!s->token_hdr)
                rc = WCACHE_ENOMEM;
            else
                snprintf(s->token_hdr, tl, "x-amz-security-token: %s", c->token);
        }
    } else if (rc == WCACHE_OK) {
        wci_store_log(st, WCACHE_LOG_INFO, "s3: no credentials found; requests are unsigned");
    }
    if (c) {
        explicit_bzero(c, sizeof *c);
        wci_free(&st->a, c);
    }
    if (rc == WCACHE_OK) {
        wcache_store_style sty = st->o.style;
        if (sty == WCACHE_STORE_STYLE_AUTO)
            sty = st->o.endpoint || env("AWS_ENDPOINT_URL") || env("AWS_ENDPOINT_URL_S3")
                      ? WCACHE_STORE_STYLE_PATH
                      : WCACHE_STORE_STYLE_VIRTUAL;
        /* A bucket name with dots is no single DNS label: the wildcard
         * certificate of a virtual host would not match it. */
        if (st->o.style == WCACHE_STORE_STYLE_AUTO && strchr(st->bucket, '.'))
            sty = WCACHE_STORE_STYLE_PATH;
        s->path_style = sty == WCACHE_STORE_STYLE_PATH;
    }
    if (rc != WCACHE_OK) {
        s3_free(st, s);
        return rc;
    }
    st->be = s;
    return WCACHE_OK;
}

static void s3_close(wcache_store *st)
{
    s3_free(st, st->be);
    st->be = NULL;
}

/* ------------------------------------------------------------------------ */
/* Uploads                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct slot {
    struct s3up *u;
    pthread_t th;
    int running; /* a thread to join */
    unsigned char *data;
    size_t len, cap;
    int number;
    int finished; /* the thread is done (under the upload's lock) */
    CURL *curl;
} slot;

typedef struct s3up {
    wcache_store_upload *up;
    EVP_MD_CTX *whole; /* MD5 of everything */
    unsigned char *cur;
    size_t cur_len, cur_cap;
    char upload_id[1024];
    int nparts;
    int nslots;
    slot *slots;
    char (*etags)[WCI_STORE_ETAG_MAX]; /* by part number - 1 */
    unsigned char (*md5s)[16];
    int cap_parts;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Raised when the upload fails or is aborted: parts in a backoff
     * wait or a request stop at once, so the join does not wait them out. */
    wci_store_halt halt;
    int halt_ok; /* halt initialised */
    int busy;    /* parts in flight */
    int err;     /* first failure of a part */
    char errmsg[512];
} s3up;

static uint64_t part_size(const wcache_store *st, int number, uint64_t total)
{
    uint64_t base = st->o.part_bytes ? st->o.part_bytes : DEFAULT_PART;
    if (total) {
        /* Known size: the smallest part that keeps to 10,000 parts. */
        uint64_t need = (total + MAX_PARTS - 1) / MAX_PARTS;
        return need > base ? (need < MAX_PART ? need : MAX_PART) : base;
    }
    /* Unknown size: double every 1,000 parts, which reaches S3's 5 TiB
     * object limit well before part 10,000. */
    int shift = (number - 1) / 1000;
    uint64_t sz = base << (shift < 10 ? shift : 10);
    return sz < MAX_PART ? sz : MAX_PART;
}

static int part_put(wcache_store *st, CURL *curl, wci_store_halt *halt, const char *key,
                    const char *upload_id, int number, const void *data, size_t len,
                    char *etag_out, unsigned char *md5)
{
    buf qs = {st, NULL, 0, 0, 0};
    char num[16];
    snprintf(num, sizeof num, "%d", number);
    const char *kv[] = {"partNumber", num, "uploadId", upload_id};
    if (query(&qs, kv, 2))
        return WCACHE_ENOMEM;
    req q;
    req_init(&q, st, "PUT", key);
    q.query = qs.p;
    q.body = data;
    q.body_len = len;
    q.sign_body = 1;
    q.halt = halt;
    int rc = do_req(st, curl, &q);
    char hx[33];
    digest("md5", data, len, md5);
    hexstr(md5, 16, hx);
    if (rc == WCACHE_OK && q.etag[0] && strcasecmp(q.etag, hx) != 0)
        rc = wci_store_err(st, WCACHE_ECORRUPT,
                           "s3: part %d of s3://%s/%s: ETag %.64s is not the MD5 %s sent",
                           number, st->bucket, key, q.etag, hx);
    if (rc == WCACHE_OK)
        snprintf(etag_out, WCI_STORE_ETAG_MAX, "%s", q.etag[0] ? q.etag : hx);
    buf_free(&q.reply);
    buf_free(&qs);
    return rc;
}

static void *part_main(void *arg)
{
    slot *sl = arg;
    s3up *u = sl->u;
    wcache_store *st = u->up->st;
    char etag[WCI_STORE_ETAG_MAX];
    unsigned char md5[16];
    int rc = part_put(st, sl->curl, &u->halt, u->up->key, u->upload_id, sl->number, sl->data,
                      sl->len, etag, md5);
    pthread_mutex_lock(&u->mu);
    if (rc == WCACHE_OK) {
        memcpy(u->etags[sl->number - 1], etag, sizeof etag);
        memcpy(u->md5s[sl->number - 1], md5, 16);
    } else if (!u->err) {
        u->err = rc;
        /* The upload is lost: the other parts stop retrying for it. */
        wci_store_halt_raise(&u->halt);
    }
    u->busy--;
    sl->finished = 1;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

static int initiate(s3up *u)
{
    wcache_store *st = u->up->st;
    s3 *s = st->be;
    req q;
    req_init(&q, st, "POST", u->up->key);
    q.query = "uploads=";
    q.sign_body = 1;
    int rc = do_req(st, s->curl, &q);
    wci_s3_reply r;
    if (rc == WCACHE_OK) {
        rc = wci_s3_parse(q.reply.p, q.reply.n, &r, NULL, NULL);
        if (rc != WCACHE_OK || !r.upload_id[0])
            rc = wci_store_err(st, WCACHE_ECORRUPT,
                               "s3: POST s3://%s/%s?uploads: no UploadId in the reply",
                               st->bucket, u->up->key);
    }
    if (rc == WCACHE_OK)
        snprintf(u->upload_id, sizeof u->upload_id, "%s", r.upload_id);
    buf_free(&q.reply);
    if (rc != WCACHE_OK)
        return rc;
    int n = st->o.parallel_parts ? st->o.parallel_parts : 4;
    u->slots = wci_calloc(&st->a, (size_t)n, sizeof *u->slots);
    if (!u->slots)
        return WCACHE_ENOMEM;
    u->nslots = n;
    for (int i = 0; i < n; i++) {
        u->slots[i].u = u;
        u->slots[i].curl = curl_easy_init();
        if (!u->slots[i].curl)
            return WCACHE_ENOMEM;
    }
    return WCACHE_OK;
}

static int grow_parts(s3up *u, int n)
{
    wcache_store *st = u->up->st;
    if (n <= u->cap_parts)
        return WCACHE_OK;
    int nc = u->cap_parts ? u->cap_parts * 2 : 64;
    while (nc < n)
        nc *= 2;
    char(*ne)[WCI_STORE_ETAG_MAX] = wci_calloc(&st->a, (size_t)nc, sizeof *ne);
    unsigned char(*nm)[16] = wci_calloc(&st->a, (size_t)nc, sizeof *nm);
    if (!ne || !nm) {
        wci_free(&st->a, ne);
        wci_free(&st->a, nm);
        return WCACHE_ENOMEM;
    }
    pthread_mutex_lock(&u->mu);
    if (u->cap_parts) {
        memcpy(ne, u->etags, (size_t)u->cap_parts * sizeof *ne);
        memcpy(nm, u->md5s, (size_t)u->cap_parts * sizeof *nm);
    }
    wci_free(&st->a, u->etags);
    wci_free(&st->a, u->md5s);
    u->etags = ne;
    u->md5s = nm;
    u->cap_parts = nc;
    pthread_mutex_unlock(&u->mu);
    return WCACHE_OK;
}

/* Send the current buffer as the next part, on a free slot's thread. */
static int send_part(s3up *u)
{
    wcache_store *st = u->up->st;
    if (!u->upload_id[0]) {
        int rc = initiate(u);
        if (rc != WCACHE_OK)
            return rc;
    }
    if (u->nparts >= MAX_PARTS)
        return wci_store_err(st, WCACHE_ETOOBIG, "s3: s3://%s/%s: more than %d parts",
                             st->bucket, u->up->key, MAX_PARTS);
    int rc = grow_parts(u, u->nparts + 1);
    if (rc != WCACHE_OK)
        return rc;
    pthread_mutex_lock(&u->mu);
    while (u->busy >= u->nslots && !u->err)
        pthread_cond_wait(&u->cv, &u->mu);
    rc = u->err;
    pthread_mutex_unlock(&u->mu);
    if (rc)
        return rc;
    /* A slot without a thread, else one whose part is done (busy <
     * nslots says there is one): join it to reuse it. */
    slot *sl = NULL;
    for (int i = 0; i < u->nslots && !sl; i++)
        if (!u->slots[i].running)
            sl = &u->slots[i];
    if (!sl) {
        pthread_mutex_lock(&u->mu);
        for (int i = 0; i < u->nslots && !sl; i++)
            if (u->slots[i].finished)
                sl = &u->slots[i];
        pthread_mutex_unlock(&u->mu);
        if (!sl)
            return wci_store_err(st, WCACHE_ESTATE, "s3: no free part slot");
        pthread_join(sl->th, NULL);
        sl->running = 0;
    }
    sl->finished = 0;
    /* Swap buffers: the slot takes the filled one, the writer its old one. */
    unsigned char *t = sl->data;
    size_t tc = sl->cap;
    sl->data = u->cur;
    sl->cap = u->cur_cap;
    sl->len = u->cur_len;
    u->cur = t;
    u->cur_cap = tc;
    u->cur_len = 0;
    sl->number = ++u->nparts;
    pthread_mutex_lock(&u->mu);
    u->busy++;
    pthread_mutex_unlock(&u->mu);
    if (pthread_create(&sl->th, NULL, part_main, sl) != 0) {
        pthread_mutex_lock(&u->mu);
        u->busy--;
        pthread_mutex_unlock(&u->mu);
        return wci_store_err(st, WCACHE_ESYS, "s3: pthread_create: %s", strerror(errno));
    }
    sl->running = 1;
    return WCACHE_OK;
}

static void join_all(s3up *u)
{
    for (int i = 0; i < u->nslots; i++) {
        if (u->slots[i].running) {
            pthread_join(u->slots[i].th, NULL);
            u->slots[i].running = 0;
        }
    }
}

static void s3up_free(s3up *u)
{
    if (!u)
        return;
    wcache_store *st = u->up->st;
    join_all(u);
    for (int i = 0; i < u->nslots; i++) {
        if (u->slots[i].curl)
            curl_easy_cleanup(u->slots[i].curl);
        wci_free(&st->a, u->slots[i].data);
    }
    wci_free(&st->a, u->slots);
    wci_free(&st->a, u->cur);
    wci_free(&st->a, u->etags);
    wci_free(&st->a, u->md5s);
    if (u->whole)
        EVP_MD_CTX_free(u->whole);
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->cv);
    if (u->halt_ok)
        wci_store_halt_destroy(&u->halt);
    wci_free(&st->a, u);
}

static int s3up_begin(wcache_store_upload *up)
{
    wcache_store *st = up->st;
    s3up *u = wci_calloc(&st->a, 1, sizeof *u);
    if (!u)
        return WCACHE_ENOMEM;
    u->up = up;
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    if (wci_store_halt_init(&u->halt) != WCACHE_OK) {
        s3up_free(u);
        return wci_store_err(st, WCACHE_ESYS, "s3: cannot set up the upload's stop");
    }
    u->halt_ok = 1;
    u->whole = EVP_MD_CTX_new();
    if (!u->whole || EVP_DigestInit_ex(u->whole, EVP_md5(), NULL) != 1) {
        s3up_free(u);
        return WCACHE_ENOMEM;
    }
    up->be = u;
    return WCACHE_OK;
}

static int s3up_write(wcache_store_upload *up, const void *data, size_t len)
{
    s3up *u = up->be;
    wcache_store *st = up->st;
    EVP_DigestUpdate(u->whole, data, len);
    const unsigned char *p = data;
    while (len) {
        uint64_t want = part_size(st, u->nparts + 1, up->total);
        if (u->cur_cap < want) {
            unsigned char *nb = wci_malloc(&st->a, (size_t)want);
            if (!nb)
                return WCACHE_ENOMEM;
            if (u->cur_len)
                memcpy(nb, u->cur, u->cur_len);
            wci_free(&st->a, u->cur);
            u->cur = nb;
            u->cur_cap = (size_t)want;
        }
        size_t room = (size_t)want - u->cur_len;
        size_t k = len < room ? len : room;
        memcpy(u->cur + u->cur_len, p, k);
        u->cur_len += k;
        p += k;
        len -= k;
        /* Send a full part only when more bytes follow, so that the last
         * part (which may be short) is sent by the commit. */
        if (u->cur_len == want && len) {
            int rc = send_part(u);
            if (rc != WCACHE_OK)
                return rc;
        }
    }
    return WCACHE_OK;
}

static int abort_mpu(wcache_store *st, s3up *u)
{
    s3 *s = st->be;
    buf qs = {st, NULL, 0, 0, 0};
    const char *kv[] = {"uploadId", u->upload_id};
    if (query(&qs, kv, 1))
        return WCACHE_ENOMEM;
    req q;
    req_init(&q, st, "DELETE", u->up->key);
    q.query = qs.p;
    /* Keep the first error's text: save and restore the errbuf. */
    char saved[512] = "";
    if (st->eb && st->el)
        snprintf(saved, sizeof saved, "%s", st->eb);
    int rc = do_req(st, s->curl, &q);
    if (rc != WCACHE_OK && q.tries > 1 && !strcmp(q.s3code, "NoSuchUpload"))
        rc = WCACHE_OK; /* an earlier try aborted it; its answer was lost */
    if (rc != WCACHE_OK)
        wci_store_log(st, WCACHE_LOG_ERROR,
                      "s3: could not abort multipart upload of s3://%s/%s; its parts remain "
                      "until a lifecycle rule removes them",
                      st->bucket, u->up->key);
    if (st->eb && st->el)
        snprintf(st->eb, st->el, "%s", saved);
    buf_free(&q.reply);
    buf_free(&qs);
    u->upload_id[0] = '\0';
    return rc;
}

static void s3up_abort(wcache_store_upload *up)
{
    s3up *u = up->be;
    if (!u)
        return;
    if (u->halt_ok)
        wci_store_halt_raise(&u->halt);
    join_all(u);
    if (u->upload_id[0])
        (void)abort_mpu(up->st, u);
    s3up_free(u);
    up->be = NULL;
}

/* HEAD the object: its size and ETag. */
static int head(wcache_store *st, const char *key, int64_t *size, char *etag)
{
    s3 *s = st->be;
    req q;
    req_init(&q, st, "HEAD", key);
    int rc = do_req(st, s->curl, &q);
    if (rc == WCACHE_OK) {
        *size = q.content_length;
        snprintf(etag, WCI_STORE_ETAG_MAX, "%s", q.etag);
    }
    buf_free(&q.reply);
    return rc;
}

static int put_single(wcache_store *st, s3up *u, char *etag)
{
    s3 *s = st->be;
    req q;
    req_init(&q, st, "PUT", u->up->key);
    q.body = u->cur ? (const void *)u->cur : "";
    q.body_len = u->cur_len;
    q.sign_body = 1;
    int rc = do_req(st, s->curl, &q);
    if (rc == WCACHE_OK)
        snprintf(etag, WCI_STORE_ETAG_MAX, "%s", q.etag);
    buf_free(&q.reply);
    return rc;
}

static int complete(wcache_store *st, s3up *u, char *etag, int *maybe_done)
{
    s3 *s = st->be;
    buf body = {st, NULL, 0, 0, 0};
    int e = buf_str(&body, "<CompleteMultipartUpload>");
    char item[256];
    for (int i = 0; i < u->nparts; i++) {
        snprintf(item, sizeof item,
                 "<Part><PartNumber>%d</PartNumber><ETag>\"%.128s\"</ETag></Part>", i + 1,
                 u->etags[i]);
        e |= buf_str(&body, item);
    }
    e |= buf_str(&body, "</CompleteMultipartUpload>");
    buf qs = {st, NULL, 0, 0, 0};
    const char *kv[] = {"uploadId", u->upload_id};
    if (e || query(&qs, kv, 1)) {
        buf_free(&body);
        buf_free(&qs);
        return WCACHE_ENOMEM;
    }
    req q;
    req_init(&q, st, "POST", u->up->key);
    q.query = qs.p;
    q.body = body.p;
    q.body_len = body.n;
    q.sign_body = 1;
    int rc = do_req(st, s->curl, &q);
    wci_s3_reply r;
    if (rc != WCACHE_OK && q.tries > 1) {
        /* A retry failed: an earlier try may have completed the upload
         * and lost its answer (S3 then says NoSuchUpload; s3rver 500).
         * The caller checks the object before it believes either. */
        *maybe_done = 1;
    } else if (rc == WCACHE_OK) {
        /* S3 may answer 200 and put an <Error> in the body. */
        rc = wci_s3_parse(q.reply.p, q.reply.n, &r, NULL, NULL);
        if (rc != WCACHE_OK)
            rc = wci_store_err(st, WCACHE_ECORRUPT, "s3: complete s3://%s/%s: reply unreadable",
                               st->bucket, u->up->key);
        else if (!strcmp(r.root, "Error"))
            rc = wci_store_err(st, WCACHE_EHTTP, "s3: complete s3://%s/%s: %s: %.200s",
                               st->bucket, u->up->key, r.code, r.message);
        else
            snprintf(etag, WCI_STORE_ETAG_MAX, "%s", r.etag);
    }
    buf_free(&q.reply);
    buf_free(&body);
    buf_free(&qs);
    return rc;
}

/* The ETag S3 gives a multipart object: MD5 of the parts' MD5s, "-N". */
static void multipart_etag(s3up *u, char *out)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    unsigned char d[16];
    unsigned dl = 0;
    if (!m) {
        out[0] = '\0';
        return;
    }
    EVP_DigestInit_ex(m, EVP_md5(), NULL);
    for (int i = 0; i < u->nparts; i++)
        EVP_DigestUpdate(m, u->md5s[i], 16);
    EVP_DigestFinal_ex(m, d, &dl);
    EVP_MD_CTX_free(m);
    hexstr(d, 16, out);
    snprintf(out + 32, WCI_STORE_ETAG_MAX - 32, "-%d", u->nparts);
}

/* The object under up's key has the size and ETag of what was sent.  The
 * errbuf keeps the error that led here. */
static int is_ours(wcache_store *st, wcache_store_upload *up, const char *whole,
                   const char *comp)
{
    char saved[512] = "";
    if (st->eb && st->el)
        snprintf(saved, sizeof saved, "%s", st->eb);
    int64_t size = -1;
    char he[WCI_STORE_ETAG_MAX] = "";
    int ok = head(st, up->key, &size, he) == WCACHE_OK && size == (int64_t)up->bytes &&
             (!strcasecmp(he, whole) || !strcasecmp(he, comp));
    if (!ok && st->eb && st->el)
        snprintf(st->eb, st->el, "%s", saved);
    return ok;
}

static int s3up_commit(wcache_store_upload *up, wci_store_obj *o)
{
    wcache_store *st = up->st;
    s3up *u = up->be;
    unsigned char wd[16];
    unsigned wl = 0;
    char whole[33], comp[WCI_STORE_ETAG_MAX] = "", etag[WCI_STORE_ETAG_MAX] = "";
    EVP_DigestFinal_ex(u->whole, wd, &wl);
    hexstr(wd, 16, whole);
    int rc;
    if (!u->upload_id[0]) {
        rc = put_single(st, u, etag);
    } else {
        rc = u->cur_len ? send_part(u) : WCACHE_OK;
        if (rc != WCACHE_OK)
            wci_store_halt_raise(&u->halt);
        join_all(u);
        if (rc == WCACHE_OK)
            rc = u->err;
        int maybe = 0;
        if (rc == WCACHE_OK)
            rc = complete(st, u, etag, &maybe);
        multipart_etag(u, comp);
        if (rc != WCACHE_OK && maybe && is_ours(st, up, whole, comp)) {
            wci_store_log(st, WCACHE_LOG_INFO,
                          "s3: complete s3://%s/%s: an earlier try completed it", st->bucket,
                          up->key);
            rc = WCACHE_OK;
        }
        if (rc != WCACHE_OK)
            (void)abort_mpu(st, u);
        u->upload_id[0] = '\0';
    }
    /* Check what the server holds now, not what it said while storing. */
    int64_t size = -1;
    char hetag[WCI_STORE_ETAG_MAX] = "";
    if (rc == WCACHE_OK)
        rc = head(st, up->key, &size, hetag);
    if (rc == WCACHE_OK) {
        int etag_ok = !hetag[0] || !strcasecmp(hetag, whole) || !strcasecmp(hetag, comp);
        if (size != (int64_t)up->bytes || !etag_ok) {
            rc = wci_store_err(st, WCACHE_ECORRUPT,
                               "s3: s3://%s/%s: stored object has %lld bytes and ETag %.64s; "
                               "sent %llu bytes with MD5 %s",
                               st->bucket, up->key, (long long)size, hetag,
                               (unsigned long long)up->bytes, whole);
            s3 *s = st->be;
            req q;
            req_init(&q, st, "DELETE", up->key);
            (void)do_req(st, s->curl, &q);
            buf_free(&q.reply);
        } else {
            o->bytes = (uint64_t)size;
            snprintf(o->etag, sizeof o->etag, "%s", hetag);
        }
    }
    s3up_free(u);
    up->be = NULL;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Download, list, delete                                                   */
/* ------------------------------------------------------------------------ */

typedef struct get_ctx {
    wcache_store *st;
    wcache_snap_sink_fn sink;
    void *ud;
    EVP_MD_CTX *md5;
    uint64_t off, total;
} get_ctx;

static int get_sink(const void *p, size_t n, void *ud)
{
    get_ctx *g = ud;
    int rc = g->sink(p, n, g->ud);
    if (rc != WCACHE_OK)
        return rc;
    EVP_DigestUpdate(g->md5, p, n);
    g->off += n;
    if (wci_store_progress(g->st, g->off, g->total))
        return wci_store_err(g->st, WCACHE_ESTOPPED, "s3: download stopped by progress");
    return WCACHE_OK;
}

static int is_md5_etag(const char *e)
{
    if (strlen(e) != 32)
        return 0;
    for (; *e; e++)
        if (!((*e >= '0' && *e <= '9') || (*e >= 'a' && *e <= 'f') || (*e >= 'A' && *e <= 'F')))
            return 0;
    return 1;
}

static int s3_get(wcache_store *st, const char *key, wcache_snap_sink_fn sink, void *ud,
                  wci_store_halt *halt, wci_store_obj *o)
{
    s3 *s = st->be;
    get_ctx g = {st, sink, ud, EVP_MD_CTX_new(), 0, 0};
    if (!g.md5 || EVP_DigestInit_ex(g.md5, EVP_md5(), NULL) != 1) {
        EVP_MD_CTX_free(g.md5);
        return WCACHE_ENOMEM;
    }
    char etag[WCI_STORE_ETAG_MAX] = "";
    int64_t total = -1;
    int max = wci_store_max_retries(st);
    int rc = WCACHE_OK;
    char range[64];
    for (int attempt = 0;; attempt++) {
        req q;
        req_init(&q, st, "GET", key);
        q.sink = get_sink;
        q.sink_ud = &g;
        q.halt = halt;
        if (g.off) {
            snprintf(range, sizeof range, "bytes=%llu-", (unsigned long long)g.off);
            q.range = range;
            q.if_match = etag;
            q.resume_from = g.off;
            q.resume_etag = etag;
        }
        uint64_t before = g.off;
        CURLcode cc = perform(st, s->curl, &q);
        int retry = 0;
        if (wci_store_halted(halt)) {
            q.tries = attempt + 1;
            rc = stopped(st, &q);
        } else if (cc == CURLE_OUT_OF_MEMORY) {
            rc = WCACHE_ENOMEM;
        } else if (q.sink_rc != WCACHE_OK) {
            rc = q.sink_rc;
        } else if (q.status >= 200 && q.status < 300) {
            /* The first answer fixes the object: size and ETag. */
            if (before == 0) {
                total = q.status == 206 ? q.range_total : q.content_length;
                snprintf(etag, sizeof etag, "%s", q.etag);
                g.total = total > 0 ? (uint64_t)total : 0;
            } else if (q.bad_resume || q.status != 206 || q.range_start != (int64_t)before ||
                       (q.etag[0] && etag[0] && strcmp(q.etag, etag))) {
                rc = wci_store_err(st, WCACHE_ECORRUPT,
                                   "s3: GET s3://%s/%s: the object changed during the download "
                                   "(resuming at byte %llu got another range or ETag)",
                                   st->bucket, key, (unsigned long long)before);
            }
            if (rc == WCACHE_OK && cc != CURLE_OK)
                retry = curl_retryable(cc);
            else if (rc == WCACHE_OK && total >= 0 && g.off < (uint64_t)total)
                retry = 1; /* the server closed early: a truncated body */
            if (rc == WCACHE_OK && !retry && cc != CURLE_OK)
                rc = wci_store_err(st, WCACHE_ECURL, "s3: GET s3://%s/%s: %s", st->bucket, key,
                                   curl_easy_strerror(cc));
        } else if (cc != CURLE_OK) {
            retry = curl_retryable(cc);
            if (!retry)
                rc = wci_store_err(st, WCACHE_ECURL, "s3: GET s3://%s/%s: %s", st->bucket, key,
                                   curl_easy_strerror(cc));
        } else if (q.status == 412 || (q.status == 416 && before)) {
            /* 416: a resume past the end, which the object we were reading
             * had not reached; a server that ignores If-Match says so. */
            rc = wci_store_err(st, WCACHE_ECORRUPT,
                               "s3: GET s3://%s/%s: the object changed during the download "
                               "(HTTP %ld on resuming at byte %llu)",
                               st->bucket, key, q.status, (unsigned long long)before);
        } else {
            retry = wci_store_status_retryable(q.status);
            if (!retry)
                rc = http_error(st, &q);
        }
        int64_t after = q.retry_after_ms;
        if (rc == WCACHE_OK && retry && attempt >= max) {
            rc =
                cc != CURLE_OK
                    ? wci_store_err(st, WCACHE_ECURL, "s3: GET s3://%s/%s: %s (after %d tries)",
                                    st->bucket, key, curl_easy_strerror(cc), attempt + 1)
                : q.status >= 300 ? http_error(st, &q)
                                  : wci_store_err(st, WCACHE_ECURL,
                                                  "s3: GET s3://%s/%s: truncated at %llu "
                                                  "of %lld bytes (after %d tries)",
                                                  st->bucket, key, (unsigned long long)g.off,
                                                  (long long)total, attempt + 1);
        }
        buf_free(&q.reply);
        if (rc != WCACHE_OK || !retry)
            break;
        /* Progress made: a fresh budget of retries for the rest. */
        if (g.off > before)
            attempt = 0;
        wci_store_log(st, WCACHE_LOG_INFO, "s3: GET s3://%s/%s broke at byte %llu; resuming",
                      st->bucket, key, (unsigned long long)g.off);
        if (wci_store_backoff(st, halt, attempt + 1, after) != WCACHE_OK) {
            q.tries = attempt + 1;
            rc = stopped(st, &q);
            break;
        }
    }
    unsigned char d[16];
    unsigned dl = 0;
    char hx[33];
    EVP_DigestFinal_ex(g.md5, d, &dl);
    EVP_MD_CTX_free(g.md5);
    hexstr(d, 16, hx);
    if (rc == WCACHE_OK && total >= 0 && g.off != (uint64_t)total)
        rc = wci_store_err(st, WCACHE_ECORRUPT, "s3: GET s3://%s/%s: got %llu of %lld bytes",
                           st->bucket, key, (unsigned long long)g.off, (long long)total);
    if (rc == WCACHE_OK && is_md5_etag(etag) && strcasecmp(etag, hx))
        rc = wci_store_err(st, WCACHE_ECORRUPT,
                           "s3: GET s3://%s/%s: content MD5 %s does not match ETag %s",
                           st->bucket, key, hx, etag);
    if (rc == WCACHE_OK) {
        o->bytes = g.off;
        snprintf(o->etag, sizeof o->etag, "%s", etag);
    }
    return rc;
}

typedef struct list_ctx {
    wci_store_list_cb cb;
    void *ud;
} list_ctx;

static int list_entry(const wci_s3_entry *e, void *ud)
{
    list_ctx *l = ud;
    wci_store_obj o;
    memset(&o, 0, sizeof o);
    o.bytes = (uint64_t)e->bytes;
    o.mtime_ns = e->mtime_ns;
    snprintf(o.etag, sizeof o.etag, "%s", e->etag);
    return l->cb(e->key, strlen(e->key), &o, l->ud);
}

static int s3_list(wcache_store *st, const char *prefix, wci_store_list_cb cb, void *ud)
{
    s3 *s = st->be;
    char token[1024] = "";
    list_ctx l = {cb, ud};
    int rc = WCACHE_OK;
    for (int page = 0; rc == WCACHE_OK; page++) {
        buf qs = {st, NULL, 0, 0, 0};
        const char *kv[] = {
            "continuation-token", token[0] ? token : NULL, "list-type", "2", "prefix", prefix};
        if (query(&qs, kv, 3))
            return WCACHE_ENOMEM;
        req q;
        req_init(&q, st, "GET", NULL);
        q.query = qs.p;
        rc = do_req(st, s->curl, &q);
        wci_s3_reply r;
        if (rc == WCACHE_OK) {
            rc = wci_s3_parse(q.reply.p, q.reply.n, &r, list_entry, &l);
            if (rc == WCACHE_ESTOPPED) {
                rc = WCACHE_OK;
                r.truncated = 0;
            } else if (rc != WCACHE_OK) {
                rc = wci_store_err(st, WCACHE_ECORRUPT,
                                   "s3: list s3://%s/%s: reply is not a ListObjectsV2 result",
                                   st->bucket, prefix);
            } else if (strcmp(r.root, "ListBucketResult")) {
                rc = wci_store_err(st, WCACHE_ECORRUPT,
                                   "s3: list s3://%s/%s: unexpected <%s> reply", st->bucket,
                                   prefix, r.root);
            }
        }
        buf_free(&q.reply);
        buf_free(&qs);
        if (rc != WCACHE_OK || !r.truncated)
            break;
        if (!r.next_token[0] || !strcmp(r.next_token, token))
            return wci_store_err(st, WCACHE_ECORRUPT,
                                 "s3: list s3://%s/%s: truncated page without a new token",
                                 st->bucket, prefix);
        snprintf(token, sizeof token, "%s", r.next_token);
    }
    return rc;
}

static int s3_del(wcache_store *st, const char *key)
{
    s3 *s = st->be;
    req q;
    req_init(&q, st, "DELETE", key);
    int rc = do_req(st, s->curl, &q);
    if (rc == WCACHE_ENOTFOUND)
        rc = WCACHE_OK;
    buf_free(&q.reply);
    return rc;
}

const wci_store_ops wci_store_s3_ops = {
    "s3",        s3_open,    s3_close, s3up_begin, s3up_write,
    s3up_commit, s3up_abort, s3_get,   s3_list,    s3_del,
};
