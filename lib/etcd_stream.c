/*
 * etcd_stream.c - parse an etcd v3 gateway watch stream and apply it.
 *
 * Input: newline-delimited JSON objects, in arbitrary chunks.  Each line is
 * one of
 *   {"result":{"header":{...},"created":true}}             the watch exists
 *   {"result":{"header":{"revision":"N"},"events":[...]}}   changes
 *   {"result":{"header":{"revision":"N"}}}                  progress
 *   {"result":{...,"canceled":true,"compact_revision":"C"}} start compacted
 *   {"error":{"grpc_code":14,...,"message":"..."}}          the member stops
 * with int64 fields as strings, zero fields left out, a PUT event without
 * "type", keys and values in base64 (notes section 2).
 *
 * Applying, and what is refused:
 *  - The events of one message are checked first (types, base64, revision
 *    order) and only then applied, so a malformed message changes nothing.
 *    Events of one etcd revision (a transaction) become one wcache batch.
 *    A revision is never split between messages: etcd cuts its batches on
 *    revision boundaries unless a client asks for fragments, which we do
 *    not.
 *  - Events at or below the revision the stream was opened after
 *    (`floor`) are duplicates of what the cache already has and are
 *    skipped.  An event above the floor but at or below the revision
 *    already applied means the stream broke its order (a premature
 *    progress, a split revision): the cache may have missed something, so
 *    the stream ends with WCI_EW_DIVERGED and the source re-lists and
 *    reconciles.
 *  - A malformed or oversized message, or an error object, ends the stream
 *    (WCI_EW_RECONNECT): the source reconnects from the last applied
 *    revision + 1, so nothing is lost and nothing applied twice.
 *
 * THE PROGRESS GUARD (etcd-io/etcd#15220).  A progress notification says
 * "every event up to revision P was sent".  etcd before 3.4.31 / 3.5.8
 * breaks that promise in one place: a *requested* progress (the answer to
 * a progress_request, sent with watch_id -1) is queued on the stream's
 * control channel with the store's current revision, and overtakes events
 * still queued on the watcher's channel, or not even sent yet when the
 * watcher is catching up (unsynced).  It can therefore precede events of
 * revision P and of revisions below P; it can also be lower than an event
 * already delivered.  Timed notifications (progress_notify, our watch's
 * own id) go through the watcher's channel behind its events and are only
 * sent to a watcher that has caught up, so they do not overtake; the issue
 * left open whether one could still precede an event of its own revision.
 * The rules, each covering one of those cases:
 *   1. A message with watch_id -1 is never applied (counted as ignored).
 *      The source never sends progress requests to 3.4 anyway.
 *   2. A timed notification P proves only that events below P were
 *      delivered: apply P - 1 at once, and keep P pending.
 *   3. A pending P is confirmed by a later timed notification on the same
 *      stream with revision >= P (an event of revision P, queued before
 *      the first notification was made, would have come between them):
 *      then P is applied.  Events at or above P make it moot.  A new
 *      stream starts with nothing pending.
 *   4. Any revision at or below the cache's is not applied (progress is
 *      monotonic); an event that a progress already covered is rule
 *      "diverged" above, so even a broken promise is repaired by a re-list,
 *      never served as a silently stale read.
 * The cost: a consistent read on a quiet range waits for two timed
 * notifications instead of one.
 */
