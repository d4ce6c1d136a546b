/*
 * source_etcd.c - feed a cache from etcd v3 through its JSON gateway.
 *
 * The source is a state machine driven by libcurl's multi-socket API: its
 * transfers run in one multi handle, and every step is taken when a
 * transfer finishes or a timer is due, never by waiting.  Two drivers run
 * it: the source's own thread (wcache_etcd_start: poll() on the sockets
 * curl reported and a wake-up pipe), or the embedder's event loop
 * (wcache_etcd_start_loop, then wcache_etcd_fds / wcache_etcd_perform).
 * Either way the driver's thread is the cache's writer.
 *
 *   list    (cache at revision 0) a paginated range at one revision: the
 *           first page fixes the revision R, later pages ask for R; loaded
 *           with wcache_ingest_load.  A page refused as compacted restarts
 *           the list.
 *   relist  (the watch start was compacted, or the stream did not fit the
 *           cache) the same range, merged in key order with the cache's
 *           latest state: keys gone become deletes, new keys and keys
 *           modified after the cache's revision become puts with etcd's
 *           create_revision, mod_revision and version, all applied by
 *           wcache_ingest_relist at R, so watchers see correct events and
 *           reads report what etcd does; the cache is compacted to R, as
 *           it cannot know the states between its revision and R.
 *   watch   POST /v3/watch from the cache's revision + 1 with prev_kv and
 *           progress_notify; the body is parsed and applied as it arrives
 *           by etcd_stream.c (which holds the #15220 progress guard).
 *
 * A failed request or an ended stream moves to the next endpoint and waits
 * (exponential backoff with jitter, reset after a stream that worked).  The
 * cache's revision is the resume point, so nothing is lost or applied
 * twice whatever failed.
 *
 * Following etcd's compaction (reads below it must fail as compacted even
 * while the cache still holds them, Kubernetes #131011), two ways:
 *   - compact_key (Kubernetes: "compact_rev_key", written with the target
 *     revision before every compaction): read before each watch, then
 *     watched on the same stream as a second watch (id 1);
 *   - the probe, for etcd compacted by hand: every compact_probe_ms, a
 *     count-only range of one key at the cache's compacted revision K;
 *     answered "compacted", a watch from K learns the exact revision from
 *     etcd's cancel message.
 * A learned revision V compacts the cache to V (to the cache's revision
 * while the cache is still below V, and to V once it passes it).
 *
 * Consistent reads call wcache_etcd_current_revision() on the reader's
 * thread: it uses an easy handle of its own and touches only immutable
 * fields and the atomic endpoint index.
 */
#include "etcd_stream.h"
#include "http.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define WCI_ETCD_MAGIC 0x77636564u

/* Where the state machine is. */
enum { S_IDLE, S_NAP, S_LIST, S_CKEY, S_WATCH };
/* What a transfer is for. */
enum { X_NONE, X_PAGE, X_CKEY, X_WATCH, X_PROBE, X_PROBE_WATCH };
/* Who drives. */
enum { M_NONE, M_THREAD, M_LOOP };

typedef struct xfer {
    CURL *e;
    struct curl_slist *hdrs;
    char *body;
    int kind;
    size_t ep;
    wci_rbuf b;
    long status;     /* streams: from the header callback */
    int grpc;        /* a gRPC call: */
    int grpc_status; /* its grpc-status trailer, -1 until seen */
    char grpc_msg[160];
    char url[1024];
} xfer;

/* A paginated range at one revision, one key at a time. */
typedef struct scan {
    json_t *page;
    size_t i;
    int64_t rev; /* 0 until the first page fixed it */
    int more;
    char *next_b64;          /* where the next page starts; NULL: the range start */
    unsigned char *next_raw; /* ... the same, decoded */
    size_t next_rlen;
    int fetching; /* the next page is on its way */
    unsigned char *kb, *vb;
    size_t kcap, vcap;
    unsigned char *pbody; /* a page read over gRPC: its body, */
    wci_pb_page pb;       /* ... and its keys pointing into it */
    int blocking;         /* wcache_etcd_range: pages on the caller's thread */
    int64_t hdr_rev;      /* etcd's revision when the first page was read */
    uint64_t cluster_id;  /* from the first page's header */
} scan;

/* The cache's side of a reconcile: its keys at the latest revision. */
typedef struct cscan {
    wcache_view *v;
    wcache_list_opts lo;
    wcache_kv items[256];
    size_t n, i;
    int more;
    char *tok;
} cscan;

/* A list or re-list in progress, across its page transfers. */
typedef struct lstate {
    int reconcile;
    int64_t crev; /* the cache's revision when a re-list began */
    scan sc;
    cscan cs;
    unsigned char *kb, *eb; /* the range, decoded for the view */
    /* the merge's cursor */
    wcache_kv e;
    const wcache_kv *k;
    int re, rk; /* codes of the last scan_next / cscan_next */
    int adv_e, adv_k;
} lstate;

typedef struct sock {
    int fd, what;
} sock;

struct wcache_etcd {
    uint32_t magic;
    wcache_cache *c;
    const wci_alloc *al;
    char **eps; /* endpoint base URLs, no trailing '/' */
    size_t neps;
    _Atomic size_t ep; /* the endpoint in use */
    char *key_b64, *end_b64;
    char *ckey_b64;                   /* the compaction key, NULL: none */
    int64_t probe_ms;                 /* < 0: no probe */
    char *ca, *cert, *key, *auth;     /* auth: the whole header line */
    char *grpc_auth;                  /* the same token as gRPC metadata */
    unsigned char *key_raw, *end_raw; /* the range, decoded */
    size_t key_rlen, end_rlen;
    int grpc;    /* list pages over gRPC; 0 after it failed before ever working */
    int grpc_ok; /* a gRPC page was read */
    int insecure;
    long connect_ms, request_ms;
    int64_t backoff_min, backoff_max;
    _Atomic uint32_t page_limit; /* halved after a page over max_msg */
    size_t max_msg;
    CURLM *multi;
    pthread_t th;
    int joinable;
    int curl_inited;
    int mode;
    int wake[2]; /* the thread's wake-up pipe */
    _Atomic int stop, running, synced, last_error;
    _Atomic int64_t list_rev, compact_rev;
    _Atomic uint64_t lists, relists, connects, reconnects, errors, bytes, probes;
    /* Consistent reads' current-revision ranges, shared: a read may take the
     * answer of a range sent after it began (etcd's revision then is at
     * least the one when the read began: linearizable), never of one sent
     * before.  At most one range in flight; the reads that arrive meanwhile
     * share the next, which one of them sends when this one ends. */
    pthread_mutex_t rev_mu;
    pthread_cond_t rev_cv;
    int rev_sync;                 /* rev_mu and rev_cv initialised */
    int rev_busy;                 /* a range in flight */
    uint64_t rev_sent;            /* ranges sent: the latest one's number */
    uint64_t rev_ok_n, rev_err_n; /* the latest range that answered / failed */
    int64_t rev_ok;               /* the answer of rev_ok_n */
    wcache_code rev_err;          /* the failure of rev_err_n */
    _Atomic uint64_t rev_reads, rev_probes;
    wci_ew ew; /* the watch stream: the driver's, but for its atomic counters */
    uint64_t rng;
    /* the state machine: the driver's thread only */
    int st;
    int need_list;
    int64_t backoff;
    int64_t wake_at; /* S_NAP: when to go on */
    int64_t next_probe;
    int64_t want_compact; /* etcd's compaction revision, not yet all applied */
    int64_t probe_found;
    wcache_batch *b;
    xfer main, side;
    lstate L;
    int in_list;
    sock *socks; /* what curl asked us to wait for */
    size_t nsocks, capsocks;
    struct pollfd *pfd;
    size_t cappfd;
};

/* ---- small helpers ---- */

static char *dupstr(const wci_alloc *al, const char *s)
{
    return s ? wci_memdup(al, s, strlen(s)) : NULL;
}

static char *b64dup(const wci_alloc *al, const void *p, size_t n)
{
    char *o = wci_malloc(al, 4 * ((n + 2) / 3) + 1);
    if (o)
        wci_b64_encode(p, n, o);
    return o;
}

