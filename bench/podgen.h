/*
 * podgen.h - a seeded, deterministic generator of Kubernetes pod objects.
 *
 * Benchmarks, the demo and synthetic watch streams need many objects that
 * look like what an API server stores: ~1 KiB of JSON per pod, keys
 * /registry/pods/<namespace>/<name>, pods grouped by deployment (so they
 * share namespace, labels and image, and compress as real data does) but
 * with unique uids, IPs, container ids and timestamps (so they do not
 * compress to nothing).
 *
 * Random access by design: pod i and its version gen are pure functions of
 * (seed, i, gen), so a writer can update any key without keeping state and
 * a reader can recompute what it expects.  The byte stream is reproduced
 * exactly by bench/peers/go-btree/podgen.go; bench/podgen_check.sh compares
 * the two.  Any change here must be made there too.
 *
 * Only integer arithmetic with unsigned 64-bit wraparound, no printf and no
 * floating point, so that the port is byte-for-byte.
 *
 * Keys are unique for i < PODGEN_MAX_PODS (the name suffix is a bijection
 * of i).  Header-only: every function is static.
 */
#ifndef PODGEN_H
#define PODGEN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* 27^5: the number of distinct 5-character pod name suffixes. */
#define PODGEN_MAX_PODS 14348907u
/* Number of deployments the pods are spread over. */
#define PODGEN_DEPLOYMENTS 4096u
/* No key is longer than this (with room to spare). */
#define PODGEN_KEY_MAX 128u
/* No pod object is longer than this (with room to spare). */
#define PODGEN_POD_MAX 2048u

typedef struct podgen {
    uint64_t seed;
} podgen;

/* splitmix64: tiny, passes BigCrush, trivial to port. */
typedef struct podgen_rng {
    uint64_t s;
} podgen_rng;

