/*
 * source_k8s.c - feed a cache from a Kubernetes watch stream.
 *
 * One thread per source (wcache_k8s_start) is the cache's writer.  What it
 * runs depends on the input:
 *
 *   URL        list (an empty cache: GET list_url?limit=N, pages joined by
 *              their continue tokens, loaded with wcache_ingest_load at the
 *              list's resourceVersion), then GET url&allowWatchBookmarks=
 *              true&resourceVersion=R with R the cache's revision, parsed as
 *              it arrives (source_k8s_stream.c).  When the stream ends
 *              (the server's timeout, a disconnect, a malformed line, an
 *              ERROR) it is opened again from the cache's revision after a
 *              backoff, so nothing is lost or applied twice; ERROR 410 (or
 *              HTTP 410) re-lists first.
 *   FD, FILE   read to the end of the input, then stop (stats: ended).
 *              Lines at or below the cache's revision are skipped: a cache
 *              restored from a snapshot at S reads a file of the whole
 *              history as a watch from S.  ERROR 410 re-lists through
 *              list_url (when set) and goes on with the lines after it.  A
 *              malformed or oversized line ends the input with an error:
 *              there is nothing to reconnect to, and skipping a line could
 *              silently lose an event.
 *   SYNTHETIC  the built-in stream (source_k8s_gen.c) from the cache's
 *              revision, through the same parser, then stop (ended).
 *
 * The re-list (after 410, or a stream that does not fit the cache) reads
 * the whole list into memory, sorts it by key and merges it with the
 * cache's latest state: a key the list lacks becomes a delete, a key the
 * cache lacks or holds at another resourceVersion a put whose mod_revision
 * is the object's resourceVersion, all applied by wcache_ingest_relist at
 * the list's resourceVersion, so watchers see the changes they missed and
 * no others, and the history the cache cannot know reads as compacted.
 *
 * Transfers run in a curl multi handle so that wcache_k8s_stop() can
 * interrupt them with curl_multi_wakeup(); reads of a descriptor poll it
 * together with a pipe that the stop writes to.  Consistent reads call
 * wcache_k8s_current_revision() on the reader's thread: it uses an easy
 * handle of its own and only immutable fields and atomics.
 */
#include "etcd_stream.h"
#include "http.h"
#include "source_k8s.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WCI_K8S_MAGIC 0x77636b38u
#define NAME_MAX_BYTES 1024

struct wcache_k8s {
    uint32_t magic;
    wcache_cache *c;
    const wci_alloc *al;
    char *name;
    size_t name_len;
    int input;
    int fd;
    char *path, *url, *list_url;
    unsigned char *prefix;
    size_t prefix_len;
    char *auth; /* the whole header line */
    char *ca;
    int insecure;
    long connect_ms, request_ms;
    int64_t backoff_min, backoff_max;
    uint32_t page_limit;
    size_t max_line, max_list;
    uint64_t seed;
    int resources;
    CURLM *multi;
    int wake[2]; /* stop wakes a descriptor read */
    pthread_t th;
    int joinable;
    int curl_inited;
    _Atomic int stop, running, synced, ended, last_error;
    _Atomic int64_t list_rev, end_rev;
    _Atomic uint64_t lists, relists, connects, reconnects, errors, bytes;
    _Atomic uint64_t lines, events, bookmarks, skipped, relist_changes;
    wci_kw kw;         /* the stream, thread only */
    long watch_status; /* HTTP status of the watch */
    uint64_t rng;
};

/* ---- small helpers ---- */

static char *dupstr(const wci_alloc *al, const char *s)
{
    return s ? wci_memdup(al, s, strlen(s)) : NULL;
}

