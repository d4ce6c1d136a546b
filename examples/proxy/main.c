/*
 * main.c - wcache-proxy(1): flags over the configuration file, one cache
 * and one source per resource, restore from the newest snapshot, serve,
 * snapshots on a schedule and on SIGTERM, clean shutdown.
 */
#include "proxy.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netdb.h>

px_config G;
atomic_int px_stopping;
static wcache_store *store; /* --snapshot-url, used by the main thread only */
static int verbose;

void px_log(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%02d:%02d:%02d.%03ld wcache-proxy: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, msg);
}

static void lib_log(int level, const char *msg, size_t len, void *ud)
{
    px_resource *r = ud;
    if (level <= WCACHE_LOG_WARN || verbose)
        px_log("%s: %.*s", r->name, (int)len, msg);
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: wcache-proxy [--config FILE] [--listen HOST:PORT] [--etcd URLS]\n"
        "                    [--stream [RES=]FILE|URL] [--seed N] [--snapshot-dir DIR] "
        "[--snapshot-url URL]\n"
        "                    [--snapshot-interval SECONDS] [--tls-cert FILE --tls-key FILE]\n"
        "                    [--client-ca FILE] [--token-file FILE] [--threads N]\n"
        "                    [--insecure-allow-remote] [--verbose]\n"
        "A read-only Kubernetes-style API server over libwatchcache; see wcache-proxy(1).\n");
}

/* ------------------------------------------------------------------------ */
/* snapshots                                                                 */
/* ------------------------------------------------------------------------ */

static void snap_prefix(const px_resource *r, char *out, size_t n)
{
    snprintf(out, n, "%s-", r->name);
}

static void source_id(const px_resource *r, char *out, size_t n)
{
    if (r->k8s)
        snprintf(out, n, "%s", wcache_k8s_source_id(r->k8s, NULL));
    else
        snprintf(out, n, "etcd:%s", r->prefix);
}

/* The newest PREFIX<20 digits>.wcsnap in dir (names sort by revision). */
static int newest_snapshot(const char *dir, const char *prefix, char *out, size_t n)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char best[256] = "";
    struct dirent *e;
    size_t pl = strlen(prefix);
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l != pl + 20 + 7 || strncmp(e->d_name, prefix, pl) ||
            strcmp(e->d_name + l - 7, ".wcsnap"))
            continue;
        if (strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", e->d_name);
    }
    closedir(d);
    if (!best[0])
        return -1;
    snprintf(out, n, "%s/%s", dir, best);
    return 0;
}

/* A snapshot straight into the object store when due (the same rule as
 * wcache_snapshot_tick: the revision moved, and the interval passed). */
static int snapshot_store(px_resource *r, int force)
{
    int64_t rev = wcache_cache_revision(r->cache), t = now_ms();
    if (rev == r->store_last_rev ||
        (!force &&
         (G.snapshot_interval_s <= 0 || t - r->store_last_ms < G.snapshot_interval_s * 1000)))
        return 0;
    char sid[300], eb[256] = "";
    source_id(r, sid, sizeof sid);
    wcache_snapshot_write_opts wo = {.size = sizeof wo,
                                     .source_id = sid,
                                     .source_id_len = strlen(sid),
                                     .errbuf = eb,
                                     .errbuf_len = sizeof eb};
    wcache_snapshot_info info = {.size = sizeof info};
    wcache_code rc =
        wcache_store_put_snapshot(store, NULL, r->cache, &wo, (size_t)G.snapshot_keep, &info);
    if (rc != WCACHE_OK) {
        px_log("%s: snapshot to %s failed: %s%s%s", r->name, G.snapshot_url,
               wcache_strerror(rc), eb[0] ? ": " : "", eb);
        return -1;
    }
    r->store_last_rev = info.revision;
    r->store_last_ms = t;
    px_log("%s: snapshot at revision %lld to %s in %lld ms", r->name, (long long)info.revision,
           G.snapshot_url, (long long)(now_ms() - t));
    return 0;
}

