/*
 * source_k8s_stream.c - parse a Kubernetes watch stream and apply it.
 *
 * Input: newline-delimited JSON objects in arbitrary chunks (a watch's
 * chunked HTTP body, a pipe, a file).  Each line is
 *   {"type":"ADDED","object":{"metadata":{"namespace":"ns","name":"n",
 *                             "resourceVersion":"1234",...},...}}
 * with type ADDED, MODIFIED, DELETED (object: the last state, its
 * resourceVersion the deletion's), BOOKMARK (object: only
 * metadata.resourceVersion) or ERROR (object: a metav1.Status with code).
 *
 * Applying, and what is refused:
 *  - ADDED and MODIFIED are puts, DELETED a delete, at the object's
 *    resourceVersion, of key prefix + "namespace/name" (prefix + "name"
 *    without a namespace); the value is the object as compact JSON.  One
 *    line is one cache write, so nothing is ever half applied.
 *  - Events at or below `floor` (the revision the stream was opened
 *    after: a snapshot's, a list's) are already in the cache and skipped,
 *    as an API server's watch from resourceVersion R sends only what
 *    follows R.  An event above the floor but at or below what was already
 *    applied, or a DELETED of a key the cache does not hold, means the
 *    stream and the cache disagree: WCI_KW_RELIST.
 *  - BOOKMARK advances the cache's revision (nothing else is sent to
 *    watchers): "every event up to R was sent".
 *  - ERROR with code 410 (reason Expired/Gone: the start revision is older
 *    than the server's history) asks for a re-list (WCI_KW_RELIST, gone);
 *    any other ERROR ends the stream (WCI_KW_RECONNECT, WCACHE_EHTTP).
 *  - A line that is not JSON, not an object of that shape, of an unknown
 *    type, or longer than max_line ends the stream before anything of it
 *    is applied (WCI_KW_RECONNECT, WCACHE_ECORRUPT / WCACHE_ETOOBIG): the
 *    bytes after it cannot be trusted to start a line, so no attempt is
 *    made to skip to the next one.
 */
#include "etcd_stream.h"
#include "source_k8s.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int wci_kw_init(wci_kw *w, wcache_cache *c, size_t max_line, const void *prefix,
                size_t prefix_len)
{
    memset(w, 0, sizeof *w);
    w->c = c;
    w->al = &c->al;
    w->max_line = max_line;
    w->prefix = prefix;
    w->prefix_len = prefix_len;
    wci_kw_reset(w);
    return 0;
}

void wci_kw_fini(wci_kw *w)
{
    wci_free(w->al, w->buf);
    wci_free(w->al, w->key);
    wci_free(w->al, w->val);
    memset(w, 0, sizeof *w);
}

void wci_kw_resume(wci_kw *w)
{
    w->state = WCI_KW_GO;
    w->code = 0;
    w->gone = 0;
    w->err[0] = 0;
    w->applied = wcache_cache_revision(w->c);
    w->floor = w->applied;
}

void wci_kw_reset(wci_kw *w)
{
    w->len = 0;
    wci_kw_resume(w);
}

__attribute__((format(printf, 4, 5))) static void stop(wci_kw *w, int state, int code,
                                                       const char *fmt, ...)
{
    if (w->state != WCI_KW_GO)
        return;
    w->state = state;
    w->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
}

static int grow(const wci_alloc *al, char **buf, size_t *cap, size_t need, size_t keep)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    char *nb = wci_malloc(al, n);
    if (!nb)
        return -1;
    if (keep)
        memcpy(nb, *buf, keep);
    wci_free(al, *buf);
    *buf = nb;
    *cap = n;
    return 0;
}

/* A path segment Kubernetes accepts as a name: no '/', not "." or "..". */
static int good_name(const json_t *v)
{
    if (!json_is_string(v))
        return 0;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || memchr(s, '/', n) || memchr(s, 0, n))
        return 0;
    return !(strcmp(s, ".") == 0 || strcmp(s, "..") == 0);
}