#include "etcd_stream.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- small codecs ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of each base64 character, -1 for any other byte. */
static const signed char B64V[256] = {
    ['A'] = 0,  ['B'] = 1,  ['C'] = 2,  ['D'] = 3,  ['E'] = 4,  ['F'] = 5,  ['G'] = 6,
    ['H'] = 7,  ['I'] = 8,  ['J'] = 9,  ['K'] = 10, ['L'] = 11, ['M'] = 12, ['N'] = 13,
    ['O'] = 14, ['P'] = 15, ['Q'] = 16, ['R'] = 17, ['S'] = 18, ['T'] = 19, ['U'] = 20,
    ['V'] = 21, ['W'] = 22, ['X'] = 23, ['Y'] = 24, ['Z'] = 25, ['a'] = 26, ['b'] = 27,
    ['c'] = 28, ['d'] = 29, ['e'] = 30, ['f'] = 31, ['g'] = 32, ['h'] = 33, ['i'] = 34,
    ['j'] = 35, ['k'] = 36, ['l'] = 37, ['m'] = 38, ['n'] = 39, ['o'] = 40, ['p'] = 41,
    ['q'] = 42, ['r'] = 43, ['s'] = 44, ['t'] = 45, ['u'] = 46, ['v'] = 47, ['w'] = 48,
    ['x'] = 49, ['y'] = 50, ['z'] = 51, ['0'] = 52, ['1'] = 53, ['2'] = 54, ['3'] = 55,
    ['4'] = 56, ['5'] = 57, ['6'] = 58, ['7'] = 59, ['8'] = 60, ['9'] = 61, ['+'] = 62,
    ['/'] = 63};

/* The table above holds 0 for both 'A' and every invalid byte: this one
 * tells them apart. */
static int b64ok(unsigned char ch)
{
    return B64V[ch] != 0 || ch == 'A';
}

long wci_b64_decode(const char *s, size_t n, unsigned char *out)
{
    if (n % 4 != 0)
        return -1;
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0, full = n;
    if (n > 0 && p[n - 1] == '=')
        full = n - 4; /* the last quad has padding: done below */
    /* The bulk (values are kilobytes): a whole quad at a time, one check of
     * all four characters. */
    for (size_t i = 0; i < full; i += 4) {
        unsigned a = p[i], b = p[i + 1], c = p[i + 2], d = p[i + 3];
        if (!(b64ok(a) & b64ok(b) & b64ok(c) & b64ok(d)))
            return -1;
        uint32_t x = (uint32_t)B64V[a] << 18 | (uint32_t)B64V[b] << 12 |
                     (uint32_t)B64V[c] << 6 | (uint32_t)B64V[d];
        out[o] = (unsigned char)(x >> 16);
        out[o + 1] = (unsigned char)(x >> 8);
        out[o + 2] = (unsigned char)x;
        o += 3;
    }
    if (full < n) {
        const unsigned char *q = p + full;
        if (!b64ok(q[0]) || !b64ok(q[1]))
            return -1;
        int pad2 = q[2] == '=';
        if (!pad2 && !b64ok(q[2]))
            return -1; /* q[3] is '=' */
        uint32_t x = (uint32_t)B64V[q[0]] << 18 | (uint32_t)B64V[q[1]] << 12 |
                     (pad2 ? 0 : (uint32_t)B64V[q[2]] << 6);
        out[o++] = (unsigned char)(x >> 16);
        if (!pad2)
            out[o++] = (unsigned char)(x >> 8);
    }
    return (long)o;
}

size_t wci_b64_encode(const void *p, size_t n, char *out)
{
    const unsigned char *s = p;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t x = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        out[o++] = B64[x >> 18];
        out[o++] = B64[(x >> 12) & 63];
        out[o++] = B64[(x >> 6) & 63];
        out[o++] = B64[x & 63];
    }
    if (i < n) {
        uint32_t x = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        out[o++] = B64[x >> 18];
        out[o++] = B64[(x >> 12) & 63];
        out[o++] = i + 1 < n ? B64[(x >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = 0;
    return o;
}

int wci_json_i64(const json_t *obj, const char *name, int64_t *out)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, name) : NULL;
    *out = 0;
    if (!v)
        return 0;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v), i = 0;
    int neg = 0;
    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 19)
        return -1;
    uint64_t x = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    if (x > (uint64_t)INT64_MAX)
        return -1;
    *out = neg ? -(int64_t)x : (int64_t)x;
    return 0;
}