static int snapshot_one(px_resource *r, int force)
{
    if (store && atomic_load(&r->ready))
        snapshot_store(r, force);
    if (!G.snapshot_dir || !atomic_load(&r->ready))
        return 0;
    char pfx[96], sid[300];
    snap_prefix(r, pfx, sizeof pfx);
    source_id(r, sid, sizeof sid);
    char eb[256] = "";
    wcache_snapshot_write_opts wo = {.size = sizeof wo,
                                     .source_id = sid,
                                     .source_id_len = strlen(sid),
                                     .errbuf = eb,
                                     .errbuf_len = sizeof eb};
    wcache_snapshot_policy pol = {.size = sizeof pol,
                                  .dir = G.snapshot_dir,
                                  .name_prefix = pfx,
                                  .keep = (size_t)G.snapshot_keep,
                                  .interval_ms = force ? 1 : G.snapshot_interval_s * 1000,
                                  .write = &wo};
    if (!force && G.snapshot_interval_s <= 0)
        return 0;
    wcache_snapshot_state st = {
        .size = sizeof st, .last_revision = r->snap_last_rev, .last_ms = r->snap_last_ms};
    int written = 0;
    int64_t t0 = now_ms();
    wcache_code rc = wcache_snapshot_tick(r->cache, &pol, &st, t0, &written);
    if (rc != WCACHE_OK) {
        px_log("%s: snapshot failed: %s%s%s", r->name, wcache_strerror(rc), eb[0] ? ": " : "",
               eb);
        return -1;
    }
    r->snap_last_rev = st.last_revision;
    r->snap_last_ms = st.last_ms;
    if (written)
        px_log("%s: snapshot at revision %lld in %lld ms", r->name, (long long)st.last_revision,
               (long long)(now_ms() - t0));
    return 0;
}

static void restore_store(px_resource *r)
{
    char sid[300], eb[256] = "";
    source_id(r, sid, sizeof sid);
    wcache_snapshot_read_opts ro = {.size = sizeof ro,
                                    .expect_source_id = sid,
                                    .expect_source_id_len = strlen(sid),
                                    .errbuf = eb,
                                    .errbuf_len = sizeof eb};
    wcache_snapshot_info info = {.size = sizeof info};
    int64_t t0 = now_ms();
    wcache_code rc = wcache_store_restore(store, NULL, r->cache, &ro, &info);
    if (rc == WCACHE_ENOTFOUND)
        return;
    if (rc != WCACHE_OK) {
        px_log("%s: not restoring from %s: %s%s%s; listing the source instead", r->name,
               G.snapshot_url, wcache_strerror(rc), eb[0] ? ": " : "", eb);
        return;
    }
    r->store_last_rev = r->snap_last_rev = info.revision;
    r->store_last_ms = r->snap_last_ms = now_ms();
    px_log("%s: restored %llu objects at revision %lld from %s in %lld ms", r->name,
           (unsigned long long)info.objects, (long long)info.revision, G.snapshot_url,
           (long long)(now_ms() - t0));
}

static void restore(px_resource *r)
{
    if (!G.snapshot_dir) {
        if (store)
            restore_store(r);
        return;
    }
    char pfx[96], path[1024], sid[300];
    snap_prefix(r, pfx, sizeof pfx);
    if (newest_snapshot(G.snapshot_dir, pfx, path, sizeof path)) {
        if (store)
            restore_store(r);
        return;
    }
    source_id(r, sid, sizeof sid);
    char eb[256] = "";
    wcache_snapshot_read_opts ro = {.size = sizeof ro,
                                    .expect_source_id = sid,
                                    .expect_source_id_len = strlen(sid),
                                    .errbuf = eb,
                                    .errbuf_len = sizeof eb};
    wcache_snapshot_info info = {.size = sizeof info};
    int64_t t0 = now_ms();
    wcache_code rc = wcache_snapshot_restore(r->cache, path, &ro, &info);
    if (rc != WCACHE_OK) {
        px_log("%s: not restoring %s: %s%s%s; listing the source instead", r->name, path,
               wcache_strerror(rc), eb[0] ? ": " : "", eb);
        return;
    }
    r->snap_last_rev = info.revision;
    r->snap_last_ms = now_ms();
    px_log("%s: restored %llu objects at revision %lld from %s in %lld ms", r->name,
           (unsigned long long)info.objects, (long long)info.revision, path,
           (long long)(now_ms() - t0));
}