static void fail(wcache_etcd *s, wcache_code rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(wcache_etcd *s, wcache_code rc, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    atomic_store(&s->last_error, (int)rc);
    atomic_fetch_add(&s->errors, 1);
    wci_log(s->c, WCACHE_LOG_WARN, "etcd: %s", msg);
}

/* A JSON body built with snprintf: NULL when out of memory. */
static char *bodyf(wcache_etcd *s, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *bodyf(wcache_etcd *s, size_t cap, const char *fmt, ...)
{
    char *b = wci_malloc(s->al, cap);
    if (!b)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, cap, fmt, ap);
    va_end(ap);
    return b;
}

/* ---- transfers ---- */

static CURL *easy_new(wcache_etcd *s, const char *path, const char *body,
                      struct curl_slist **hdrs, char *url, size_t urlcap, size_t ep)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    snprintf(url, urlcap, "%s%s", s->eps[ep], path);
    *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (s->auth && *hdrs) {
        struct curl_slist *h = curl_slist_append(*hdrs, s->auth);
        if (h)
            *hdrs = h;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, s->connect_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1); /* the gateway */
    if (s->ca)
        curl_easy_setopt(e, CURLOPT_CAINFO, s->ca);
    if (s->cert)
        curl_easy_setopt(e, CURLOPT_SSLCERT, s->cert);
    if (s->key)
        curl_easy_setopt(e, CURLOPT_SSLKEY, s->key);
    if (s->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    return e;
}

static size_t stream_header(char *data, size_t sz, size_t nm, void *ud)
{
    xfer *x = ud;
    size_t n = sz * nm;
    long st = wci_http_status_line(data, n);
    if (st >= 0)
        x->status = st;
    return n;
}

/* Headers and trailers of a gRPC call: its status. */
static size_t grpc_header(char *data, size_t sz, size_t nm, void *ud)
{
    xfer *x = ud;
    size_t n = sz * nm;
    long st = wci_http_status_line(data, n);
    if (st >= 0)
        x->status = st;
    else if (n > 12 && strncasecmp(data, "grpc-status:", 12) == 0)
        x->grpc_status = atoi(data + 12);
    else if (n > 13 && strncasecmp(data, "grpc-message:", 13) == 0) {
        size_t a = 13;
        while (a < n && data[a] == ' ')
            a++;
        while (n > a && (data[n - 1] == '\r' || data[n - 1] == '\n'))
            n--;
        snprintf(x->grpc_msg, sizeof x->grpc_msg, "%.*s", (int)(n - a), data + a);
        n = sz * nm;
    }
    return n;
}

static size_t watch_write(char *data, size_t sz, size_t nm, void *ud);
static size_t probe_write(char *data, size_t sz, size_t nm, void *ud);

static void xfer_free(wcache_etcd *s, xfer *x)
{
    if (x->e) {
        curl_multi_remove_handle(s->multi, x->e);
        curl_easy_cleanup(x->e);
    }
    curl_slist_free_all(x->hdrs);
    wci_free(s->al, x->body);
    wci_free(s->al, x->b.p);
    memset(x, 0, sizeof *x);
}

/* Start a POST of body (taken, freed with the transfer) on the endpoint
 * in use.  Streams (the watches) are handed to their parsers as they
 * arrive; requests are buffered.  Returns WCACHE_OK or WCACHE_ENOMEM. */
static wcache_code xfer_start(wcache_etcd *s, xfer *x, int kind, const char *path, char *body)
{
    memset(x, 0, sizeof *x);
    if (!body)
        return WCACHE_ENOMEM;
    x->kind = kind;
    x->body = body;
    x->ep = atomic_load(&s->ep);
    x->b = (wci_rbuf){.al = s->al, .max = s->max_msg, .bytes = &s->bytes};
    x->e = easy_new(s, path, body, &x->hdrs, x->url, sizeof x->url, x->ep);
    if (!x->e || !x->hdrs) {
        xfer_free(s, x);
        return WCACHE_ENOMEM;
    }
    curl_easy_setopt(x->e, CURLOPT_PRIVATE, x);
    if (kind == X_WATCH || kind == X_PROBE_WATCH) {
        curl_easy_setopt(x->e, CURLOPT_WRITEFUNCTION,
                         kind == X_WATCH ? watch_write : probe_write);
        curl_easy_setopt(x->e, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(x->e, CURLOPT_HEADERFUNCTION, stream_header);
        curl_easy_setopt(x->e, CURLOPT_HEADERDATA, x);
    } else {
        curl_easy_setopt(x->e, CURLOPT_WRITEFUNCTION, wci_rbuf_write);
        curl_easy_setopt(x->e, CURLOPT_WRITEDATA, &x->b);
    }
    if (kind != X_WATCH)
        curl_easy_setopt(x->e, CURLOPT_TIMEOUT_MS, s->request_ms);
    if (curl_multi_add_handle(s->multi, x->e) != CURLM_OK) {
        curl_easy_cleanup(x->e);
        x->e = NULL;
        xfer_free(s, x);
        return WCACHE_ENOMEM;
    }
    return WCACHE_OK;
}

/*
 * A range page over gRPC (the member's own protocol, as etcdctl speaks it):
 * protobuf both ways, so etcd skips its gateway's JSON and base64, and the
 * keys and values are used where they lie in the answer.  HTTP/2 with
 * prior knowledge on http://, ALPN on https://.
 */
static wcache_code grpc_start(wcache_etcd *s, xfer *x, const unsigned char *key, size_t kl,
                              int64_t rev)
{
    memset(x, 0, sizeof *x);
    size_t cap = 64 + kl + s->end_rlen;
    unsigned char *body = wci_malloc(s->al, cap);
    if (!body)
        return WCACHE_ENOMEM;
    size_t n = wci_pb_range_request(body, key, kl, s->end_raw, s->end_rlen, s->page_limit, rev);
    x->kind = X_PAGE;
    x->grpc = 1;
    x->grpc_status = -1;
    x->body = (char *)body;
    x->ep = atomic_load(&s->ep);
    x->b = (wci_rbuf){.al = s->al, .max = s->max_msg, .bytes = &s->bytes};
    x->e = easy_new(s, "/etcdserverpb.KV/Range", NULL, &x->hdrs, x->url, sizeof x->url, x->ep);
    if (!x->e || !x->hdrs) {
        xfer_free(s, x);
        return WCACHE_ENOMEM;
    }
    curl_slist_free_all(x->hdrs);
    x->hdrs = curl_slist_append(NULL, "Content-Type: application/grpc");
    struct curl_slist *h = x->hdrs ? curl_slist_append(x->hdrs, "TE: trailers") : NULL;
    if (h && s->grpc_auth)
        h = curl_slist_append(h, s->grpc_auth);
    if (!h) {
        xfer_free(s, x);
        return WCACHE_ENOMEM;
    }
    curl_easy_setopt(x->e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(x->e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(x->e, CURLOPT_POSTFIELDSIZE, (long)n);
    curl_easy_setopt(x->e, CURLOPT_HTTP_VERSION,
                     strncmp(x->url, "https:", 6) == 0
                         ? (long)CURL_HTTP_VERSION_2TLS
                         : (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
    curl_easy_setopt(x->e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->e, CURLOPT_WRITEFUNCTION, wci_rbuf_write);
    curl_easy_setopt(x->e, CURLOPT_WRITEDATA, &x->b);
    curl_easy_setopt(x->e, CURLOPT_HEADERFUNCTION, grpc_header);
    curl_easy_setopt(x->e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(x->e, CURLOPT_TIMEOUT_MS, s->request_ms);
    /* The member's gRPC server takes the whole HTTP/2 connection: a JSON
     * request that curl put on it would be refused. */
    curl_easy_setopt(x->e, CURLOPT_FORBID_REUSE, 1L);
    if (curl_multi_add_handle(s->multi, x->e) != CURLM_OK) {
        curl_easy_cleanup(x->e);
        x->e = NULL;
        xfer_free(s, x);
        return WCACHE_ENOMEM;
    }
    return WCACHE_OK;
}

/* An error answer's message, for the log. */
static const char *answer_text(const wci_rbuf *b)
{
    return b->p ? b->p : "(empty)";
}

/* The outcome of a finished request: its JSON answer in *out, or why not
 * (logged unless quiet). */
static wcache_code answer(wcache_etcd *s, CURL *e, const char *what, CURLcode res, wci_rbuf *b,
                          int quiet, json_t **out)
{
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    *out = NULL;
    wcache_code rc = WCACHE_OK;
    if (b->over) {
        rc = WCACHE_ETOOBIG;
        if (!quiet)
            fail(s, rc, "%s: answer over %zu bytes", what, s->max_msg);
    } else if (res != CURLE_OK) {
        rc = WCACHE_ECURL;
        if (!quiet)
            fail(s, rc, "%s: %s", what, curl_easy_strerror(res));
    } else if (status != 200) {
        rc = b->p && strstr(b->p, "required revision has been compacted") ? WCACHE_ECOMPACTED
             : b->p && strstr(b->p, "required revision is a future revision") ? WCACHE_EFUTURE
                                                                              : WCACHE_EHTTP;
        if (!quiet)
            fail(s, rc, "%s: HTTP %ld: %.200s", what, status, answer_text(b));
    } else {
        json_error_t je;
        *out = json_loadb(b->p ? b->p : "", b->len, 0, &je);
        if (!*out || !json_is_object(*out)) {
            json_decref(*out);
            *out = NULL;
            rc = WCACHE_ECORRUPT;
            if (!quiet)
                fail(s, rc, "%s: answer does not parse: %s", what, je.text);
        }
    }
    return rc;
}

static void next_endpoint(wcache_etcd *s)
{
    size_t ep = atomic_load(&s->ep);
    atomic_store(&s->ep, (ep + 1) % s->neps);
}

static int64_t jitter(wcache_etcd *s, int64_t ms)
{
    s->rng = s->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return ms / 2 + (int64_t)((s->rng >> 33) % (uint64_t)(ms / 2 + 1));
}

/* Wait (backoff with jitter) before the next attempt. */
static void nap(wcache_etcd *s)
{
    s->wake_at = wci_mono_ms() + jitter(s, s->backoff);
    s->backoff = s->backoff * 2 > s->backoff_max ? s->backoff_max : s->backoff * 2;
    s->st = S_NAP;
}

/* ---- compaction ---- */

/* Compact the cache as far as etcd's known compaction allows: to V, or to
 * the cache's own revision while it is below V. */
static void apply_compaction(wcache_etcd *s)
{
    if (s->want_compact <= wcache_cache_compacted_revision(s->c))
        return;
    int64_t cur = wcache_cache_revision(s->c);
    int64_t to = s->want_compact < cur ? s->want_compact : cur;
    if (to <= wcache_cache_compacted_revision(s->c))
        return;
    wcache_code rc = wcache_cache_compact(s->c, to);
    if (rc != WCACHE_OK)
        fail(s, rc, "compaction to %lld: %s", (long long)to, wcache_strerror(rc));
}

/* etcd is (or is about to be) compacted at v. */
static void learn_compaction(wcache_etcd *s, int64_t v, const char *how)
{
    if (v <= s->want_compact)
        return;
    s->want_compact = v;
    if (v > atomic_load(&s->compact_rev))
        atomic_store(&s->compact_rev, v);
    wci_log(s->c, WCACHE_LOG_INFO, "etcd: compacted at %lld (%s)", (long long)v, how);
    apply_compaction(s);
}

/* ---- ranges ---- */

/* What scan_next() returns beside wcache codes: the page is used up and
 * the next one must be fetched first (scan_fetch). */
#define NEED_PAGE (-1)

static void scan_fini(wcache_etcd *s, scan *sc)
{
    json_decref(sc->page);
    wci_free(s->al, sc->next_b64);
    wci_free(s->al, sc->next_raw);
    wci_free(s->al, sc->pbody);
    wci_free(s->al, sc->pb.kvs);
    wci_free(s->al, sc->kb);
    wci_free(s->al, sc->vb);
    memset(sc, 0, sizeof *sc);
}

/* The request of the next page (NULL: out of memory). */
static char *scan_body(wcache_etcd *s, const scan *sc)
{
    const char *k = sc->next_b64 ? sc->next_b64 : s->key_b64;
    size_t cap = strlen(k) + strlen(s->end_b64) + 128;
    char rev[48] = "";
    if (sc->rev > 0)
        snprintf(rev, sizeof rev, ",\"revision\":\"%lld\"", (long long)sc->rev);
    return bodyf(s, cap, "{\"key\":\"%s\",\"range_end\":\"%s\",\"limit\":%u%s}", k, s->end_b64,
                 s->page_limit, rev);
}

/* Start the transfer of the next page. */
static wcache_code scan_fetch(wcache_etcd *s, scan *sc)
{
    wcache_code rc = s->grpc
                         ? grpc_start(s, &s->main, sc->next_raw ? sc->next_raw : s->key_raw,
                                      sc->next_raw ? sc->next_rlen : s->key_rlen, sc->rev)
                         : xfer_start(s, &s->main, X_PAGE, "/v3/kv/range", scan_body(s, sc));
    sc->fetching = rc == WCACHE_OK;
    return rc;
}

/* The header's cluster_id: a uint64, which proto3 JSON writes as a string
 * (it may not fit an int64).  0 when absent or malformed. */
static uint64_t header_cluster(const json_t *hdr)
{
    const json_t *v = json_object_get(hdr, "cluster_id");
    if (json_is_integer(v))
        return (uint64_t)json_integer_value(v);
    const char *t = json_string_value(v);
    if (!t || *t < '0' || *t > '9')
        return 0;
    char *end;
    unsigned long long id = strtoull(t, &end, 10);
    return *end ? 0 : (uint64_t)id;
}

/* The next page starts just after key: key + NUL, raw and in base64. */
static int set_next(wcache_etcd *s, scan *sc, const void *key, size_t kl)
{
    unsigned char *raw = wci_malloc(s->al, kl + 1);
    char *nb = wci_malloc(s->al, 4 * ((kl + 3) / 3) + 1);
    if (!raw || !nb) {
        wci_free(s->al, raw);
        wci_free(s->al, nb);
        return -1;
    }
    memcpy(raw, key, kl);
    raw[kl] = 0;
    wci_b64_encode(raw, kl + 1, nb);
    wci_free(s->al, sc->next_raw);
    wci_free(s->al, sc->next_b64);
    sc->next_raw = raw;
    sc->next_rlen = kl + 1;
    sc->next_b64 = nb;
    return 0;
}

/* Take a page's answer. */
static wcache_code scan_take(wcache_etcd *s, scan *sc, json_t *page)
{
    json_decref(sc->page);
    sc->page = page;
    wci_free(s->al, sc->pbody);
    sc->pbody = NULL;
    int64_t rev;
    const json_t *kvs = json_object_get(sc->page, "kvs");
    if (wci_json_i64(json_object_get(sc->page, "header"), "revision", &rev) != 0 || rev < 1 ||
        (sc->rev > 0 && rev < sc->rev) || (kvs && !json_is_array(kvs))) {
        fail(s, WCACHE_ECORRUPT, "range answer without a usable header or kvs");
        return WCACHE_ECORRUPT;
    }
    if (sc->hdr_rev == 0) {
        sc->hdr_rev = rev;
        sc->cluster_id = header_cluster(json_object_get(sc->page, "header"));
    }
    if (sc->rev == 0)
        sc->rev = rev;
    sc->more = json_is_true(json_object_get(sc->page, "more"));
    sc->i = 0;
    size_t nk = json_array_size(kvs);
    if (sc->more && nk == 0) {
        fail(s, WCACHE_ECORRUPT, "range answer with more but no kvs");
        return WCACHE_ECORRUPT;
    }
    if (nk > 0) { /* the next page starts just after the last key */
        long kl = wci_json_b64(s->al, json_array_get(kvs, nk - 1), "key", &sc->kb, &sc->kcap);
        if (kl <= 0) {
            fail(s, WCACHE_ECORRUPT, "range answer with a malformed key");
            return WCACHE_ECORRUPT;
        }
        if (set_next(s, sc, sc->kb, (size_t)kl) != 0)
            return WCACHE_ENOMEM;
    }
    /* etcd makes the next page while this one is decoded and loaded (a
     * blocking range fetches its pages itself when they are due) */
    sc->fetching = 0;
    return sc->more && !sc->blocking ? scan_fetch(s, sc) : WCACHE_OK;
}

/* Take a page read over gRPC (body is taken). */
static wcache_code scan_take_pb(wcache_etcd *s, scan *sc, unsigned char *body, size_t n)
{
    json_decref(sc->page);
    sc->page = NULL;
    wci_free(s->al, sc->pbody);
    sc->pbody = body;
    int r = wci_pb_range(s->al, body, n, &sc->pb);
    if (r == -2)
        return WCACHE_ENOMEM;
    int64_t rev = sc->pb.revision;
    if (r != 0 || rev < 1 || (sc->rev > 0 && rev < sc->rev)) {
        fail(s, WCACHE_ECORRUPT, "gRPC range answer does not parse");
        return WCACHE_ECORRUPT;
    }
    if (sc->hdr_rev == 0) {
        sc->hdr_rev = rev;
        sc->cluster_id = sc->pb.cluster_id;
    }
    if (sc->rev == 0)
        sc->rev = rev;
    sc->more = sc->pb.more;
    sc->i = 0;
    if (sc->more && sc->pb.n == 0) {
        fail(s, WCACHE_ECORRUPT, "range answer with more but no kvs");
        return WCACHE_ECORRUPT;
    }
    if (sc->pb.n > 0) {
        const wcache_kv *last = &sc->pb.kvs[sc->pb.n - 1];
        if (last->key_len == 0) {
            fail(s, WCACHE_ECORRUPT, "range answer with a malformed key");
            return WCACHE_ECORRUPT;
        }
        if (set_next(s, sc, last->key, last->key_len) != 0)
            return WCACHE_ENOMEM;
    }
    sc->fetching = 0;
    return sc->more && !sc->blocking ? scan_fetch(s, sc) : WCACHE_OK;
}

/* The next key of the range: WCACHE_OK with *kv filled (borrowed until the
 * next call), WCACHE_ENOTFOUND at the end, NEED_PAGE, or an error. */
static int scan_next(wcache_etcd *s, scan *sc, wcache_kv *kv)
{
    if (sc->pbody) {
        if (sc->i >= sc->pb.n)
            return sc->more ? NEED_PAGE : WCACHE_ENOTFOUND;
        *kv = sc->pb.kvs[sc->i++];
        if (kv->key_len == 0 || kv->create_revision < 1 ||
            kv->mod_revision < kv->create_revision || kv->version < 1 ||
            kv->mod_revision > sc->rev) {
            fail(s, WCACHE_ECORRUPT, "range answer with a malformed key/value");
            return WCACHE_ECORRUPT;
        }
        return WCACHE_OK;
    }
    const json_t *kvs = json_object_get(sc->page, "kvs");
    if (!sc->page || sc->i >= json_array_size(kvs))
        return sc->page && !sc->more ? WCACHE_ENOTFOUND : NEED_PAGE;
    const json_t *o = json_array_get(kvs, sc->i++);
    long kl = wci_json_b64(s->al, o, "key", &sc->kb, &sc->kcap);
    long vl = wci_json_b64(s->al, o, "value", &sc->vb, &sc->vcap);
    memset(kv, 0, sizeof *kv);
    if (kl <= 0 || vl < 0 || wci_json_i64(o, "create_revision", &kv->create_revision) != 0 ||
        wci_json_i64(o, "mod_revision", &kv->mod_revision) != 0 ||
        wci_json_i64(o, "version", &kv->version) != 0 || kv->create_revision < 1 ||
        kv->mod_revision < kv->create_revision || kv->version < 1 ||
        kv->mod_revision > sc->rev) {
        fail(s, WCACHE_ECORRUPT, "range answer with a malformed key/value");
        return WCACHE_ECORRUPT;
    }
    kv->key = sc->kb;
    kv->key_len = (size_t)kl;
    kv->value = sc->vb;
    kv->value_len = (size_t)vl;
    return WCACHE_OK;
}

static wcache_code cscan_next(wcache_etcd *s, cscan *cs, const wcache_kv **kv)
{
    if (cs->i >= cs->n) {
        if (cs->n > 0 && !cs->more) {
            *kv = NULL;
            return WCACHE_OK;
        }
        wcache_list_result res = {.size = sizeof res};
        wcache_code rc = wcache_view_list(cs->v, &cs->lo, cs->items, 256, &res);
        if (rc != WCACHE_OK)
            return rc;
        cs->n = res.count;
        cs->i = 0;
        cs->more = res.more;
        wci_free(s->al, cs->tok);
        cs->tok = NULL;
        if (res.more) {
            cs->tok = wci_memdup(s->al, res.token, res.token_len);
            if (!cs->tok)
                return WCACHE_ENOMEM;
            cs->lo.token = cs->tok;
            cs->lo.token_len = res.token_len;
        }
        if (cs->n == 0) {
            cs->more = 0;
            *kv = NULL;
            return WCACHE_OK;
        }
    }
    *kv = &cs->items[cs->i++];
    return WCACHE_OK;
}

/* ---- lists ---- */

static void list_end(wcache_etcd *s)
{
    lstate *L = &s->L;
    if (!s->in_list)
        return;
    if (s->main.kind == X_PAGE)
        xfer_free(s, &s->main); /* a page fetched ahead */
    if (L->cs.v) {
        wcache_view_end(L->cs.v);
        wcache_view_free(L->cs.v);
    }
    wci_free(s->al, L->cs.tok);
    wci_free(s->al, L->kb);
    wci_free(s->al, L->eb);
    scan_fini(s, &L->sc);
    memset(L, 0, sizeof *L);
    wcache_batch_clear(s->b);
    s->in_list = 0;
}

/* Begin a list (cache empty) or a re-list; the first page is fetched. */
static wcache_code list_begin(wcache_etcd *s)
{
    lstate *L = &s->L;
    memset(L, 0, sizeof *L);
    s->in_list = 1;
    wcache_batch_clear(s->b);
    L->crev = wcache_cache_revision(s->c);
    L->reconcile = L->crev != 0;
    L->adv_e = L->adv_k = 1;
    if (L->reconcile) {
        wcache_code rc = wcache_view_create(s->c, &L->cs.v);
        if (rc == WCACHE_OK)
            rc = wcache_view_begin(L->cs.v, WCACHE_REV_LATEST);
        if (rc != WCACHE_OK)
            return rc;
        /* Decode the range once more for the view's options. */
        size_t a = strlen(s->key_b64), z = strlen(s->end_b64);
        L->kb = wci_malloc(s->al, a / 4 * 3 + 1);
        L->eb = wci_malloc(s->al, z / 4 * 3 + 1);
        if (!L->kb || !L->eb)
            return WCACHE_ENOMEM;
        size_t kl = (size_t)wci_b64_decode(s->key_b64, a, L->kb);
        size_t el = (size_t)wci_b64_decode(s->end_b64, z, L->eb);
        L->cs.lo.size = sizeof L->cs.lo;
        if (!(kl == 1 && L->kb[0] == 0)) {
            L->cs.lo.start = L->kb;
            L->cs.lo.start_len = kl;
        }
        if (!(el == 1 && L->eb[0] == 0)) {
            L->cs.lo.end = L->eb;
            L->cs.lo.end_len = el;
        }
    }
    return scan_fetch(s, &L->sc);
}

/* The initial list: every key into the batch, loaded at the end. */
static int list_load_step(wcache_etcd *s)
{
    lstate *L = &s->L;
    wcache_kv kv;
    int rc;
    while ((rc = scan_next(s, &L->sc, &kv)) == WCACHE_OK) {
        rc = wcache_batch_put_meta(s->b, kv.key, kv.key_len, kv.value, kv.value_len,
                                   kv.create_revision, kv.mod_revision, kv.version);
        if (rc != WCACHE_OK) {
            fail(s, rc, "list: the cache refuses a key: %s", wcache_strerror(rc));
            return rc;
        }
    }
    if (rc != WCACHE_ENOTFOUND)
        return rc;
    int64_t rev = L->sc.rev;
    /* Counted before the cache moves, so that whoever sees the new revision
     * sees the counters too. */
    atomic_store(&s->list_rev, rev);
    atomic_fetch_add(&s->lists, 1);
    rc = wcache_ingest_load(s->c, s->b, rev);
    if (rc != WCACHE_OK) {
        atomic_fetch_sub(&s->lists, 1);
        fail(s, rc, "list: load at %lld: %s", (long long)rev, wcache_strerror(rc));
    }
    return rc;
}

/* A re-list: merge etcd's range with the cache's state into the batch, as
 * far as the pages received allow. */
static int reconcile_step(wcache_etcd *s)
{
    lstate *L = &s->L;
    for (;;) {
        if (L->adv_e) {
            L->re = scan_next(s, &L->sc, &L->e);
            if (L->re == NEED_PAGE)
                return NEED_PAGE;
            L->adv_e = 0;
        }
        if (L->adv_k) {
            L->rk = cscan_next(s, &L->cs, &L->k);
            L->adv_k = 0;
        }
        if (L->rk != WCACHE_OK)
            return L->rk;
        if (L->re != WCACHE_OK && L->re != WCACHE_ENOTFOUND)
            return L->re;
        int have_e = L->re == WCACHE_OK;
        if (!have_e && !L->k)
            return WCACHE_ENOTFOUND;
        const wcache_kv *e = &L->e, *k = L->k;
        int cmp = !have_e ? 1 : !k ? -1 : wci_keycmp(e->key, e->key_len, k->key, k->key_len);
        wcache_code rc = WCACHE_OK;
        if (cmp <= 0 && e->mod_revision > L->crev) {
            /* etcd's own metadata, so that reads and events report it */
            rc = wcache_batch_put_meta(s->b, e->key, e->key_len, e->value, e->value_len,
                                       e->create_revision, e->mod_revision, e->version);
        } else if (cmp < 0 || (cmp == 0 && (e->value_len != k->value_len ||
                                            memcmp(e->value, k->value, e->value_len) != 0))) {
            /* unchanged since the cache's revision by etcd's word, yet
             * absent or different: the cache diverged.  Its value is made
             * right at the re-list's revision (metadata cannot be put below
             * revisions readers may hold). */
            wci_log(s->c, WCACHE_LOG_WARN,
                    "etcd: re-list: %.*s at mod_revision %lld differs from the cache at %lld",
                    (int)(e->key_len > 120 ? 120 : e->key_len), (const char *)e->key,
                    (long long)e->mod_revision, (long long)L->crev);
            rc = wcache_batch_put(s->b, e->key, e->key_len, e->value, e->value_len);
        } else if (cmp > 0)
            rc = wcache_batch_delete(s->b, k->key, k->key_len);
        if (rc != WCACHE_OK)
            return rc;
        L->adv_e = cmp <= 0;
        L->adv_k = cmp >= 0;
    }
}

/* The merge is complete: apply it. */
static wcache_code reconcile_finish(wcache_etcd *s)
{
    lstate *L = &s->L;
    int64_t lrev = L->sc.rev, crev = L->crev;
    wcache_view_end(L->cs.v); /* the cache moves next */
    if (lrev < crev) {
        fail(s, WCACHE_EORDER, "re-list at %lld is behind the cache (%lld): a lagging member",
             (long long)lrev, (long long)crev);
        return WCACHE_EORDER;
    }
    /* counted before the cache moves, as in list_load_step */
    atomic_store(&s->list_rev, lrev);
    atomic_fetch_add(&s->lists, 1);
    atomic_fetch_add(&s->relists, 1);
    wcache_code rc = WCACHE_OK;
    size_t n = wcache_batch_count(s->b);
    if (n > 0) {
        if (lrev == crev) {
            fail(s, WCACHE_EORDER, "cache differs from etcd at its own revision %lld",
                 (long long)crev);
            rc = WCACHE_EORDER;
        } else {
            rc = wcache_ingest_relist(s->c, s->b, lrev);
            if (rc != WCACHE_OK)
                fail(s, rc, "re-list: batch at %lld: %s", (long long)lrev, wcache_strerror(rc));
        }
    } else if (lrev > crev) {
        /* nothing to change, but what happened between crev and lrev is
         * unknown all the same (keys may have come and gone) */
        rc = wcache_ingest_relist(s->c, s->b, lrev);
    }
    if (rc != WCACHE_OK) {
        atomic_fetch_sub(&s->lists, 1);
        atomic_fetch_sub(&s->relists, 1);
    } else {
        wci_log(s->c, WCACHE_LOG_INFO, "etcd: re-listed at %lld: %zu changes", (long long)lrev,
                n);
    }
    return rc;
}

/* A page arrived (or failed): go on with the list.  Returns WCACHE_OK
 * when the list is complete, NEED_PAGE when the next page is on its way,
 * or an error. */
static int list_page(wcache_etcd *s, wcache_code rc, json_t *page, unsigned char *pbody,
                     size_t plen)
{
    lstate *L = &s->L;
    if (rc != WCACHE_OK) {
        json_decref(page);
        wci_free(s->al, pbody);
        return rc;
    }
    rc = pbody ? scan_take_pb(s, &L->sc, pbody, plen) : scan_take(s, &L->sc, page);
    if (rc != WCACHE_OK)
        return rc;
    int r = L->reconcile ? reconcile_step(s) : list_load_step(s);
    if (r == NEED_PAGE) /* on its way since scan_take, unless a step failed to start it */
        return L->sc.fetching ? NEED_PAGE : WCACHE_ENOMEM;
    if (L->reconcile && r == WCACHE_ENOTFOUND)
        r = reconcile_finish(s);
    return r;
}

/* ---- the watch ---- */

static void publish_counters(wcache_etcd *s)
{
    if (s->ew.created && !atomic_load_explicit(&s->synced, memory_order_relaxed))
        atomic_store(&s->synced, 1);
}

static size_t watch_write(char *data, size_t sz, size_t nm, void *ud)
{
    wcache_etcd *s = ud;
    size_t n = sz * nm;
    atomic_fetch_add_explicit(&s->bytes, n, memory_order_relaxed);
    if (s->main.status != 200)
        return 0; /* an error answer: not a stream */
    int st = wci_ew_feed(&s->ew, data, n);
    publish_counters(s);
    if (s->ew.ckey_rev > s->want_compact)
        learn_compaction(s, s->ew.ckey_rev, "compaction key");
    else if (s->want_compact > wcache_cache_compacted_revision(s->c))
        apply_compaction(s);
    return st == WCI_EW_GO ? n : 0;
}

/* One watch stream from the cache's revision + 1 (with the compaction
 * key's watch beside it when there is one). */
static wcache_code watch_begin(wcache_etcd *s)
{
    wci_ew *w = &s->ew;
    wci_ew_reset(w);
    w->ckey_watch = s->ckey_b64 != NULL;
    long long from = (long long)(w->applied + 1);
    size_t cap =
        strlen(s->key_b64) + strlen(s->end_b64) + (s->ckey_b64 ? strlen(s->ckey_b64) : 0) + 400;
    char ck[cap];
    ck[0] = 0;
    if (s->ckey_b64)
        snprintf(ck, cap,
                 "{\"create_request\":{\"key\":\"%s\",\"start_revision\":\"%lld\","
                 "\"watch_id\":\"%d\"}}",
                 s->ckey_b64, from, WCI_EW_CKEY_ID);
    char *body = bodyf(s, cap * 2,
                       "{\"create_request\":{\"key\":\"%s\",\"range_end\":\"%s\","
                       "\"start_revision\":\"%lld\",\"progress_notify\":true,"
                       "\"prev_kv\":true}}%s",
                       s->key_b64, s->end_b64, from, ck);
    wcache_code rc = xfer_start(s, &s->main, X_WATCH, "/v3/watch", body);
    if (rc == WCACHE_OK) {
        atomic_fetch_add(&s->connects, 1);
        wci_log(s->c, WCACHE_LOG_DEBUG, "etcd: watch %s from revision %lld", s->eps[s->main.ep],
                from);
    }
    return rc;
}

/* The stream ended (res: curl's word on it): what next. */
static void watch_end(wcache_etcd *s, CURLcode res)
{
    wci_ew *w = &s->ew;
    size_t ep = s->main.ep;
    long status = s->main.status;
    int healthy = w->created;
    if (res == CURLE_OK)
        wci_ew_end(w); /* parses a last message without its newline */
    publish_counters(s);
    int st = w->state;
    if (st == WCI_EW_GO || (res != CURLE_OK && res != CURLE_WRITE_ERROR)) {
        if (status != 200 && status != 0)
            fail(s, WCACHE_EHTTP, "%s/v3/watch: HTTP %ld", s->eps[ep], status);
        else
            fail(s, WCACHE_ECURL, "%s/v3/watch: %s", s->eps[ep], curl_easy_strerror(res));
        st = WCI_EW_RECONNECT;
    } else if (st == WCI_EW_COMPACTED) {
        atomic_store(&s->compact_rev, w->compact_rev);
        wci_log(s->c, WCACHE_LOG_INFO, "etcd: %s", w->err);
    } else {
        fail(s, st == WCI_EW_FATAL ? WCACHE_ESTATE : WCACHE_ECORRUPT, "%s/v3/watch: %s",
             s->eps[ep], w->err);
    }
    if (healthy)
        s->backoff = s->backoff_min;
    if (st == WCI_EW_FATAL) {
        s->st = S_NAP; /* for good: nothing more is tried */
        s->wake_at = INT64_MAX;
        return;
    }
    if (st == WCI_EW_COMPACTED || st == WCI_EW_DIVERGED) {
        s->need_list = 1;
        if (st == WCI_EW_COMPACTED) {
            s->st = S_IDLE; /* no wait: the member is fine */
            return;
        }
    } else {
        atomic_fetch_add(&s->reconnects, 1);
        next_endpoint(s);
    }
    nap(s);
}

/* ---- the compaction probe ---- */

static wcache_code probe_begin(wcache_etcd *s)
{
    int64_t k = wcache_cache_compacted_revision(s->c);
    if (k < 1)
        return WCACHE_ENOTFOUND;
    atomic_fetch_add(&s->probes, 1);
    char *body = bodyf(s, strlen(s->key_b64) + 100,
                       "{\"key\":\"%s\",\"revision\":\"%lld\",\"count_only\":true}", s->key_b64,
                       (long long)k);
    return xfer_start(s, &s->side, X_PROBE, "/v3/kv/range", body);
}

/* The probe's range was refused as compacted: etcd's cancel of a watch
 * from the same revision says exactly where. */
static wcache_code probe_watch_begin(wcache_etcd *s)
{
    s->probe_found = 0;
    char *body = bodyf(s, strlen(s->key_b64) + 100,
                       "{\"create_request\":{\"key\":\"%s\",\"start_revision\":\"%lld\"}}",
                       s->key_b64, (long long)wcache_cache_compacted_revision(s->c));
    return xfer_start(s, &s->side, X_PROBE_WATCH, "/v3/watch", body);
}

static size_t probe_write(char *data, size_t sz, size_t nm, void *ud)
{
    wcache_etcd *s = ud;
    wci_rbuf *b = &s->side.b;
    size_t n = wci_rbuf_write(data, sz, nm, b);
    if (n != sz * nm || s->side.status != 200)
        return 0;
    char *nl;
    while ((nl = memchr(b->p, '\n', b->len))) {
        json_t *m = json_loadb(b->p, (size_t)(nl - b->p), 0, NULL);
        const json_t *r = json_object_get(m, "result");
        int64_t cr = 0;
        int created = json_is_true(json_object_get(r, "created"));
        if (json_is_true(json_object_get(r, "canceled")) &&
            wci_json_i64(r, "compact_revision", &cr) == 0 && cr > 0)
            s->probe_found = cr;
        json_decref(m);
        if (!created)
            return 0; /* the answer (or something else: not compacted after all) */
        size_t rest = b->len - (size_t)(nl + 1 - b->p);
        memmove(b->p, nl + 1, rest);
        b->len = rest;
    }
    return n;
}

/* ---- the state machine ---- */

static void ckey_done(wcache_etcd *s, wcache_code rc, json_t *ans)
{
    if (rc == WCACHE_OK) {
        const json_t *kv = json_array_get(json_object_get(ans, "kvs"), 0);
        unsigned char *v = NULL;
        size_t cap = 0;
        long vl = kv ? wci_json_b64(s->al, kv, "value", &v, &cap) : 0;
        int64_t r = vl > 0 ? wci_ckey_value(v, (size_t)vl) : -1;
        wci_free(s->al, v);
        if (r > 0)
            learn_compaction(s, r, "compaction key");
        if (watch_begin(s) == WCACHE_OK) {
            s->st = S_WATCH;
            return;
        }
    }
    next_endpoint(s);
    nap(s);
}

/* The outcome of a gRPC page: *rc, and the body taken when it worked.
 * Returns 1 when gRPC never worked with this source and did not now
 * either (no HTTP/2, no gRPC status: a proxy that speaks only the JSON
 * gateway): the source then uses the gateway from now on. */
static int grpc_answer(wcache_etcd *s, xfer *x, CURLcode res, wcache_code *rc,
                       unsigned char **body, size_t *len)
{
    long hs = 0;
    curl_easy_getinfo(x->e, CURLINFO_RESPONSE_CODE, &hs);
    if (res != CURLE_OK || hs != 200 || x->grpc_status < 0) {
        if (!s->grpc_ok && !x->b.over) {
            s->grpc = 0;
            wci_log(s->c, WCACHE_LOG_INFO,
                    "etcd: %s: no gRPC (%s, HTTP %ld): ranges go through the JSON gateway",
                    x->url, curl_easy_strerror(res), hs);
            return 1;
        }
        *rc = x->b.over ? WCACHE_ETOOBIG : res != CURLE_OK ? WCACHE_ECURL : WCACHE_EHTTP;
        fail(s, *rc, "%s: %s, HTTP %ld", x->url, curl_easy_strerror(res), hs);
    } else if (x->grpc_status != 0) {
        *rc = strstr(x->grpc_msg, "required revision has been compacted") ? WCACHE_ECOMPACTED
              : strstr(x->grpc_msg, "required revision is a future revision") ? WCACHE_EFUTURE
                                                                              : WCACHE_EHTTP;
        fail(s, *rc, "%s: gRPC status %d: %s", x->url, x->grpc_status, x->grpc_msg);
    } else {
        s->grpc_ok = 1;
        *rc = WCACHE_OK;
        *body = (unsigned char *)x->b.p;
        *len = x->b.len;
        x->b.p = NULL;
    }
    return 0;
}

/* A transfer finished. */
static void xfer_done(wcache_etcd *s, xfer *x, CURLcode res)
{
    int kind = x->kind;
    char what[1100];
    snprintf(what, sizeof what, "%s", x->url);
    json_t *ans = NULL;
    wcache_code rc = WCACHE_OK;
    unsigned char *pbody = NULL;
    size_t plen = 0;
    if (x->grpc) {
        if (grpc_answer(s, x, res, &rc, &pbody, &plen)) {
            xfer_free(s, x); /* gRPC is not there: the same page over JSON */
            if (scan_fetch(s, &s->L.sc) == WCACHE_OK)
                return;
            rc = WCACHE_ENOMEM;
        }
    } else if (kind == X_PAGE || kind == X_CKEY || kind == X_PROBE) {
        rc = answer(s, x->e, what, res, &x->b, kind == X_PROBE, &ans);
    }
    if (kind == X_WATCH) {
        watch_end(s, res); /* reads s->main before it goes */
        xfer_free(s, x);
        return;
    }
    xfer_free(s, x);
    switch (kind) {
    case X_PAGE: {
        int r = list_page(s, rc, ans, pbody, plen);
        if (r == NEED_PAGE)
            return;
        list_end(s);
        uint32_t pl = atomic_load(&s->page_limit);
        if (r == WCACHE_ETOOBIG && pl > 1) {
            /* etcd pages by count, the answer is bounded by bytes: big
             * objects need smaller pages.  The list starts over at once. */
            atomic_store(&s->page_limit, pl / 2);
            wci_log(s->c, WCACHE_LOG_INFO, "etcd: a page of %u keys is too big: pages of %u",
                    pl, pl / 2);
            s->st = S_IDLE;
            return;
        }
        if (r == WCACHE_OK || r == WCACHE_ENOTFOUND) {
            s->need_list = 0;
            s->st = S_IDLE;
            apply_compaction(s);
        } else {
            next_endpoint(s);
            nap(s);
        }
        return;
    }
    case X_CKEY: ckey_done(s, rc, ans); break;
    case X_PROBE:
        if (rc == WCACHE_ECOMPACTED && probe_watch_begin(s) == WCACHE_OK)
            break;
        s->next_probe = wci_mono_ms() + s->probe_ms;
        break;
    case X_PROBE_WATCH:
        if (s->probe_found > 0)
            learn_compaction(s, s->probe_found, "probe");
        s->next_probe = wci_mono_ms() + s->probe_ms;
        break;
    default: break;
    }
    json_decref(ans);
}

/* Take the next steps that need no transfer to finish. */
static void step(wcache_etcd *s)
{
    for (int guard = 0; guard < 4; guard++) {
        if (s->st == S_NAP) {
            if (wci_mono_ms() < s->wake_at)
                break;
            s->st = S_IDLE;
        }
        if (s->st != S_IDLE)
            break;
        wcache_code rc;
        if (s->need_list) {
            rc = list_begin(s);
            if (rc == WCACHE_OK) {
                s->st = S_LIST;
                break;
            }
            list_end(s);
        } else if (s->ckey_b64) {
            char *body = bodyf(s, strlen(s->ckey_b64) + 32, "{\"key\":\"%s\"}", s->ckey_b64);
            rc = xfer_start(s, &s->main, X_CKEY, "/v3/kv/range", body);
            if (rc == WCACHE_OK) {
                s->st = S_CKEY;
                break;
            }
        } else {
            rc = watch_begin(s);
            if (rc == WCACHE_OK) {
                s->st = S_WATCH;
                break;
            }
        }
        fail(s, rc, "cannot start a transfer: %s", wcache_strerror(rc));
        nap(s);
    }
    if (s->st == S_WATCH && s->probe_ms >= 0 && !s->side.e && wci_mono_ms() >= s->next_probe &&
        probe_begin(s) != WCACHE_OK)
        s->next_probe = wci_mono_ms() + s->probe_ms;
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *ud, void *sp)
{
    wcache_etcd *s = ud;
    (void)e;
    (void)sp;
    size_t i = 0;
    while (i < s->nsocks && s->socks[i].fd != fd)
        i++;
    if (what == CURL_POLL_REMOVE) {
        if (i < s->nsocks)
            s->socks[i] = s->socks[--s->nsocks];
        return 0;
    }
    if (i == s->nsocks) {
        if (s->nsocks == s->capsocks) {
            size_t cap = s->capsocks ? s->capsocks * 2 : 8;
            sock *ns = wci_malloc(s->al, cap * sizeof *ns);
            if (!ns)
                return -1;
            if (s->nsocks)
                memcpy(ns, s->socks, s->nsocks * sizeof *ns);
            wci_free(s->al, s->socks);
            s->socks = ns;
            s->capsocks = cap;
        }
        s->nsocks++;
    }
    s->socks[i] = (sock){fd, what};
    return 0;
}

static short poll_events(int what)
{
    return (short)(((what & CURL_POLL_IN) ? POLLIN : 0) |
                   ((what & CURL_POLL_OUT) ? POLLOUT : 0));
}

/* Milliseconds until something is due: curl's timers, a nap, a probe. */
static int64_t due_in(wcache_etcd *s)
{
    long cm = -1;
    curl_multi_timeout(s->multi, &cm);
    int64_t t = cm < 0 ? 1000 : cm, now = wci_mono_ms();
    if (s->st == S_NAP && s->wake_at - now < t)
        t = s->wake_at - now;
    if (s->st == S_WATCH && s->probe_ms >= 0 && !s->side.e && s->next_probe - now < t)
        t = s->next_probe - now;
    return t < 0 ? 0 : t;
}

/* Do what is ready: sockets, timers, finished transfers, next steps. */
static void pump(wcache_etcd *s)
{
    int running;
    if (s->nsocks > s->cappfd) {
        struct pollfd *np = wci_malloc(s->al, s->nsocks * sizeof *np);
        if (np) {
            wci_free(s->al, s->pfd);
            s->pfd = np;
            s->cappfd = s->nsocks;
        }
    }
    size_t n = s->nsocks < s->cappfd ? s->nsocks : s->cappfd;
    for (size_t i = 0; i < n; i++)
        s->pfd[i] = (struct pollfd){s->socks[i].fd, poll_events(s->socks[i].what), 0};
    if (n > 0 && poll(s->pfd, (nfds_t)n, 0) > 0) {
        for (size_t i = 0; i < n; i++) {
            short r = s->pfd[i].revents;
            if (!r)
                continue;
            int ev = ((r & (POLLIN | POLLHUP)) ? CURL_CSELECT_IN : 0) |
                     ((r & POLLOUT) ? CURL_CSELECT_OUT : 0) |
                     ((r & (POLLERR | POLLNVAL)) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(s->multi, s->pfd[i].fd, ev, &running);
        }
    }
    /* Every transfer gets its turn, not only those whose socket or timer
     * fired: libcurl 7.88 can hold the end of an HTTP/2 answer it has
     * already read until some later timer (seconds), which made every page
     * of a list wait. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    curl_multi_socket_all(s->multi, &running); /* deprecated, and the cure */
#pragma GCC diagnostic pop
    CURLMsg *m;
    int q;
    while ((m = curl_multi_info_read(s->multi, &q))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x)
            xfer_done(s, x, m->data.result);
    }
    step(s);
}

/* Back to rest: every transfer abandoned, a list in progress dropped. */
static void halt(wcache_etcd *s)
{
    xfer_free(s, &s->main);
    xfer_free(s, &s->side);
    list_end(s);
    s->st = S_IDLE;
    atomic_store(&s->synced, 0);
    atomic_store(&s->running, 0);
    s->mode = M_NONE;
}

static void begin(wcache_etcd *s)
{
    s->need_list = wcache_cache_revision(s->c) == 0;
    s->backoff = s->backoff_min;
    s->st = S_IDLE;
    s->next_probe = wci_mono_ms() + (s->probe_ms > 0 ? s->probe_ms : 0);
    atomic_store(&s->stop, 0);
    atomic_store(&s->running, 1);
}

static void *run(void *arg)
{
    wcache_etcd *s = arg;
    step(s);
    while (!atomic_load(&s->stop)) {
        size_t n = s->nsocks;
        struct pollfd pf[n + 1];
        pf[0] = (struct pollfd){s->wake[0], POLLIN, 0};
        for (size_t i = 0; i < n; i++)
            pf[i + 1] = (struct pollfd){s->socks[i].fd, poll_events(s->socks[i].what), 0};
        int64_t t = due_in(s);
        poll(pf, (nfds_t)(n + 1), t > 1000 ? 1000 : (int)t);
        if (pf[0].revents) {
            char tmp[16];
            while (read(s->wake[0], tmp, sizeof tmp) > 0)
                ;
        }
        if (atomic_load(&s->stop))
            break;
        pump(s);
    }
    halt(s);
    return NULL;
}
/* ---- the public functions ---- */

/* POST body to path of endpoint ep on the caller's thread (consistent
 * reads), and parse the answer; nothing is logged. */
static wcache_code post_blocking(wcache_etcd *s, size_t ep, const char *path, const char *body,
                                 json_t **out)
{
    char url[1024];
    struct curl_slist *hdrs = NULL;
    wci_rbuf b = {.al = s->al, .max = s->max_msg, .bytes = &s->bytes};
    *out = NULL;
    CURL *e = easy_new(s, path, body, &hdrs, url, sizeof url, ep);
    if (!e || !hdrs) {
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(e);
        return WCACHE_ENOMEM;
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, wci_rbuf_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, s->request_ms);
    CURLcode res = curl_easy_perform(e);
    wcache_code rc = answer(s, e, url, res, &b, 1, out);
    curl_easy_cleanup(e);
    curl_slist_free_all(hdrs);
    wci_free(s->al, b.p);
    return rc;
}

static int cur_rev_cb(int64_t *rev, void *ud)
{
    return wcache_etcd_current_revision(ud, rev) == WCACHE_OK ? 0 : -1;
}

/* Split "a,b,c" into trimmed URLs without a trailing '/'. */
static wcache_code parse_endpoints(wcache_etcd *s, const char *list)
{
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    s->eps = wci_calloc(s->al, n, sizeof *s->eps);
    if (!s->eps)
        return WCACHE_ENOMEM;
    const char *p = list;
    while (*p) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        const char *a = p, *z = p + len;
        while (a < z && (*a == ' ' || *a == '\t'))
            a++;
        while (z > a && (z[-1] == ' ' || z[-1] == '\t' || z[-1] == '/'))
            z--;
        if (z > a) {
            if (!((z - a > 7 && strncmp(a, "http://", 7) == 0) ||
                  (z - a > 8 && strncmp(a, "https://", 8) == 0)) ||
                z - a > 900)
                return WCACHE_EINVAL;
            if (!(s->eps[s->neps++] = wci_memdup(s->al, a, (size_t)(z - a))))
                return WCACHE_ENOMEM;
        }
        p += len + (q != NULL);
    }
    return s->neps ? WCACHE_OK : WCACHE_EINVAL;
}

/* The watched range as etcd's key / range_end, in base64. */
static wcache_code set_range(wcache_etcd *s, const wcache_etcd_opts *o)
{
    static const unsigned char zero = 0;
    const unsigned char *k = &zero, *e = &zero;
    size_t kl = 1, el = 1;
    unsigned char *end = NULL;
    if (o->prefix_len > 0) {
        if (!o->prefix)
            return WCACHE_EINVAL;
        k = o->prefix;
        kl = o->prefix_len;
        end = wci_memdup(s->al, o->prefix, o->prefix_len);
        if (!end)
            return WCACHE_ENOMEM;
        size_t n = o->prefix_len;
        while (n > 0 && end[n - 1] == 0xff)
            n--;
        if (n > 0) { /* the prefix with its last byte below 0xff incremented */
            end[n - 1]++;
            e = end;
            el = n;
        }
    } else {
        if ((o->start_len && !o->start) || (o->end_len && !o->end))
            return WCACHE_EINVAL;
        if (o->start_len) {
            k = o->start;
            kl = o->start_len;
        }
        if (o->end_len) {
            e = o->end;
            el = o->end_len;
        }
    }
    s->key_b64 = b64dup(s->al, k, kl);
    s->end_b64 = b64dup(s->al, e, el);
    wci_free(s->al, end);
    return s->key_b64 && s->end_b64 ? WCACHE_OK : WCACHE_ENOMEM;
}

/* The options of 0.1 end where compact_key begins: a caller built against
 * them still works, the newer fields read as zero. */
#define OPTS_V1_SIZE offsetof(wcache_etcd_opts, compact_key)

wcache_code wcache_etcd_create(wcache_etcd **out, wcache_cache *c, const wcache_etcd_opts *opts)
{
    if (!out || !wci_cache_ok(c) || !opts || opts->size < OPTS_V1_SIZE)
        return WCACHE_EINVAL;
    wcache_etcd_opts oo = {0};
    memcpy(&oo, opts, opts->size < sizeof oo ? opts->size : sizeof oo);
    const wcache_etcd_opts *o = &oo;
    if (!o->endpoints || o->connect_timeout_ms < 0 || o->request_timeout_ms < 0 ||
        o->backoff_min_ms < 0 || o->backoff_max_ms < 0 ||
        (o->compact_key_len && !o->compact_key))
        return WCACHE_EINVAL;
    *out = NULL;
    if (c->open)
        return WCACHE_ESTATE;
    wcache_etcd *s = wci_calloc(&c->al, 1, sizeof *s);
    if (!s)
        return WCACHE_ENOMEM;
    s->magic = WCI_ETCD_MAGIC;
    s->c = c;
    s->al = &c->al;
    s->insecure = o->insecure != 0;
    s->connect_ms = o->connect_timeout_ms ? (long)o->connect_timeout_ms : 5000;
    s->request_ms = o->request_timeout_ms ? (long)o->request_timeout_ms : 30000;
    s->backoff_min = o->backoff_min_ms ? o->backoff_min_ms : 100;
    s->backoff_max = o->backoff_max_ms ? o->backoff_max_ms : 5000;
    if (s->backoff_max < s->backoff_min)
        s->backoff_max = s->backoff_min;
    s->page_limit = o->page_limit ? o->page_limit : 50000;
    s->max_msg = o->max_message_bytes ? (size_t)o->max_message_bytes : (size_t)256 << 20;
    s->rng = (uint64_t)(uintptr_t)s ^ (uint64_t)wci_mono_ms();
    s->probe_ms = o->compact_probe_ms ? o->compact_probe_ms : 60000;
    s->wake[0] = s->wake[1] = -1;
    wcache_code rc = parse_endpoints(s, o->endpoints);
    if (rc == WCACHE_OK && o->compact_key_len &&
        !(s->ckey_b64 = b64dup(s->al, o->compact_key, o->compact_key_len)))
        rc = WCACHE_ENOMEM;
    if (rc == WCACHE_OK)
        rc = set_range(s, o);
    if (rc == WCACHE_OK) {
        size_t a = strlen(s->key_b64), z = strlen(s->end_b64);
        s->key_raw = wci_malloc(s->al, a / 4 * 3 + 1);
        s->end_raw = wci_malloc(s->al, z / 4 * 3 + 1);
        if (!s->key_raw || !s->end_raw)
            rc = WCACHE_ENOMEM;
        else {
            s->key_rlen = (size_t)wci_b64_decode(s->key_b64, a, s->key_raw);
            s->end_rlen = (size_t)wci_b64_decode(s->end_b64, z, s->end_raw);
        }
    }
    if (rc == WCACHE_OK && o->auth_token) {
        size_t n = strlen(o->auth_token) + 16;
        if ((s->grpc_auth = wci_malloc(s->al, n)))
            snprintf(s->grpc_auth, n, "token: %s", o->auth_token);
        else
            rc = WCACHE_ENOMEM;
    }
    if (rc == WCACHE_OK && o->auth_token) {
        size_t n = strlen(o->auth_token) + 32;
        if ((s->auth = wci_malloc(s->al, n)))
            snprintf(s->auth, n, "Authorization: %s", o->auth_token);
        else
            rc = WCACHE_ENOMEM;
    }
    if (rc == WCACHE_OK && ((o->ca_file && !(s->ca = dupstr(s->al, o->ca_file))) ||
                            (o->cert_file && !(s->cert = dupstr(s->al, o->cert_file))) ||
                            (o->key_file && !(s->key = dupstr(s->al, o->key_file)))))
        rc = WCACHE_ENOMEM;
    if (rc == WCACHE_OK)
        rc = wci_http_acquire(&s->multi, &s->curl_inited, s->wake, &c->last_errno);
    /* gRPC needs HTTP/2 from libcurl; without it every page is JSON */
    s->grpc =
        rc == WCACHE_OK && (curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_HTTP2);
    if (rc == WCACHE_OK) {
        curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
        curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    }
    if (rc == WCACHE_OK && wcache_batch_create(c, &s->b) != WCACHE_OK)
        rc = WCACHE_ENOMEM;
    if (rc == WCACHE_OK && wci_ew_init(&s->ew, c, s->max_msg) != 0)
        rc = WCACHE_ENOMEM;
    if (rc == WCACHE_OK) {
        if (pthread_mutex_init(&s->rev_mu, NULL) != 0)
            rc = WCACHE_ESYS;
        else if (pthread_cond_init(&s->rev_cv, NULL) != 0) {
            pthread_mutex_destroy(&s->rev_mu);
            rc = WCACHE_ESYS;
        } else
            s->rev_sync = 1;
    }
    if (rc == WCACHE_OK)
        rc = wcache_cache_set_source(c, cur_rev_cb, NULL, s);
    if (rc != WCACHE_OK) {
        wcache_etcd_free(s);
        return rc;
    }
    *out = s;
    return WCACHE_OK;
}

wcache_code wcache_etcd_start(wcache_etcd *s)
{
    if (!s || s->magic != WCI_ETCD_MAGIC)
        return WCACHE_EINVAL;
    if (s->mode != M_NONE || !s->c->open)
        return WCACHE_ESTATE;
    begin(s);
    s->mode = M_THREAD;
    int e = pthread_create(&s->th, NULL, run, s);
    if (e != 0) {
        halt(s);
        s->c->last_errno = e;
        return WCACHE_ESYS;
    }
    s->joinable = 1;
    return WCACHE_OK;
}

wcache_code wcache_etcd_start_loop(wcache_etcd *s)
{
    if (!s || s->magic != WCI_ETCD_MAGIC)
        return WCACHE_EINVAL;
    if (s->mode != M_NONE || !s->c->open)
        return WCACHE_ESTATE;
    begin(s);
    s->mode = M_LOOP;
    step(s);
    return WCACHE_OK;
}

wcache_code wcache_etcd_fds(wcache_etcd *s, wcache_etcd_fd *fds, size_t cap, size_t *count,
                            int64_t *timeout_ms)
{
    if (!s || s->magic != WCI_ETCD_MAGIC || !count || !timeout_ms || (cap && !fds))
        return WCACHE_EINVAL;
    if (s->mode != M_LOOP)
        return WCACHE_ESTATE;
    *count = s->nsocks;
    *timeout_ms = due_in(s);
    if (s->nsocks > cap)
        return WCACHE_ETOOBIG;
    for (size_t i = 0; i < s->nsocks; i++) {
        fds[i].fd = s->socks[i].fd;
        fds[i].events = ((s->socks[i].what & CURL_POLL_IN) ? WCACHE_ETCD_IN : 0) |
                        ((s->socks[i].what & CURL_POLL_OUT) ? WCACHE_ETCD_OUT : 0);
    }
    return WCACHE_OK;
}

wcache_code wcache_etcd_perform(wcache_etcd *s)
{
    if (!s || s->magic != WCI_ETCD_MAGIC)
        return WCACHE_EINVAL;
    if (s->mode != M_LOOP)
        return WCACHE_ESTATE;
    pump(s);
    return WCACHE_OK;
}

wcache_code wcache_etcd_stop(wcache_etcd *s)
{
    if (!s || s->magic != WCI_ETCD_MAGIC)
        return WCACHE_EINVAL;
    if (s->mode == M_LOOP) {
        halt(s);
        return WCACHE_OK;
    }
    if (!s->joinable)
        return WCACHE_OK;
    /* the thread polls the wake-up pipe beside libcurl's sockets, never
     * curl_multi_poll: no multi to wake */
    wci_http_thread_stop(s->th, &s->stop, NULL, s->wake[1]);
    s->joinable = 0;
    return WCACHE_OK;
}

void wcache_etcd_free(wcache_etcd *s)
{
    if (!s || s->magic != WCI_ETCD_MAGIC)
        return;
    wcache_etcd_stop(s);
    const wci_alloc *al = s->al;
    if (s->ew.c)
        wci_ew_fini(&s->ew);
    wcache_batch_free(s->b);
    wci_http_release(s->multi, s->curl_inited, s->wake);
    if (s->rev_sync) {
        pthread_cond_destroy(&s->rev_cv);
        pthread_mutex_destroy(&s->rev_mu);
    }
    for (size_t i = 0; i < s->neps; i++)
        wci_free(al, s->eps[i]);
    wci_free(al, s->eps);
    wci_free(al, s->key_b64);
    wci_free(al, s->end_b64);
    wci_free(al, s->ckey_b64);
    wci_free(al, s->ca);
    wci_free(al, s->cert);
    wci_free(al, s->key);
    wci_free(al, s->auth);
    wci_free(al, s->grpc_auth);
    wci_free(al, s->key_raw);
    wci_free(al, s->end_raw);
    wci_free(al, s->socks);
    wci_free(al, s->pfd);
    s->magic = 0;
    wci_free(al, s);
}

/* The counters of 0.1 end where probes begins. */
#define STATS_V1_SIZE offsetof(wcache_etcd_stats, probes)

wcache_code wcache_etcd_stat(const wcache_etcd *s, wcache_etcd_stats *st)
{
    if (!s || s->magic != WCI_ETCD_MAGIC || !st || st->size < STATS_V1_SIZE)
        return WCACHE_EINVAL;
    wcache_etcd *m = (wcache_etcd *)s; /* atomics are read, not changed */
    wcache_etcd_stats r = {.size = sizeof r};
    r.synced = atomic_load(&m->synced);
    r.running = atomic_load(&m->running);
    r.last_error = atomic_load(&m->last_error);
    r.revision = wcache_cache_revision(s->c);
    r.list_revision = atomic_load(&m->list_rev);
    r.compact_revision = atomic_load(&m->compact_rev);
    r.lists = atomic_load(&m->lists);
    r.relists = atomic_load(&m->relists);
    r.connects = atomic_load(&m->connects);
    r.reconnects = atomic_load(&m->reconnects);
    r.errors = atomic_load(&m->errors);
    r.messages = atomic_load(&m->ew.messages);
    r.bytes = atomic_load(&m->bytes);
    r.events = atomic_load(&m->ew.events);
    r.progress_applied = atomic_load(&m->ew.progress_applied);
    r.progress_ignored = atomic_load(&m->ew.progress_ignored);
    if (st->size >= offsetof(wcache_etcd_stats, probes) + sizeof r.probes)
        r.probes = atomic_load(&m->probes);
    if (st->size >= offsetof(wcache_etcd_stats, revision_probes) + sizeof r.revision_probes) {
        r.revision_reads = atomic_load(&m->rev_reads);
        r.revision_probes = atomic_load(&m->rev_probes);
    }
    r.size = st->size;
    memcpy(st, &r, st->size < sizeof r ? st->size : sizeof r);
    return WCACHE_OK;
}

/* One count-only range of one key, each endpoint tried once. */
static wcache_code rev_probe(wcache_etcd *s, int64_t *rev)
{
    atomic_fetch_add_explicit(&s->rev_probes, 1, memory_order_relaxed);
    size_t cap = strlen(s->key_b64) + strlen(s->end_b64) + 80;
    char *body = wci_malloc(s->al, cap);
    if (!body)
        return WCACHE_ENOMEM;
    /* One key, not the range: the header's revision is the store's either
     * way (a linearizable read), and etcd counts every key of a range --
     * 100k keys per consistent read behind a busy proxy. */
    snprintf(body, cap, "{\"key\":\"%s\",\"count_only\":true}", s->key_b64);
    wcache_code rc = WCACHE_ECURL;
    size_t ep0 = atomic_load(&s->ep);
    for (size_t k = 0; k < s->neps; k++) {
        json_t *ans = NULL;
        rc = post_blocking(s, (ep0 + k) % s->neps, "/v3/kv/range", body, &ans);
        if (rc == WCACHE_OK) {
            int64_t r;
            if (wci_json_i64(json_object_get(ans, "header"), "revision", &r) != 0 || r < 1)
                rc = WCACHE_ECORRUPT;
            else
                *rev = r;
        }
        json_decref(ans);
        if (rc == WCACHE_OK || rc == WCACHE_ENOMEM)
            break;
    }
    wci_free(s->al, body);
    return rc;
}

wcache_code wcache_etcd_current_revision(wcache_etcd *s, int64_t *rev)
{
    if (!s || s->magic != WCI_ETCD_MAGIC || !rev)
        return WCACHE_EINVAL;
    pthread_mutex_lock(&s->rev_mu);
    /* the first range sent from now on answers this call; a range in
     * flight now was sent before it and does not */
    uint64_t need = s->rev_sent + 1;
    /* Counted once its place in line is fixed: a test that holds a range
     * and sees N reads counted knows that N - 1 of them wait for the next
     * one, without guessing how long a thread takes to get here. */
    atomic_fetch_add_explicit(&s->rev_reads, 1, memory_order_relaxed);
    wcache_code rc = WCACHE_OK;
    for (;;) {
        if (s->rev_ok_n >= need) {
            *rev = s->rev_ok;
            break;
        }
        if (s->rev_err_n >= need) {
            rc = s->rev_err;
            break;
        }
        if (s->rev_busy) {
            pthread_cond_wait(&s->rev_cv, &s->rev_mu);
            continue;
        }
        /* nothing in flight: this call sends the range the others share */
        uint64_t n = ++s->rev_sent;
        s->rev_busy = 1;
        pthread_mutex_unlock(&s->rev_mu);
        int64_t r = 0;
        wcache_code prc = rev_probe(s, &r);
        pthread_mutex_lock(&s->rev_mu);
        s->rev_busy = 0;
        if (prc == WCACHE_OK) {
            s->rev_ok_n = n;
            s->rev_ok = r;
        } else {
            s->rev_err_n = n;
            s->rev_err = prc;
        }
        pthread_cond_broadcast(&s->rev_cv);
    }
    pthread_mutex_unlock(&s->rev_mu);
    return rc;
}

/* ---- one-shot ranges on the caller's thread (wcache sync and check) ---- */

/* A count-only range at rev (0: current): the header's facts. */
static wcache_code range_header(wcache_etcd *s, size_t ep, int64_t rev,
                                wcache_etcd_range_info *ri)
{
    char rs[48] = "";
    if (rev > 0)
        snprintf(rs, sizeof rs, ",\"revision\":\"%lld\"", (long long)rev);
    char *body = bodyf(s, strlen(s->key_b64) + strlen(s->end_b64) + 120,
                       "{\"key\":\"%s\",\"range_end\":\"%s\",\"count_only\":true%s}",
                       s->key_b64, s->end_b64, rs);
    if (!body)
        return WCACHE_ENOMEM;
    json_t *ans = NULL;
    wcache_code rc = post_blocking(s, ep, "/v3/kv/range", body, &ans);
    wci_free(s->al, body);
    int64_t hr = 0, count = 0;
    if (rc == WCACHE_OK) {
        const json_t *h = json_object_get(ans, "header");
        if (wci_json_i64(h, "revision", &hr) != 0 || hr < 1 ||
            wci_json_i64(ans, "count", &count) != 0 || count < 0) {
            rc = WCACHE_ECORRUPT;
        } else {
            ri->header_revision = hr;
            ri->revision = rev > 0 ? rev : hr;
            ri->cluster_id = header_cluster(h);
            ri->count = (uint64_t)count;
        }
    }
    json_decref(ans);
    return rc;
}

static wcache_code range_once(wcache_etcd *s, size_t ep, int64_t rev, wcache_etcd_kv_fn fn,
                              void *ud, wcache_etcd_range_info *ri, int *delivered)
{
    scan sc = {.blocking = 1, .rev = rev};
    wcache_kv kv;
    int rc;
    uint64_t n = 0;
    for (;;) {
        rc = scan_next(s, &sc, &kv);
        if (rc == NEED_PAGE) { /* this thread fetches it, from endpoint ep */
            char *body = scan_body(s, &sc);
            json_t *ans = NULL;
            rc = body ? post_blocking(s, ep, "/v3/kv/range", body, &ans) : WCACHE_ENOMEM;
            wci_free(s->al, body);
            if (rc == WCACHE_OK)
                rc = scan_take(s, &sc, ans);
            else
                json_decref(ans);
            if (rc != WCACHE_OK)
                break;
            continue;
        }
        if (rc != WCACHE_OK)
            break;
        *delivered = 1;
        n++;
        if (fn(&kv, ud) != 0) {
            rc = WCACHE_ESTOPPED;
            break;
        }
    }
    if (rc == WCACHE_ENOTFOUND) {
        rc = WCACHE_OK;
        ri->revision = sc.rev;
        ri->header_revision = sc.hdr_rev;
        ri->cluster_id = sc.cluster_id;
        ri->count = n;
    }
    scan_fini(s, &sc);
    return rc;
}

wcache_code wcache_etcd_range(wcache_etcd *s, int64_t rev, wcache_etcd_kv_fn fn, void *ud,
                              wcache_etcd_range_info *info)
{
    if (!s || s->magic != WCI_ETCD_MAGIC || rev < 0 || !info || info->size < sizeof *info)
        return WCACHE_EINVAL;
    wcache_etcd_range_info ri = {.size = sizeof ri};
    wcache_code rc = WCACHE_ECURL;
    size_t ep0 = atomic_load(&s->ep);
    /* Another member is tried only while nothing was delivered: a range
     * half read from one member is not finished on another. */
    for (size_t k = 0; k < s->neps; k++) {
        int delivered = 0;
        size_t ep = (ep0 + k) % s->neps;
        rc = fn ? range_once(s, ep, rev, fn, ud, &ri, &delivered)
                : range_header(s, ep, rev, &ri);
        if (delivered || (rc != WCACHE_ECURL && rc != WCACHE_EHTTP))
            break;
    }
    if (rc == WCACHE_OK)
        *info = ri;
    return rc;
}

wcache_code wcache_etcd_source_id(wcache_etcd *s, void *buf, size_t cap, size_t *len)
{
    if (!s || s->magic != WCI_ETCD_MAGIC || !buf || !len)
        return WCACHE_EINVAL;
    wcache_etcd_range_info ri = {.size = sizeof ri};
    wcache_code rc = wcache_etcd_range(s, 0, NULL, NULL, &ri);
    if (rc != WCACHE_OK)
        return rc;
    size_t need = 5 + 16 + 1 + strlen(s->key_b64) + 1 + strlen(s->end_b64);
    if (need > cap || need > WCACHE_SNAP_MAX_SOURCE_ID)
        return WCACHE_ETOOBIG;
    char *o = buf;
    snprintf(o, 5 + 16 + 2, "etcd:%016llx:", (unsigned long long)ri.cluster_id);
    memcpy(o + 22, s->key_b64, strlen(s->key_b64));
    o[22 + strlen(s->key_b64)] = ':';
    memcpy(o + 23 + strlen(s->key_b64), s->end_b64, strlen(s->end_b64));
    *len = need;
    return WCACHE_OK;
}
