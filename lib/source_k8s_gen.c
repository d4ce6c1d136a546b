/*
 * source_k8s_gen.c - the built-in synthetic Kubernetes watch stream.
 *
 * No API server can run where the demo and the tests run, so the stream
 * they use is made here, deterministically from a seed: a cluster whose
 * pods come from bench/podgen.h (~1 KiB each, 64 namespaces, labels,
 * spec.nodeName, status) and whose configmaps are made below with the same
 * helpers.  The story, one global resourceVersion per write as in etcd:
 *
 *   from BASE_RV + 1   INITIAL_PODS pods and INITIAL_CMS configmaps
 *                      created, shuffled together (ADDED)
 *   then CHURN steps   a pod's labels change (MODIFIED, its "rollout"
 *                      label and restartCount move on), a pod is deleted
 *                      (DELETED, its last state at the deletion's revision)
 *                      or a replacement created, a configmap's data or
 *                      labels change, one is deleted or created, or a
 *                      write to some other resource happens (the revision
 *                      moves on and nothing is sent: a watch of one
 *                      resource sees gaps, as from a real API server)
 *   every BOOKMARK_EVERY revisions and at the end
 *                      a BOOKMARK per resource at the current revision
 *
 * Every step consumes exactly one revision, so the last one is known in
 * advance.  A watch from resourceVersion R is the same stream without the
 * lines at or below R: the generator runs from the start and formats only
 * what it returns, which costs a few milliseconds for the whole story.
 *
 * Only podgen's integer arithmetic is used, so the bytes are the same on
 * every platform (tests/check_k8s.c checks a digest of them).
 */
#include "source_k8s.h"

#include <string.h>

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include "../bench/podgen.h"
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#define BASE_RV 1000
#define INITIAL_PODS 3000
#define INITIAL_CMS 800
#define CHURN 12000
#define BOOKMARK_EVERY 500
#define MAX_PODS (INITIAL_PODS + CHURN)
#define MAX_CMS (INITIAL_CMS + CHURN)
#define LAST_RV (BASE_RV + INITIAL_PODS + INITIAL_CMS + CHURN)
#define LINE_MAX (PODGEN_POD_MAX + 256)

struct wci_kgen {
    const wci_alloc *al;
    podgen pg;
    podgen_rng r;
    int resources;
    int64_t rev;             /* revision of the last step taken */
    uint32_t *pgen;          /* per pod index: version (0: never created) */
    uint32_t *cgen;          /* per configmap index */
    uint32_t *plive, *clive; /* live indices, unordered */
    uint32_t nplive, nclive;
    uint32_t npods, ncms;    /* indices handed out */
    uint32_t init_p, init_c; /* initial creates still to do */
    uint32_t churn;          /* churn steps taken */
    int bm_pending;          /* bookmark lines still owed at rev */
    int done;
    char line[LINE_MAX];
};

#define RES_PODS WCACHE_K8S_PODS
#define RES_CMS WCACHE_K8S_CONFIGMAPS

wci_kgen *wci_kgen_new(const wci_alloc *al, uint64_t seed, int resources)
{
    wci_kgen *g = wci_calloc(al, 1, sizeof *g);
    if (!g)
        return NULL;
    g->al = al;
    podgen_init(&g->pg, seed);
    g->r = podgen_stream(seed, 101, 0, 0);
    g->resources = resources ? resources : RES_PODS | RES_CMS;
    g->rev = BASE_RV;
    g->pgen = wci_calloc(al, MAX_PODS, sizeof *g->pgen);
    g->cgen = wci_calloc(al, MAX_CMS, sizeof *g->cgen);
    g->plive = wci_calloc(al, MAX_PODS, sizeof *g->plive);
    g->clive = wci_calloc(al, MAX_CMS, sizeof *g->clive);
    if (!g->pgen || !g->cgen || !g->plive || !g->clive) {
        wci_kgen_free(g);
        return NULL;
    }
    g->init_p = INITIAL_PODS;
    g->init_c = INITIAL_CMS;
    return g;
}

void wci_kgen_free(wci_kgen *g)
{
    if (!g)
        return;
    wci_free(g->al, g->pgen);
    wci_free(g->al, g->cgen);
    wci_free(g->al, g->plive);
    wci_free(g->al, g->clive);
    wci_free(g->al, g);
}

int64_t wci_kgen_last_rev(const wci_kgen *g)
{
    (void)g;
    return LAST_RV;
}

/* ---- formatting ---- */

#define S(lit) pg_put(b, lit, sizeof(lit) - 1)

static void begin(podgen_buf *b, char *line, const char *type)
{
    *b = (podgen_buf){line, 0, LINE_MAX - 1};
    S("{\"type\":\"");
    pg_str(b, type);
    S("\",\"object\":");
}

static size_t finish(podgen_buf *b)
{
    S("}\n");
    return b->len; /* LINE_MAX holds every line (checked by the tests) */
}

static size_t fmt_pod(wci_kgen *g, const char *type, uint32_t i, int64_t rv)
{
    podgen_buf b;
    begin(&b, g->line, type);
    size_t n = podgen_pod(&g->pg, i, g->pgen[i], rv, g->line + b.len, LINE_MAX - 1 - b.len);
    b.len += n;
    return finish(&b);
}