/* ------------------------------------------------------------------------ */
/* sources                                                                   */
/* ------------------------------------------------------------------------ */

/* The synthetic stream's resource bits for r (0: it has none). */
static int synthetic_bits(const px_resource *r)
{
    if (!strcmp(r->name, "pods"))
        return WCACHE_K8S_PODS;
    if (!strcmp(r->name, "configmaps"))
        return WCACHE_K8S_CONFIGMAPS;
    return 0;
}

/* --stream [RESOURCE=]FILE|URL: which stream feeds r, if any.  Without
 * RESOURCE= a URL names its resource in its path; a file feeds pods. */
static const char *stream_for(const px_resource *r)
{
    for (int i = 0; i < G.nstreams; i++) {
        const char *s = G.streams[i];
        const char *eq = strchr(s, '=');
        const char *colon = strchr(s, ':');
        if (eq && (!colon || eq < colon)) {
            if ((size_t)(eq - s) == strlen(r->name) && !strncmp(s, r->name, (size_t)(eq - s)))
                return eq + 1;
            continue;
        }
        if (!strncmp(s, "http://", 7) || !strncmp(s, "https://", 8)) {
            char seg[80];
            snprintf(seg, sizeof seg, "/%s", r->name);
            const char *q = strstr(s, seg);
            size_t l = strlen(seg);
            if (q && (q[l] == 0 || q[l] == '?' || q[l] == '/'))
                return s;
            continue;
        }
        if (!strcmp(r->name, "pods"))
            return s;
    }
    return NULL;
}

