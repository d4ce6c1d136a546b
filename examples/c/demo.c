/*
 * demo.c - what `make demo` runs: a watch cache fed with a stream of pod
 * events, then read at the latest and at past revisions.
 *
 * The stream comes from bench/podgen.h, seeded, so every run prints the
 * same story (only the timings change):
 *   1. load an initial LIST of pods, as after a relist   (wcache_ingest_load)
 *   2. follow the watch stream: label updates, creates, deletes, and a few
 *      multi-key transactions, one revision each          (wcache_ingest_*)
 *   3. read at the latest revision: GET, paged LIST of a namespace
 *   4. read at a past revision inside the retention window, resuming a
 *      paged LIST from its continue token
 *   5. what the window does not hold: a compacted revision and a future one
 *   6. statistics and timings
 * Later steps (snapshots, restart) are meant to be added as more steps.
 *
 * Only the public API is used.  Exit status 0 on success.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/podgen.h"
#include <watchcache.h>

#define SEED 2026
#define INITIAL_PODS 5000   /* pods in the initial LIST */
#define LIST_REV 1000       /* the revision the initial LIST was taken at */
#define STREAM_EVENTS 20000 /* watch events after the LIST */
#define RETAIN 5000         /* revisions kept readable below the latest */
#define BATCH_EVERY 2500    /* a multi-key transaction every this many events */
#define PAGE 20             /* LIST page size */
#define MAX_PODS (INITIAL_PODS + STREAM_EVENTS)

typedef struct demo {
    wcache_cache *c;
    podgen g;
    podgen_rng r;
    unsigned char live[MAX_PODS]; /* pods that exist at the latest revision */
    uint64_t next_pod;            /* index of the next pod to create */
    uint64_t watched;             /* the pod whose history we follow */
    int64_t past_rev;             /* a revision we read back in step 4 */
    unsigned puts, creates, deletes, batches;
    char errbuf[256];
    char key[PODGEN_KEY_MAX], pod[PODGEN_POD_MAX];
} demo;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int fail(const demo *d, const char *what, int rc)
{
    fprintf(stderr, "demo: %s: %s%s%s\n", what, wcache_strerror(rc), d->errbuf[0] ? ": " : "",
            d->errbuf);
    return 1;
}

/* The value of label `rollout` in a pod's JSON: which version we are reading. */
static void rollout(const wcache_kv *kv, char *out, size_t cap)
{
    static const char tag[] = "\"rollout\":\"";
    const char *v = kv->value, *end = v + kv->value_len, *p;
    size_t n = 0;
    out[0] = 0;
    for (p = v; p + sizeof tag - 1 <= end; p++)
        if (memcmp(p, tag, sizeof tag - 1) == 0)
            break;
    if (p + sizeof tag - 1 > end)
        return;
    for (p += sizeof tag - 1; p < end && *p != '"' && n + 1 < cap; p++)
        out[n++] = *p;
    out[n] = 0;
}

static size_t key_of(demo *d, uint64_t i)
{
    return podgen_key(&d->g, i, d->key, sizeof d->key);
}

static size_t pod_of(demo *d, uint64_t i, uint64_t gen, int64_t rev)
{
    return podgen_pod(&d->g, i, gen, rev, d->pod, sizeof d->pod);
}

/* ---- step 1: the initial LIST ---- */

static int step_load(demo *d)
{
    wcache_batch *b;
    int rc = wcache_batch_create(d->c, &b);
    double t0;
    if (rc != WCACHE_OK)
        return fail(d, "batch_create", rc);
    /* Pods were created at revisions below the LIST's, as in etcd. */
    for (uint64_t i = 0; i < INITIAL_PODS && rc == WCACHE_OK; i++) {
        int64_t created = 1 + (int64_t)(i * (LIST_REV - 1) / INITIAL_PODS);
        size_t kl = key_of(d, i), vl = pod_of(d, i, 1, created);
        rc = wcache_batch_put_meta(b, d->key, kl, d->pod, vl, created, created, 1);
        d->live[i] = 1;
    }
    t0 = now_ms();
    if (rc == WCACHE_OK)
        rc = wcache_ingest_load(d->c, b, LIST_REV); /* unsorted: the cache sorts */
    wcache_batch_free(b);
    if (rc != WCACHE_OK)
        return fail(d, "ingest_load", rc);
    d->next_pod = INITIAL_PODS;
    printf("1. initial LIST: %d pods loaded at revision %d in %.1f ms\n", INITIAL_PODS,
           LIST_REV, now_ms() - t0);
    return 0;
}