static void fail(wcache_k8s *s, wcache_code rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(wcache_k8s *s, wcache_code rc, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    atomic_store(&s->last_error, (int)rc);
    atomic_fetch_add(&s->errors, 1);
    wci_log(s->c, WCACHE_LOG_WARN, "k8s %s: %s", s->name, msg);
}

static void publish(wcache_k8s *s)
{
    const wci_kw *w = &s->kw;
    atomic_store_explicit(&s->lines, w->lines, memory_order_relaxed);
    atomic_store_explicit(&s->events, w->events, memory_order_relaxed);
    atomic_store_explicit(&s->bookmarks, w->bookmarks, memory_order_relaxed);
    atomic_store_explicit(&s->skipped, w->skipped, memory_order_relaxed);
    if ((w->events || w->bookmarks) && !atomic_load_explicit(&s->synced, memory_order_relaxed))
        atomic_store(&s->synced, 1);
}

/* ---- HTTP ---- */

static CURL *easy_new(wcache_k8s *s, const char *url, struct curl_slist **hdrs)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    *hdrs = curl_slist_append(NULL, "Accept: application/json");
    if (s->auth && *hdrs) {
        struct curl_slist *h = curl_slist_append(*hdrs, s->auth);
        if (h)
            *hdrs = h;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, s->connect_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* gzip, as kubectl asks */
    if (s->ca)
        curl_easy_setopt(e, CURLOPT_CAINFO, s->ca);
    if (s->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    return e;
}

/* Run e in the source's multi handle; a stop interrupts it. */
static CURLcode run_xfer(wcache_k8s *s, CURL *e)
{
    return wci_xfer_run(s->multi, e, &s->stop);
}

/* Sleep ms, or less when stopped. */
static void nap(wcache_k8s *s, int64_t ms)
{
    int64_t end = wci_mono_ms() + ms;
    for (int64_t now = wci_mono_ms(); now < end && !atomic_load(&s->stop);
         now = wci_mono_ms()) {
        struct pollfd p = {s->wake[0], POLLIN, 0};
        poll(&p, 1, (int)(end - now));
    }
}

/* url + (? or &) + query, in a new string. */
static char *url_with(wcache_k8s *s, const char *url, const char *query)
{
    size_t n = strlen(url) + strlen(query) + 2;
    char *u = wci_malloc(s->al, n);
    if (u)
        snprintf(u, n, "%s%c%s", url, strchr(url, '?') ? '&' : '?', query);
    return u;
}

/*
 * GET url and parse the JSON answer.  blocking: curl_easy_perform on the
 * caller's thread (consistent reads) instead of the source's multi handle,
 * and nothing logged or counted (the reader's thread).
 */
static wcache_code get_json(wcache_k8s *s, const char *url, int blocking, json_t **out,
                            long *status_out)
{
    struct curl_slist *hdrs = NULL;
    wci_rbuf b = {.al = s->al, .max = s->max_list, .bytes = blocking ? NULL : &s->bytes};
    *out = NULL;
    CURL *e = easy_new(s, url, &hdrs);
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
    if (status_out)
        *status_out = status;
    wcache_code rc = WCACHE_OK;
    if (res == CURLE_ABORTED_BY_CALLBACK) {
        rc = WCACHE_ESTOPPED;
    } else if (b.over) {
        rc = WCACHE_ETOOBIG;
        if (!blocking)
            fail(s, rc, "%s: answer over %zu bytes", url, s->max_list);
    } else if (res != CURLE_OK) {
        rc = WCACHE_ECURL;
        if (!blocking)
            fail(s, rc, "%s: %s", url, curl_easy_strerror(res));
    } else if (status != 200) {
        rc = status == 410 ? WCACHE_ECOMPACTED : WCACHE_EHTTP;
        if (!blocking)
            fail(s, rc, "%s: HTTP %ld: %.200s", url, status, b.p ? b.p : "(empty)");
    } else {
        json_error_t je;
        *out = json_loadb(b.p ? b.p : "", b.len, 0, &je);
        if (!*out || !json_is_object(*out)) {
            json_decref(*out);
            *out = NULL;
            rc = WCACHE_ECORRUPT;
            if (!blocking)
                fail(s, rc, "%s: answer does not parse: %s", url, je.text);
        }
    }
    wci_free(s->al, b.p);
    return rc;
}

/* ---- lists ---- */

typedef struct litem {
    char *key;
    size_t klen;
    char *val;
    size_t vlen;
    int64_t rv;
} litem;

typedef struct lset {
    const wci_alloc *al;
    litem *it;
    size_t n, cap;
    int64_t rev;
} lset;

static void lset_fini(wcache_k8s *s, lset *l)
{
    for (size_t i = 0; i < l->n; i++) {
        wci_free(s->al, l->it[i].key);
        wci_free(s->al, l->it[i].val);
    }
    wci_free(s->al, l->it);
    l->it = NULL;
    l->n = l->cap = 0;
}

/* One item of a page into the set. */
static wcache_code lset_add(const char *key, size_t klen, const char *val, size_t vlen,
                            int64_t rv, void *ud)
{
    lset *l = ud;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        litem *ni = wci_calloc(l->al, cap, sizeof *ni);
        if (!ni)
            return WCACHE_ENOMEM;
        if (l->n)
            memcpy(ni, l->it, l->n * sizeof *ni);
        wci_free(l->al, l->it);
        l->it = ni;
        l->cap = cap;
    }
    litem *x = &l->it[l->n];
    if (!(x->key = wci_memdup(l->al, key, klen)) || !(x->val = wci_memdup(l->al, val, vlen))) {
        wci_free(l->al, x->key);
        x->key = NULL;
        return WCACHE_ENOMEM;
    }
    x->klen = klen;
    x->vlen = vlen;
    x->rv = rv;
    l->n++;
    return WCACHE_OK;
}

/* Percent-encode a continue token for the query string. */
static char *escape(wcache_k8s *s, const char *t)
{
    size_t n = strlen(t);
    char *o = wci_malloc(s->al, 3 * n + 1), *p = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)t[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            *p++ = (char)ch;
        } else {
            snprintf(p, 4, "%%%02X", ch);
            p += 3;
        }
    }
    *p = 0;
    return o;
}

/* The whole list, every page at the first page's resourceVersion. */
static wcache_code list_fetch(wcache_k8s *s, lset *l)
{
    char *tok = NULL;
    wcache_code rc = WCACHE_OK;
    for (int page = 0;; page++) {
        if (atomic_load(&s->stop)) {
            rc = WCACHE_ESTOPPED;
            break;
        }
        char q[64];
        snprintf(q, sizeof q, "limit=%u", s->page_limit);
        char *u1 = url_with(s, s->list_url, q), *u = NULL;
        if (u1 && tok) {
            char *et = escape(s, tok);
            size_t n = strlen(u1) + (et ? strlen(et) : 0) + 16;
            if (et && (u = wci_malloc(s->al, n)))
                snprintf(u, n, "%s&continue=%s", u1, et);
            wci_free(s->al, et);
            wci_free(s->al, u1);
        } else {
            u = u1;
        }
        if (!u) {
            rc = WCACHE_ENOMEM;
            break;
        }
        json_t *ans = NULL;
        rc = get_json(s, u, 0, &ans, NULL);
        wci_free(s->al, u);
        if (rc != WCACHE_OK)
            break;
        char err[200];
        const char *ct = NULL;
        rc = wci_k8s_list_page(s->al, s->prefix, s->prefix_len, ans, page > 0 ? l->rev : 0,
                               &l->rev, &ct, lset_add, l, err, sizeof err);
        if (rc == WCACHE_ECORRUPT)
            fail(s, rc, "list: page %d: %s", page, err);
        wci_free(s->al, tok);
        tok = NULL;
        if (rc == WCACHE_OK && ct && !(tok = dupstr(s->al, ct)))
            rc = WCACHE_ENOMEM;
        json_decref(ans);
        if (rc != WCACHE_OK || !tok)
            break;
    }
    wci_free(s->al, tok);
    return rc;
}