static uint64_t podgen_next(podgen_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t podgen_below(podgen_rng *r, uint64_t n)
{
    return podgen_next(r) % n;
}

/* A stream per (seed, domain, a, b): mixing through splitmix64 keeps
 * streams of neighbouring indices unrelated. */
static podgen_rng podgen_stream(uint64_t seed, uint64_t domain, uint64_t a, uint64_t b)
{
    podgen_rng r = {seed ^ (domain * 0xD1B54A32D192ED03ull)};
    r.s = podgen_next(&r) ^ a;
    r.s = podgen_next(&r) ^ b;
    (void)podgen_next(&r);
    return r;
}

static void podgen_init(podgen *g, uint64_t seed)
{
    g->seed = seed;
}

/* ---- output buffer: writes what fits, always counts the full length ---- */

typedef struct podgen_buf {
    char *p;
    size_t len, cap;
} podgen_buf;

static void pg_put(podgen_buf *b, const char *s, size_t n)
{
    if (b->len < b->cap) {
        size_t room = b->cap - b->len;
        memcpy(b->p + b->len, s, n < room ? n : room);
    }
    b->len += n;
}

static void pg_str(podgen_buf *b, const char *s)
{
    pg_put(b, s, strlen(s));
}

static void pg_u64(podgen_buf *b, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    pg_put(b, tmp + sizeof tmp - n, n);
}

/* v in exactly `digits` decimal digits, zero-padded. */
static void pg_u64w(podgen_buf *b, uint64_t v, int digits)
{
    char tmp[20];
    for (int k = digits - 1; k >= 0; k--) {
        tmp[k] = (char)('0' + v % 10);
        v /= 10;
    }
    pg_put(b, tmp, (size_t)digits);
}

static void pg_hex(podgen_buf *b, podgen_rng *r, int digits)
{
    static const char hx[] = "0123456789abcdef";
    char tmp[64];
    uint64_t w = 0;
    for (int k = 0; k < digits; k++) {
        if (k % 16 == 0)
            w = podgen_next(r);
        tmp[k] = hx[w & 15];
        w >>= 4;
    }
    pg_put(b, tmp, (size_t)digits);
}

/* Characters Kubernetes uses for generated name suffixes (no vowels). */
static const char podgen_alnum[] = "bcdfghjklmnpqrstvwxz2456789";

static void pg_alnum(podgen_buf *b, podgen_rng *r, int digits)
{
    char tmp[16];
    for (int k = 0; k < digits; k++)
        tmp[k] = podgen_alnum[podgen_below(r, 27)];
    pg_put(b, tmp, (size_t)digits);
}

static void pg_uuid(podgen_buf *b, podgen_rng *r)
{
    static const int groups[5] = {8, 4, 4, 4, 12};
    for (int k = 0; k < 5; k++) {
        if (k)
            pg_put(b, "-", 1);
        pg_hex(b, r, groups[k]);
    }
}

static void pg_ip(podgen_buf *b, uint64_t a, uint64_t x, uint64_t y, uint64_t z)
{
    pg_u64(b, a), pg_put(b, ".", 1), pg_u64(b, x), pg_put(b, ".", 1);
    pg_u64(b, y), pg_put(b, ".", 1), pg_u64(b, z);
}

/* RFC 3339 UTC from Unix seconds (Hinnant's civil_from_days, integers only). */
static void pg_time(podgen_buf *b, uint64_t t)
{
    uint64_t days = t / 86400, sod = t % 86400;
    uint64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
    uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    uint64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    uint64_t y = yoe + era * 400 + (m <= 2);
    pg_put(b, "\"", 1);
    pg_u64w(b, y, 4), pg_put(b, "-", 1), pg_u64w(b, m, 2), pg_put(b, "-", 1);
    pg_u64w(b, d, 2), pg_put(b, "T", 1), pg_u64w(b, sod / 3600, 2), pg_put(b, ":", 1);
    pg_u64w(b, sod / 60 % 60, 2), pg_put(b, ":", 1), pg_u64w(b, sod % 60, 2);
    pg_put(b, "Z\"", 2);
}

/* ---- the vocabulary ---- */

#define PG_COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *const podgen_apps[] = {
    "api-gateway", "checkout", "cart", "payments", "ledger", "search", "indexer",
    "recommender", "catalog", "inventory", "shipping", "notifications", "mailer",
    "auth", "session-store", "user-profile", "billing", "invoicing", "reporting",
    "metrics-agent", "log-forwarder", "ingress-nginx", "coredns", "kube-proxy",
    "redis", "memcached", "postgres", "kafka", "zookeeper", "etcd-backup",
    "image-resizer", "thumbnailer", "video-encoder", "feature-flags", "scheduler-ext",
    "web-frontend", "admin-portal", "graphql", "websocket-hub", "rate-limiter",
    "fraud-detector", "geo-service", "pricing", "promotions", "reviews", "wishlist",
    "analytics-collector", "etl-worker", "ml-serving", "batch-runner", "cron-janitor",
    "config-server", "vault-agent", "cert-manager", "external-dns", "node-exporter",
    "prometheus", "alertmanager", "grafana", "loki", "tempo", "jaeger-collector",
    "opa", "istio-proxy"};

static const char *const podgen_teams[] = {
    "shop", "payments", "identity", "platform", "data", "ml", "media", "search",
    "growth", "support", "infra", "observability", "security", "logistics", "finance",
    "marketing"};

static const char *const podgen_envs[] = {"prod", "staging", "dev", "canary"};

static const char *const podgen_tiers[] = {"frontend", "backend", "cache", "database",
                                           "worker", "system"};

static const char *const podgen_zones[] = {"eu-west-1a", "eu-west-1b", "eu-west-1c",
                                           "us-east-1a", "us-east-1b", "us-east-1d"};

