/*
 * store_gcs.c - the gs:// snapshot store backend: Google Cloud Storage over
 * libcurl, behind the wci_store_ops vtable of store.h.
 *
 * Two ways in, chosen by the credentials at open:
 *  - the JSON API with an OAuth2 bearer token (opts->gcs_token_file, a file
 *    re-read whenever it changes so that a sidecar can refresh it, else
 *    $GOOGLE_OAUTH_ACCESS_TOKEN; no token: anonymous, for public buckets);
 *  - the XML API with HMAC keys (opts->gcs_hmac_access_id/secret, else
 *    $GCS_HMAC_ACCESS_ID / $GCS_HMAC_SECRET), signed by libcurl's own SigV4
 *    code in its GOOG4-HMAC-SHA256 form; its XML replies are S3's, read by
 *    store_s3_xml.c.
 * Endpoint: opts->endpoint, else $STORAGE_EMULATOR_HOST (the variable
 * Google's clients honour), else https://storage.googleapis.com.
 *
 * Uploads stream: bytes fill one chunk buffer (part_bytes rounded up to the
 * 256 KiB unit GCS requires, 8 MiB by default); an object that fits in it
 * goes up in one simple upload, a larger one through a resumable session
 * (both APIs use the same session protocol) chunk by chunk.  A chunk that
 * fails is not blindly re-sent: the session is asked how far it got (the
 * 308's Range) and the rest is sent from there, so a reset, a 5xx or a
 * server that kept only part of a chunk all resume without loss.  At commit
 * the stored size and CRC32C (the object resource, or x-goog-hash) must
 * equal what was sent, else the object is deleted again.  Downloads are
 * ranged GETs pinned to the first answer's generation, resumed where a
 * broken transfer stopped, and checked against the size and CRC32C.
 *
 * Never logged or put in an errbuf: the token, the HMAC secret, and session
 * URIs (an upload_id is a credential for its session).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "alloc.h"
#include "http.h"
#include "store.h"
#include "store_gcs.h"
#include "store_s3.h"

#define GCS_DEFAULT_ENDPOINT "https://storage.googleapis.com"
#define GCS_UNIT (256u * 1024u)
#define GCS_DEFAULT_CHUNK (8u * 1024u * 1024u)
#define GCS_MAX_REPLY (4u * 1024u * 1024u) /* JSON/XML answers we keep */
#define GCS_MAX_URL (64u * 1024u)
#define GCS_TOKEN_MAX 8192

typedef struct gcs_be {
    char *endpoint; /* no trailing '/' */
    int xml;        /* 1: XML API with HMAC keys; 0: JSON API */
    char *token;    /* bearer token, "" anonymous */
    char *token_file;
    struct timespec token_mtime;
    char *userpwd; /* "ID:SECRET" for libcurl's signer */
    CURL *curl;    /* reused: keeps the connection */
    size_t chunk;  /* resumable chunk bytes, a multiple of GCS_UNIT */
} gcs_be;

/* ------------------------------------------------------------------------ */
/* CRC32C (Castagnoli), the checksum GCS keeps for every object             */
/* ------------------------------------------------------------------------ */

static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

/* Slicing-by-8: a snapshot is checksummed while it uploads, so this sits
 * on the writer's path. */
uint32_t wci_crc32c(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = buf;
    crc = ~crc;
    while (len >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        uint32_t hi =
            (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        crc = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^
              crc_tab[5][(lo >> 16) & 0xff] ^ crc_tab[4][lo >> 24] ^ crc_tab[3][hi & 0xff] ^
              crc_tab[2][(hi >> 8) & 0xff] ^ crc_tab[1][(hi >> 16) & 0xff] ^
              crc_tab[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ------------------------------------------------------------------------ */
/* Replies: parsing what GCS sends back (also the fuzz target's entry)      */
/* ------------------------------------------------------------------------ */

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* The base64 of a big-endian CRC32C ("AAAAAA==") into *crc. */
int wci_gcs_parse_crc(const char *s, size_t len, uint32_t *crc)
{
    if (len != 8 || s[6] != '=' || s[7] != '=')
        return -1;
    uint64_t v = 0;
    for (int i = 0; i < 6; i++) {
        int d = b64val((unsigned char)s[i]);
        if (d < 0)
            return -1;
        v = v << 6 | (uint64_t)d;
    }
    if (v & 0xf) /* 36 bits hold 32: the last 4 must be zero */
        return -1;
    *crc = (uint32_t)(v >> 4);
    return 0;
}

/* The crc32c= item of an x-goog-hash header value. */
int wci_gcs_hash_crc(const char *v, uint32_t *crc)
{
    const char *p = v;
    while ((p = strstr(p, "crc32c=")) != NULL) {
        if (p == v || p[-1] == ',' || p[-1] == ' ') {
            p += 7;
            size_t n = strcspn(p, ", \r\n");
            return wci_gcs_parse_crc(p, n, crc);
        }
        p += 7;
    }
    return -1;
}

static uint64_t json_u64(json_t *v, int *ok)
{
    /* GCS writes 64-bit numbers as decimal strings. */
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) > 20) {
        *ok = 0;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (*end || errno || s[0] == '-')
        *ok = 0;
    return n;
}

/* One object resource: name, size, crc32c, etag, updated. */
static int parse_object(json_t *o, wci_gcs_object *out)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(o))
        return -1;
    json_t *name = json_object_get(o, "name");
    if (!json_is_string(name) || !json_string_length(name))
        return -1;
    out->name = json_string_value(name);
    out->name_len = json_string_length(name);
    int ok = 1;
    out->bytes = json_u64(json_object_get(o, "size"), &ok);
    if (!ok)
        return -1;
    const char *crc = json_string_value(json_object_get(o, "crc32c"));
    if (crc) {
        if (wci_gcs_parse_crc(crc, strlen(crc), &out->crc32c) != 0)
            return -1;
        out->has_crc = 1;
    }
    const char *etag = json_string_value(json_object_get(o, "etag"));
    out->etag = etag ? etag : "";
    const char *updated = json_string_value(json_object_get(o, "updated"));
    out->mtime_ns = updated ? wci_s3_parse_time(updated) : 0;
    ok = 1;
    json_t *gen = json_object_get(o, "generation");
    if (gen)
        out->generation = json_u64(gen, &ok);
    return ok ? 0 : -1;
}

int wci_gcs_parse_object(const char *buf, size_t len, wci_gcs_object *out, void **hold)
{
    *hold = NULL;
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return -1;
    if (parse_object(j, out) != 0) {
        json_decref(j);
        return -1;
    }
    *hold = j;
    return 0;
}

int wci_gcs_parse_list(const char *buf, size_t len, wci_gcs_list_cb cb, void *ud, char *next,
                       size_t next_len)
{
    next[0] = 0;
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return -1;
    int rc = 0;
    json_t *items = json_object_get(j, "items");
    json_t *tok = json_object_get(j, "nextPageToken");
    if (!json_is_object(j) || (items && !json_is_array(items)) ||
        (tok && (!json_is_string(tok) || json_string_length(tok) + 1 > next_len ||
                 !json_string_length(tok))))
        rc = -1;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        if (rc)
            break;
        wci_gcs_object o;
        if (parse_object(it, &o) != 0)
            rc = -1;
        else if (cb(&o, ud))
            rc = 1;
    }
    if (rc == 0 && tok)
        memcpy(next, json_string_value(tok), json_string_length(tok) + 1);
    json_decref(j);
    return rc;
}