/* A configmap of deployment d: its app's settings, version gen. */
static size_t fmt_cm(wci_kgen *g, const char *type, uint32_t j, int64_t rv)
{
    podgen_deploy d;
    podgen_rng r = podgen_stream(g->pg.seed, 102, j, 0);          /* fixed */
    podgen_rng v = podgen_stream(g->pg.seed, 103, j, g->cgen[j]); /* per version */
    podgen_deploy_of(&g->pg, podgen_below(&r, PODGEN_DEPLOYMENTS), &d);
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    podgen_buf bb, *b = &bb;
    begin(b, g->line, type);
    S("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"");
    pg_str(b, podgen_apps[d.app]);
    S("-config-");
    pg_u64(b, j);
    S("\",\"namespace\":\"");
    pg_namespace(b, &d);
    S("\",\"uid\":\"");
    pg_uuid(b, &r);
    S("\",\"resourceVersion\":\"");
    pg_u64(b, (uint64_t)rv);
    S("\",\"creationTimestamp\":");
    pg_time(b, d.created + podgen_below(&r, 30 * 86400));
    S(",\"labels\":{\"app\":\"");
    pg_str(b, podgen_apps[d.app]);
    S("\",\"team\":\"");
    pg_str(b, podgen_teams[d.team]);
    S("\",\"config-version\":\"");
    pg_u64(b, g->cgen[j]);
    S("\"}},\"data\":{\"LOG_LEVEL\":\"");
    pg_str(b, levels[podgen_below(&v, 4)]);
    S("\",\"MAX_CONNECTIONS\":\"");
    pg_u64(b, 16 << podgen_below(&v, 6));
    S("\",\"FEATURE_FLAGS\":\"");
    pg_hex(b, &v, 16);
    S("\",\"UPSTREAM\":\"http://");
    pg_str(b, podgen_apps[podgen_below(&v, PG_COUNT(podgen_apps))]);
    S(".");
    pg_namespace(b, &d);
    S(".svc.cluster.local:8080\"}}");
    return finish(b);
}

static size_t fmt_bookmark(wci_kgen *g, const char *kind, int64_t rv)
{
    podgen_buf bb, *b = &bb;
    begin(b, g->line, "BOOKMARK");
    S("{\"kind\":\"");
    pg_str(b, kind);
    S("\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"");
    pg_u64(b, (uint64_t)rv);
    S("\"}}");
    return finish(b);
}

#undef S

/* ---- the story ---- */

enum { K_NONE, K_POD, K_CM };

/* Take one step (one revision); kind, idx and type say what it wrote. */
static void step(wci_kgen *g, int *kind, uint32_t *idx, const char **type)
{
    podgen_rng *r = &g->r;
    g->rev++;
    *kind = K_NONE;
    if (g->init_p + g->init_c > 0) {
        int pod = podgen_below(r, g->init_p + g->init_c) < g->init_p;
        if (pod) {
            g->init_p--;
            *idx = g->npods++;
            g->pgen[*idx] = 1;
            g->plive[g->nplive++] = *idx;
            *kind = K_POD;
        } else {
            g->init_c--;
            *idx = g->ncms++;
            g->cgen[*idx] = 1;
            g->clive[g->nclive++] = *idx;
            *kind = K_CM;
        }
        *type = "ADDED";
        return;
    }
    g->churn++;
    uint64_t x = podgen_below(r, 100);
    if (x < 45 && g->nplive) { /* a pod's labels change */
        *idx = g->plive[podgen_below(r, g->nplive)];
        g->pgen[*idx]++;
        *kind = K_POD;
        *type = "MODIFIED";
    } else if (x < 55 && g->nplive) { /* a pod goes */
        uint32_t k = (uint32_t)podgen_below(r, g->nplive);
        *idx = g->plive[k];
        g->plive[k] = g->plive[--g->nplive];
        *kind = K_POD;
        *type = "DELETED";
    } else if (x < 65 && g->npods < MAX_PODS) { /* a replacement comes */
        *idx = g->npods++;
        g->pgen[*idx] = 1;
        g->plive[g->nplive++] = *idx;
        *kind = K_POD;
        *type = "ADDED";
    } else if (x < 80 && g->nclive) { /* a configmap is edited */
        *idx = g->clive[podgen_below(r, g->nclive)];
        g->cgen[*idx]++;
        *kind = K_CM;
        *type = "MODIFIED";
    } else if (x < 83 && g->nclive) {
        uint32_t k = (uint32_t)podgen_below(r, g->nclive);
        *idx = g->clive[k];
        g->clive[k] = g->clive[--g->nclive];
        *kind = K_CM;
        *type = "DELETED";
    } else if (x < 86 && g->ncms < MAX_CMS) {
        *idx = g->ncms++;
        g->cgen[*idx] = 1;
        g->clive[g->nclive++] = *idx;
        *kind = K_CM;
        *type = "ADDED";
    } /* otherwise: a write to another resource */
}

int wci_kgen_next(wci_kgen *g, int64_t after, const char **line, size_t *len, int64_t *rev)
{
    for (;;) {
        if (g->bm_pending) { /* bookmarks owed at g->rev: pods first */
            int pods = (g->bm_pending & RES_PODS) != 0;
            g->bm_pending &= pods ? ~RES_PODS : ~RES_CMS;
            if (g->rev > after) {
                *len = fmt_bookmark(g, pods ? "Pod" : "ConfigMap", g->rev);
                *line = g->line;
                *rev = g->rev;
                return 1;
            }
            continue;
        }
        if (g->done || g->rev >= LAST_RV) {
            g->done = 1;
            return 0;
        }
        int kind;
        uint32_t idx;
        const char *type = NULL;
        step(g, &kind, &idx, &type);
        if ((g->rev - BASE_RV) % BOOKMARK_EVERY == 0 || g->rev == LAST_RV)
            g->bm_pending = g->resources;
        int want = (kind == K_POD && (g->resources & RES_PODS)) ||
                   (kind == K_CM && (g->resources & RES_CMS));
        if (!want || g->rev <= after)
            continue;
        *len = kind == K_POD ? fmt_pod(g, type, idx, g->rev) : fmt_cm(g, type, idx, g->rev);
        *line = g->line;
        *rev = g->rev;
        return 1;
    }
}
