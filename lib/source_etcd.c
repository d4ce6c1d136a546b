/*
 * source_etcd.c - feed a cache from etcd v3 through its JSON gateway.
 *
 * One thread per source (wcache_etcd_start) is the cache's writer.  It
 * runs a loop of: list when needed, then one watch stream until that
 * stream ends, then decide:
 *
 *   list    (cache at revision 0) a paginated range at one revision: the
 *           first page fixes the revision R, later pages ask for R; loaded
 *           with wcache_ingest_load.  A page refused as compacted restarts
 *           the list.
 *   relist  (the watch start was compacted, or the stream did not fit the
 *           cache) the same range, merged in key order with the cache's
 *           latest state: keys gone become deletes, new keys and keys
 *           modified after the cache's revision (or with another value)
 *           become puts, all in one batch at R, so watchers see correct
 *           events.  Nothing to change: a progress to R.
 *   watch   POST /v3/watch from the cache's revision + 1 with prev_kv and
 *           progress_notify; the body is parsed and applied as it arrives
 *           by etcd_stream.c (which holds the #15220 progress guard).
 *
 * A failed request or an ended stream moves to the next endpoint and waits
 * (exponential backoff with jitter, reset after a stream that worked).  The
 * cache's revision is the resume point, so nothing is lost or applied
 * twice whatever failed.
 *
 * Transfers run in a curl multi handle so that wcache_etcd_stop() can
 * interrupt any of them at once with curl_multi_wakeup().  Consistent reads
 * call wcache_etcd_current_revision() on the reader's thread: it uses an
 * easy handle of its own and touches only immutable fields and the atomic
 * endpoint index.
 */
#include "etcd_stream.h"
#include "http.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WCI_ETCD_MAGIC 0x77636564u

struct wcache_etcd {
    uint32_t magic;
    wcache_cache *c;
    const wci_alloc *al;
    char **eps; /* endpoint base URLs, no trailing '/' */
    size_t neps;
    _Atomic size_t ep; /* the endpoint in use */
    char *key_b64, *end_b64;
    char *ca, *cert, *key, *auth; /* auth: the whole header line */
    int insecure;
    long connect_ms, request_ms;
    int64_t backoff_min, backoff_max;
    uint32_t page_limit;
    size_t max_msg;
    CURLM *multi;
    pthread_t th;
    int joinable;
    int curl_inited;
    _Atomic int stop, running, synced, last_error;
    _Atomic int64_t list_rev, compact_rev;
    _Atomic uint64_t lists, relists, connects, reconnects, errors, bytes;
    wci_ew ew; /* the watch stream: the thread's, but for its atomic counters */
    long watch_status;
    uint64_t rng;
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

/* Run e in the source's multi handle; a stop interrupts it. */
static CURLcode run_xfer(wcache_etcd *s, CURL *e)
{
    return wci_xfer_run(s->multi, e, &s->stop);
}

/* Sleep ms, or less when stopped. */
static void nap(wcache_etcd *s, int64_t ms)
{
    int64_t end = wci_mono_ms() + ms;
    for (int64_t now = wci_mono_ms(); now < end && !atomic_load(&s->stop); now = wci_mono_ms())
        curl_multi_poll(s->multi, NULL, 0, (int)(end - now), NULL);
}

static void next_endpoint(wcache_etcd *s)
{
    size_t ep = atomic_load(&s->ep);
    atomic_store(&s->ep, (ep + 1) % s->neps);
}

/* An error answer's message, for the log. */
static const char *answer_text(const wci_rbuf *b)
{
    return b->p ? b->p : "(empty)";
}

/*
 * POST body to path and parse the JSON answer.  blocking: run with
 * curl_easy_perform on the caller's thread (consistent reads) instead of
 * the source's multi handle.
 */
static wcache_code post_json(wcache_etcd *s, size_t ep, const char *path, const char *body,
                             int blocking, json_t **out)
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
    CURLcode res = blocking ? curl_easy_perform(e) : run_xfer(s, e);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    curl_slist_free_all(hdrs);
    wcache_code rc = WCACHE_OK;
    if (res == CURLE_ABORTED_BY_CALLBACK) {
        rc = WCACHE_ESTOPPED;
    } else if (b.over) {
        rc = WCACHE_ETOOBIG;
        if (!blocking)
            fail(s, rc, "%s%s: answer over %zu bytes", s->eps[ep], path, s->max_msg);
    } else if (res != CURLE_OK) {
        rc = WCACHE_ECURL;
        if (!blocking)
            fail(s, rc, "%s%s: %s", s->eps[ep], path, curl_easy_strerror(res));
    } else if (status != 200) {
        rc = b.p && strstr(b.p, "required revision has been compacted") ? WCACHE_ECOMPACTED
             : b.p && strstr(b.p, "required revision is a future revision") ? WCACHE_EFUTURE
                                                                             : WCACHE_EHTTP;
        if (!blocking)
            fail(s, rc, "%s%s: HTTP %ld: %.200s", s->eps[ep], path, status, answer_text(&b));
    } else {
        json_error_t je;
        *out = json_loadb(b.p ? b.p : "", b.len, 0, &je);
        if (!*out || !json_is_object(*out)) {
            json_decref(*out);
            *out = NULL;
            rc = WCACHE_ECORRUPT;
            if (!blocking)
                fail(s, rc, "%s%s: answer does not parse: %s", s->eps[ep], path, je.text);
        }
    }
    wci_free(s->al, b.p);
    return rc;
}