void wci_gcs_release(void *hold)
{
    json_decref(hold);
}

/* The message of a JSON error body: {"error":{"code":..,"message":..,
 * "errors":[{"reason":..}]}}; "" when it is not one. */
void wci_gcs_error_text(const char *buf, size_t len, char *out, size_t out_len)
{
    out[0] = 0;
    json_t *j = json_loadb(buf, len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *reason = json_string_value(
        json_object_get(json_array_get(json_object_get(e, "errors"), 0), "reason"));
    if (msg || reason)
        snprintf(out, out_len, "%s%s%.300s", reason ? reason : "", reason && msg ? ": " : "",
                 msg ? msg : "");
    json_decref(j);
}

/* The XML API's replies are S3's ListBucketResult and Error: store_s3's
 * expat reader serves both. */
typedef struct xml_list {
    wci_gcs_list_cb cb;
    void *ud;
} xml_list;

static int xml_entry(const wci_s3_entry *e, void *ud)
{
    xml_list *l = ud;
    wci_gcs_object o;
    memset(&o, 0, sizeof o);
    o.name = e->key;
    o.name_len = strlen(e->key);
    o.bytes = (uint64_t)e->bytes; /* the reader refuses a negative Size */
    o.mtime_ns = e->mtime_ns;
    o.etag = e->etag;
    return l->cb(&o, l->ud);
}

int wci_gcs_parse_xml_list(const char *buf, size_t len, wci_gcs_list_cb cb, void *ud,
                           char *next, size_t next_len)
{
    next[0] = 0;
    wci_s3_reply r;
    xml_list l = {cb, ud};
    int rc = wci_s3_parse(buf, len, &r, xml_entry, &l);
    if (rc == WCACHE_ESTOPPED)
        return 1;
    if (rc != WCACHE_OK || strcmp(r.root, "ListBucketResult") != 0)
        return -1;
    if (r.truncated) {
        size_t n = strlen(r.next_token);
        if (!n || n + 1 > next_len)
            return -1; /* more pages and no way to ask for them */
        memcpy(next, r.next_token, n + 1);
    }
    return 0;
}

void wci_gcs_xml_error_text(const char *buf, size_t len, char *out, size_t out_len)
{
    out[0] = 0;
    wci_s3_reply r;
    if (wci_s3_parse(buf, len, &r, NULL, NULL) == WCACHE_OK && strcmp(r.root, "Error") == 0 &&
        (r.code[0] || r.message[0]))
        snprintf(out, out_len, "%.80s%s%.300s", r.code, r.code[0] && r.message[0] ? ": " : "",
                 r.message);
}

/* ------------------------------------------------------------------------ */
/* HTTP                                                                     */
/* ------------------------------------------------------------------------ */

/* Text is built in http.c's bounded buffer; a failed append (no memory,
 * or over max) sets over, so a URL is built first and checked once. */
static void sb_add(wci_rbuf *b, const char *s, size_t n)
{
    if (n && !b->over && wci_rbuf_write((char *)s, 1, n, b) != n)
        b->over = 1;
}

static void sb_str(wci_rbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

typedef struct gcs_req {
    const char *method;
    const char *url;
    int auth; /* send the credentials (session URIs need none) */
    const char *ctype;
    const char *crange; /* Content-Range */
    const char *range;  /* Range */
    const char *extra;  /* one more header line */
    const void *body;   /* with body_len; has_body sends even 0 bytes */
    size_t body_len;
    int has_body;
    /* Media: 2xx bodies go here instead of the reply buffer, once the
     * answer is checked to start at byte from (with range set: a 206 whose
     * Content-Range begins there). */
    int (*sink)(const void *buf, size_t len, void *ud);
    void *sink_ud;
    uint64_t from;
    wci_store_halt *halt; /* NULL, or the stop of a transfer on our thread */
} gcs_req;

typedef struct gcs_resp {
    long status;
    CURLcode cc;
    wci_rbuf body; /* a JSON or XML answer, or an error body */
    int sink_rc;
    int bad_range; /* the answer is not the range asked for: not sunk */
    int checked;   /* the range was checked (first body bytes) */
    uint64_t got;  /* media bytes given to the sink */
    char location[4096];
    char range[96];  /* the 308's Range */
    char crange[96]; /* a 206's Content-Range */
    char hash[256];  /* x-goog-hash, the items joined */
    char gen[32];    /* x-goog-generation */
    char stored[32]; /* x-goog-stored-content-length */
    int64_t retry_after_ms;
} gcs_resp;

static void resp_reset(gcs_resp *r, const wci_alloc *a)
{
    wci_rbuf b = r->body; /* its block is reused */
    memset(r, 0, sizeof *r);
    b.len = 0;
    b.over = 0;
    if (b.p)
        b.p[0] = 0;
    b.al = a;
    b.max = GCS_MAX_REPLY;
    r->body = b;
}

static void resp_free(gcs_resp *r)
{
    wci_free(r->body.al, r->body.p);
    memset(&r->body, 0, sizeof r->body);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    gcs_resp *r = ud;
    size_t len = size * n;
    const char *colon = memchr(p, ':', len);
    if (!colon)
        return len;
    size_t kl = (size_t)(colon - p);
    const char *v = colon + 1;
    size_t vl = len - kl - 1;
    while (vl && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
#define HDR(name, dst)                                            \
    if (kl == sizeof name - 1 && strncasecmp(p, name, kl) == 0) { \
        if (vl < sizeof(dst))                                     \
            memcpy(dst, v, vl), dst[vl] = 0;                      \
        return len;                                               \
    }
    HDR("location", r->location)
    HDR("range", r->range)
    HDR("content-range", r->crange)
    HDR("x-goog-generation", r->gen)
    HDR("x-goog-stored-content-length", r->stored)
#undef HDR
    if (kl == 11 && strncasecmp(p, "x-goog-hash", 11) == 0) {
        size_t have = strlen(r->hash);
        if (have + vl + 2 < sizeof r->hash) {
            if (have)
                r->hash[have++] = ',';
            memcpy(r->hash + have, v, vl);
            r->hash[have + vl] = 0;
        }
    } else if (kl == 11 && strncasecmp(p, "retry-after", 11) == 0) {
        long s = strtol(v, NULL, 10); /* an HTTP date counts as "soon" */
        r->retry_after_ms = s > 0 && s < 3600 ? s * 1000 : 0;
    }
    return len;
}

typedef struct gcs_io {
    const gcs_req *q;
    gcs_resp *r;
    CURL *e;
} gcs_io;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    gcs_io *io = ud;
    size_t len = size * n;
    if (!io->r->status)
        curl_easy_getinfo(io->e, CURLINFO_RESPONSE_CODE, &io->r->status);
    if (io->q->sink && io->r->status / 100 == 2) {
        if (!io->r->checked) {
            /* Before the sink sees a byte: a server that ignored the Range
             * (200) or answered another one would splice wrong bytes in. */
            unsigned long long a = 0, b, t;
            io->r->checked = 1;
            if (io->q->range &&
                (io->r->status != 206 ||
                 sscanf(io->r->crange, "bytes %llu-%llu/%llu", &a, &b, &t) != 3 ||
                 a != io->q->from)) {
                io->r->bad_range = 1;
                return 0;
            }
        }
        int rc = io->q->sink(p, len, io->q->sink_ud);
        if (rc) {
            io->r->sink_rc = rc;
            return 0;
        }
        io->r->got += len;
        return len;
    }
    return wci_rbuf_write(p, 1, len, &io->r->body);
}

/* One request, no retries.  Fills r; returns 0 when an HTTP answer came. */
static int perform(wcache_store *st, const gcs_req *q, gcs_resp *r)
{
    gcs_be *be = st->be;
    CURL *e = be->curl;
    resp_reset(r, &st->a);
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, q->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    long cto = st->o.connect_timeout_ms > 0 ? (long)st->o.connect_timeout_ms : 10000L;
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, cto);
    /* A transfer that makes no progress for timeout_ms fails (and is
     * retried), however long a healthy one takes. */
    long idle = st->o.timeout_ms > 0 ? (long)((st->o.timeout_ms + 999) / 1000) : 30L;
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, idle);
    if (st->o.tls_insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (st->o.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, st->o.ca_file);
    if (st->o.ca_path)
        curl_easy_setopt(e, CURLOPT_CAPATH, st->o.ca_path);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "libwatchcache");
    struct curl_slist *h = NULL, *t;
    char line[GCS_TOKEN_MAX + 64];
    int bad = 0;
#define ADD(s)                       \
    do {                             \
        t = curl_slist_append(h, s); \
        if (!t)                      \
            bad = 1;                 \
        else                         \
            h = t;                   \
    } while (0)
    ADD("Expect:");
    if (q->auth && !be->xml && be->token[0]) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", be->token);
        ADD(line);
    }
    if (q->auth && be->xml) {
        /* libcurl 7.88's signer hashes no streamed or absent body: say
         * the payload is unsigned, as GCS permits. */
        ADD("x-goog-content-sha256: UNSIGNED-PAYLOAD");
        curl_easy_setopt(e, CURLOPT_USERPWD, be->userpwd);
        curl_easy_setopt(e, CURLOPT_AWS_SIGV4, "goog:goog:auto:storage");
    }
    snprintf(line, sizeof line, "Content-Type: %s", q->ctype ? q->ctype : "");
    if (q->ctype || q->has_body)
        ADD(q->ctype ? line : "Content-Type:");
    if (q->crange) {
        snprintf(line, sizeof line, "Content-Range: %s", q->crange);
        ADD(line);
    }
    if (q->range) {
        snprintf(line, sizeof line, "Range: %s", q->range);
        ADD(line);
    }
    if (q->extra)
        ADD(q->extra);