long wci_k8s_key(const wci_alloc *al, const unsigned char *prefix, size_t prefix_len,
                 const json_t *obj, char **buf, size_t *cap, int64_t *rv)
{
    const json_t *md = json_object_get(obj, "metadata");
    *rv = 0;
    if (!json_is_object(md))
        return -1;
    if (wci_json_i64(md, "resourceVersion", rv) != 0 || *rv < 0) {
        *rv = -1;
        return -1;
    }
    const json_t *name = json_object_get(md, "name");
    const json_t *ns = json_object_get(md, "namespace");
    if (!good_name(name))
        return -1;
    size_t nsl = 0;
    if (ns && !(json_is_string(ns) && json_string_length(ns) == 0)) {
        if (!good_name(ns))
            return -1;
        nsl = json_string_length(ns);
    }
    size_t nl = json_string_length(name);
    size_t need = prefix_len + nsl + 1 + nl;
    if (grow(al, buf, cap, need, 0) != 0)
        return -2;
    char *k = *buf;
    if (prefix_len)
        memcpy(k, prefix, prefix_len);
    size_t o = prefix_len;
    if (nsl) {
        memcpy(k + o, json_string_value(ns), nsl);
        o += nsl;
        k[o++] = '/';
    }
    memcpy(k + o, json_string_value(name), nl);
    return (long)(o + nl);
}

long wci_k8s_value(const wci_alloc *al, const json_t *obj, char **buf, size_t *cap)
{
    for (int tries = 0; tries < 2; tries++) {
        size_t n = json_dumpb(obj, *buf, *cap, JSON_COMPACT);
        if (n == 0)
            return -1;
        if (n <= *cap)
            return (long)n;
        if (grow(al, buf, cap, n, 0) != 0)
            return -1;
    }
    return -1;
}

static void event(wci_kw *w, const json_t *obj, int del, const char *type)
{
    int64_t rv;
    long kl = wci_k8s_key(w->al, w->prefix, w->prefix_len, obj, &w->key, &w->kcap, &rv);
    if (kl == -2) {
        stop(w, WCI_KW_RECONNECT, WCACHE_ENOMEM, "out of memory for a key");
        return;
    }
    if (kl < 0 || rv < 1) {
        stop(w, WCI_KW_RECONNECT, WCACHE_ECORRUPT,
             "%s event %llu: object without a usable metadata.name, namespace or "
             "resourceVersion",
             type, (unsigned long long)w->lines);
        return;
    }
    if (rv <= w->floor) {
        w->skipped++; /* sent again at a stream's start: already applied */
        return;
    }
    if (rv <= w->applied) {
        stop(w, WCI_KW_RELIST, WCACHE_EORDER,
             "%s event of resourceVersion %lld arrived after %lld was applied", type,
             (long long)rv, (long long)w->applied);
        return;
    }
    wcache_code rc;
    if (del) {
        rc = wcache_ingest_delete(w->c, w->key, (size_t)kl, rv);
    } else {
        long vl = wci_k8s_value(w->al, obj, &w->val, &w->vcap);
        if (vl < 0) {
            stop(w, WCI_KW_RECONNECT, WCACHE_ENOMEM, "out of memory for a value");
            return;
        }
        rc = wcache_ingest_put(w->c, w->key, (size_t)kl, w->val, (size_t)vl, rv);
    }
    if (rc == WCACHE_OK) {
        w->applied = rv;
        w->events++;
    } else if (rc == WCACHE_ENOTFOUND || rc == WCACHE_EORDER) {
        stop(w, WCI_KW_RELIST, rc, "%s of %.*s at %lld does not apply to the cache: %s", type,
             (int)(kl > 120 ? 120 : kl), w->key, (long long)rv, wcache_strerror(rc));
    } else if (rc == WCACHE_ENOMEM) {
        stop(w, WCI_KW_RECONNECT, rc, "out of memory at resourceVersion %lld", (long long)rv);
    } else {
        stop(w, WCI_KW_FATAL, rc, "the cache refuses %.*s at %lld: %s",
             (int)(kl > 120 ? 120 : kl), w->key, (long long)rv, wcache_strerror(rc));
    }
}