static int litem_cmp(const void *a, const void *b)
{
    const litem *x = a, *y = b;
    return wci_keycmp(x->key, x->klen, y->key, y->klen);
}

static wcache_code list_sorted(wcache_k8s *s, lset *l)
{
    wcache_code rc = list_fetch(s, l);
    if (rc != WCACHE_OK)
        return rc;
    qsort(l->it, l->n, sizeof *l->it, litem_cmp);
    for (size_t i = 1; i < l->n; i++)
        if (litem_cmp(&l->it[i - 1], &l->it[i]) == 0) {
            fail(s, WCACHE_ECORRUPT, "list: key %.*s twice", (int)l->it[i].klen, l->it[i].key);
            return WCACHE_ECORRUPT;
        }
    return WCACHE_OK;
}

/* The initial list into an empty cache. */
static wcache_code list_load(wcache_k8s *s, wcache_batch *b)
{
    lset l = {.al = s->al};
    wcache_code rc = list_sorted(s, &l);
    wcache_batch_clear(b);
    for (size_t i = 0; i < l.n && rc == WCACHE_OK; i++) {
        rc = wcache_batch_put_meta(b, l.it[i].key, l.it[i].klen, l.it[i].val, l.it[i].vlen,
                                   l.it[i].rv, l.it[i].rv, 1);
        if (rc != WCACHE_OK)
            fail(s, rc, "list: the cache refuses %.*s: %s", (int)l.it[i].klen, l.it[i].key,
                 wcache_strerror(rc));
    }
    if (rc == WCACHE_OK) {
        atomic_store(&s->list_rev, l.rev);
        atomic_fetch_add(&s->lists, 1);
        rc = wcache_ingest_load(s->c, b, l.rev);
        if (rc != WCACHE_OK) {
            atomic_fetch_sub(&s->lists, 1);
            fail(s, rc, "list: load at %lld: %s", (long long)l.rev, wcache_strerror(rc));
        } else {
            atomic_store(&s->synced, 1);
            wci_log(s->c, WCACHE_LOG_INFO, "k8s %s: listed %zu objects at %lld", s->name, l.n,
                    (long long)l.rev);
        }
    }
    wcache_batch_clear(b);
    lset_fini(s, &l);
    return rc;
}

/* The resourceVersion inside a stored object (0: none). */
static int64_t stored_rv(const wcache_kv *kv)
{
    json_t *o = json_loadb(kv->value, kv->value_len, 0, NULL);
    int64_t rv = 0;
    if (o && wci_json_i64(json_object_get(o, "metadata"), "resourceVersion", &rv) != 0)
        rv = 0;
    json_decref(o);
    return rv;
}

/* A listed object the cache lacks (ck NULL) or holds at another
 * resourceVersion.  Its resourceVersion is its mod_revision, reported as
 * the watch stream would have: the creation and the count of changes are
 * not in the object, so they go on from the cache's (a new object: created
 * at its resourceVersion, version 1, as the initial list loads it). */
static wcache_code reconcile_put(wcache_k8s *s, wcache_batch *b, const litem *li,
                                 const wcache_kv *ck, int64_t crev)
{
    if (li->rv > crev)
        return wcache_batch_put_meta(b, li->key, li->klen, li->val, li->vlen,
                                     ck ? ck->create_revision : li->rv, li->rv,
                                     ck ? ck->version + 1 : 1);
    /* changed at or below the cache's revision yet not in it: the cache
     * diverged; right the value at the re-list's revision (metadata cannot
     * be put below revisions readers may hold) */
    wci_log(s->c, WCACHE_LOG_WARN,
            "k8s %s: re-list: %.*s at resourceVersion %lld differs from the cache at %lld",
            s->name, (int)(li->klen > 120 ? 120 : li->klen), li->key, (long long)li->rv,
            (long long)crev);
    return wcache_batch_put(b, li->key, li->klen, li->val, li->vlen);
}