#undef ADD
    explicit_bzero(line, sizeof line);
    if (bad) {
        curl_slist_free_all(h);
        return -1;
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, q->method);
    if (q->has_body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body_len ? q->body : "");
    } else if (strcmp(q->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    }
    gcs_io io = {q, r, e};
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &io);
    wci_store_halt_curl(e, q->halt);
    r->cc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    /* The handle keeps a pointer to the list and to the signing secret. */
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    return r->cc == CURLE_OK ? 0 : -1;
}

/* Transient below HTTP: resets, timeouts, refused or dropped connections. */
static int cc_transient(CURLcode cc)
{
    /* An if chain, not a switch: -Wswitch-enum would want all ~100 codes. */
    return cc == CURLE_COULDNT_CONNECT || cc == CURLE_OPERATION_TIMEDOUT ||
           cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR || cc == CURLE_GOT_NOTHING ||
           cc == CURLE_PARTIAL_FILE || cc == CURLE_HTTP2 || cc == CURLE_HTTP2_STREAM ||
           cc == CURLE_COULDNT_RESOLVE_HOST;
}

static int retryable(const gcs_resp *r)
{
    if (r->sink_rc)
        return 0;
    if (r->cc != CURLE_OK)
        return cc_transient(r->cc);
    return wci_store_status_retryable(r->status);
}

/* The error of a failed request, naming bucket, object and status. */
static int fail(wcache_store *st, const gcs_resp *r, const char *what, const char *key)
{
    gcs_be *be = st->be;
    if (r->sink_rc)
        return r->sink_rc;
    if (r->cc != CURLE_OK)
        return wci_store_err(st, WCACHE_ECURL, "gcs: %s gs://%s/%.300s: %s", what, st->bucket,
                             key, curl_easy_strerror(r->cc));
    char detail[400] = "";
    if (!be->xml)
        wci_gcs_error_text(r->body.p, r->body.len, detail, sizeof detail);
    else if (r->body.len)
        wci_gcs_xml_error_text(r->body.p, r->body.len, detail, sizeof detail);
    const char *hint = "";
    if (r->status == 401 || r->status == 403)
        hint = be->xml ? " (check the HMAC access id and secret)"
               : be->token[0] == 0
                   ? " (no token: set GOOGLE_OAUTH_ACCESS_TOKEN or gcs_token_file)"
               : r->status == 401 ? " (the bearer token was refused: expired or wrong?)"
                                  : " (the token's account lacks permission)";
    int code = r->status == 404 ? WCACHE_ENOTFOUND : WCACHE_EHTTP;
    return wci_store_err(st, code, "gcs: %s gs://%s/%.300s: HTTP %ld%s%s%s", what, st->bucket,
                         key, r->status, detail[0] ? " " : "", detail, hint);
}