/* ---- step 2: the watch stream ---- */

static uint64_t random_live(demo *d)
{
    for (;;) {
        uint64_t i = podgen_below(&d->r, d->next_pod);
        if (d->live[i])
            return i;
    }
}

static int apply_update(demo *d, uint64_t i, int64_t rev)
{
    size_t kl = key_of(d, i), vl = pod_of(d, i, (uint64_t)rev, rev);
    d->puts++;
    return wcache_ingest_put(d->c, d->key, kl, d->pod, vl, rev);
}

/* A rollout step as one transaction: three pods updated, one replaced. */
static int apply_batch(demo *d, int64_t rev)
{
    wcache_batch *b;
    int rc = wcache_batch_create(d->c, &b);
    uint64_t picked[3] = {UINT64_MAX, UINT64_MAX, UINT64_MAX}, gone, born = d->next_pod;
    if (rc != WCACHE_OK)
        return rc;
    for (int k = 0; k < 3 && rc == WCACHE_OK; k++) {
        uint64_t i;
        do /* a key may appear once per batch */
            i = random_live(d);
        while (i == picked[0] || i == picked[1]);
        picked[k] = i;
        rc = wcache_batch_put(b, d->key, key_of(d, i), d->pod, pod_of(d, i, (uint64_t)rev, rev));
    }
    do
        gone = random_live(d);
    while (gone == picked[0] || gone == picked[1] || gone == picked[2] || gone == d->watched);
    if (rc == WCACHE_OK)
        rc = wcache_batch_delete(b, d->key, key_of(d, gone));
    if (rc == WCACHE_OK)
        rc = wcache_batch_put(b, d->key, key_of(d, born), d->pod, pod_of(d, born, 1, rev));
    if (rc == WCACHE_OK)
        rc = wcache_ingest_batch(d->c, b, rev);
    if (rc == WCACHE_OK) {
        d->live[gone] = 0, d->live[born] = 1, d->next_pod++;
        d->batches++;
    }
    wcache_batch_free(b);
    return rc;
}

static int apply_event(demo *d, unsigned e, int64_t rev)
{
    uint64_t dice = podgen_below(&d->r, 100), i;
    size_t kl;
    if (e == STREAM_EVENTS * 3 / 4 || e == STREAM_EVENTS * 9 / 10) /* see step 4 */
        return apply_update(d, d->watched, rev);
    if (e % BATCH_EVERY == BATCH_EVERY - 1)
        return apply_batch(d, rev);
    if (dice < 80)
        return apply_update(d, random_live(d), rev);
    if (dice < 90) {
        i = d->next_pod++;
        kl = key_of(d, i);
        d->live[i] = 1, d->creates++;
        return wcache_ingest_put(d->c, d->key, kl, d->pod, pod_of(d, i, 1, rev), rev);
    }
    do
        i = random_live(d);
    while (i == d->watched);
    d->live[i] = 0, d->deletes++;
    return wcache_ingest_delete(d->c, d->key, key_of(d, i), rev);
}

static int step_stream(demo *d)
{
    double t0 = now_ms(), ms;
    int64_t rev = wcache_cache_revision(d->c);
    int rc;
    d->watched = podgen_below(&d->r, INITIAL_PODS);
    for (unsigned e = 0; e < STREAM_EVENTS; e++) {
        rc = apply_event(d, e, ++rev);
        if (rc != WCACHE_OK)
            return fail(d, "ingest", rc);
        if (e == STREAM_EVENTS * 3 / 4)
            d->past_rev = rev;
    }
    /* A bookmark: everything up to rev+5 has been seen, with no change. */
    rc = wcache_ingest_progress(d->c, rev + 5);
    if (rc != WCACHE_OK)
        return fail(d, "ingest_progress", rc);
    ms = now_ms() - t0;
    printf("2. watch stream: %d events in %.1f ms (%.0f events/s): %u updates, %u creates, "
           "%u deletes, %u transactions of 5 keys; then a bookmark\n",
           STREAM_EVENTS, ms, STREAM_EVENTS / (ms / 1e3), d->puts, d->creates, d->deletes,
           d->batches);
    printf("   revision %" PRId64 ", compacted revision %" PRId64 " (window: %d revisions)\n",
           wcache_cache_revision(d->c), wcache_cache_compacted_revision(d->c), RETAIN);
    return 0;
}