/* ---- ranges ---- */

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

/* A paginated range at one revision, one key at a time. */
typedef struct scan {
    wcache_etcd *s;
    json_t *page;
    size_t i;
    int64_t rev; /* 0 until the first page fixed it */
    int more;
    char *next_b64; /* where the next page starts; NULL: the range start */
    unsigned char *kb, *vb;
    size_t kcap, vcap;
    int blocking;        /* wcache_etcd_range: on the caller's thread, */
    size_t ep;           /* ... at this endpoint */
    int64_t hdr_rev;     /* etcd's revision when the first page was read */
    uint64_t cluster_id; /* from the first page's header */
} scan;

static void scan_fini(scan *sc)
{
    json_decref(sc->page);
    wci_free(sc->s->al, sc->next_b64);
    wci_free(sc->s->al, sc->kb);
    wci_free(sc->s->al, sc->vb);
    memset(sc, 0, sizeof *sc);
}

static wcache_code scan_page(scan *sc)
{
    wcache_etcd *s = sc->s;
    const char *k = sc->next_b64 ? sc->next_b64 : s->key_b64;
    size_t cap = strlen(k) + strlen(s->end_b64) + 128;
    char *body = wci_malloc(s->al, cap);
    if (!body)
        return WCACHE_ENOMEM;
    int n = snprintf(body, cap, "{\"key\":\"%s\",\"range_end\":\"%s\",\"limit\":%u", k,
                     s->end_b64, s->page_limit);
    if (sc->rev > 0)
        n += snprintf(body + n, cap - (size_t)n, ",\"revision\":\"%lld\"", (long long)sc->rev);
    snprintf(body + n, cap - (size_t)n, "}");
    json_decref(sc->page);
    sc->page = NULL;
    wcache_code rc =
        post_json(s, sc->blocking ? sc->ep : atomic_load(&s->ep), "/v3/kv/range", body,
                  sc->blocking, &sc->page);
    wci_free(s->al, body);
    if (rc != WCACHE_OK)
        return rc;
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
        unsigned char *tmp = wci_malloc(s->al, (size_t)kl + 1);
        char *nb = wci_malloc(s->al, 4 * (((size_t)kl + 3) / 3) + 1);
        if (!tmp || !nb) {
            wci_free(s->al, tmp);
            wci_free(s->al, nb);
            return WCACHE_ENOMEM;
        }
        memcpy(tmp, sc->kb, (size_t)kl);
        tmp[kl] = 0;
        wci_b64_encode(tmp, (size_t)kl + 1, nb);
        wci_free(s->al, tmp);
        wci_free(s->al, sc->next_b64);
        sc->next_b64 = nb;
    }
    return WCACHE_OK;
}

/* The next key of the range: WCACHE_OK with *kv filled (borrowed until the
 * next call), WCACHE_ENOTFOUND at the end, or an error. */