/* Merge the sorted list with the cache's latest state (at crev) into b. */
static wcache_code reconcile_diff(wcache_k8s *s, const lset *l, wcache_batch *b, int64_t crev)
{
    wcache_view *v = NULL;
    wcache_code rc = wcache_view_create(s->c, &v);
    if (rc != WCACHE_OK)
        return rc;
    rc = wcache_view_begin(v, WCACHE_REV_LATEST);
    wcache_list_opts lo = {.size = sizeof lo};
    if (s->prefix_len) {
        lo.prefix = s->prefix;
        lo.prefix_len = s->prefix_len;
    }
    wcache_kv items[256];
    wcache_list_result res = {.size = sizeof res};
    size_t n = 0, k = 0, i = 0;
    int more = 1;
    char *tok = NULL;
    while (rc == WCACHE_OK) {
        if (k == n && more) {
            rc = wcache_view_list(v, &lo, items, 256, &res);
            if (rc != WCACHE_OK)
                break;
            n = res.count;
            k = 0;
            more = res.more;
            wci_free(s->al, tok);
            tok = NULL;
            if (more) {
                if (!(tok = wci_memdup(s->al, res.token, res.token_len))) {
                    rc = WCACHE_ENOMEM;
                    break;
                }
                lo.token = tok;
                lo.token_len = res.token_len;
            }
            continue;
        }
        const wcache_kv *ck = k < n ? &items[k] : NULL;
        const litem *li = i < l->n ? &l->it[i] : NULL;
        if (!ck && !li)
            break;
        int cmp = !li ? 1 : !ck ? -1 : wci_keycmp(li->key, li->klen, ck->key, ck->key_len);
        if (cmp > 0)
            rc = wcache_batch_delete(b, ck->key, ck->key_len);
        else if (cmp < 0 || (li->rv != ck->mod_revision && li->rv != stored_rv(ck)))
            rc = reconcile_put(s, b, li, cmp == 0 ? ck : NULL, crev);
        if (cmp <= 0)
            i++;
        if (cmp >= 0)
            k++;
    }
    wci_free(s->al, tok);
    wcache_view_free(v);
    return rc;
}

/* A re-list into a cache that holds an older state. */
static wcache_code list_reconcile(wcache_k8s *s, wcache_batch *b)
{
    int64_t crev = wcache_cache_revision(s->c);
    lset l = {.al = s->al};
    wcache_code rc = list_sorted(s, &l);
    wcache_batch_clear(b);
    if (rc == WCACHE_OK)
        rc = reconcile_diff(s, &l, b, crev);
    if (rc == WCACHE_OK && l.rev < crev) {
        fail(s, WCACHE_EORDER, "re-list at %lld is behind the cache (%lld)", (long long)l.rev,
             (long long)crev);
        rc = WCACHE_EORDER;
    }
    size_t changes = wcache_batch_count(b);
    if (rc == WCACHE_OK) {
        atomic_store(&s->list_rev, l.rev);
        atomic_fetch_add(&s->lists, 1);
        atomic_fetch_add(&s->relists, 1);
        atomic_fetch_add(&s->relist_changes, changes);
        if (changes > 0 && l.rev == crev) {
            fail(s, WCACHE_EORDER, "the cache differs from the list at its own revision %lld",
                 (long long)crev);
            rc = WCACHE_EORDER;
        } else if (l.rev > crev) {
            /* also with no changes: the states between crev and l.rev are
             * not known (objects may have come and gone) */
            rc = wcache_ingest_relist(s->c, b, l.rev);
            if (rc != WCACHE_OK)
                fail(s, rc, "re-list: batch at %lld: %s", (long long)l.rev,
                     wcache_strerror(rc));
        }
        if (rc != WCACHE_OK) {
            atomic_fetch_sub(&s->lists, 1);
            atomic_fetch_sub(&s->relists, 1);
            atomic_fetch_sub(&s->relist_changes, changes);
        } else {
            wci_log(s->c, WCACHE_LOG_INFO, "k8s %s: re-listed at %lld: %zu changes", s->name,
                    (long long)l.rev, changes);
        }
    }
    wcache_batch_clear(b);
    lset_fini(s, &l);
    return rc;
}

/* ---- the stream transports ---- */

/* Record why a stream ended (already logged by the parser's text). */
static void stream_failed(wcache_k8s *s, const char *where)
{
    wci_kw *w = &s->kw;
    if (w->gone)
        wci_log(s->c, WCACHE_LOG_INFO, "k8s %s: %s: %s", s->name, where, w->err);
    else
        fail(s, w->code ? w->code : WCACHE_ECORRUPT, "%s: %s", where, w->err);
}

/*
 * A relist asked for by the stream (410 or diverged), for inputs that go
 * on with the same bytes.  Returns 0 to go on, -1 to end the input.
 */
static int relist_inline(wcache_k8s *s, wcache_batch *b)
{
    stream_failed(s, "stream");
    if (!s->list_url) {
        fail(s, s->kw.gone ? WCACHE_ECOMPACTED : WCACHE_EORDER,
             "no list URL to re-list through: the input ends here");
        return -1;
    }
    int64_t backoff = s->backoff_min;
    while (!atomic_load(&s->stop)) {
        wcache_code rc = list_reconcile(s, b);
        if (rc == WCACHE_OK) {
            wci_kw_resume(&s->kw); /* the lines after it go on from the list */
            return 0;
        }
        if (rc == WCACHE_ESTOPPED)
            break;
        nap(s, backoff);
        backoff = backoff * 2 > s->backoff_max ? s->backoff_max : backoff * 2;
    }
    return -1;
}

/* Feed bytes, handling relists in place.  Returns 0 to go on, -1 to end. */
static int feed_inline(wcache_k8s *s, wcache_batch *b, const char *p, size_t n)
{
    while (n > 0 || s->kw.state != WCI_KW_GO) {
        size_t used = 0;
        int st = s->kw.state == WCI_KW_GO ? wci_kw_feed(&s->kw, p, n, &used) : s->kw.state;
        publish(s);
        p += used;
        n -= used;
        if (st == WCI_KW_GO)
            return 0;
        if (st != WCI_KW_RELIST) {
            stream_failed(s, "stream");
            return -1;
        }
        if (relist_inline(s, b) != 0)
            return -1;
    }
    return 0;
}