/* Re-read the token file when it changed, so a refreshed token is used. */
static int load_token(wcache_store *st)
{
    gcs_be *be = st->be;
    if (!be->token_file)
        return WCACHE_OK;
    struct stat sb;
    if (stat(be->token_file, &sb) != 0)
        return wci_store_err(st, WCACHE_ESYS, "gcs: token file %.300s: %s", be->token_file,
                             strerror(errno));
    if (be->token && sb.st_mtim.tv_sec == be->token_mtime.tv_sec &&
        sb.st_mtim.tv_nsec == be->token_mtime.tv_nsec)
        return WCACHE_OK;
    FILE *f = fopen(be->token_file, "re");
    if (!f)
        return wci_store_err(st, WCACHE_ESYS, "gcs: token file %.300s: %s", be->token_file,
                             strerror(errno));
    char buf[GCS_TOKEN_MAX];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    int ok = n > 0 && n < sizeof buf;
    for (size_t i = 0; ok && i < n; i++)
        ok = buf[i] > 0x20 && buf[i] < 0x7f;
    if (!ok) {
        explicit_bzero(buf, sizeof buf);
        return wci_store_err(st, WCACHE_EINVAL,
                             "gcs: token file %.300s does not hold one printable token",
                             be->token_file);
    }
    char *tok = wci_memdup(&st->a, buf, n);
    explicit_bzero(buf, sizeof buf);
    if (!tok)
        return WCACHE_ENOMEM;
    if (be->token) {
        explicit_bzero(be->token, strlen(be->token));
        wci_free(&st->a, be->token);
    }
    be->token = tok;
    be->token_mtime = sb.st_mtim;
    return WCACHE_OK;
}

/* A request retried with backoff and jitter while it fails transiently. */
static int request(wcache_store *st, const gcs_req *q, gcs_resp *r, const char *what,
                   const char *key)
{
    int max = wci_store_max_retries(st);
    for (int attempt = 0;; attempt++) {
        int rc = load_token(st);
        if (rc != WCACHE_OK)
            return rc;
        perform(st, q, r);
        if (r->cc == CURLE_OK && r->status / 100 == 2)
            return WCACHE_OK;
        if (!retryable(r) || attempt >= max)
            return fail(st, r, what, key);
        wci_store_log(st, WCACHE_LOG_INFO, "gcs: %s gs://%s/%.300s: %s %ld, retry %d of %d",
                      what, st->bucket, key, r->cc ? curl_easy_strerror(r->cc) : "HTTP",
                      r->status, attempt + 1, max);
        (void)wci_store_backoff(st, NULL, attempt + 1, r->retry_after_ms);
    }
}

/* ------------------------------------------------------------------------ */
/* URLs                                                                     */
/* ------------------------------------------------------------------------ */

/* RFC 3986: unreserved bytes as they are, the rest %XX; keep_slash for
 * XML-API paths, where '/' separates nothing but must stay as sent. */
static void sb_enc(wci_rbuf *b, const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            sb_add(b, (const char *)&c, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            sb_add(b, e, 3);
        }
    }
}

/* The URL of an object: JSON  .../storage/v1/b/B/o/NAME (kind "o"),
 * .../upload/storage/v1/b/B/o (kind "u"); XML  .../B/NAME. */
static char *obj_url(wcache_store *st, int upload, const char *key)
{
    gcs_be *be = st->be;
    wci_rbuf b = {.al = &st->a, .max = GCS_MAX_URL};
    sb_str(&b, be->endpoint);
    if (be->xml) {
        sb_str(&b, "/");
        sb_enc(&b, st->bucket, 0);
        sb_str(&b, "/");
        sb_enc(&b, key, 1);
    } else {
        sb_str(&b, upload ? "/upload/storage/v1/b/" : "/storage/v1/b/");
        sb_enc(&b, st->bucket, 0);
        sb_str(&b, "/o");
        if (!upload) {
            sb_str(&b, "/");
            sb_enc(&b, key, 0);
        }
    }
    if (b.over) {
        wci_free(&st->a, b.p);
        return NULL;
    }
    return b.p;
}

/* ------------------------------------------------------------------------ */
/* Open and close                                                           */
/* ------------------------------------------------------------------------ */

static void be_free(wcache_store *st, gcs_be *be)
{
    if (!be)
        return;
    if (be->curl)
        curl_easy_cleanup(be->curl);
    if (be->token) {
        explicit_bzero(be->token, strlen(be->token));
        wci_free(&st->a, be->token);
    }
    if (be->userpwd) {
        explicit_bzero(be->userpwd, strlen(be->userpwd));
        wci_free(&st->a, be->userpwd);
    }
    wci_free(&st->a, be->token_file);
    wci_free(&st->a, be->endpoint);
    wci_free(&st->a, be);
    curl_global_cleanup();
}

static int pick_endpoint(wcache_store *st, gcs_be *be)
{
    const char *ep = st->o.endpoint;
    const char *emu = getenv("STORAGE_EMULATOR_HOST");
    char tmp[512];
    if (!ep && emu && *emu) {
        /* Google's clients accept "host:port" there and add http://. */
        if (!strstr(emu, "://")) {
            snprintf(tmp, sizeof tmp, "http://%.400s", emu);
            ep = tmp;
        } else {
            ep = emu;
        }
    }
    if (!ep)
        ep = GCS_DEFAULT_ENDPOINT;
    if (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0)
        return wci_store_err(st, WCACHE_EINVAL,
                             "gcs: endpoint '%.200s' must begin with http:// or https://", ep);
    size_t n = strlen(ep);
    while (n && ep[n - 1] == '/')
        n--;
    be->endpoint = wci_memdup(&st->a, ep, n);
    return be->endpoint ? WCACHE_OK : WCACHE_ENOMEM;
}