long wci_json_b64(const wci_alloc *al, const json_t *obj, const char *name, unsigned char **buf,
                  size_t *cap)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, name) : NULL;
    if (!v)
        return 0;
    if (!json_is_string(v))
        return -1;
    size_t n = json_string_length(v), need = n / 4 * 3 + 1;
    if (need > *cap) {
        unsigned char *nb = wci_malloc(al, need);
        if (!nb)
            return -1;
        wci_free(al, *buf);
        *buf = nb;
        *cap = need;
    }
    return wci_b64_decode(json_string_value(v), n, *buf);
}

/* ---- the stream ---- */

int wci_ew_init(wci_ew *w, wcache_cache *c, size_t max_msg)
{
    memset(w, 0, sizeof *w);
    w->c = c;
    w->max_msg = max_msg;
    if (wcache_batch_create(c, &w->batch) != WCACHE_OK)
        return -1;
    wci_ew_reset(w);
    return 0;
}

void wci_ew_fini(wci_ew *w)
{
    wcache_batch_free(w->batch);
    wci_free(&w->c->al, w->buf);
    wci_free(&w->c->al, w->scratch);
    memset(w, 0, sizeof *w);
}

void wci_ew_reset(wci_ew *w)
{
    w->len = 0;
    w->pending = 0;
    w->created = 0;
    w->state = WCI_EW_GO;
    w->compact_rev = 0;
    w->err[0] = 0;
    w->applied = wcache_cache_revision(w->c);
    w->floor = w->applied; /* the stream is opened from floor + 1 */
}

__attribute__((format(printf, 3, 4))) static void stop(wci_ew *w, int state, const char *fmt,
                                                       ...)
{
    if (w->state != WCI_EW_GO)
        return;
    w->state = state;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
}

/* Check an event; its key is decoded into the scratch buffer. */
static int check_event(wci_ew *w, const json_t *ev, int *is_del, int64_t *rev)
{
    if (!json_is_object(ev))
        return -1;
    const json_t *t = json_object_get(ev, "type");
    *is_del = 0;
    if (t) {
        if (!json_is_string(t))
            return -1;
        if (strcmp(json_string_value(t), "DELETE") == 0)
            *is_del = 1;
        else if (strcmp(json_string_value(t), "PUT") != 0)
            return -1;
    }
    const json_t *kv = json_object_get(ev, "kv");
    if (!json_is_object(kv) || wci_json_i64(kv, "mod_revision", rev) != 0 || *rev < 1)
        return -1;
    long kl = wci_json_b64(&w->c->al, kv, "key", &w->scratch, &w->scap);
    if (kl <= 0)
        return -1;
    if (!*is_del && wci_json_b64(&w->c->al, kv, "value", &w->scratch, &w->scap) < 0)
        return -1;
    return 0;
}

/* Add one checked event to the batch. */
static wcache_code add_event(wci_ew *w, const json_t *ev, int is_del)
{
    const json_t *kv = json_object_get(ev, "kv");
    const wci_alloc *al = &w->c->al;
    long vl = is_del ? 0 : wci_json_b64(al, kv, "value", &w->scratch, &w->scap);
    if (vl < 0)
        return WCACHE_ENOMEM;
    /* The value goes first into the scratch buffer, the key after it. */
    size_t need = (size_t)vl + json_string_length(json_object_get(kv, "key")) / 4 * 3 + 1;
    unsigned char *tmp = wci_malloc(al, need);
    if (!tmp)
        return WCACHE_ENOMEM;
    memcpy(tmp, w->scratch, (size_t)vl);
    long kl = wci_b64_decode(json_string_value(json_object_get(kv, "key")),
                             json_string_length(json_object_get(kv, "key")), tmp + vl);
    wcache_code rc = is_del ? wcache_batch_delete(w->batch, tmp + vl, (size_t)kl)
                            : wcache_batch_put(w->batch, tmp + vl, (size_t)kl, tmp, (size_t)vl);
    wci_free(al, tmp);
    return rc;
}