/* ---- steps 3 and 4: reads ---- */

static int show_get(demo *d, wcache_view *v, const char *indent)
{
    wcache_kv kv;
    char ro[32];
    size_t kl = key_of(d, d->watched);
    int rc = wcache_view_get(v, d->key, kl, &kv);
    if (rc != WCACHE_OK)
        return fail(d, "view_get", rc);
    rollout(&kv, ro, sizeof ro);
    printf("%sGET %.*s\n%s  -> mod_revision %" PRId64 ", version %" PRId64
           ", create_revision %" PRId64 ", %zu bytes, label rollout=%s\n",
           indent, (int)kl, d->key, indent, kv.mod_revision, kv.version, kv.create_revision,
           kv.value_len, ro);
    return 0;
}

/* The watched pod's namespace, "/registry/pods/<ns>/", as a LIST prefix. */
static size_t ns_prefix(demo *d, char *out, size_t cap)
{
    size_t kl = key_of(d, d->watched), n = kl;
    while (n > 0 && d->key[n - 1] != '/')
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, d->key, n);
    out[n] = 0;
    return n;
}

/*
 * LIST the namespace in pages of PAGE.  With stop_after > 0, stop after
 * that many pages and leave the continue token in token (the client goes
 * away); otherwise read to the end.  Returns the items read, or -1.
 */
static long list_pages(demo *d, wcache_view *v, const char *token_in, char *token,
                       size_t token_cap, int stop_after, int *pages)
{
    wcache_kv items[PAGE];
    char prefix[PODGEN_KEY_MAX], tok[256] = "";
    wcache_list_opts o = {.size = sizeof o};
    long total = 0;
    o.prefix = prefix;
    o.prefix_len = ns_prefix(d, prefix, sizeof prefix);
    if (token_in)
        snprintf(tok, sizeof tok, "%s", token_in);
    if (token)
        token[0] = 0;
    for (*pages = 0;;) {
        wcache_list_result res = {.size = sizeof res};
        int rc;
        o.token = tok[0] ? tok : NULL;
        o.token_len = strlen(tok);
        rc = wcache_view_list(v, &o, items, PAGE, &res);
        if (rc != WCACHE_OK)
            return fail(d, "view_list", rc), -1;
        total += (long)res.count, ++*pages;
        if (!res.more)
            return total;
        if (res.token_len >= sizeof tok)
            return fail(d, "continue token too long", WCACHE_ETOOBIG), -1;
        memcpy(tok, res.token, res.token_len + 1);
        if (stop_after && *pages == stop_after) {
            snprintf(token, token_cap, "%s", tok);
            return total;
        }
    }
}

static int step_read_latest(demo *d, wcache_view *v)
{
    char prefix[PODGEN_KEY_MAX];
    uint64_t all = 0;
    wcache_list_opts everything = {.size = sizeof everything};
    int pages, rc = wcache_view_begin(v, WCACHE_REV_LATEST);
    double t0 = now_ms();
    long n;
    if (rc != WCACHE_OK)
        return fail(d, "view_begin", rc);
    printf("3. reads at the latest revision (%" PRId64 ")\n", wcache_view_revision(v));
    if (show_get(d, v, "   "))
        return 1;
    rc = wcache_view_count(v, &everything, &all);
    if (rc != WCACHE_OK)
        return fail(d, "view_count", rc);
    ns_prefix(d, prefix, sizeof prefix);
    n = list_pages(d, v, NULL, NULL, 0, 0, &pages);
    if (n < 0)
        return 1;
    printf("   COUNT of all pods: %" PRIu64 "\n   LIST %s in pages of %d: %ld pods, %d pages, "
           "%.2f ms\n",
           all, prefix, PAGE, n, pages, now_ms() - t0);
    wcache_view_end(v);
    return 0;
}