static int gcs_open(wcache_store *st)
{
    if (!st->bucket || !st->bucket[0])
        return wci_store_err(st, WCACHE_EINVAL, "gcs: the URL names no bucket");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return wci_store_err(st, WCACHE_ECURL, "gcs: curl_global_init failed");
    gcs_be *be = wci_calloc(&st->a, 1, sizeof *be);
    if (!be) {
        curl_global_cleanup();
        return WCACHE_ENOMEM;
    }
    st->be = be;
    int rc = pick_endpoint(st, be);
    if (rc != WCACHE_OK)
        return rc;
    be->curl = curl_easy_init();
    if (!be->curl)
        return WCACHE_ENOMEM;
    uint64_t chunk = st->o.part_bytes ? st->o.part_bytes : GCS_DEFAULT_CHUNK;
    if (chunk > (1u << 30))
        chunk = 1u << 30;
    be->chunk = (size_t)((chunk + GCS_UNIT - 1) / GCS_UNIT * GCS_UNIT);

    const char *id = st->o.gcs_hmac_access_id, *secret = st->o.gcs_hmac_secret;
    if (!id && !secret) {
        id = getenv("GCS_HMAC_ACCESS_ID");
        secret = getenv("GCS_HMAC_SECRET");
    }
    if ((id && *id) || (secret && *secret)) {
        if (!id || !*id || !secret || !*secret || strchr(id, ':'))
            return wci_store_err(st, WCACHE_EINVAL,
                                 "gcs: HMAC keys need both an access id (without ':') and a "
                                 "secret");
        size_t il = strlen(id), sl = strlen(secret);
        be->userpwd = wci_malloc(&st->a, il + sl + 2);
        if (!be->userpwd)
            return WCACHE_ENOMEM;
        memcpy(be->userpwd, id, il);
        be->userpwd[il] = ':';
        memcpy(be->userpwd + il + 1, secret, sl + 1);
        be->xml = 1;
        be->token = wci_store_strdup(st, "");
        return be->token ? WCACHE_OK : WCACHE_ENOMEM;
    }
    if (st->o.gcs_token_file) {
        be->token_file = wci_store_strdup(st, st->o.gcs_token_file);
        if (!be->token_file)
            return WCACHE_ENOMEM;
        return load_token(st);
    }
    const char *tok = getenv("GOOGLE_OAUTH_ACCESS_TOKEN");
    be->token = wci_store_strdup(st, tok ? tok : "");
    if (!be->token)
        return WCACHE_ENOMEM;
    for (const char *p = be->token; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return wci_store_err(st, WCACHE_EINVAL,
                                 "gcs: $GOOGLE_OAUTH_ACCESS_TOKEN holds a non-printable byte");
    if (!be->token[0])
        wci_store_log(st, WCACHE_LOG_INFO,
                      "gcs: no token and no HMAC keys: requests are anonymous");
    return WCACHE_OK;
}

static void gcs_close(wcache_store *st)
{
    be_free(st, st->be);
    st->be = NULL;
}

/* ------------------------------------------------------------------------ */
/* Uploads                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct gcs_up {
    unsigned char *buf; /* bytes not yet confirmed stored, from offset base */
    size_t len;
    uint64_t base;  /* object offset of buf[0] */
    char *session;  /* the session URI, NULL before the first chunk */
    uint32_t crc;   /* CRC32C of every byte written */
    uint64_t total; /* bytes written */
    gcs_resp r;
} gcs_up;

static int gcs_up_begin(wcache_store_upload *up)
{
    wcache_store *st = up->st;
    gcs_be *be = st->be;
    gcs_up *u = wci_calloc(&st->a, 1, sizeof *u);
    if (!u)
        return WCACHE_ENOMEM;
    u->buf = wci_malloc(&st->a, be->chunk);
    if (!u->buf) {
        wci_free(&st->a, u);
        return WCACHE_ENOMEM;
    }
    u->r.body.al = &st->a;
    u->r.body.max = GCS_MAX_REPLY;
    up->be = u;
    return WCACHE_OK;
}

static void up_free(wcache_store_upload *up)
{
    gcs_up *u = up->be;
    if (!u)
        return;
    wcache_store *st = up->st;
    resp_free(&u->r);
    wci_free(&st->a, u->session);
    wci_free(&st->a, u->buf);
    wci_free(&st->a, u);
    up->be = NULL;
}

/* Where an upload begins: JSON  .../upload/storage/v1/b/B/o?name=N&
 * uploadType=TYPE; XML  .../B/N (the type is in the method and headers). */
static char *upload_url(wcache_store *st, const char *key, const char *type)
{
    gcs_be *be = st->be;
    char *url = obj_url(st, 1, key);
    if (!url || be->xml)
        return url;
    wci_rbuf b = {.al = &st->a, .max = GCS_MAX_URL};
    sb_str(&b, url);
    wci_free(&st->a, url);
    sb_str(&b, "?name=");
    sb_enc(&b, key, 0);
    sb_str(&b, "&uploadType=");
    sb_str(&b, type);
    if (b.over) {
        wci_free(&st->a, b.p);
        return NULL;
    }
    return b.p;
}

static int start_session(wcache_store_upload *up)
{
    wcache_store *st = up->st;
    gcs_be *be = st->be;
    gcs_up *u = up->be;
    gcs_req q = {.method = "POST", .auth = 1, .has_body = 1};
    if (be->xml) {
        q.extra = "x-goog-resumable: start";
        q.ctype = "application/octet-stream";
    } else {
        q.extra = "X-Upload-Content-Type: application/octet-stream";
    }
    char *url = upload_url(st, up->key, "resumable");
    if (!url)
        return WCACHE_ENOMEM;
    q.url = url;
    int rc = request(st, &q, &u->r, "start upload of", up->key);
    wci_free(&st->a, url);
    if (rc != WCACHE_OK)
        return rc;
    if (!u->r.location[0] || (strncmp(u->r.location, "http://", 7) != 0 &&
                              strncmp(u->r.location, "https://", 8) != 0))
        return wci_store_err(st, WCACHE_ECORRUPT,
                             "gcs: upload of gs://%s/%.300s: no session URI in the answer",
                             st->bucket, up->key);
    u->session = wci_store_strdup(st, u->r.location);
    return u->session ? WCACHE_OK : WCACHE_ENOMEM;
}

/* "bytes=0-N" -> N + 1 stored bytes; no Range header: none stored. */
static int stored_bytes(const gcs_resp *r, uint64_t *n)
{
    if (!r->range[0]) {
        *n = 0;
        return 0;
    }
    unsigned long long a, b;
    char tail;
    if (sscanf(r->range, "bytes=%llu-%llu%c", &a, &b, &tail) != 2 || a != 0)
        return -1;
    *n = (uint64_t)b + 1;
    return 0;
}