/* Read a descriptor to its end; stop wakes the poll. */
static void read_fd(wcache_k8s *s, wcache_batch *b, int fd)
{
    char *buf = wci_malloc(s->al, 65536);
    if (!buf) {
        fail(s, WCACHE_ENOMEM, "out of memory");
        return;
    }
    int done = 0;
    while (!atomic_load(&s->stop)) {
        struct pollfd p[2] = {{fd, POLLIN, 0}, {s->wake[0], POLLIN, 0}};
        int pr = poll(p, 2, 1000);
        if (pr < 0 && errno != EINTR) {
            s->c->last_errno = errno;
            fail(s, WCACHE_ESYS, "poll: %s", strerror(errno));
            break;
        }
        if (pr <= 0 || !(p[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
            continue;
        ssize_t r = read(fd, buf, 65536);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r < 0) {
            s->c->last_errno = errno;
            fail(s, WCACHE_ESYS, "read: %s", strerror(errno));
            break;
        }
        if (r == 0) {
            int st = wci_kw_end(&s->kw);
            if (st != WCI_KW_GO && feed_inline(s, b, NULL, 0) != 0)
                break;
            publish(s);
            done = 1;
            break;
        }
        atomic_fetch_add_explicit(&s->bytes, (uint64_t)r, memory_order_relaxed);
        if (feed_inline(s, b, buf, (size_t)r) != 0)
            break;
    }
    wci_free(s->al, buf);
    if (atomic_load(&s->stop))
        return;
    if (done)
        atomic_store(&s->end_rev, wcache_cache_revision(s->c));
    atomic_store(&s->ended, 1);
}

static void read_synthetic(wcache_k8s *s, wcache_batch *b)
{
    wci_kgen *g = wci_kgen_new(s->al, s->seed, s->resources);
    if (!g) {
        fail(s, WCACHE_ENOMEM, "out of memory");
        atomic_store(&s->ended, 1);
        return;
    }
    int64_t after = wcache_cache_revision(s->c), rv;
    const char *line;
    size_t len;
    int ok = 1;
    while (!atomic_load(&s->stop)) {
        if (!wci_kgen_next(g, after, &line, &len, &rv))
            break;
        atomic_fetch_add_explicit(&s->bytes, len, memory_order_relaxed);
        if (feed_inline(s, b, line, len) != 0) {
            ok = 0;
            break;
        }
    }
    if (!atomic_load(&s->stop)) {
        if (ok)
            atomic_store(&s->end_rev, wcache_cache_revision(s->c));
        atomic_store(&s->ended, 1);
    }
    wci_kgen_free(g);
}

/* ---- the URL watch ---- */

static size_t watch_write(char *data, size_t sz, size_t nm, void *ud)
{
    wcache_k8s *s = ud;
    size_t n = sz * nm;
    atomic_fetch_add_explicit(&s->bytes, n, memory_order_relaxed);
    if (s->watch_status != 200)
        return 0; /* an error answer: not a stream */
    int st = wci_kw_feed(&s->kw, data, n, NULL);
    publish(s);
    return st == WCI_KW_GO ? n : 0;
}

static size_t watch_header(char *data, size_t sz, size_t nm, void *ud)
{
    wcache_k8s *s = ud;
    size_t n = sz * nm;
    long st = wci_http_status_line(data, n);
    if (st >= 0)
        s->watch_status = st;
    return n;
}

/* One watch from the cache's revision.  Returns a WCI_KW_* state; GO
 * means the server ended a sound stream (its timeout). */
static int watch_once(wcache_k8s *s)
{
    wci_kw *w = &s->kw;
    wci_kw_reset(w);
    char q[96];
    snprintf(q, sizeof q, "allowWatchBookmarks=true&resourceVersion=%lld",
             (long long)w->applied);
    char *url = url_with(s, s->url, q);
    struct curl_slist *hdrs = NULL;
    CURL *e = url ? easy_new(s, url, &hdrs) : NULL;
    if (!e || !hdrs) {
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(e);
        wci_free(s->al, url);
        fail(s, WCACHE_ENOMEM, "out of memory");
        return WCI_KW_RECONNECT;
    }
    s->watch_status = 0;
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, watch_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, watch_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
    atomic_fetch_add(&s->connects, 1);
    wci_log(s->c, WCACHE_LOG_DEBUG, "k8s %s: watch %s", s->name, url);
    CURLcode res = run_xfer(s, e);
    curl_easy_cleanup(e);
    curl_slist_free_all(hdrs);
    if (res == CURLE_ABORTED_BY_CALLBACK) {
        wci_free(s->al, url);
        return WCI_KW_GO; /* stopped */
    }
    if (res == CURLE_OK && w->state == WCI_KW_GO && s->watch_status == 200)
        wci_kw_end(w); /* a last line without its newline */
    publish(s);
    int st = w->state;
    if (s->watch_status == 410) {
        w->gone = 1;
        wci_log(s->c, WCACHE_LOG_INFO, "k8s %s: %s: HTTP 410", s->name, url);
        st = WCI_KW_RELIST;
    } else if (s->watch_status != 200) {
        fail(s, s->watch_status ? WCACHE_EHTTP : WCACHE_ECURL, "%s: %s%ld %s", url,
             s->watch_status ? "HTTP " : "", s->watch_status,
             s->watch_status ? "" : curl_easy_strerror(res));
        st = WCI_KW_RECONNECT;
    } else if (st != WCI_KW_GO) {
        stream_failed(s, url);
    } else if (res != CURLE_OK) {
        fail(s, WCACHE_ECURL, "%s: %s", url, curl_easy_strerror(res));
        st = WCI_KW_RECONNECT;
    }
    wci_free(s->al, url);
    return st;
}

static void run_url(wcache_k8s *s, wcache_batch *b)
{
    int need_list = wcache_cache_revision(s->c) == 0;
    int64_t backoff = s->backoff_min;
    while (!atomic_load(&s->stop)) {
        if (need_list) {
            wcache_code rc =
                wcache_cache_revision(s->c) == 0 ? list_load(s, b) : list_reconcile(s, b);
            if (rc == WCACHE_ESTOPPED || atomic_load(&s->stop))
                break;
            if (rc != WCACHE_OK) {
                nap(s, backoff);
                backoff = backoff * 2 > s->backoff_max ? s->backoff_max : backoff * 2;
                continue;
            }
            need_list = 0;
        }
        uint64_t before = s->kw.events + s->kw.bookmarks;
        int st = watch_once(s);
        if (atomic_load(&s->stop) || st == WCI_KW_FATAL)
            break;
        /* A stream that applied nothing is no sign of health: a server
         * that closes, or answers 410, at once is not asked again at once. */
        int worked = s->kw.events + s->kw.bookmarks > before;
        if (worked)
            backoff = s->backoff_min;
        if (st == WCI_KW_RELIST) {
            need_list = 1;
        } else {
            atomic_fetch_add(&s->reconnects, 1);
        }
        if (worked && st != WCI_KW_RECONNECT)
            continue; /* the server ended a sound stream, as it does, or wants a re-list */
        nap(s, backoff);
        backoff = backoff * 2 > s->backoff_max ? s->backoff_max : backoff * 2;
    }
}

static void *run(void *arg)
{
    wcache_k8s *s = arg;
    wcache_batch *b = NULL;
    if (wcache_batch_create(s->c, &b) != WCACHE_OK) {
        fail(s, WCACHE_ENOMEM, "out of memory");
        atomic_store(&s->running, 0);
        return NULL;
    }
    if (s->input != WCACHE_K8S_INPUT_FD)
        wci_kw_reset(&s->kw);
    else
        wci_kw_resume(&s->kw); /* a partial line read before a stop stays */
    switch (s->input) {
    case WCACHE_K8S_INPUT_URL: run_url(s, b); break;
    case WCACHE_K8S_INPUT_FD: read_fd(s, b, s->fd); break;
    case WCACHE_K8S_INPUT_FILE: {
        int fd = open(s->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            s->c->last_errno = errno;
            fail(s, WCACHE_ESYS, "%s: %s", s->path, strerror(errno));
            atomic_store(&s->ended, 1);
        } else {
            read_fd(s, b, fd);
            close(fd);
        }
        break;
    }
    default: read_synthetic(s, b); break;
    }
    publish(s);
    wcache_batch_free(b);
    atomic_store(&s->running, 0);
    return NULL;
}

/* ---- the public functions ---- */

static int cur_rev_cb(int64_t *rev, void *ud)
{
    return wcache_k8s_current_revision(ud, rev) == WCACHE_OK ? 0 : -1;
}

static int http_url(const char *u)
{
    return u && ((strncmp(u, "http://", 7) == 0 && u[7]) ||
                 (strncmp(u, "https://", 8) == 0 && u[8]));
}

static char *default_name(wcache_k8s *s, const wcache_k8s_opts *o)
{
    char buf[128];
    int r = o->resources ? o->resources : WCACHE_K8S_PODS | WCACHE_K8S_CONFIGMAPS;
    snprintf(buf, sizeof buf, "k8s-synthetic/v1 seed=%llu resources=%s%s%s",
             (unsigned long long)o->seed, r & WCACHE_K8S_PODS ? "pods" : "",
             r == (WCACHE_K8S_PODS | WCACHE_K8S_CONFIGMAPS) ? "," : "",
             r & WCACHE_K8S_CONFIGMAPS ? "configmaps" : "");
    return dupstr(s->al, buf);
}

static wcache_code check_opts(const wcache_k8s_opts *o)
{
    if (o->connect_timeout_ms < 0 || o->request_timeout_ms < 0 || o->backoff_min_ms < 0 ||
        o->backoff_max_ms < 0 || (o->prefix_len && !o->prefix))
        return WCACHE_EINVAL;
    if (o->name && (o->name[0] == 0 || strlen(o->name) > NAME_MAX_BYTES))
        return WCACHE_EINVAL;
    if (!o->name && o->input != WCACHE_K8S_INPUT_SYNTHETIC)
        return WCACHE_EINVAL;
    if (o->list_url && !http_url(o->list_url))
        return WCACHE_EINVAL;
    switch (o->input) {
    case WCACHE_K8S_INPUT_FD: return o->fd >= 0 ? WCACHE_OK : WCACHE_EINVAL;
    case WCACHE_K8S_INPUT_FILE: return o->path && o->path[0] ? WCACHE_OK : WCACHE_EINVAL;
    case WCACHE_K8S_INPUT_URL:
        return http_url(o->url) && o->list_url ? WCACHE_OK : WCACHE_EINVAL;
    case WCACHE_K8S_INPUT_SYNTHETIC:
        return (o->resources & ~(WCACHE_K8S_PODS | WCACHE_K8S_CONFIGMAPS)) ? WCACHE_EINVAL
                                                                           : WCACHE_OK;
    default: return WCACHE_EINVAL;
    }
}

wcache_code wcache_k8s_create(wcache_k8s **out, wcache_cache *c, const wcache_k8s_opts *o)
{
    if (!out || !wci_cache_ok(c) || !o || o->size < sizeof *o)
        return WCACHE_EINVAL;
    *out = NULL;
    wcache_code rc = check_opts(o);
    if (rc != WCACHE_OK)
        return rc;
    if (c->open)
        return WCACHE_ESTATE;
    wcache_k8s *s = wci_calloc(&c->al, 1, sizeof *s);
    if (!s)
        return WCACHE_ENOMEM;
    s->magic = WCI_K8S_MAGIC;
    s->c = c;
    s->al = &c->al;
    s->wake[0] = s->wake[1] = -1;
    s->input = o->input;
    s->fd = o->fd;
    s->insecure = o->insecure != 0;
    s->connect_ms = o->connect_timeout_ms ? (long)o->connect_timeout_ms : 5000;
    s->request_ms = o->request_timeout_ms ? (long)o->request_timeout_ms : 60000;
    s->backoff_min = o->backoff_min_ms ? o->backoff_min_ms : 100;
    s->backoff_max = o->backoff_max_ms ? o->backoff_max_ms : 5000;
    if (s->backoff_max < s->backoff_min)
        s->backoff_max = s->backoff_min;
    s->page_limit = o->page_limit ? o->page_limit : 10000;
    s->max_line = o->max_line_bytes ? (size_t)o->max_line_bytes : (size_t)16 << 20;
    s->max_list = o->max_list_bytes ? (size_t)o->max_list_bytes : (size_t)1 << 30;
    s->seed = o->seed;
    s->resources = o->resources ? o->resources : WCACHE_K8S_PODS | WCACHE_K8S_CONFIGMAPS;
    s->rng = (uint64_t)(uintptr_t)s ^ (uint64_t)wci_mono_ms();
    s->name = o->name ? dupstr(s->al, o->name) : default_name(s, o);
    if (!s->name)
        rc = WCACHE_ENOMEM;
    else
        s->name_len = strlen(s->name);
    if (rc == WCACHE_OK && o->prefix_len &&
        !(s->prefix = wci_memdup(s->al, o->prefix, o->prefix_len)))
        rc = WCACHE_ENOMEM;
    s->prefix_len = o->prefix_len;
    if (rc == WCACHE_OK && ((o->path && !(s->path = dupstr(s->al, o->path))) ||
                            (o->url && !(s->url = dupstr(s->al, o->url))) ||
                            (o->list_url && !(s->list_url = dupstr(s->al, o->list_url))) ||
                            (o->ca_file && !(s->ca = dupstr(s->al, o->ca_file)))))
        rc = WCACHE_ENOMEM;
    if (rc == WCACHE_OK && o->bearer_token) {
        if (strpbrk(o->bearer_token, "\r\n")) {
            rc = WCACHE_EINVAL; /* would split the header */
        } else {
            size_t n = strlen(o->bearer_token) + 32;
            if ((s->auth = wci_malloc(s->al, n)))
                snprintf(s->auth, n, "Authorization: Bearer %s", o->bearer_token);
            else
                rc = WCACHE_ENOMEM;
        }
    }
    if (rc == WCACHE_OK)
        rc = wci_http_acquire(&s->multi, &s->curl_inited, s->wake, &c->last_errno);
    if (rc == WCACHE_OK && wci_kw_init(&s->kw, c, s->max_line, s->prefix, s->prefix_len) != 0)
        rc = WCACHE_ENOMEM;
    if (rc == WCACHE_OK)
        rc = wcache_cache_set_source(c, cur_rev_cb, NULL, s);
    if (rc != WCACHE_OK) {
        wcache_k8s_free(s);
        return rc;
    }
    *out = s;
    return WCACHE_OK;
}

wcache_code wcache_k8s_start(wcache_k8s *s)
{
    if (!s || s->magic != WCI_K8S_MAGIC)
        return WCACHE_EINVAL;
    if (s->joinable || !s->c->open)
        return WCACHE_ESTATE;
    atomic_store(&s->stop, 0);
    atomic_store(&s->ended, 0);
    atomic_store(&s->end_rev, 0);
    atomic_store(&s->running, 1);
    char tmp[64];
    while (read(s->wake[0], tmp, sizeof tmp) > 0) /* an old stop's wake-up */
        ;
    int e = pthread_create(&s->th, NULL, run, s);
    if (e != 0) {
        atomic_store(&s->running, 0);
        s->c->last_errno = e;
        return WCACHE_ESYS;
    }
    s->joinable = 1;
    return WCACHE_OK;
}

wcache_code wcache_k8s_stop(wcache_k8s *s)
{
    if (!s || s->magic != WCI_K8S_MAGIC)
        return WCACHE_EINVAL;
    if (!s->joinable)
        return WCACHE_OK;
    wci_http_thread_stop(s->th, &s->stop, s->multi, s->wake[1]);
    s->joinable = 0;
    return WCACHE_OK;
}

void wcache_k8s_free(wcache_k8s *s)
{
    if (!s || s->magic != WCI_K8S_MAGIC)
        return;
    wcache_k8s_stop(s);
    const wci_alloc *al = s->al;
    if (s->kw.c)
        wci_kw_fini(&s->kw);
    wci_http_release(s->multi, s->curl_inited, s->wake);
    wci_free(al, s->name);
    wci_free(al, s->path);
    wci_free(al, s->url);
    wci_free(al, s->list_url);
    wci_free(al, s->prefix);
    wci_free(al, s->auth);
    wci_free(al, s->ca);
    s->magic = 0;
    wci_free(al, s);
}

wcache_code wcache_k8s_stat(const wcache_k8s *s, wcache_k8s_stats *st)
{
    if (!s || s->magic != WCI_K8S_MAGIC || !st || st->size < sizeof *st)
        return WCACHE_EINVAL;
    wcache_k8s *m = (wcache_k8s *)s; /* atomics are read, not changed */
    wcache_k8s_stats r = {.size = sizeof r};
    r.synced = atomic_load(&m->synced);
    r.running = atomic_load(&m->running);
    r.ended = atomic_load(&m->ended);
    r.last_error = atomic_load(&m->last_error);
    r.revision = wcache_cache_revision(s->c);
    r.list_revision = atomic_load(&m->list_rev);
    r.lists = atomic_load(&m->lists);
    r.relists = atomic_load(&m->relists);
    r.connects = atomic_load(&m->connects);
    r.reconnects = atomic_load(&m->reconnects);
    r.errors = atomic_load(&m->errors);
    r.lines = atomic_load(&m->lines);
    r.bytes = atomic_load(&m->bytes);
    r.events = atomic_load(&m->events);
    r.bookmarks = atomic_load(&m->bookmarks);
    r.skipped = atomic_load(&m->skipped);
    r.relist_changes = atomic_load(&m->relist_changes);
    *st = r;
    return WCACHE_OK;
}

wcache_code wcache_k8s_current_revision(wcache_k8s *s, int64_t *rev)
{
    if (!s || s->magic != WCI_K8S_MAGIC || !rev)
        return WCACHE_EINVAL;
    if (!s->list_url) {
        int64_t e = atomic_load(&s->end_rev);
        if (e <= 0)
            return WCACHE_ENOTREADY;
        *rev = e;
        return WCACHE_OK;
    }
    char *u = url_with(s, s->list_url, "limit=1");
    if (!u)
        return WCACHE_ENOMEM;
    json_t *ans = NULL;
    wcache_code rc = get_json(s, u, 1, &ans, NULL);
    wci_free(s->al, u);
    if (rc == WCACHE_OK) {
        int64_t r;
        if (wci_json_i64(json_object_get(ans, "metadata"), "resourceVersion", &r) != 0 || r < 1)
            rc = WCACHE_ECORRUPT;
        else
            *rev = r;
    }
    json_decref(ans);
    return rc;
}

const char *wcache_k8s_source_id(const wcache_k8s *s, size_t *len)
{
    if (!s || s->magic != WCI_K8S_MAGIC)
        return NULL;
    if (len)
        *len = s->name_len;
    return s->name;
}

/*
 * Write all of p to fd.  A pipe whose reader went away must fail the call
 * with EPIPE, not kill the program with SIGPIPE: the signal is blocked in
 * this thread meanwhile, and one it raised is taken off again (unless one
 * was pending already, which stays the program's).
 */
static int write_all(int fd, const char *p, size_t n)
{
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigemptyset(&pending);
    int masked = pthread_sigmask(SIG_BLOCK, &pipe_set, &old) == 0;
    int had = masked && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    int rc = 0, err = 0;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            err = w < 0 ? errno : EIO;
            rc = -1;
            break;
        }
        p += w;
        n -= (size_t)w;
    }
    if (masked) {
        if (err == EPIPE && !had) {
            struct timespec zero = {0, 0};
            while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
                ;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    errno = err;
    return rc;
}

wcache_code wcache_k8s_synthetic_write(int fd, uint64_t seed, int resources, int64_t after_rev,
                                       int64_t *last_rev)
{
    if (fd < 0 || after_rev < 0 || (resources & ~(WCACHE_K8S_PODS | WCACHE_K8S_CONFIGMAPS)))
        return WCACHE_EINVAL;
    wci_kgen *g = wci_kgen_new(&wci_libc_alloc, seed, resources);
    if (!g)
        return WCACHE_ENOMEM;
    /* Lines are gathered so that a pipe gets few, large writes. */
    char *buf = wci_malloc(&wci_libc_alloc, 1 << 16);
    size_t n = 0;
    const char *line;
    size_t len;
    int64_t rv;
    wcache_code rc = buf ? WCACHE_OK : WCACHE_ENOMEM;
    while (rc == WCACHE_OK && wci_kgen_next(g, after_rev, &line, &len, &rv)) {
        if (n + len > (1 << 16)) {
            if (write_all(fd, buf, n) != 0)
                rc = WCACHE_ESYS;
            n = 0;
        }
        memcpy(buf + n, line, len);
        n += len;
    }
    if (rc == WCACHE_OK && n && write_all(fd, buf, n) != 0)
        rc = WCACHE_ESYS;
    if (last_rev)
        *last_rev = wci_kgen_last_rev(g);
    wci_free(&wci_libc_alloc, buf);
    wci_kgen_free(g);
    return rc;
}