static int step_read_past(demo *d, wcache_view *v)
{
    char token[256];
    int64_t token_rev = 0;
    int pages, more_pages;
    long first, rest;
    int rc = wcache_view_begin(v, d->past_rev);
    if (rc != WCACHE_OK)
        return fail(d, "view_begin (past)", rc);
    printf("4. reads at past revision %" PRId64 " (inside the window)\n", d->past_rev);
    if (show_get(d, v, "   "))
        return 1;
    /* A client reads one page, goes away, and comes back with the token:
     * the token names the revision, and the rest of the LIST is read there. */
    first = list_pages(d, v, NULL, token, sizeof token, 1, &pages);
    wcache_view_end(v);
    if (first < 0)
        return 1;
    if (!token[0]) {
        printf("   LIST: %ld pods, all in one page\n", first);
        return 0;
    }
    rc = wcache_token_revision(token, strlen(token), &token_rev);
    if (rc == WCACHE_OK)
        rc = wcache_view_begin(v, token_rev);
    if (rc != WCACHE_OK)
        return fail(d, "resume from token", rc);
    rest = list_pages(d, v, token, NULL, 0, 0, &more_pages);
    if (rest < 0)
        return 1;
    printf("   LIST page 1: %ld pods; continue token names revision %" PRId64
           "; %d more pages: %ld pods; total %ld\n",
           first, token_rev, more_pages, rest, first + rest);
    wcache_view_end(v);
    return 0;
}

/* ---- step 5: outside the window ---- */

static int step_outside(demo *d, wcache_view *v)
{
    int64_t old = LIST_REV + 1, future = wcache_cache_revision(d->c) + 1;
    int rc_old = wcache_view_begin(v, old), rc_future;
    wcache_view_end(v);
    rc_future = wcache_view_begin(v, future);
    wcache_view_end(v);
    printf("5. outside the window\n   revision %" PRId64 " (compacted): %s (%s)\n"
           "   revision %" PRId64 " (not yet seen): %s (%s)\n",
           old, rc_old == WCACHE_ECOMPACTED ? "WCACHE_ECOMPACTED" : "unexpected",
           wcache_strerror(rc_old), future,
           rc_future == WCACHE_EFUTURE ? "WCACHE_EFUTURE" : "unexpected",
           wcache_strerror(rc_future));
    return rc_old == WCACHE_ECOMPACTED && rc_future == WCACHE_EFUTURE ? 0 : 1;
}

/* ---- step 6 ---- */

static int step_stats(demo *d)
{
    wcache_stat st = {.size = sizeof st};
    int rc = wcache_cache_stat(d->c, &st);
    if (rc != WCACHE_OK)
        return fail(d, "cache_stat", rc);
    printf("6. stats: %" PRIu64 " live pods, %" PRIu64 " stored versions, %" PRIu64
           " events applied, %" PRIu64 " in the window, %" PRIu64 " compactions,\n"
           "   %.1f MiB of values and %.1f MiB of keys stored\n",
           st.objects, st.versions, st.events, st.history_events, st.compactions,
           (double)st.value_bytes / 1048576.0, (double)st.key_bytes / 1048576.0);
    return 0;
}

static int setup(demo *d)
{
    int rc = wcache_cache_create(&d->c, NULL);
    if (rc != WCACHE_OK)
        return fail(d, "cache_create", rc);
    rc = wcache_cache_set_param(d->c, WCACHE_P_RETAIN_REVISIONS, RETAIN);
    if (rc == WCACHE_OK) /* count-bound only, so the output does not depend on time */
        rc = wcache_cache_set_param(d->c, WCACHE_P_RETAIN_SECONDS, 0);
    if (rc == WCACHE_OK)
        rc = wcache_cache_set_errbuf(d->c, d->errbuf, sizeof d->errbuf);
    if (rc == WCACHE_OK)
        rc = wcache_cache_open(d->c);
    return rc == WCACHE_OK ? 0 : fail(d, "cache setup", rc);
}

int main(void)
{
    static demo d; /* large: keep it off the stack */
    wcache_view *v = NULL;
    double t0 = now_ms();
    int bad;
    podgen_init(&d.g, SEED);
    d.r = (podgen_rng){SEED};
    printf("watchcache %s demo: pods from a seeded generator, retention %d revisions\n",
           wcache_version_string(), RETAIN);
    bad = setup(&d) || step_load(&d) || step_stream(&d);
    if (!bad && wcache_view_create(d.c, &v) != WCACHE_OK)
        bad = fail(&d, "view_create", WCACHE_ENOMEM);
    bad = bad || step_read_latest(&d, v) || step_read_past(&d, v) || step_outside(&d, v) ||
          step_stats(&d);
    wcache_view_free(v);
    wcache_cache_close(d.c);
    if (bad)
        return 1;
    printf("done in %.0f ms\n", now_ms() - t0);
    return 0;
}