/* Verify what a completed session (or simple upload) reports. */
static int check_done(wcache_store_upload *up, wci_store_obj *o)
{
    wcache_store *st = up->st;
    gcs_be *be = st->be;
    gcs_up *u = up->be;
    uint64_t size = 0;
    uint32_t crc = 0;
    int has_crc = 0;
    if (be->xml) {
        char *end;
        size = strtoull(u->r.stored, &end, 10);
        if (!u->r.stored[0] || *end)
            size = u->total; /* not sent by every server: the CRC still checks */
        has_crc = wci_gcs_hash_crc(u->r.hash, &crc) == 0;
        o->etag[0] = 0;
    } else {
        wci_gcs_object g;
        void *hold;
        if (wci_gcs_parse_object(u->r.body.p, u->r.body.len, &g, &hold) != 0)
            return wci_store_err(st, WCACHE_ECORRUPT,
                                 "gcs: upload of gs://%s/%.300s: the object resource in the "
                                 "answer does not parse",
                                 st->bucket, up->key);
        size = g.bytes;
        crc = g.crc32c;
        has_crc = g.has_crc;
        snprintf(o->etag, sizeof o->etag, "%s", g.etag);
        o->mtime_ns = g.mtime_ns;
        wci_gcs_release(hold);
    }
    o->bytes = size;
    if (size != u->total)
        return wci_store_err(st, WCACHE_ECORRUPT,
                             "gcs: upload of gs://%s/%.300s: stored %" PRIu64 " bytes, %" PRIu64
                             " were sent",
                             st->bucket, up->key, size, u->total);
    if (!has_crc)
        return wci_store_err(st, WCACHE_ECORRUPT,
                             "gcs: upload of gs://%s/%.300s: the answer has no crc32c to check",
                             st->bucket, up->key);
    if (crc != u->crc)
        return wci_store_err(st, WCACHE_ECORRUPT,
                             "gcs: upload of gs://%s/%.300s: stored crc32c %08x, sent %08x",
                             st->bucket, up->key, crc, u->crc);
    return WCACHE_OK;
}

/*
 * Send what buf holds to the session: every whole 256 KiB unit of it, or
 * all of it when final (the object ends there), and drop from buf what the
 * server confirms stored.  A chunk that fails is followed by a status query
 * (an empty PUT) that says how far the session got, and the rest is sent
 * from there.  *done: the object is complete (u->r holds the answer).
 */
static int send_chunk(wcache_store_upload *up, int final, int *done)
{
    wcache_store *st = up->st;
    gcs_up *u = up->be;
    int max = wci_store_max_retries(st);
    int failures = 0;
    char cr[96];
    *done = 0;
    for (;;) {
        size_t n = final ? u->len : u->len / GCS_UNIT * GCS_UNIT;
        uint64_t total = u->base + u->len;
        if (!final && n == 0)
            return WCACHE_OK; /* the rest waits for more bytes */
        if (n && final)
            snprintf(cr, sizeof cr, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, u->base,
                     u->base + n - 1, total);
        else if (n)
            snprintf(cr, sizeof cr, "bytes %" PRIu64 "-%" PRIu64 "/*", u->base,
                     u->base + n - 1);
        else /* everything stored, but the session was not told the size */
            snprintf(cr, sizeof cr, "bytes */%" PRIu64, total);
        gcs_req q = {.method = "PUT",
                     .url = u->session,
                     .crange = cr,
                     .body = u->buf,
                     .body_len = n,
                     .has_body = 1};
        perform(st, &q, &u->r);
        uint64_t before = u->base;
        int queried = 0; /* the answer is a status query's, not the chunk's */
        for (;;) {
            if (u->r.cc == CURLE_OK && (u->r.status == 200 || u->r.status == 201)) {
                *done = 1;
                return WCACHE_OK;
            }
            if (u->r.cc == CURLE_OK && u->r.status == 308) {
                uint64_t have;
                if (stored_bytes(&u->r, &have) != 0 || have < u->base || have > total)
                    return wci_store_err(st, WCACHE_ECORRUPT,
                                         "gcs: upload of gs://%s/%.300s: the session reports "
                                         "an impossible Range '%.60s'",
                                         st->bucket, up->key, u->r.range);
                memmove(u->buf, u->buf + (have - u->base), (size_t)(total - have));
                u->len = (size_t)(total - have);
                u->base = have;
                if (have > before) /* progress: the retry budget is per stall */
                    failures = 0;
                else if (!queried && ++failures > max)
                    return wci_store_err(st, WCACHE_EHTTP,
                                         "gcs: upload of gs://%s/%.300s: the session stores "
                                         "nothing past byte %" PRIu64,
                                         st->bucket, up->key, have);
                break; /* send what is left */
            }
            if (!retryable(&u->r) || failures >= max)
                return fail(st, &u->r, "upload of", up->key);
            failures++;
            wci_store_log(st, WCACHE_LOG_INFO,
                          "gcs: upload of gs://%s/%.300s: chunk at %" PRIu64
                          " failed (%s %ld), asking the session, retry %d of %d",
                          st->bucket, up->key, u->base,
                          u->r.cc ? curl_easy_strerror(u->r.cc) : "HTTP", u->r.status, failures,
                          max);
            (void)wci_store_backoff(st, NULL, failures, u->r.retry_after_ms);
            if (final)
                snprintf(cr, sizeof cr, "bytes */%" PRIu64, total);
            else
                snprintf(cr, sizeof cr, "bytes */*");
            gcs_req sq = {.method = "PUT", .url = u->session, .crange = cr, .has_body = 1};
            perform(st, &sq, &u->r);
            queried = 1;
        }
    }
}

static int simple_upload(wcache_store_upload *up)
{
    wcache_store *st = up->st;
    gcs_up *u = up->be;
    char *url = upload_url(st, up->key, "media");
    if (!url)
        return WCACHE_ENOMEM;
    gcs_req q = {.method = ((gcs_be *)st->be)->xml ? "PUT" : "POST",
                 .url = url,
                 .auth = 1,
                 .ctype = "application/octet-stream",
                 .body = u->buf,
                 .body_len = u->len,
                 .has_body = 1};
    int rc = request(st, &q, &u->r, "upload of", up->key);
    wci_free(&st->a, url);
    return rc;
}