static void apply_group(wci_ew *w, const json_t *evs, size_t i, size_t j, int64_t rev)
{
    wcache_batch_clear(w->batch);
    for (size_t k = i; k < j; k++) {
        const json_t *ev = json_array_get(evs, k);
        const json_t *t = json_object_get(ev, "type");
        int del = json_is_string(t) && strcmp(json_string_value(t), "DELETE") == 0;
        wcache_code rc = add_event(w, ev, del); /* checked in pass 1 */
        if (rc == WCACHE_ENOMEM) {
            stop(w, WCI_EW_RECONNECT, "out of memory at revision %lld", (long long)rev);
            return;
        }
        if (rc != WCACHE_OK) {
            stop(w, WCI_EW_FATAL, "revision %lld: the cache refuses an event: %s",
                 (long long)rev, wcache_strerror(rc));
            return;
        }
    }
    atomic_fetch_add(&w->events, j - i);
    atomic_fetch_add(&w->revisions, 1);
    wcache_code rc = wcache_ingest_batch(w->c, w->batch, rev);
    wcache_batch_clear(w->batch);
    if (rc != WCACHE_OK) {
        atomic_fetch_sub(&w->events, j - i);
        atomic_fetch_sub(&w->revisions, 1);
    }
    if (rc == WCACHE_OK) {
        w->applied = rev;
        if (w->pending && rev >= w->pending)
            w->pending = 0;
    } else if (rc == WCACHE_EORDER || rc == WCACHE_EEXIST || rc == WCACHE_ENOTFOUND) {
        stop(w, WCI_EW_DIVERGED, "revision %lld does not apply to the cache: %s",
             (long long)rev, wcache_strerror(rc));
    } else if (rc == WCACHE_ENOMEM) {
        stop(w, WCI_EW_RECONNECT, "out of memory at revision %lld", (long long)rev);
    } else {
        stop(w, WCI_EW_FATAL, "revision %lld: %s", (long long)rev, wcache_strerror(rc));
    }
}

static void apply_events(wci_ew *w, const json_t *evs)
{
    size_t n = json_array_size(evs);
    int64_t last = 0, rev;
    int del;
    /* Pass 1: the whole message is sound before anything is applied. */
    for (size_t i = 0; i < n; i++) {
        if (check_event(w, json_array_get(evs, i), &del, &rev) != 0) {
            stop(w, WCI_EW_RECONNECT, "malformed event %zu", i);
            return;
        }
        if (rev < last) {
            stop(w, WCI_EW_RECONNECT, "events out of revision order");
            return;
        }
        last = rev;
    }
    /* Pass 2: one batch per revision. */
    for (size_t i = 0; i < n && w->state == WCI_EW_GO;) {
        int64_t r, r2 = 0;
        wci_json_i64(json_object_get(json_array_get(evs, i), "kv"), "mod_revision", &r);
        size_t j = i + 1;
        for (; j < n; j++) {
            wci_json_i64(json_object_get(json_array_get(evs, j), "kv"), "mod_revision", &r2);
            if (r2 != r)
                break;
        }
        if (r <= w->floor) {
            atomic_fetch_add(&w->dups,
                             j - i); /* sent again at a stream's start: already applied */
        } else if (r <= w->applied) {
            stop(w, WCI_EW_DIVERGED,
                 "event of revision %lld arrived after revision %lld was applied", (long long)r,
                 (long long)w->applied);
            return;
        } else {
            apply_group(w, evs, i, j, r);
        }
        i = j;
    }
}

/* Rules 2 to 4 of the guard (rule 1 is checked by the caller). */
static void progress(wci_ew *w, int64_t p)
{
    if (p <= w->applied) {
        if (w->pending && p >= w->pending)
            w->pending = 0;
        return;
    }
    int64_t target = p - 1;
    if (w->pending && p >= w->pending && w->pending > target)
        target = w->pending; /* p == pending: confirmed */
    w->pending = target >= p ? 0 : p;
    if (target <= w->applied)
        return;
    atomic_fetch_add(&w->progress_applied, 1);
    wcache_code rc = wcache_ingest_progress(w->c, target);
    if (rc != WCACHE_OK)
        atomic_fetch_sub(&w->progress_applied, 1);
    if (rc == WCACHE_OK) {
        w->applied = target;
    } else if (rc == WCACHE_EORDER) {
        stop(w, WCI_EW_DIVERGED, "progress %lld below the cache", (long long)target);
    } else {
        stop(w, WCI_EW_FATAL, "progress %lld: %s", (long long)target, wcache_strerror(rc));
    }
}