static wcache_code scan_next(scan *sc, wcache_kv *kv)
{
    wcache_etcd *s = sc->s;
    while (!sc->page || sc->i >= json_array_size(json_object_get(sc->page, "kvs"))) {
        if (sc->page && !sc->more)
            return WCACHE_ENOTFOUND;
        if (!sc->blocking && atomic_load(&s->stop))
            return WCACHE_ESTOPPED;
        wcache_code rc = scan_page(sc);
        if (rc != WCACHE_OK)
            return rc;
    }
    const json_t *o = json_array_get(json_object_get(sc->page, "kvs"), sc->i++);
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

/* The initial list into an empty cache. */
static wcache_code list_load(wcache_etcd *s, wcache_batch *b)
{
    scan sc = {.s = s};
    wcache_kv kv;
    wcache_code rc;
    wcache_batch_clear(b);
    while ((rc = scan_next(&sc, &kv)) == WCACHE_OK) {
        rc = wcache_batch_put_meta(b, kv.key, kv.key_len, kv.value, kv.value_len,
                                   kv.create_revision, kv.mod_revision, kv.version);
        if (rc != WCACHE_OK) {
            fail(s, rc, "list: the cache refuses a key: %s", wcache_strerror(rc));
            break;
        }
    }
    if (rc == WCACHE_ENOTFOUND) {
        /* Counted before the cache moves, so that whoever sees the new
         * revision sees the counters too. */
        atomic_store(&s->list_rev, sc.rev);
        atomic_fetch_add(&s->lists, 1);
        rc = wcache_ingest_load(s->c, b, sc.rev);
        if (rc != WCACHE_OK) {
            atomic_fetch_sub(&s->lists, 1);
            fail(s, rc, "list: load at %lld: %s", (long long)sc.rev, wcache_strerror(rc));
        }
    }
    wcache_batch_clear(b);
    scan_fini(&sc);
    return rc;
}

/* The cache's side of a reconcile: its keys at the latest revision. */
typedef struct cscan {
    wcache_view *v;
    wcache_list_opts lo;
    wcache_kv items[256];
    size_t n, i;
    int more;
    char *tok;
    const wci_alloc *al;
} cscan;

static wcache_code cscan_next(cscan *cs, const wcache_kv **kv)
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
        wci_free(cs->al, cs->tok);
        cs->tok = NULL;
        if (res.more) {
            cs->tok = wci_memdup(cs->al, res.token, res.token_len);
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

/* Merge etcd's range with the cache's state into batch b. */
static wcache_code reconcile_diff(wcache_etcd *s, scan *sc, cscan *cs, wcache_batch *b,
                                  int64_t crev)
{
    wcache_kv e;
    const wcache_kv *k;
    wcache_code re = scan_next(sc, &e), rk = cscan_next(cs, &k);
    while (rk == WCACHE_OK && (re == WCACHE_OK || re == WCACHE_ENOTFOUND)) {
        int have_e = re == WCACHE_OK;
        if (!have_e && !k)
            return WCACHE_OK;
        int cmp = !have_e ? 1 : !k ? -1 : wci_keycmp(e.key, e.key_len, k->key, k->key_len);
        wcache_code rc = WCACHE_OK;
        if (cmp < 0 || (cmp == 0 && (e.mod_revision > crev || e.value_len != k->value_len ||
                                     memcmp(e.value, k->value, e.value_len) != 0)))
            rc = wcache_batch_put(b, e.key, e.key_len, e.value, e.value_len);
        else if (cmp > 0)
            rc = wcache_batch_delete(b, k->key, k->key_len);
        if (rc != WCACHE_OK)
            return rc;
        if (cmp <= 0)
            re = scan_next(sc, &e);
        if (cmp >= 0)
            rk = cscan_next(cs, &k);
    }
    (void)s;
    return rk != WCACHE_OK ? rk : re;
}

/* A re-list into a cache that holds an older state. */
static wcache_code list_reconcile(wcache_etcd *s, wcache_batch *b)
{
    int64_t crev = wcache_cache_revision(s->c);
    scan sc = {.s = s};
    cscan cs = {.al = s->al};
    wcache_code rc = wcache_view_create(s->c, &cs.v);
    if (rc != WCACHE_OK)
        return rc;
    rc = wcache_view_begin(cs.v, WCACHE_REV_LATEST);
    unsigned char *kb = NULL, *eb = NULL;
    size_t kl = 0, el = 0;
    if (rc == WCACHE_OK) {
        /* Decode the range once more for the view's options. */
        size_t a = strlen(s->key_b64), z = strlen(s->end_b64);
        kb = wci_malloc(s->al, a / 4 * 3 + 1);
        eb = wci_malloc(s->al, z / 4 * 3 + 1);
        if (!kb || !eb) {
            rc = WCACHE_ENOMEM;
        } else {
            kl = (size_t)wci_b64_decode(s->key_b64, a, kb);
            el = (size_t)wci_b64_decode(s->end_b64, z, eb);
            cs.lo.size = sizeof cs.lo;
            if (!(kl == 1 && kb[0] == 0)) {
                cs.lo.start = kb;
                cs.lo.start_len = kl;
            }
            if (!(el == 1 && eb[0] == 0)) {
                cs.lo.end = eb;
                cs.lo.end_len = el;
            }
        }
    }
    wcache_batch_clear(b);
    if (rc == WCACHE_OK)
        rc = reconcile_diff(s, &sc, &cs, b, crev);
    wcache_view_end(cs.v);
    int64_t lrev = sc.rev;
    if (rc == WCACHE_ENOTFOUND)
        rc = WCACHE_OK;
    if (rc == WCACHE_OK && lrev < crev) {
        fail(s, WCACHE_EORDER, "re-list at %lld is behind the cache (%lld): a lagging member",
             (long long)lrev, (long long)crev);
        rc = WCACHE_EORDER;
    }
    int counted = rc == WCACHE_OK; /* counted before the cache moves, as in list_load */
    if (counted) {
        atomic_store(&s->list_rev, lrev);
        atomic_fetch_add(&s->lists, 1);
        atomic_fetch_add(&s->relists, 1);
    }
    if (rc == WCACHE_OK && wcache_batch_count(b) > 0) {
        if (lrev == crev) {
            fail(s, WCACHE_EORDER, "cache differs from etcd at its own revision %lld",
                 (long long)crev);
            rc = WCACHE_EORDER;
        } else {
            rc = wcache_ingest_batch(s->c, b, lrev);
            if (rc != WCACHE_OK)
                fail(s, rc, "re-list: batch at %lld: %s", (long long)lrev, wcache_strerror(rc));
        }
    } else if (rc == WCACHE_OK && lrev > crev) {
        rc = wcache_ingest_progress(s->c, lrev);
    }
    if (counted && rc != WCACHE_OK) {
        atomic_fetch_sub(&s->lists, 1);
        atomic_fetch_sub(&s->relists, 1);
    }
    if (rc == WCACHE_OK)
        wci_log(s->c, WCACHE_LOG_INFO, "etcd: re-listed at %lld: %zu changes", (long long)lrev,
                wcache_batch_count(b));
    wcache_batch_clear(b);
    wci_free(s->al, cs.tok);
    wci_free(s->al, kb);
    wci_free(s->al, eb);
    wcache_view_free(cs.v);
    scan_fini(&sc);
    return rc;
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
    if (s->watch_status != 200)
        return 0; /* an error answer: not a stream */
    int st = wci_ew_feed(&s->ew, data, n);
    publish_counters(s);
    return st == WCI_EW_GO ? n : 0;
}

static size_t watch_header(char *data, size_t sz, size_t nm, void *ud)
{
    wcache_etcd *s = ud;
    size_t n = sz * nm;
    long st = wci_http_status_line(data, n);
    if (st >= 0)
        s->watch_status = st;
    return n;
}

/* One watch stream from the cache's revision + 1.  Returns a WCI_EW_*
 * state; *healthy is set when the stream was confirmed by the member. */
static int watch_once(wcache_etcd *s, int *healthy)
{
    wci_ew *w = &s->ew;
    wci_ew_reset(w);
    size_t ep = atomic_load(&s->ep);
    size_t cap = strlen(s->key_b64) + strlen(s->end_b64) + 200;
    char *body = wci_malloc(s->al, cap);
    if (!body)
        return WCI_EW_RECONNECT;
    snprintf(body, cap,
             "{\"create_request\":{\"key\":\"%s\",\"range_end\":\"%s\","
             "\"start_revision\":\"%lld\",\"progress_notify\":true,\"prev_kv\":true}}",
             s->key_b64, s->end_b64, (long long)(w->applied + 1));
    char url[1024];
    struct curl_slist *hdrs = NULL;
    CURL *e = easy_new(s, "/v3/watch", body, &hdrs, url, sizeof url, ep);
    if (!e || !hdrs) {
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(e);
        wci_free(s->al, body);
        return WCI_EW_RECONNECT;
    }
    s->watch_status = 0;
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, watch_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, watch_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
    atomic_fetch_add(&s->connects, 1);
    wci_log(s->c, WCACHE_LOG_DEBUG, "etcd: watch %s from revision %lld", s->eps[ep],
            (long long)(w->applied + 1));
    CURLcode res = run_xfer(s, e);
    curl_easy_cleanup(e);
    curl_slist_free_all(hdrs);
    wci_free(s->al, body);
    *healthy = w->created;
    if (res == CURLE_ABORTED_BY_CALLBACK)
        return WCI_EW_GO; /* stopped */
    if (res == CURLE_OK)
        wci_ew_end(w); /* parses a last message without its newline */
    publish_counters(s);
    if (w->state == WCI_EW_GO || (res != CURLE_OK && res != CURLE_WRITE_ERROR)) {
        if (s->watch_status != 200 && s->watch_status != 0)
            fail(s, WCACHE_EHTTP, "%s/v3/watch: HTTP %ld", s->eps[ep], s->watch_status);
        else
            fail(s, WCACHE_ECURL, "%s/v3/watch: %s", s->eps[ep], curl_easy_strerror(res));
        return WCI_EW_RECONNECT;
    }
    if (w->state == WCI_EW_COMPACTED)
        atomic_store(&s->compact_rev, w->compact_rev);
    if (w->state != WCI_EW_COMPACTED)
        fail(s, w->state == WCI_EW_FATAL ? WCACHE_ESTATE : WCACHE_ECORRUPT, "%s/v3/watch: %s",
             s->eps[ep], w->err);
    else
        wci_log(s->c, WCACHE_LOG_INFO, "etcd: %s", w->err);
    return w->state;
}

/* ---- the thread ---- */

static int64_t jitter(wcache_etcd *s, int64_t ms)
{
    s->rng = s->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return ms / 2 + (int64_t)((s->rng >> 33) % (uint64_t)(ms / 2 + 1));
}

static void *run(void *arg)
{
    wcache_etcd *s = arg;
    wcache_batch *b = NULL;
    int need_list = wcache_cache_revision(s->c) == 0;
    int64_t backoff = s->backoff_min;
    if (wcache_batch_create(s->c, &b) != WCACHE_OK) {
        fail(s, WCACHE_ENOMEM, "out of memory");
        atomic_store(&s->running, 0);
        return NULL;
    }
    while (!atomic_load(&s->stop)) {
        if (need_list) {
            wcache_code rc =
                wcache_cache_revision(s->c) == 0 ? list_load(s, b) : list_reconcile(s, b);
            if (rc == WCACHE_ESTOPPED || atomic_load(&s->stop))
                break;
            if (rc != WCACHE_OK) {
                next_endpoint(s);
                nap(s, jitter(s, backoff));
                backoff = backoff * 2 > s->backoff_max ? s->backoff_max : backoff * 2;
                continue;
            }
            need_list = 0;
        }
        int healthy = 0;
        int st = watch_once(s, &healthy);
        if (atomic_load(&s->stop))
            break;
        if (st == WCI_EW_FATAL)
            break;
        if (healthy)
            backoff = s->backoff_min;
        if (st == WCI_EW_COMPACTED || st == WCI_EW_DIVERGED) {
            need_list = 1;
            if (st == WCI_EW_COMPACTED)
                continue; /* no wait: the member is fine */
        } else {
            atomic_fetch_add(&s->reconnects, 1);
            next_endpoint(s);
        }
        nap(s, jitter(s, backoff));
        backoff = backoff * 2 > s->backoff_max ? s->backoff_max : backoff * 2;
    }
    wcache_batch_free(b);
    atomic_store(&s->synced, 0);
    atomic_store(&s->running, 0);
    return NULL;
}

/* ---- the public functions ---- */

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

wcache_code wcache_etcd_create(wcache_etcd **out, wcache_cache *c, const wcache_etcd_opts *o)
{
    if (!out || !wci_cache_ok(c) || !o || o->size < sizeof *o || !o->endpoints ||
        o->connect_timeout_ms < 0 || o->request_timeout_ms < 0 || o->backoff_min_ms < 0 ||
        o->backoff_max_ms < 0)
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
    s->page_limit = o->page_limit ? o->page_limit : 10000;
    s->max_msg = o->max_message_bytes ? (size_t)o->max_message_bytes : (size_t)256 << 20;
    s->rng = (uint64_t)(uintptr_t)s ^ (uint64_t)wci_mono_ms();
    wcache_code rc = parse_endpoints(s, o->endpoints);
    if (rc == WCACHE_OK)
        rc = set_range(s, o);
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
    if (rc == WCACHE_OK && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        rc = WCACHE_ECURL;
    else if (rc == WCACHE_OK)
        s->curl_inited = 1;
    if (rc == WCACHE_OK && !(s->multi = curl_multi_init()))
        rc = WCACHE_ECURL;
    if (rc == WCACHE_OK && wci_ew_init(&s->ew, c, s->max_msg) != 0)
        rc = WCACHE_ENOMEM;
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
    if (s->joinable || !s->c->open)
        return WCACHE_ESTATE;
    atomic_store(&s->stop, 0);
    atomic_store(&s->running, 1);
    int e = pthread_create(&s->th, NULL, run, s);
    if (e != 0) {
        atomic_store(&s->running, 0);
        s->c->last_errno = e;
        return WCACHE_ESYS;
    }
    s->joinable = 1;
    return WCACHE_OK;
}

wcache_code wcache_etcd_stop(wcache_etcd *s)
{
    if (!s || s->magic != WCI_ETCD_MAGIC)
        return WCACHE_EINVAL;
    if (!s->joinable)
        return WCACHE_OK;
    atomic_store(&s->stop, 1);
    curl_multi_wakeup(s->multi);
    pthread_join(s->th, NULL);
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
    if (s->multi)
        curl_multi_cleanup(s->multi);
    if (s->curl_inited)
        curl_global_cleanup();
    for (size_t i = 0; i < s->neps; i++)
        wci_free(al, s->eps[i]);
    wci_free(al, s->eps);
    wci_free(al, s->key_b64);
    wci_free(al, s->end_b64);
    wci_free(al, s->ca);
    wci_free(al, s->cert);
    wci_free(al, s->key);
    wci_free(al, s->auth);
    s->magic = 0;
    wci_free(al, s);
}

wcache_code wcache_etcd_stat(const wcache_etcd *s, wcache_etcd_stats *st)
{
    if (!s || s->magic != WCI_ETCD_MAGIC || !st || st->size < sizeof *st)
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
    *st = r;
    return WCACHE_OK;
}

wcache_code wcache_etcd_current_revision(wcache_etcd *s, int64_t *rev)
{
    if (!s || s->magic != WCI_ETCD_MAGIC || !rev)
        return WCACHE_EINVAL;
    size_t cap = strlen(s->key_b64) + strlen(s->end_b64) + 80;
    char *body = wci_malloc(s->al, cap);
    if (!body)
        return WCACHE_ENOMEM;
    snprintf(body, cap, "{\"key\":\"%s\",\"range_end\":\"%s\",\"count_only\":true}", s->key_b64,
             s->end_b64);
    wcache_code rc = WCACHE_ECURL;
    size_t ep0 = atomic_load(&s->ep);
    for (size_t k = 0; k < s->neps; k++) {
        json_t *ans = NULL;
        rc = post_json(s, (ep0 + k) % s->neps, "/v3/kv/range", body, 1, &ans);
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

/* ---- one-shot ranges on the caller's thread (wcache sync and check) ---- */

/* A count-only range at rev (0: current): the header's facts. */
static wcache_code range_header(wcache_etcd *s, size_t ep, int64_t rev,
                                wcache_etcd_range_info *ri)
{
    size_t cap = strlen(s->key_b64) + strlen(s->end_b64) + 120;
    char *body = wci_malloc(s->al, cap);
    if (!body)
        return WCACHE_ENOMEM;
    int n = snprintf(body, cap, "{\"key\":\"%s\",\"range_end\":\"%s\",\"count_only\":true",
                     s->key_b64, s->end_b64);
    if (rev > 0)
        n += snprintf(body + n, cap - (size_t)n, ",\"revision\":\"%lld\"", (long long)rev);
    snprintf(body + n, cap - (size_t)n, "}");
    json_t *ans = NULL;
    wcache_code rc = post_json(s, ep, "/v3/kv/range", body, 1, &ans);
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
    scan sc = {.s = s, .blocking = 1, .ep = ep, .rev = rev};
    wcache_kv kv;
    wcache_code rc;
    uint64_t n = 0;
    while ((rc = scan_next(&sc, &kv)) == WCACHE_OK) {
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
    scan_fini(&sc);
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
        rc = fn ? range_once(s, ep, rev, fn, ud, &ri, &delivered) : range_header(s, ep, rev, &ri);
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
