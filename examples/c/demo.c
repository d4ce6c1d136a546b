/*
 * demo.c - what `make demo` runs: the main job of a watch cache in front of
 * a Kubernetes API server, on the library's built-in synthetic cluster
 * (no network, no server: the stream is made from a seed, so every run
 * prints the same story; only the timings change).
 *
 *   1. two caches, pods and configmaps, each fed by a Kubernetes source
 *      reading the synthetic watch stream (wcache_k8s_*); while they run,
 *      a snapshot of each at revision SNAP_REV goes to a local directory
 *      (wcache_snapshot_write: ingest does not stop)
 *   2. reads at the latest revision: a consistent read (as fresh as a
 *      quorum read of the server), GET, COUNT, a paged LIST of a
 *      namespace, the pods of one node through an index
 *   3. reads at a past revision: GET of an older version, a LIST resumed
 *      from its continue token at the token's revision
 *   4. what the window does not hold: a compacted and a future revision
 *   5. a restart: new caches restore the snapshots (checked against the
 *      sources' identities) and the sources catch up from SNAP_REV + 1, as
 *      a watch from that resourceVersion; watchers opened at SNAP_REV see
 *      every change once; the result equals the first run's
 *
 * Usage: demo [DIR]  (DIR: where the snapshots go; default a new directory
 * under $TMPDIR, removed at the end).  Only the public API is used.  Exit
 * status 0 on success.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <watchcache.h>

#define SEED 2026
#define SNAP_REV 10000 /* the revision the snapshots hold */
#define PAST_REV 12000 /* a revision read back in step 3 */
#define RETAIN 8000    /* revisions kept readable below the latest */
#define PAGE 25        /* LIST page size */

typedef struct res {
    const char *name; /* "pods" */
    int bits;         /* WCACHE_K8S_PODS ... */
    const char *prefix;
    wcache_cache *c;
    wcache_k8s *src;
    int node_ix; /* index on spec.nodeName (pods) */
    char snap[512];
    int snapped;
    double snap_ms;
    wcache_snapshot_info info;
    uint64_t digest; /* of the LIST at the latest revision */
    uint64_t objects;
    char errbuf[256];
} res;