static const char *const podgen_registries[] = {
    "registry.k8s.io", "docker.io/library", "ghcr.io/acme", "quay.io/acme",
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com"};

static const char *const podgen_qos[] = {"Guaranteed", "Burstable", "BestEffort"};

static const char *const podgen_cpu[] = {"50m", "100m", "250m", "500m", "1", "2"};

static const char *const podgen_mem[] = {"64Mi", "128Mi", "256Mi", "512Mi", "1Gi", "2Gi"};

#define PODGEN_EPOCH 1764000000u /* 2025-11-24T16:00:00Z */

/* What pods of one deployment share. */
typedef struct podgen_deploy {
    uint64_t app, team, env, tier, reg, major, minor, patch, cpu, mem, qos;
    uint64_t created;
    char hash[10];
    char uid[36];
} podgen_deploy;

static void podgen_deploy_of(const podgen *g, uint64_t d, podgen_deploy *o)
{
    podgen_rng r = podgen_stream(g->seed, 1, d, 0);
    podgen_buf b;
    o->app = podgen_below(&r, PG_COUNT(podgen_apps));
    o->team = podgen_below(&r, PG_COUNT(podgen_teams));
    o->env = podgen_below(&r, PG_COUNT(podgen_envs));
    o->tier = podgen_below(&r, PG_COUNT(podgen_tiers));
    o->reg = podgen_below(&r, PG_COUNT(podgen_registries));
    o->major = podgen_below(&r, 4);
    o->minor = podgen_below(&r, 40);
    o->patch = podgen_below(&r, 20);
    o->cpu = podgen_below(&r, PG_COUNT(podgen_cpu));
    o->mem = podgen_below(&r, PG_COUNT(podgen_mem));
    o->qos = podgen_below(&r, PG_COUNT(podgen_qos));
    o->created = PODGEN_EPOCH - podgen_below(&r, 90 * 86400);
    b = (podgen_buf){o->hash, 0, sizeof o->hash};
    pg_alnum(&b, &r, 10);
    b = (podgen_buf){o->uid, 0, sizeof o->uid};
    pg_uuid(&b, &r);
}

static uint64_t podgen_deploy_index(const podgen *g, uint64_t i)
{
    podgen_rng r = podgen_stream(g->seed, 2, i, 0);
    return podgen_below(&r, PODGEN_DEPLOYMENTS);
}

static void pg_namespace(podgen_buf *b, const podgen_deploy *d)
{
    pg_str(b, podgen_teams[d->team]);
    pg_put(b, "-", 1);
    pg_str(b, podgen_envs[d->env]);
}

static void pg_name(podgen_buf *b, const podgen *g, const podgen_deploy *d, uint64_t i)
{
    /* 7368787 is prime to 27^5, so i -> x is a bijection on [0, 27^5). */
    uint64_t x = (i % PODGEN_MAX_PODS * 7368787u + g->seed % PODGEN_MAX_PODS) % PODGEN_MAX_PODS;
    char sfx[5];
    for (int k = 0; k < 5; k++, x /= 27)
        sfx[k] = podgen_alnum[x % 27];
    pg_str(b, podgen_apps[d->app]);
    pg_put(b, "-", 1);
    pg_put(b, d->hash, 10);
    pg_put(b, "-", 1);
    pg_put(b, sfx, 5);
}

/*
 * Write the key of pod i into buf (at most cap bytes, not NUL-terminated).
 * Returns the key's full length, which may exceed cap (then buf holds a
 * prefix): PODGEN_KEY_MAX is always enough.
 */
static size_t podgen_key(const podgen *g, uint64_t i, char *buf, size_t cap)
{
    podgen_deploy d;
    podgen_buf b = {buf, 0, cap};
    podgen_deploy_of(g, podgen_deploy_index(g, i), &d);
    pg_str(&b, "/registry/pods/");
    pg_namespace(&b, &d);
    pg_put(&b, "/", 1);
    pg_name(&b, g, &d, i);
    return b.len;
}

#define PG_S(lit) pg_put(&b, lit, sizeof(lit) - 1)

/*
 * Write version gen (1 = as created) of pod i, with metadata.resourceVersion
 * rev, as JSON into buf (at most cap bytes).  Returns the full length, which
 * may exceed cap: PODGEN_POD_MAX is always enough.  Versions differ in their
 * labels, annotations, status and container id; the key never changes.
 * gen >= 1.
 */
static size_t podgen_pod(const podgen *g, uint64_t i, uint64_t gen, int64_t rev, char *buf,
                         size_t cap)
{
    podgen_deploy d;
    podgen_rng r = podgen_stream(g->seed, 3, i, 0);   /* fixed for the pod */
    podgen_rng v = podgen_stream(g->seed, 4, i, gen); /* varies per version */
    podgen_buf b = {buf, 0, cap};
    uint64_t node = podgen_below(&r, 2000), zone = node % PG_COUNT(podgen_zones);
    uint64_t created, started, ip1, ip2, ip3;
    podgen_deploy_of(g, podgen_deploy_index(g, i), &d);
    created = d.created + podgen_below(&r, 30 * 86400);
    started = created + 1 + podgen_below(&r, 20);
    /* Drawn in sequence: C leaves the order of argument evaluation open. */
    ip1 = 64 + podgen_below(&r, 64);
    ip2 = podgen_below(&r, 256);
    ip3 = 1 + podgen_below(&r, 254);

    PG_S("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"");
    pg_name(&b, g, &d, i);
    PG_S("\",\"namespace\":\""), pg_namespace(&b, &d);
    PG_S("\",\"uid\":\""), pg_uuid(&b, &r);
    PG_S("\",\"resourceVersion\":\""), pg_u64(&b, (uint64_t)rev);
    PG_S("\",\"creationTimestamp\":"), pg_time(&b, created);
    PG_S(",\"labels\":{\"app\":\""), pg_str(&b, podgen_apps[d.app]);
    PG_S("\",\"pod-template-hash\":\""), pg_put(&b, d.hash, 10);
    PG_S("\",\"tier\":\""), pg_str(&b, podgen_tiers[d.tier]);
    PG_S("\",\"rollout\":\""), pg_u64(&b, gen);
    PG_S("\"},\"annotations\":{\"kubectl.kubernetes.io/restartedAt\":");
    pg_time(&b, started + podgen_below(&v, 86400) + gen * 60);
    PG_S("},\"ownerReferences\":[{\"apiVersion\":\"apps/v1\",\"kind\":\"ReplicaSet\","
         "\"name\":\"");
    pg_str(&b, podgen_apps[d.app]), PG_S("-"), pg_put(&b, d.hash, 10);
    PG_S("\",\"uid\":\""), pg_put(&b, d.uid, 36);
    PG_S("\",\"controller\":true}]},\"spec\":{\"containers\":[{\"name\":\"");
    pg_str(&b, podgen_apps[d.app]);
    PG_S("\",\"image\":\""), pg_str(&b, podgen_registries[d.reg]), PG_S("/");
    pg_str(&b, podgen_apps[d.app]), PG_S(":v"), pg_u64(&b, d.major), PG_S(".");
    pg_u64(&b, d.minor), PG_S("."), pg_u64(&b, d.patch);
    PG_S("\",\"resources\":{\"requests\":{\"cpu\":\""), pg_str(&b, podgen_cpu[d.cpu]);
    PG_S("\",\"memory\":\""), pg_str(&b, podgen_mem[d.mem]);
    PG_S("\"}}}],\"nodeName\":\"ip-10-"), pg_u64(&b, node / 250), PG_S("-");
    pg_u64(&b, node % 250), PG_S("-"), pg_u64(&b, 1 + zone);
    PG_S(".ec2.internal\"},\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":"
         "\"Ready\",\"status\":\"True\",\"lastTransitionTime\":");
    pg_time(&b, started + podgen_below(&v, 3600));
    PG_S("}],\"hostIP\":\""), pg_ip(&b, 10, node / 250, node % 250, 1 + zone);
    PG_S("\",\"podIP\":\""), pg_ip(&b, 100, ip1, ip2, ip3);
    PG_S("\",\"containerStatuses\":[{\"ready\":true,\"restartCount\":"), pg_u64(&b, gen - 1);
    PG_S(",\"containerID\":\"containerd://"), pg_hex(&b, &v, 64);
    PG_S("\"}],\"qosClass\":\""), pg_str(&b, podgen_qos[d.qos]);
    PG_S("\"}}");
    return b.len;
}

#undef PG_S

#endif /* PODGEN_H */