static int open_resource(px_resource *r)
{
    wcache_code rc = wcache_cache_create(&r->cache, NULL);
    if (rc != WCACHE_OK)
        return -1;
    wcache_cache_set_log(r->cache, lib_log, WCACHE_LOG_DEBUG, r);
    if (G.retain_seconds >= 0)
        wcache_cache_set_param(r->cache, WCACHE_P_RETAIN_SECONDS, G.retain_seconds);
    if (G.retain_revisions >= 0)
        wcache_cache_set_param(r->cache, WCACHE_P_RETAIN_REVISIONS, G.retain_revisions);
    wcache_cache_set_param(r->cache, WCACHE_P_READER_SLOTS, 65536);
    for (int i = 0; i < r->nidx; i++) {
        rc = wcache_cache_add_index_json(r->cache, r->idx[i].path, strlen(r->idx[i].path),
                                         r->idx[i].path, strlen(r->idx[i].path), &r->idx[i].id);
        if (rc != WCACHE_OK) {
            fprintf(stderr, "wcache-proxy: %s: index %s: %s\n", r->name, r->idx[i].path,
                    wcache_strerror(rc));
            return -1;
        }
    }
    if (G.etcd) {
        wcache_etcd_opts eo = {.size = sizeof eo,
                               .endpoints = G.etcd,
                               .prefix = r->prefix,
                               .prefix_len = strlen(r->prefix)};
        rc = wcache_etcd_create(&r->etcd, r->cache, &eo);
        if (rc != WCACHE_OK) {
            fprintf(stderr, "wcache-proxy: --etcd %s: %s\n", G.etcd, wcache_strerror(rc));
            return -1;
        }
    }
    const char *stream = stream_for(r);
    if (!G.etcd && (stream || (G.synthetic && synthetic_bits(r)))) {
        char name[400];
        snprintf(name, sizeof name, "%s:%s", stream ? "stream" : "synthetic", r->prefix);
        wcache_k8s_opts ko = {.size = sizeof ko,
                              .name = name,
                              .prefix = r->prefix,
                              .prefix_len = strlen(r->prefix)};
        char list_url[1024];
        if (!stream) {
            ko.input = WCACHE_K8S_INPUT_SYNTHETIC;
            ko.seed = G.seed;
            ko.resources = synthetic_bits(r);
        } else if (!strncmp(stream, "http://", 7) || !strncmp(stream, "https://", 8)) {
            ko.input = WCACHE_K8S_INPUT_URL;
            ko.url = stream;
            /* the same path without the query lists the resource */
            snprintf(list_url, sizeof list_url, "%.*s", (int)strcspn(stream, "?"), stream);
            ko.list_url = list_url;
        } else {
            ko.input = WCACHE_K8S_INPUT_FILE;
            ko.path = stream;
        }
        wcache_k8s *k;
        rc = wcache_k8s_create(&k, r->cache, &ko);
        if (rc != WCACHE_OK) {
            fprintf(stderr, "wcache-proxy: %s: stream source: %s\n", r->name,
                    wcache_strerror(rc));
            return -1;
        }
        r->k8s = k;
    }
    if (wcache_cache_open(r->cache) != WCACHE_OK)
        return -1;
    /* the first periodic snapshot comes one interval after the start */
    r->snap_last_ms = r->store_last_ms = now_ms();
    restore(r);
    atomic_store(&r->ready_change_ms, now_ms());
    if (r->etcd && wcache_etcd_start(r->etcd) != WCACHE_OK)
        return -1;
    if (r->k8s && wcache_k8s_start(r->k8s) != WCACHE_OK)
        return -1;
    return 0;
}

static void poll_ready(void)
{
    for (int i = 0; i < G.nres; i++) {
        px_resource *r = &G.res[i];
        int ready = 0;
        if (r->etcd) {
            wcache_etcd_stats st = {.size = sizeof st};
            if (wcache_etcd_stat(r->etcd, &st) == WCACHE_OK)
                ready = st.synced;
        } else if (r->k8s) {
            wcache_k8s_stats st = {.size = sizeof st};
            if (wcache_k8s_stat(r->k8s, &st) == WCACHE_OK)
                ready = st.synced || st.ended;
        } else {
            ready = 1; /* nothing feeds it: always empty, always current */
        }
        if (ready != atomic_load(&r->ready)) {
            atomic_store(&r->ready, ready);
            atomic_store(&r->ready_change_ms, now_ms());
            px_log("%s: %s at revision %lld", r->name, ready ? "synced" : "not synced",
                   (long long)wcache_cache_revision(r->cache));
        }
    }
}

int px_resource_ready(px_resource *r)
{
    return atomic_load(&r->ready);
}

/* ------------------------------------------------------------------------ */
/* the loopback rule                                                         */
/* ------------------------------------------------------------------------ */

static int listen_is_loopback(const char *listen)
{
    /* the test seam: treat the address as remote, to test the rules on lo */
    const char *seam = getenv("WCACHE_PROXY_ASSUME_REMOTE");
    if (seam && *seam == '1')
        return 0;
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof host)
        return 0;
    size_t hl = (size_t)(colon - listen);
    const char *h = listen;
    if (h[0] == '[' && hl >= 2) {
        h++;
        hl -= 2;
    }
    memcpy(host, h, hl);
    host[hl] = 0;
    if (!strcmp(host, "localhost"))
        return 1;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */
/* ------------------------------------------------------------------------ */

static void set(char **dst, const char *v)
{
    free(*dst);
    *dst = strdup(v);
}