static void bookmark(wci_kw *w, const json_t *obj)
{
    int64_t rv;
    if (wci_json_i64(json_object_get(obj, "metadata"), "resourceVersion", &rv) != 0 || rv < 1) {
        stop(w, WCI_KW_RECONNECT, WCACHE_ECORRUPT, "BOOKMARK without a usable resourceVersion");
        return;
    }
    if (rv <= w->applied)
        return; /* nothing new: bookmarks may repeat the last event's revision */
    wcache_code rc = wcache_ingest_progress(w->c, rv);
    if (rc == WCACHE_OK) {
        w->applied = rv;
        w->bookmarks++;
    } else {
        stop(w, WCI_KW_FATAL, rc, "BOOKMARK %lld: %s", (long long)rv, wcache_strerror(rc));
    }
}

static void error_event(wci_kw *w, const json_t *obj)
{
    const json_t *code = json_object_get(obj, "code");
    const json_t *reason = json_object_get(obj, "reason");
    const json_t *msg = json_object_get(obj, "message");
    const char *m = json_is_string(msg) ? json_string_value(msg) : "(no message)";
    long long cv = json_is_integer(code) ? (long long)json_integer_value(code) : 0;
    int gone = cv == 410 || (!code && json_is_string(reason) &&
                             (strcmp(json_string_value(reason), "Expired") == 0 ||
                              strcmp(json_string_value(reason), "Gone") == 0));
    if (gone) {
        stop(w, WCI_KW_RELIST, WCACHE_ECOMPACTED, "ERROR 410: %.200s", m);
        w->gone = 1;
    } else {
        stop(w, WCI_KW_RECONNECT, WCACHE_EHTTP, "ERROR %lld: %.200s", cv, m);
    }
}

static void handle_line(wci_kw *w, const char *p, size_t n)
{
    while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    while (n > 0 && (p[0] == ' ' || p[0] == '\t' || p[0] == '\r')) {
        p++;
        n--;
    }
    if (n == 0)
        return;
    w->lines++;
    json_error_t je;
    json_t *root = json_loadb(p, n, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        stop(w, WCI_KW_RECONNECT, WCACHE_ECORRUPT, "line %llu is not JSON (byte %d): %s",
             (unsigned long long)w->lines, je.position, je.text);
        return;
    }
    const json_t *t = json_object_get(root, "type");
    const json_t *obj = json_object_get(root, "object");
    const char *ts = json_is_string(t) ? json_string_value(t) : NULL;
    if (!ts || !json_is_object(obj)) {
        stop(w, WCI_KW_RECONNECT, WCACHE_ECORRUPT,
             "line %llu is not a watch event (no type or no object)",
             (unsigned long long)w->lines);
    } else if (strcmp(ts, "ADDED") == 0 || strcmp(ts, "MODIFIED") == 0) {
        event(w, obj, 0, ts);
    } else if (strcmp(ts, "DELETED") == 0) {
        event(w, obj, 1, ts);
    } else if (strcmp(ts, "BOOKMARK") == 0) {
        bookmark(w, obj);
    } else if (strcmp(ts, "ERROR") == 0) {
        error_event(w, obj);
    } else {
        stop(w, WCI_KW_RECONNECT, WCACHE_ECORRUPT, "line %llu: unknown event type \"%.40s\"",
             (unsigned long long)w->lines, ts);
    }
    json_decref(root);
}

int wci_kw_feed(wci_kw *w, const char *p, size_t n, size_t *used)
{
    size_t n0 = n;
    while (n > 0 && w->state == WCI_KW_GO) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (w->len + take > w->max_line) {
            stop(w, WCI_KW_RECONNECT, WCACHE_ETOOBIG, "line %llu is over %zu bytes",
                 (unsigned long long)w->lines + 1, w->max_line);
            break;
        }
        if (!nl || w->len) {
            if (grow(w->al, &w->buf, &w->cap, w->len + take, w->len) != 0) {
                stop(w, WCI_KW_RECONNECT, WCACHE_ENOMEM, "out of memory for a line");
                break;
            }
            memcpy(w->buf + w->len, p, take);
            w->len += take;
        }
        if (!nl) {
            p += take;
            n -= take;
            break;
        }
        if (w->len) {
            size_t len = w->len;
            w->len = 0; /* first: the line is consumed whatever its handler decides */
            handle_line(w, w->buf, len);
        } else {
            handle_line(w, p, take); /* whole in this chunk: no copy */
        }
        p += take + 1;
        n -= take + 1;
    }
    if (used)
        *used = n0 - n;
    return w->state;
}