int64_t wci_ckey_value(const unsigned char *v, size_t n)
{
    if (n == 0 || n > 18)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

/* A message of the compaction key's watch: only its puts matter.  A value
 * that is not a revision is not ours to judge, and is skipped. */
static void ckey_result(wci_ew *w, const json_t *evs)
{
    for (size_t i = 0; i < json_array_size(evs); i++) {
        const json_t *ev = json_array_get(evs, i), *t = json_object_get(ev, "type");
        if (t && !(json_is_string(t) && strcmp(json_string_value(t), "PUT") == 0))
            continue;
        long vl =
            wci_json_b64(&w->c->al, json_object_get(ev, "kv"), "value", &w->scratch, &w->scap);
        int64_t v = vl > 0 ? wci_ckey_value(w->scratch, (size_t)vl) : -1;
        if (v > w->ckey_rev)
            w->ckey_rev = v;
    }
}

static void handle_result(wci_ew *w, const json_t *res)
{
    const json_t *hdr = json_object_get(res, "header");
    const json_t *evs = json_object_get(res, "events");
    int64_t rev, wid, crev;
    if ((hdr && !json_is_object(hdr)) || (evs && !json_is_array(evs)) ||
        wci_json_i64(hdr, "revision", &rev) != 0 || wci_json_i64(res, "watch_id", &wid) != 0 ||
        wci_json_i64(res, "compact_revision", &crev) != 0) {
        stop(w, WCI_EW_RECONNECT, "malformed watch response");
        return;
    }
    if (w->ckey_watch && wid == WCI_EW_CKEY_ID) {
        ckey_result(w, evs); /* its created, cancel (the range's watch gets it too) */
        return;
    }
    if (json_is_true(json_object_get(res, "canceled"))) {
        if (crev > 0) {
            w->compact_rev = crev;
            stop(w, WCI_EW_COMPACTED, "watch start compacted (compact_revision %lld)",
                 (long long)crev);
            return;
        }
        const json_t *why = json_object_get(res, "cancel_reason");
        stop(w, WCI_EW_RECONNECT, "watch canceled: %s",
             json_is_string(why) ? json_string_value(why) : "no reason given");
        return;
    }
    if (json_is_true(json_object_get(res, "created"))) {
        w->created = 1;
        return; /* its revision is the store's, not the watcher's */
    }
    if (wid != 0) {
        atomic_fetch_add(&w->progress_ignored,
                         1); /* rule 1: a requested progress (-1), or not our watch */
        return;
    }
    if (evs && json_array_size(evs) > 0) {
        apply_events(w, evs);
        return;
    }
    if (!w->created) {
        atomic_fetch_add(&w->progress_ignored, 1);
        return;
    }
    progress(w, rev);
}

static void handle_msg(wci_ew *w, const char *p, size_t n)
{
    while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0)
        return;
    atomic_fetch_add(&w->messages, 1);
    json_error_t je;
    json_t *root = json_loadb(p, n, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        stop(w, WCI_EW_RECONNECT, "malformed message at byte %d: %s", je.position, je.text);
        return;
    }
    const json_t *res = json_object_get(root, "result");
    const json_t *err = json_object_get(root, "error");
    if (json_is_object(res)) {
        handle_result(w, res);
    } else if (json_is_object(err)) {
        const json_t *m = json_object_get(err, "message");
        stop(w, WCI_EW_RECONNECT, "member error: %s",
             json_is_string(m) ? json_string_value(m) : "(no message)");
    } else {
        stop(w, WCI_EW_RECONNECT, "message is neither a result nor an error");
    }
    json_decref(root);
}