int main(int argc, char **argv)
{
    cfg_defaults(&G);
    enum {
        O_CONFIG = 256,
        O_LISTEN,
        O_ETCD,
        O_STREAM,
        O_SDIR,
        O_SURL,
        O_SINT,
        O_CERT,
        O_KEY,
        O_CA,
        O_TOKENS,
        O_THREADS,
        O_INSECURE,
        O_VERBOSE,
        O_WATCH_TIMEOUT,
        O_SEED
    };
    static const struct option lo[] = {{"config", 1, 0, O_CONFIG},
                                       {"listen", 1, 0, O_LISTEN},
                                       {"etcd", 1, 0, O_ETCD},
                                       {"stream", 1, 0, O_STREAM},
                                       {"seed", 1, 0, O_SEED},
                                       {"snapshot-dir", 1, 0, O_SDIR},
                                       {"snapshot-url", 1, 0, O_SURL},
                                       {"snapshot-interval", 1, 0, O_SINT},
                                       {"tls-cert", 1, 0, O_CERT},
                                       {"tls-key", 1, 0, O_KEY},
                                       {"client-ca", 1, 0, O_CA},
                                       {"token-file", 1, 0, O_TOKENS},
                                       {"threads", 1, 0, O_THREADS},
                                       {"watch-timeout", 1, 0, O_WATCH_TIMEOUT},
                                       {"insecure-allow-remote", 0, 0, O_INSECURE},
                                       {"verbose", 0, 0, O_VERBOSE},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    /* the config file first, so that every flag overrides it */
    for (int i = 1; i < argc; i++) {
        const char *cf = NULL;
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            cf = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9))
            cf = argv[i] + 9;
        if (cf && cfg_load_yaml(&G, cf))
            return 2;
    }
    /* flags that set one string each */
    static const struct {
        int opt;
        char **dst;
    } strs[] = {{O_LISTEN, &G.listen},     {O_ETCD, &G.etcd},        {O_SDIR, &G.snapshot_dir},
                {O_SURL, &G.snapshot_url}, {O_CERT, &G.tls_cert},    {O_KEY, &G.tls_key},
                {O_CA, &G.client_ca},      {O_TOKENS, &G.token_file}};
    int o;
    while ((o = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        int done = 0;
        for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
            if (strs[i].opt == o) {
                set(strs[i].dst, optarg);
                done = 1;
            }
        if (done)
            continue;
        switch (o) {
        case O_CONFIG: break;
        case O_STREAM:
            if (G.nstreams < PX_MAX_RESOURCES)
                G.streams[G.nstreams++] = strdup(optarg);
            break;
        case O_SEED: G.seed = strtoull(optarg, NULL, 10); break;
        case O_SINT: G.snapshot_interval_s = atoll(optarg); break;
        case O_THREADS:
            G.threads = atoi(optarg);
            if (G.threads < 1 || G.threads > 256) {
                fprintf(stderr, "wcache-proxy: --threads: 1..256\n");
                return 2;
            }
            break;
        case O_WATCH_TIMEOUT: G.watch_timeout_s = atoll(optarg); break;
        case O_INSECURE: G.insecure_allow_remote = 1; break;
        case O_VERBOSE: verbose = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wcache-proxy: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!G.listen)
        G.listen = strdup("127.0.0.1:8080");
    cfg_default_resources(&G);
    if (G.stream && G.nstreams < PX_MAX_RESOURCES) /* sources.stream of the file */
        G.streams[G.nstreams++] = strdup(G.stream);
    if (G.snapshot_url) {
        static char eb[256]; /* the store keeps it for later errors */
        wcache_store_opts so = {.size = sizeof so, .errbuf = eb, .errbuf_len = sizeof eb};
        wcache_code rc = wcache_store_open(&store, G.snapshot_url, &so);
        if (rc != WCACHE_OK) {
            fprintf(stderr, "wcache-proxy: --snapshot-url %s: %s%s%s\n", G.snapshot_url,
                    wcache_strerror(rc), eb[0] ? ": " : "", eb);
            return 2;
        }
    }
    if (G.etcd && G.nstreams) {
        fprintf(stderr, "wcache-proxy: --etcd and --stream: give one source\n");
        return 2;
    }
    G.synthetic = !G.etcd && !G.nstreams; /* the embedded default */
    if ((G.tls_cert != NULL) != (G.tls_key != NULL)) {
        fprintf(stderr, "wcache-proxy: --tls-cert and --tls-key go together\n");
        return 2;
    }
    if (G.client_ca && !G.tls_cert) {
        fprintf(stderr, "wcache-proxy: --client-ca needs --tls-cert and --tls-key\n");
        return 2;
    }
    if (cfg_load_tokens(&G))
        return 2;
    if (!listen_is_loopback(G.listen)) {
        int authn = G.ntokens > 0 || G.client_ca;
        if (!G.tls_cert || !authn) {
            if (!G.insecure_allow_remote) {
                fprintf(
                    stderr,
                    "wcache-proxy: refusing to listen on %s (not loopback) without TLS and "
                    "authentication (--tls-cert/--tls-key and --token-file or --client-ca); "
                    "--insecure-allow-remote overrides\n",
                    G.listen);
                return 2;
            }
            px_log("WARNING: serving %s on %s without %s: anyone who can reach it can read "
                   "every served object",
                   G.tls_cert ? "HTTPS" : "plain HTTP", G.listen,
                   authn ? "TLS" : "authentication");
        }
    }
    if (G.snapshot_dir && mkdir(G.snapshot_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "wcache-proxy: %s: %s\n", G.snapshot_dir, strerror(errno));
        return 2;
    }
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    sigaddset(&ss, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &ss, NULL); /* every thread inherits it */
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    enc_cache_init(G.encode_cache_bytes);
    int64_t t0 = now_ms();
    for (int i = 0; i < G.nres; i++)
        if (open_resource(&G.res[i])) {
            fprintf(stderr, "wcache-proxy: cannot start resource %s\n", G.res[i].name);
            return 1;
        }
    if (api_init() || http_start())
        return 1;
    px_log("serving %d resources on %s (started in %lld ms)", G.nres, G.listen,
           (long long)(now_ms() - t0));
    int synced_logged = 0;
    while (!atomic_load(&px_stopping)) {
        struct timespec to = {0, 100 * 1000000};
        int sig = sigtimedwait(&ss, NULL, &to);
        if (sig == SIGTERM || sig == SIGINT) {
            px_log("signal %d: shutting down", sig);
            atomic_store(&px_stopping, 1);
            break;
        }
        if (sig == SIGHUP) { /* an on-demand snapshot */
            for (int i = 0; i < G.nres; i++)
                snapshot_one(&G.res[i], 1);
        }
        poll_ready();
        if (!synced_logged) {
            int all = 1;
            for (int i = 0; i < G.nres; i++)
                all &= atomic_load(&G.res[i].ready);
            if (all) {
                px_log("all resources synced in %lld ms", (long long)(now_ms() - t0));
                synced_logged = 1;
            }
        }
        static int64_t last_tick;
        if (now_ms() - last_tick >= 1000) {
            last_tick = now_ms();
            for (int i = 0; i < G.nres; i++)
                snapshot_one(&G.res[i], 0);
        }
    }
    int64_t t1 = now_ms();
    http_stop();
    px_log("watches ended, server stopped in %lld ms", (long long)(now_ms() - t1));
    for (int i = 0; i < G.nres; i++)
        snapshot_one(&G.res[i], 1);
    for (int i = 0; i < G.nres; i++) {
        wcache_etcd_free(G.res[i].etcd);
        wcache_k8s_free(G.res[i].k8s);
        wcache_cache_close(G.res[i].cache);
    }
    wcache_store_close(store);
    px_log("stopped");
    return 0;
}