int wci_kw_end(wci_kw *w)
{
    if (w->state == WCI_KW_GO && w->len) {
        size_t n = w->len;
        w->len = 0;
        handle_line(w, w->buf, n);
    }
    return w->state;
}

/* ---- LIST pages ---- */

/* An item of a list: kind and apiVersion first (a typed list leaves them
 * out of its items; watch events carry them), then the item's members. */
static json_t *typed_item(const json_t *item, const char *kind, const char *api)
{
    if (!kind || !api || json_object_get(item, "kind"))
        return json_incref((json_t *)item);
    json_t *o = json_object();
    if (!o)
        return NULL;
    if (json_object_set_new(o, "apiVersion", json_string(api)) != 0 ||
        json_object_set_new(o, "kind", json_string(kind)) != 0 ||
        json_object_update(o, (json_t *)item) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

wcache_code wci_k8s_list_page(const wci_alloc *al, const unsigned char *prefix,
                              size_t prefix_len, const json_t *page, int64_t want_rev,
                              int64_t *rev, const char **cont, wci_k8s_item_fn fn, void *ud,
                              char *err, size_t errlen)
{
    const json_t *md = json_object_get(page, "metadata");
    const json_t *items = json_object_get(page, "items");
    const json_t *ct = json_object_get(md, "continue");
    int64_t r;
    *cont = NULL;
    if (!json_is_object(md) || wci_json_i64(md, "resourceVersion", &r) != 0 || r < 1) {
        snprintf(err, errlen, "no usable metadata.resourceVersion");
        return WCACHE_ECORRUPT;
    }
    if (want_rev > 0 && r != want_rev) {
        snprintf(err, errlen, "resourceVersion %lld, the first page's was %lld", (long long)r,
                 (long long)want_rev);
        return WCACHE_ECORRUPT;
    }
    if ((items && !json_is_array(items) && !json_is_null(items)) ||
        (ct && !json_is_string(ct))) {
        snprintf(err, errlen, "items is not an array, or continue not a string");
        return WCACHE_ECORRUPT;
    }
    *rev = r;
    /* PodList -> Pod, for the items' kind */
    const json_t *lk = json_object_get(page, "kind"), *la = json_object_get(page, "apiVersion");
    char kind[128] = {0};
    if (json_is_string(lk) && json_is_string(la)) {
        size_t n = json_string_length(lk);
        if (n > 4 && n < sizeof kind && strcmp(json_string_value(lk) + n - 4, "List") == 0 &&
            !memchr(json_string_value(lk), 0, n))
            memcpy(kind, json_string_value(lk), n - 4);
    }
    char *kb = NULL, *vb = NULL;
    size_t kc = 0, vc = 0;
    wcache_code rc = WCACHE_OK;
    for (size_t i = 0; i < json_array_size(items) && rc == WCACHE_OK; i++) {
        const json_t *it = json_array_get(items, i);
        int64_t rv = 0;
        long kl =
            json_is_object(it) ? wci_k8s_key(al, prefix, prefix_len, it, &kb, &kc, &rv) : -1;
        if (kl == -2) {
            rc = WCACHE_ENOMEM;
        } else if (kl < 0 || rv < 1 || rv > r) {
            snprintf(err, errlen,
                     "item %zu without a usable name or resourceVersion (list at %lld)", i,
                     (long long)r);
            rc = WCACHE_ECORRUPT;
        } else {
            json_t *ti =
                typed_item(it, kind[0] ? kind : NULL, kind[0] ? json_string_value(la) : NULL);
            long vl = ti ? wci_k8s_value(al, ti, &vb, &vc) : -1;
            json_decref(ti);
            rc = vl < 0 ? WCACHE_ENOMEM : fn(kb, (size_t)kl, vb, (size_t)vl, rv, ud);
        }
    }
    wci_free(al, kb);
    wci_free(al, vb);
    if (rc == WCACHE_OK && ct && json_string_length(ct) > 0)
        *cont = json_string_value(ct);
    return rc;
}