static int grow(wci_ew *w, size_t need)
{
    if (need <= w->cap)
        return 0;
    size_t cap = w->cap ? w->cap : 4096;
    while (cap < need)
        cap *= 2;
    char *nb = wci_malloc(&w->c->al, cap);
    if (!nb)
        return -1;
    if (w->len)
        memcpy(nb, w->buf, w->len);
    wci_free(&w->c->al, w->buf);
    w->buf = nb;
    w->cap = cap;
    return 0;
}

int wci_ew_feed(wci_ew *w, const char *p, size_t n)
{
    while (n > 0 && w->state == WCI_EW_GO) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (w->len + take > w->max_msg) {
            stop(w, WCI_EW_RECONNECT, "message over %zu bytes", w->max_msg);
            break;
        }
        if (!nl || w->len) {
            if (grow(w, w->len + take) != 0) {
                stop(w, WCI_EW_RECONNECT, "out of memory for a message");
                break;
            }
            memcpy(w->buf + w->len, p, take);
            w->len += take;
        }
        if (!nl)
            break;
        if (w->len) {
            handle_msg(w, w->buf, w->len);
            w->len = 0;
        } else {
            handle_msg(w, p, take); /* whole in this chunk: no copy */
        }
        p += take + 1;
        n -= take + 1;
    }
    return w->state;
}

int wci_ew_end(wci_ew *w)
{
    if (w->state == WCI_EW_GO && w->len) {
        handle_msg(w, w->buf, w->len);
        w->len = 0;
    }
    stop(w, WCI_EW_RECONNECT, "the stream ended");
    return w->state;
}

/* ---- protobuf, for ranges over gRPC ---- */