static int gcs_up_write(wcache_store_upload *up, const void *buf, size_t len)
{
    wcache_store *st = up->st;
    gcs_be *be = st->be;
    gcs_up *u = up->be;
    const unsigned char *p = buf;
    u->crc = wci_crc32c(u->crc, buf, len);
    u->total += len;
    while (len) {
        size_t n = be->chunk - u->len < len ? be->chunk - u->len : len;
        memcpy(u->buf + u->len, p, n);
        u->len += n;
        p += n;
        len -= n;
        if (u->len < be->chunk)
            break;
        /* A full chunk, and bytes follow (or will): it is not the last. */
        int rc = u->session ? WCACHE_OK : start_session(up);
        int done = 0;
        if (rc == WCACHE_OK)
            rc = send_chunk(up, 0, &done);
        if (rc == WCACHE_OK && done)
            rc = wci_store_err(st, WCACHE_ECORRUPT,
                               "gcs: upload of gs://%s/%.300s: the session completed early",
                               st->bucket, up->key);
        if (rc != WCACHE_OK) /* a 404 here is a bucket or session gone */
            return rc == WCACHE_ENOTFOUND ? WCACHE_EHTTP : rc;
    }
    return WCACHE_OK;
}

static void cancel_session(wcache_store_upload *up)
{
    gcs_up *u = up->be;
    if (!u || !u->session)
        return;
    /* GCS answers 499 to a cancelled session; nothing to check. */
    gcs_req q = {.method = "DELETE", .url = u->session};
    perform(up->st, &q, &u->r);
    wci_free(&up->st->a, u->session);
    u->session = NULL;
}

static int gcs_del(wcache_store *st, const char *key);

static int gcs_up_commit(wcache_store_upload *up, wci_store_obj *o)
{
    wcache_store *st = up->st;
    gcs_up *u = up->be;
    int rc, done = 0;
    if (!u->session) {
        rc = simple_upload(up);
        done = rc == WCACHE_OK;
    } else {
        rc = send_chunk(up, 1, &done);
        if (rc == WCACHE_OK && !done)
            rc = wci_store_err(st, WCACHE_ECORRUPT,
                               "gcs: upload of gs://%s/%.300s: the session did not complete",
                               st->bucket, up->key);
    }
    if (rc == WCACHE_OK) {
        rc = check_done(up, o);
        if (rc != WCACHE_OK) {
            /* Never leave an object that is not what was sent. */
            char msg[512] = "";
            if (st->eb && st->el)
                snprintf(msg, sizeof msg, "%s", st->eb);
            gcs_del(st, up->key);
            if (msg[0])
                wci_store_err(st, rc, "%s (deleted again)", msg);
        }
    } else {
        cancel_session(up);
    }
    up_free(up);
    return rc == WCACHE_ENOTFOUND ? WCACHE_EHTTP : rc; /* a bucket or session gone */
}

static void gcs_up_abort(wcache_store_upload *up)
{
    cancel_session(up);
    up_free(up);
}

/* ------------------------------------------------------------------------ */
/* Download                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct get_state {
    int (*sink)(const void *, size_t, void *);
    void *ud;
    uint32_t crc;
} get_state;

static int get_sink(const void *buf, size_t len, void *ud)
{
    get_state *g = ud;
    g->crc = wci_crc32c(g->crc, buf, len);
    return g->sink(buf, len, g->ud);
}

static int stopped(wcache_store *st, const char *key, uint64_t off)
{
    return wci_store_err(st, WCACHE_ESTOPPED,
                         "gcs: download of gs://%s/%.300s stopped at byte %" PRIu64, st->bucket,
                         key, off);
}

static int gcs_get(wcache_store *st, const char *key, wcache_snap_sink_fn sink, void *ud,
                   wci_store_halt *halt, wci_store_obj *o)
{
    gcs_be *be = st->be;
    char *url = obj_url(st, 0, key);
    if (!url)
        return WCACHE_ENOMEM;
    gcs_resp r = {.body = {.al = &st->a, .max = GCS_MAX_REPLY}};
    get_state g = {sink, ud, 0};
    uint64_t off = 0, size = 0;
    int have_size = 0, has_crc = 0, failures = 0, rc = WCACHE_OK;
    uint32_t want_crc = 0;
    char gen[32] = "";
    int max = wci_store_max_retries(st);
    for (;;) {
        rc = load_token(st);
        if (rc != WCACHE_OK)
            break;
        wci_rbuf b = {.al = &st->a, .max = GCS_MAX_URL};
        sb_str(&b, url);
        /* Every range after the first reads the same generation, so an
         * object replaced meanwhile cannot splice two versions. */
        if (be->xml) {
            if (gen[0]) {
                sb_str(&b, "?generation=");
                sb_str(&b, gen);
            }
        } else {
            sb_str(&b, "?alt=media");
            if (gen[0]) {
                sb_str(&b, "&generation=");
                sb_str(&b, gen);
            }
        }
        char range[64];
        snprintf(range, sizeof range, "bytes=%" PRIu64 "-", off);
        if (b.over) {
            wci_free(&st->a, b.p);
            rc = WCACHE_ENOMEM;
            break;
        }
        gcs_req q = {.method = "GET",
                     .url = b.p,
                     .auth = 1,
                     .range = off ? range : NULL,
                     .sink = get_sink,
                     .sink_ud = &g,
                     .from = off,
                     .halt = halt};
        perform(st, &q, &r);
        wci_free(&st->a, b.p);
        if (wci_store_halted(halt)) {
            rc = stopped(st, key, off);
            break;
        }
        if (r.status / 100 == 2 && !gen[0]) {
            /* The first answer fixes the object: its generation, size and
             * checksum. */
            snprintf(gen, sizeof gen, "%s", r.gen);
            for (const char *p = gen; *p; p++)
                if (*p < '0' || *p > '9')
                    gen[0] = 0;
            has_crc = wci_gcs_hash_crc(r.hash, &want_crc) == 0;
            char *end;
            unsigned long long n = strtoull(r.stored, &end, 10);
            if (r.stored[0] && !*end) {
                size = n;
                have_size = 1;
            }
        }
        if (r.bad_range) {
            rc = wci_store_err(st, WCACHE_ECORRUPT,
                               "gcs: download of gs://%s/%.300s: asked for bytes from %" PRIu64
                               ", got HTTP %ld with Content-Range '%.60s'",
                               st->bucket, key, off, r.status, r.crange);
            break;
        }
        unsigned long long a, bb, t;
        if (r.status == 206 && !have_size &&
            sscanf(r.crange, "bytes %llu-%llu/%llu", &a, &bb, &t) == 3) {
            size = t;
            have_size = 1;
        }
        off += r.got;
        if (r.got)
            failures = 0; /* progress: the retry budget is per stall */
        if (r.cc == CURLE_OK && r.status / 100 == 2) {
            if (!have_size) {
                size = off;
                have_size = 1;
            }
            if (off >= size)
                break;
            /* A short body that ended cleanly: ask for the rest. */
        } else if (r.cc == CURLE_OK && r.status == 416 && have_size && off == size) {
            break;
        } else if (!retryable(&r) || failures >= max) {
            rc = fail(st, &r, "download of", key);
            if (off && r.cc == CURLE_OK && r.status == 404)
                rc = wci_store_err(st, WCACHE_ECORRUPT,
                                   "gcs: download of gs://%s/%.300s: the object was replaced "
                                   "after %" PRIu64 " bytes (generation %s is gone)",
                                   st->bucket, key, off, gen);
            break;
        } else {
            failures++;
            wci_store_log(st, WCACHE_LOG_INFO,
                          "gcs: download of gs://%s/%.300s broke at byte %" PRIu64
                          " (%s %ld), resuming, retry %d of %d",
                          st->bucket, key, off, r.cc ? curl_easy_strerror(r.cc) : "HTTP",
                          r.status, failures, max);
            if (wci_store_backoff(st, halt, failures, r.retry_after_ms) != WCACHE_OK) {
                rc = stopped(st, key, off);
                break;
            }
        }
        if (wci_store_progress(st, off, size)) {
            rc = wci_store_err(st, WCACHE_ESTOPPED, "gcs: download stopped by progress");
            break;
        }
    }
    if (rc == WCACHE_OK && off != size)
        rc = wci_store_err(st, WCACHE_ECORRUPT,
                           "gcs: download of gs://%s/%.300s: got %" PRIu64 " bytes of %" PRIu64,
                           st->bucket, key, off, size);
    if (rc == WCACHE_OK && has_crc && g.crc != want_crc)
        rc = wci_store_err(st, WCACHE_ECORRUPT,
                           "gcs: download of gs://%s/%.300s: crc32c %08x, the object's is %08x",
                           st->bucket, key, g.crc, want_crc);
    if (rc == WCACHE_OK) {
        o->bytes = size;
        snprintf(o->etag, sizeof o->etag, "%s", gen);
    }
    resp_free(&r);
    wci_free(&st->a, url);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* List and delete                                                          */