static res R[2] = {
    {.name = "pods", .bits = WCACHE_K8S_PODS, .prefix = "/registry/pods/"},
    {.name = "configmaps", .bits = WCACHE_K8S_CONFIGMAPS, .prefix = "/registry/configmaps/"},
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void nap_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

static int fail(const res *r, const char *what, int rc)
{
    fprintf(stderr, "demo: %s%s%s: %s%s%s\n", r ? r->name : "", r ? ": " : "", what,
            wcache_strerror(rc), r && r->errbuf[0] ? ": " : "", r ? r->errbuf : "");
    return 1;
}

/* A cache of one resource with its source; not started. */
static int make(res *r)
{
    int rc = wcache_cache_create(&r->c, NULL);
    if (rc != WCACHE_OK)
        return fail(r, "cache_create", rc);
    rc = wcache_cache_set_param(r->c, WCACHE_P_RETAIN_REVISIONS, RETAIN);
    if (rc == WCACHE_OK) /* count-bound only, so the output does not depend on time */
        rc = wcache_cache_set_param(r->c, WCACHE_P_RETAIN_SECONDS, 0);
    if (rc == WCACHE_OK)
        rc = wcache_cache_set_errbuf(r->c, r->errbuf, sizeof r->errbuf);
    if (rc == WCACHE_OK && r->bits == WCACHE_K8S_PODS)
        rc = wcache_cache_add_index_json(r->c, "node", 4, "spec.nodeName", 13, &r->node_ix);
    if (rc != WCACHE_OK)
        return fail(r, "cache setup", rc);
    wcache_k8s_opts o = {.size = sizeof o};
    o.input = WCACHE_K8S_INPUT_SYNTHETIC;
    o.seed = SEED;
    o.resources = r->bits;
    o.prefix = r->prefix;
    o.prefix_len = strlen(r->prefix);
    rc = wcache_k8s_create(&r->src, r->c, &o);
    if (rc == WCACHE_OK)
        rc = wcache_cache_open(r->c);
    return rc == WCACHE_OK ? 0 : fail(r, "k8s_create / cache_open", rc);
}

static void unmake(res *r)
{
    wcache_k8s_free(r->src); /* before the cache: it is the cache's source */
    wcache_cache_close(r->c);
    r->src = NULL;
    r->c = NULL;
}

static wcache_k8s_stats stats(const res *r)
{
    wcache_k8s_stats st = {.size = sizeof st};
    wcache_k8s_stat(r->src, &st);
    return st;
}

static int write_snapshot(res *r)
{
    size_t idl;
    const char *id = wcache_k8s_source_id(r->src, &idl);
    wcache_snapshot_write_opts wo = {.size = sizeof wo};
    wo.revision = SNAP_REV;
    wo.source_id = id;
    wo.source_id_len = idl;
    wo.errbuf = r->errbuf;
    wo.errbuf_len = sizeof r->errbuf;
    r->info.size = sizeof r->info;
    double t0 = now_ms();
    int rc = wcache_snapshot_write(r->c, r->snap, &wo, &r->info);
    r->snap_ms = now_ms() - t0;
    r->snapped = 1;
    return rc == WCACHE_OK ? 0 : fail(r, "snapshot_write", rc);
}

/* ---- step 1 ---- */

static int step_stream(void)
{
    double t0 = now_ms();
    for (int i = 0; i < 2; i++) {
        int rc = wcache_k8s_start(R[i].src);
        if (rc != WCACHE_OK)
            return fail(&R[i], "k8s_start", rc);
    }
    /* Follow both; write each snapshot as soon as its cache has reached
     * SNAP_REV, while the source goes on. */
    for (int running = 2; running > 0;) {
        running = 0;
        for (int i = 0; i < 2; i++) {
            wcache_k8s_stats st = stats(&R[i]);
            if (!R[i].snapped && wcache_cache_revision(R[i].c) >= SNAP_REV &&
                write_snapshot(&R[i]))
                return 1;
            running += st.running;
        }
        if (running)
            nap_ms(1);
    }
    double ms = now_ms() - t0;
    printf("1. the synthetic watch stream (seed %d) through two Kubernetes sources, "
           "%.0f ms\n",
           SEED, ms);
    for (int i = 0; i < 2; i++) {
        wcache_k8s_stats st = stats(&R[i]);
        if (st.last_error || !st.ended)
            return fail(&R[i], "the source ended badly", st.last_error);
        wcache_stat cs = {.size = sizeof cs};
        wcache_cache_stat(R[i].c, &cs);
        printf("   %-10s %6" PRIu64 " lines, %5" PRIu64 " events, %2" PRIu64
               " bookmarks, %5.1f MB: %5" PRIu64 " objects at revision %" PRId64 "\n",
               R[i].name, st.lines, st.events, st.bookmarks, (double)st.bytes / 1e6, cs.objects,
               st.revision);
    }
    printf("   source identity: \"%s\"\n", wcache_k8s_source_id(R[0].src, NULL));
    for (int i = 0; i < 2; i++)
        printf("   snapshot of %-10s at revision %d, written while the stream ran: %" PRIu64
               " objects, %.2f MB -> %.2f MB (zstd), %.1f ms\n",
               R[i].name, SNAP_REV, R[i].info.objects, (double)R[i].info.raw_bytes / 1e6,
               (double)R[i].info.file_bytes / 1e6, R[i].snap_ms);
    return 0;
}

/* ---- steps 2 to 4: reads ---- */

/* The pod that changed most (the first of them in key order), as a key. */
static int busiest_pod(wcache_view *v, char *key, size_t cap)
{
    wcache_list_opts o = {.size = sizeof o};
    wcache_kv items[256];
    char tok[256] = "";
    int64_t best = 0;
    for (;;) {
        wcache_list_result lr = {.size = sizeof lr};
        o.token = tok[0] ? tok : NULL;
        o.token_len = strlen(tok);
        int rc = wcache_view_list(v, &o, items, 256, &lr);
        if (rc != WCACHE_OK)
            return fail(&R[0], "view_list", rc);
        for (size_t i = 0; i < lr.count; i++)
            if (items[i].version > best && items[i].key_len < cap) {
                best = items[i].version;
                memcpy(key, items[i].key, items[i].key_len);
                key[items[i].key_len] = 0;
            }
        if (!lr.more || lr.token_len >= sizeof tok)
            return 0;
        memcpy(tok, lr.token, lr.token_len + 1);
    }
}

/* A label's value inside an object's JSON (for the printout). */
static void label(const wcache_kv *kv, const char *name, char *out, size_t cap)
{
    char tag[64];
    snprintf(tag, sizeof tag, "\"%s\":\"", name);
    const char *v = kv->value, *end = v + kv->value_len, *p = v;
    size_t tl = strlen(tag), n = 0;
    for (; p + tl <= end && memcmp(p, tag, tl) != 0; p++)
        ;
    for (p += tl; p < end && *p != '"' && n + 1 < cap; p++)
        out[n++] = *p;
    out[n] = 0;
}

static int show_get(wcache_view *v, const char *key, char *node, size_t node_cap)
{
    wcache_kv kv;
    int rc = wcache_view_get(v, key, strlen(key), &kv);
    if (rc != WCACHE_OK)
        return fail(&R[0], "view_get", rc);
    char ro[32], rv[32];
    label(&kv, "rollout", ro, sizeof ro);
    label(&kv, "resourceVersion", rv, sizeof rv);
    if (node)
        label(&kv, "nodeName", node, node_cap);
    printf("   GET %s\n     -> resourceVersion %s, version %" PRId64 ", created at %" PRId64
           ", %zu bytes, label rollout=%s\n",
           key, rv, kv.version, kv.create_revision, kv.value_len, ro);
    return 0;
}

/* LIST prefix in pages; stop after stop_after pages (token kept), or read
 * to the end.  Returns the items read, or -1. */
static long list_pages(wcache_view *v, const char *prefix, const char *tok_in, char *tok_out,
                       int stop_after, int *pages)
{
    wcache_kv items[PAGE];
    char tok[256] = "";
    wcache_list_opts o = {.size = sizeof o};
    long total = 0;
    o.prefix = prefix;
    o.prefix_len = strlen(prefix);
    if (tok_in)
        snprintf(tok, sizeof tok, "%s", tok_in);
    if (tok_out)
        tok_out[0] = 0;
    for (*pages = 0;;) {
        wcache_list_result lr = {.size = sizeof lr};
        o.token = tok[0] ? tok : NULL;
        o.token_len = strlen(tok);
        int rc = wcache_view_list(v, &o, items, PAGE, &lr);
        if (rc != WCACHE_OK)
            return fail(&R[0], "view_list", rc), -1;
        total += (long)lr.count, ++*pages;
        if (!lr.more)
            return total;
        if (lr.token_len >= sizeof tok)
            return fail(&R[0], "continue token too long", WCACHE_ETOOBIG), -1;
        memcpy(tok, lr.token, lr.token_len + 1);
        if (stop_after && *pages == stop_after) {
            snprintf(tok_out, 256, "%s", tok);
            return total;
        }
    }
}

static char POD[256], NS[256], NODE[128];

static int step_latest(void)
{
    wcache_view *v;
    int rc = wcache_view_create(R[0].c, &v);
    if (rc != WCACHE_OK)
        return fail(&R[0], "view_create", rc);
    double t0 = now_ms();
    /* min_rev -1: ask the source for its current revision first (its
     * stream has ended, so it knows), then wait for the cache to hold it */
    rc = wcache_view_begin_fresh(v, -1, 3000);
    if (rc != WCACHE_OK)
        return fail(&R[0], "view_begin_fresh", rc);
    printf("2. reads at the latest revision, %" PRId64 " (a consistent read: %.2f ms)\n",
           wcache_view_revision(v), now_ms() - t0);
    if (busiest_pod(v, POD, sizeof POD) || show_get(v, POD, NODE, sizeof NODE))
        return 1;
    /* its namespace: "/registry/pods/<ns>/" */
    snprintf(NS, sizeof NS, "%s", POD);
    *(strrchr(NS, '/') + 1) = 0;
    uint64_t all = 0;
    wcache_view_count(v, NULL, &all);
    int pages;
    t0 = now_ms();
    long n = list_pages(v, NS, NULL, NULL, 0, &pages);
    if (n < 0)
        return 1;
    printf("   COUNT all pods: %" PRIu64 "\n   LIST %s in pages of %d: %ld pods in %d pages, "
           "%.2f ms\n",
           all, NS, PAGE, n, pages, now_ms() - t0);
    uint64_t on_node = 0;
    t0 = now_ms();
    rc = wcache_view_count_index(v, R[0].node_ix, NODE, strlen(NODE), &on_node);
    if (rc != WCACHE_OK)
        return fail(&R[0], "view_count_index", rc);
    printf("   pods with spec.nodeName=%s (index): %" PRIu64 ", %.3f ms\n", NODE, on_node,
           now_ms() - t0);
    wcache_view_free(v);
    return 0;
}

static int step_past(void)
{
    wcache_view *v;
    int rc = wcache_view_create(R[0].c, &v);
    if (rc == WCACHE_OK)
        rc = wcache_view_begin(v, PAST_REV);
    if (rc != WCACHE_OK)
        return fail(&R[0], "view_begin (past)", rc);
    printf("3. reads at past revision %d (inside the window)\n", PAST_REV);
    if (show_get(v, POD, NULL, 0))
        return 1;
    /* A client reads one page, goes away, comes back with the token: the
     * token names the revision, and the rest is read there. */
    char tok[256];
    int pages, more;
    long first = list_pages(v, NS, NULL, tok, 1, &pages), rest = 0;
    wcache_view_end(v);
    int64_t trev = 0;
    if (first < 0)
        return 1;
    if (tok[0]) {
        rc = wcache_token_revision(tok, strlen(tok), &trev);
        if (rc == WCACHE_OK)
            rc = wcache_view_begin(v, trev);
        if (rc != WCACHE_OK)
            return fail(&R[0], "resume from token", rc);
        rest = list_pages(v, NS, tok, NULL, 0, &more);
        if (rest < 0)
            return 1;
        printf("   LIST %s page 1: %ld pods; its continue token names revision %" PRId64
               "; %d more page(s): %ld pods\n",
               NS, first, trev, more, rest);
    }
    wcache_view_free(v);
    return 0;
}

static int step_outside(void)
{
    wcache_view *v;
    int rc = wcache_view_create(R[0].c, &v);
    if (rc != WCACHE_OK)
        return fail(&R[0], "view_create", rc);
    int64_t old = wcache_cache_compacted_revision(R[0].c) - 1;
    int64_t future = wcache_cache_revision(R[0].c) + 1;
    int rc_old = wcache_view_begin(v, old);
    wcache_view_end(v);
    int rc_future = wcache_view_begin(v, future);
    wcache_view_free(v);
    printf("4. outside the window (revisions %" PRId64 " .. %" PRId64 ")\n"
           "   revision %" PRId64 ": %s (Kubernetes: 410 Gone)\n"
           "   revision %" PRId64 ": %s (Kubernetes: wait, then 504)\n",
           old + 1, future - 1, old, wcache_strerror(rc_old), future,
           wcache_strerror(rc_future));
    return rc_old == WCACHE_ECOMPACTED && rc_future == WCACHE_EFUTURE ? 0 : 1;
}

/* FNV-1a of every key and value at the latest revision. */
static int digest(res *r)
{
    wcache_view *v;
    int rc = wcache_view_create(r->c, &v);
    if (rc == WCACHE_OK)
        rc = wcache_view_begin(v, WCACHE_REV_LATEST);
    if (rc != WCACHE_OK)
        return fail(r, "view_begin", rc);
    wcache_list_opts o = {.size = sizeof o};
    wcache_kv items[256];
    char tok[256] = "";
    uint64_t h = 0xcbf29ce484222325ULL, n = 0;
    for (;;) {
        wcache_list_result lr = {.size = sizeof lr};
        o.token = tok[0] ? tok : NULL;
        o.token_len = strlen(tok);
        rc = wcache_view_list(v, &o, items, 256, &lr);
        if (rc != WCACHE_OK)
            return fail(r, "view_list", rc);
        for (size_t i = 0; i < lr.count; i++, n++) {
            const unsigned char *k = items[i].key, *val = items[i].value;
            for (size_t j = 0; j < items[i].key_len; j++)
                h = (h ^ k[j]) * 0x100000001b3ULL;
            for (size_t j = 0; j < items[i].value_len; j++)
                h = (h ^ val[j]) * 0x100000001b3ULL;
        }
        if (!lr.more || lr.token_len >= sizeof tok)
            break;
        memcpy(tok, lr.token, lr.token_len + 1);
    }
    wcache_view_free(v);
    r->digest = h;
    r->objects = n;
    return 0;
}

/* ---- step 5: restart ---- */

static int step_restart(void)
{
    wcache_watch *w[2] = {NULL, NULL};
    printf("5. restart: the caches are closed; new ones restore the snapshots and catch up\n");
    for (int i = 0; i < 2; i++) {
        if (digest(&R[i]))
            return 1;
        unmake(&R[i]);
        if (make(&R[i]))
            return 1;
        size_t idl;
        wcache_snapshot_read_opts ro = {.size = sizeof ro};
        ro.expect_source_id = wcache_k8s_source_id(R[i].src, &idl);
        ro.expect_source_id_len = idl;
        ro.errbuf = R[i].errbuf;
        ro.errbuf_len = sizeof R[i].errbuf;
        wcache_snapshot_info info = {.size = sizeof info};
        double t0 = now_ms();
        int rc = wcache_snapshot_restore(R[i].c, R[i].snap, &ro, &info);
        if (rc != WCACHE_OK)
            return fail(&R[i], "snapshot_restore", rc);
        printf("   %-10s restored %" PRIu64 " objects at revision %" PRId64
               " (identity checked) in %.1f ms\n",
               R[i].name, info.objects, info.revision, now_ms() - t0);
        wcache_watch_opts wo = {.size = sizeof wo};
        wo.start_revision = info.revision;
        wo.queue_size = 1 << 16;
        rc = wcache_watch_open(R[i].c, &wo, &w[i]);
        if (rc != WCACHE_OK)
            return fail(&R[i], "watch_open", rc);
    }
    double t0 = now_ms();
    for (int i = 0; i < 2; i++) {
        int rc = wcache_k8s_start(R[i].src);
        if (rc != WCACHE_OK)
            return fail(&R[i], "k8s_start", rc);
    }
    uint64_t seen[2] = {0, 0};
    int64_t last[2] = {SNAP_REV, SNAP_REV};
    for (int busy = 1; busy;) {
        busy = 0;
        for (int i = 0; i < 2; i++) {
            wcache_watch_event ev[256];
            size_t n = 0;
            int rc = wcache_watch_next(w[i], ev, 256, &n);
            if (rc != WCACHE_OK)
                return fail(&R[i], "watch_next", rc);
            for (size_t k = 0; k < n; k++) {
                if (ev[k].revision <= last[i]) /* never: watches have no gap or repeat */
                    return fail(&R[i], "a watch went back", WCACHE_EORDER);
                last[i] = ev[k].revision;
                seen[i]++;
                wcache_event_unref(ev[k].ev);
            }
            busy |= n > 0 || stats(&R[i]).running;
        }
        if (busy)
            nap_ms(1);
    }
    double ms = now_ms() - t0;
    for (int i = 0; i < 2; i++) {
        wcache_k8s_stats st = stats(&R[i]);
        uint64_t before = R[i].digest, objects = R[i].objects;
        if (st.last_error || digest(&R[i]))
            return fail(&R[i], "catch-up", st.last_error);
        printf("   %-10s caught up from %d to %" PRId64 ": %" PRIu64
               " events, a watcher from %d saw %" PRIu64 "; %" PRIu64
               " objects, the same as before the restart: %s\n",
               R[i].name, SNAP_REV + 1, st.revision, st.events, SNAP_REV, seen[i], R[i].objects,
               R[i].digest == before && R[i].objects == objects ? "yes" : "NO");
        if (R[i].digest != before || seen[i] != st.events)
            return 1;
    }
    printf("   catch-up of both: %.0f ms\n", ms);
    wcache_watch_close(w[0]);
    wcache_watch_close(w[1]);
    return 0;
}

int main(int argc, char **argv)
{
    double t0 = now_ms();
    char dir[400];
    int own_dir = argc < 2;
    if (own_dir) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/wcache-demo.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            perror("demo: mkdtemp");
            return 1;
        }
    } else {
        snprintf(dir, sizeof dir, "%s", argv[1]);
    }
    printf("watchcache %s demo: a synthetic Kubernetes cluster, retention %d revisions, "
           "snapshots in %s\n",
           wcache_version_string(), RETAIN, dir);
    int bad = 0;
    for (int i = 0; i < 2 && !bad; i++) {
        snprintf(R[i].snap, sizeof R[i].snap, "%s/%s.wcsnap", dir, R[i].name);
        bad = make(&R[i]);
    }
    bad = bad || step_stream() || step_latest() || step_past() || step_outside() ||
          step_restart();
    for (int i = 0; i < 2; i++) {
        if (R[i].c)
            unmake(&R[i]);
        if (own_dir)
            unlink(R[i].snap);
    }
    if (own_dir)
        rmdir(dir);
    if (bad)
        return 1;
    printf("done in %.0f ms\n", now_ms() - t0);
    return 0;
}