/* A varint at *p (< end): 0 and *p moved past it, or -1. */
static int pb_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int sh = 0; sh < 64 && *p < end; sh += 7) {
        unsigned char b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << sh;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Skip a field of wire type wt: 0 or -1. */
static int pb_skip(const unsigned char **p, const unsigned char *end, unsigned wt)
{
    uint64_t v;
    switch (wt) {
    case 0: return pb_varint(p, end, &v);
    case 1:
        if (end - *p < 8)
            return -1;
        *p += 8;
        return 0;
    case 2:
        if (pb_varint(p, end, &v) != 0 || v > (uint64_t)(end - *p))
            return -1;
        *p += v;
        return 0;
    case 5:
        if (end - *p < 4)
            return -1;
        *p += 4;
        return 0;
    default: return -1;
    }
}

/* The next field: its number, wire type, and for wire type 2 its bytes in
 * [*f, *f + *fl); for 0 its value in *v.  1 at the end, 0, or -1. */
static int pb_field(const unsigned char **p, const unsigned char *end, uint64_t *num,
                    unsigned *wt, const unsigned char **f, size_t *fl, uint64_t *v)
{
    if (*p >= end)
        return 1;
    uint64_t tag;
    if (pb_varint(p, end, &tag) != 0)
        return -1;
    *num = tag >> 3;
    *wt = (unsigned)(tag & 7);
    if (*wt == 2) {
        if (pb_varint(p, end, v) != 0 || *v > (uint64_t)(end - *p))
            return -1;
        *f = *p;
        *fl = (size_t)*v;
        *p += *v;
        return 0;
    }
    if (*wt == 0)
        return pb_varint(p, end, v);
    return pb_skip(p, end, *wt);
}

static int pb_kv(const unsigned char *p, const unsigned char *end, wcache_kv *kv)
{
    memset(kv, 0, sizeof *kv);
    static const unsigned char none = 0;
    kv->key = kv->value = &none;
    uint64_t num, v;
    unsigned wt;
    const unsigned char *f;
    size_t fl;
    int r;
    while ((r = pb_field(&p, end, &num, &wt, &f, &fl, &v)) == 0) {
        if (wt == 2 && num == 1) {
            kv->key = f;
            kv->key_len = fl;
        } else if (wt == 2 && num == 5) {
            kv->value = f;
            kv->value_len = fl;
        } else if (wt == 0 && num == 2) {
            kv->create_revision = (int64_t)v;
        } else if (wt == 0 && num == 3) {
            kv->mod_revision = (int64_t)v;
        } else if (wt == 0 && num == 4) {
            kv->version = (int64_t)v;
        }
    }
    return r < 0 ? -1 : 0;
}

int wci_pb_range(const wci_alloc *al, const unsigned char *body, size_t n, wci_pb_page *pg)
{
    pg->revision = 0;
    pg->cluster_id = 0;
    pg->more = 0;
    pg->n = 0;
    if (n < 5 || body[0] != 0)
        return -1; /* no frame, or a compressed one: never asked for */
    uint64_t len =
        (uint64_t)body[1] << 24 | (uint64_t)body[2] << 16 | (uint64_t)body[3] << 8 | body[4];
    if (len != n - 5)
        return -1; /* a unary answer is exactly one frame */
    const unsigned char *p = body + 5, *end = p + len, *f;
    uint64_t num, v;
    unsigned wt;
    size_t fl;
    int r;
    while ((r = pb_field(&p, end, &num, &wt, &f, &fl, &v)) == 0) {
        if (wt == 2 && num == 1) { /* header */
            const unsigned char *q = f, *qe = f + fl, *g;
            uint64_t hn, hv;
            unsigned hw;
            size_t gl;
            int hr;
            while ((hr = pb_field(&q, qe, &hn, &hw, &g, &gl, &hv)) == 0) {
                if (hw == 0 && hn == 1)
                    pg->cluster_id = hv;
                else if (hw == 0 && hn == 3)
                    pg->revision = (int64_t)hv;
            }
            if (hr < 0)
                return -1;
        } else if (wt == 2 && num == 2) { /* kvs */
            if (pg->n == pg->cap) {
                size_t cap = pg->cap ? pg->cap * 2 : 1024;
                wcache_kv *nk = wci_malloc(al, cap * sizeof *nk);
                if (!nk)
                    return -2;
                if (pg->n)
                    memcpy(nk, pg->kvs, pg->n * sizeof *nk);
                wci_free(al, pg->kvs);
                pg->kvs = nk;
                pg->cap = cap;
            }
            if (pb_kv(f, f + fl, &pg->kvs[pg->n]) != 0)
                return -1;
            pg->n++;
        } else if (wt == 0 && num == 3) {
            pg->more = v != 0;
        }
    }
    return r < 0 ? -1 : 0;
}

static size_t pb_put_varint(unsigned char *o, uint64_t v)
{
    size_t i = 0;
    while (v >= 0x80) {
        o[i++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    o[i++] = (unsigned char)v;
    return i;
}

size_t wci_pb_range_request(unsigned char *out, const unsigned char *key, size_t kl,
                            const unsigned char *end, size_t el, int64_t limit, int64_t rev)
{
    unsigned char *o = out + 5;
    *o++ = 0x0a; /* 1: key */
    o += pb_put_varint(o, kl);
    memcpy(o, key, kl);
    o += kl;
    *o++ = 0x12; /* 2: range_end */
    o += pb_put_varint(o, el);
    memcpy(o, end, el);
    o += el;
    if (limit > 0) {
        *o++ = 0x18; /* 3: limit */
        o += pb_put_varint(o, (uint64_t)limit);
    }
    if (rev > 0) {
        *o++ = 0x20; /* 4: revision */
        o += pb_put_varint(o, (uint64_t)rev);
    }
    size_t len = (size_t)(o - out - 5);
    out[0] = 0;
    out[1] = (unsigned char)(len >> 24);
    out[2] = (unsigned char)(len >> 16);
    out[3] = (unsigned char)(len >> 8);
    out[4] = (unsigned char)len;
    return len + 5;
}