/* ------------------------------------------------------------------------ */

typedef struct list_ctx {
    wci_store_list_cb cb;
    void *ud;
} list_ctx;

static int list_one(const wci_gcs_object *g, void *ud)
{
    list_ctx *l = ud;
    wci_store_obj o;
    memset(&o, 0, sizeof o);
    o.bytes = g->bytes;
    o.mtime_ns = g->mtime_ns;
    snprintf(o.etag, sizeof o.etag, "%s", g->etag);
    /* The key must be NUL-terminated for the callback: names from JSON
     * are, and one with an embedded NUL is not a key we wrote. */
    if (strlen(g->name) != g->name_len)
        return 0;
    return l->cb(g->name, g->name_len, &o, l->ud);
}

static int gcs_list(wcache_store *st, const char *prefix, wci_store_list_cb cb, void *ud)
{
    gcs_be *be = st->be;
    char token[2048] = "";
    gcs_resp r = {.body = {.al = &st->a, .max = GCS_MAX_REPLY}};
    list_ctx l = {cb, ud};
    int rc = WCACHE_OK;
    do {
        wci_rbuf b = {.al = &st->a, .max = GCS_MAX_URL};
        sb_str(&b, be->endpoint);
        if (be->xml) {
            /* Sorted and encoded by hand: libcurl 7.88's signer signs the
             * query as it stands. */
            sb_str(&b, "/");
            sb_enc(&b, st->bucket, 0);
            sb_str(&b, "?");
            if (token[0]) {
                sb_str(&b, "continuation-token=");
                sb_enc(&b, token, 0);
                sb_str(&b, "&");
            }
            sb_str(&b, "list-type=2&prefix=");
            sb_enc(&b, prefix, 0);
        } else {
            sb_str(&b, "/storage/v1/b/");
            sb_enc(&b, st->bucket, 0);
            sb_str(&b, "/o?prefix=");
            sb_enc(&b, prefix, 0);
            sb_str(&b, "&fields=items(name,size,updated,etag,generation,crc32c),"
                       "nextPageToken");
            if (token[0]) {
                sb_str(&b, "&pageToken=");
                sb_enc(&b, token, 0);
            }
        }
        if (b.over) {
            wci_free(&st->a, b.p);
            rc = WCACHE_ENOMEM;
            break;
        }
        gcs_req q = {.method = "GET", .url = b.p, .auth = 1};
        rc = request(st, &q, &r, "list of", prefix);
        wci_free(&st->a, b.p);
        if (rc == WCACHE_ENOTFOUND) /* the bucket: say so plainly */
            rc = WCACHE_EHTTP;
        if (rc != WCACHE_OK)
            break;
        int prc = be->xml ? wci_gcs_parse_xml_list(r.body.p, r.body.len, list_one, &l, token,
                                                   sizeof token)
                          : wci_gcs_parse_list(r.body.p, r.body.len, list_one, &l, token,
                                               sizeof token);
        if (prc < 0)
            rc = wci_store_err(st, WCACHE_ECORRUPT,
                               "gcs: list of gs://%s/%.300s: the answer does not parse",
                               st->bucket, prefix);
        else if (prc > 0)
            rc = WCACHE_ESTOPPED;
    } while (rc == WCACHE_OK && token[0]);
    resp_free(&r);
    return rc;
}

static int gcs_del(wcache_store *st, const char *key)
{
    char *url = obj_url(st, 0, key);
    if (!url)
        return WCACHE_ENOMEM;
    gcs_resp r = {.body = {.al = &st->a, .max = GCS_MAX_REPLY}};
    gcs_req q = {.method = "DELETE", .url = url, .auth = 1};
    int rc = request(st, &q, &r, "delete of", key);
    if (rc == WCACHE_ENOTFOUND)
        rc = WCACHE_OK;
    resp_free(&r);
    wci_free(&st->a, url);
    return rc;
}

const wci_store_ops wci_store_gcs_ops = {
    .scheme = "gs",
    .open = gcs_open,
    .close = gcs_close,
    .up_begin = gcs_up_begin,
    .up_write = gcs_up_write,
    .up_commit = gcs_up_commit,
    .up_abort = gcs_up_abort,
    .get = gcs_get,
    .list = gcs_list,
    .del = gcs_del,
};
