/*
 * http.c - the HTTP side on libmicrohttpd: daemon options (TLS, limits),
 * authentication and allow-lists, routing, discovery, health and metrics.
 */
#include "proxy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>

atomic_ullong m_watch_events, m_watch_overflows, m_watch_opened, m_list_items, m_fresh_waits,
    m_fresh_timeouts;

enum { V_GET, V_LIST, V_WATCH, V_DISCOVERY, V_OTHER, V_N };
static const char *verb_names[V_N] = {"get", "list", "watch", "discovery", "other"};
static const int code_list[] = {200, 400, 401, 403, 404, 405, 410, 414, 422, 429, 500, 504};
#define NCODES ((int)(sizeof code_list / sizeof code_list[0]))
static atomic_ullong m_req[V_N][NCODES + 1];
static const double lat_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define NLAT ((int)(sizeof lat_bounds / sizeof lat_bounds[0]))
static atomic_ullong m_lat[V_N][NLAT + 1];
static atomic_ullong m_lat_sum_us[V_N];

typedef struct rctx {
    int64_t t0_us;
    int verb;
    int code;
} rctx;

static __thread rctx *cur;
static struct MHD_Daemon *daemon_;
static char *tls_cert_mem, *tls_key_mem, *tls_ca_mem;
static int tls_on;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int queue(struct MHD_Connection *c, int code, struct MHD_Response *r)
{
    if (cur)
        cur->code = code;
    int ret = MHD_queue_response(c, (unsigned)code, r);
    MHD_destroy_response(r);
    return ret;
}

int reply_buf(struct MHD_Connection *c, int code, pbuf *b, const char *ctype)
{
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(
        b->len - b->off, b->p + b->off, free);
    if (!r) {
        pb_free(b);
        return MHD_NO;
    }
    if (b->off) { /* the free callback needs the allocation's start */
        MHD_destroy_response(r);
        pbuf t = {0};
        pb_add(&t, b->p + b->off, b->len - b->off);
        pb_free(b);
        return reply_buf(c, code, &t, ctype);
    }
    memset(b, 0, sizeof *b);
    MHD_add_response_header(r, "Content-Type", ctype);
    return queue(c, code, r);
}

int reply_status(struct MHD_Connection *c, int code, const char *reason, const char *msg,
                 const char *kind, const char *name, int retry_after)
{
    pbuf b = {0};
    status_body(&b, code, reason, msg, kind, name);
    struct MHD_Response *r =
        MHD_create_response_from_buffer_with_free_callback(b.len, b.p, free);
    if (!r) {
        pb_free(&b);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    return queue(c, code, r);
}

static int reply_text(struct MHD_Connection *c, int code, const char *text, const char *ctype)
{
    pbuf b = {0};
    pb_str(&b, text);
    return reply_buf(c, code, &b, ctype);
}

/* ------------------------------------------------------------------------ */
/* discovery                                                                 */
/* ------------------------------------------------------------------------ */

static int disc_api(struct MHD_Connection *c)
{
    pbuf b = {0};
    pb_str(&b, "{\"kind\":\"APIVersions\",\"versions\":[\"v1\"],\"serverAddressByClientCIDRs\":"
               "[{\"clientCIDR\":\"0.0.0.0/0\",\"serverAddress\":\"");
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
    pb_fmt(&b, "127.0.0.1:%u\"}]}", di ? di->port : 0);
    return reply_buf(c, 200, &b, "application/json");
}

static int disc_v1(struct MHD_Connection *c)
{
    pbuf b = {0};
    pb_str(&b, "{\"kind\":\"APIResourceList\",\"groupVersion\":\"v1\",\"resources\":[");
    for (int i = 0; i < G.nres; i++) {
        const px_resource *r = &G.res[i];
        pb_fmt(&b,
               "%s{\"name\":\"%s\",\"singularName\":\"%s\",\"namespaced\":%s,\"kind\":\"%s\","
               "\"verbs\":[\"get\",\"list\",\"watch\"]",
               i ? "," : "", r->name, r->singular, r->namespaced ? "true" : "false", r->kind);
        if (r->nshort) {
            pb_str(&b, ",\"shortNames\":[");
            for (int k = 0; k < r->nshort; k++)
                pb_fmt(&b, "%s\"%s\"", k ? "," : "", r->short_names[k]);
            pb_str(&b, "]");
        }
        if (!strcmp(r->name, "pods"))
            pb_str(&b, ",\"categories\":[\"all\"]");
        pb_str(&b, "}");
    }
    pb_str(&b, "]}");
    return reply_buf(c, 200, &b, "application/json");
}

/* ------------------------------------------------------------------------ */
/* metrics                                                                   */
/* ------------------------------------------------------------------------ */

static int metrics(struct MHD_Connection *c)
{
    pbuf b = {0};
    pb_str(&b, "# HELP wcache_proxy_ready 1 when the resource's cache is synced.\n"
               "# TYPE wcache_proxy_ready gauge\n");
    for (int i = 0; i < G.nres; i++)
        pb_fmt(&b, "wcache_proxy_ready{resource=\"%s\"} %d\n", G.res[i].name,
               atomic_load(&G.res[i].ready));
    static const char *names[] = {"objects",      "revision",    "compacted_revision",
                                  "events_total", "value_bytes", "versions"};
    for (int m = 0; m < 6; m++) {
        pb_fmt(&b, "# TYPE wcache_proxy_cache_%s %s\n", names[m], m == 3 ? "counter" : "gauge");
        for (int i = 0; i < G.nres; i++) {
            wcache_stat st = {.size = sizeof st};
            wcache_cache_stat(G.res[i].cache, &st);
            long long v = m == 0   ? (long long)st.objects
                          : m == 1 ? (long long)st.revision
                          : m == 2 ? (long long)st.compacted_revision
                          : m == 3 ? (long long)st.events
                          : m == 4 ? (long long)st.value_bytes
                                   : (long long)st.versions;
            pb_fmt(&b, "wcache_proxy_cache_%s{resource=\"%s\"} %lld\n", names[m], G.res[i].name,
                   v);
        }
    }
    pb_str(&b, "# TYPE wcache_proxy_consistent_read_waits_total counter\n"
               "# TYPE wcache_proxy_consistent_read_timeouts_total counter\n"
               "# TYPE wcache_proxy_consistent_read_wait_seconds_total counter\n");
    for (int i = 0; i < G.nres; i++) {
        wcache_wait_stat ws = {.size = sizeof ws};
        wcache_cache_wait_stat(G.res[i].cache, &ws);
        pb_fmt(&b, "wcache_proxy_consistent_read_waits_total{resource=\"%s\"} %llu\n",
               G.res[i].name, (unsigned long long)ws.waits);
        pb_fmt(&b, "wcache_proxy_consistent_read_timeouts_total{resource=\"%s\"} %llu\n",
               G.res[i].name, (unsigned long long)ws.timeouts);
        pb_fmt(&b, "wcache_proxy_consistent_read_wait_seconds_total{resource=\"%s\"} %.6f\n",
               G.res[i].name, (double)ws.wait_ns / 1e9);
    }
    uint64_t w, s, hits, miss, bytes;
    api_stats(&w, &s);
    enc_cache_stats(&hits, &miss, &bytes);
    pb_fmt(
        &b,
        "# TYPE wcache_proxy_watchers gauge\nwcache_proxy_watchers %llu\n"
        "# TYPE wcache_proxy_watchers_idle gauge\nwcache_proxy_watchers_idle %llu\n"
        "# TYPE wcache_proxy_watches_opened_total counter\n"
        "wcache_proxy_watches_opened_total %llu\n"
        "# TYPE wcache_proxy_watch_events_total counter\nwcache_proxy_watch_events_total "
        "%llu\n"
        "# TYPE wcache_proxy_watch_overflows_total counter\n"
        "wcache_proxy_watch_overflows_total %llu\n"
        "# TYPE wcache_proxy_list_items_examined_total counter\n"
        "wcache_proxy_list_items_examined_total %llu\n"
        "# TYPE wcache_proxy_encode_cache_hits_total counter\n"
        "wcache_proxy_encode_cache_hits_total %llu\n"
        "# TYPE wcache_proxy_encode_cache_misses_total counter\n"
        "wcache_proxy_encode_cache_misses_total %llu\n"
        "# TYPE wcache_proxy_encode_cache_bytes gauge\nwcache_proxy_encode_cache_bytes %llu\n",
        (unsigned long long)w, (unsigned long long)s,
        (unsigned long long)atomic_load(&m_watch_opened),
        (unsigned long long)atomic_load(&m_watch_events),
        (unsigned long long)atomic_load(&m_watch_overflows),
        (unsigned long long)atomic_load(&m_list_items), (unsigned long long)hits,
        (unsigned long long)miss, (unsigned long long)bytes);
    pb_str(&b, "# TYPE wcache_proxy_etcd_synced gauge\n");
    for (int i = 0; i < G.nres; i++) {
        if (!G.res[i].etcd)
            continue;
        wcache_etcd_stats es = {.size = sizeof es};
        wcache_etcd_stat(G.res[i].etcd, &es);
        pb_fmt(&b,
               "wcache_proxy_etcd_synced{resource=\"%s\"} %d\n"
               "wcache_proxy_etcd_lists_total{resource=\"%s\"} %llu\n"
               "wcache_proxy_etcd_reconnects_total{resource=\"%s\"} %llu\n"
               "wcache_proxy_etcd_events_total{resource=\"%s\"} %llu\n"
               "wcache_proxy_etcd_consistent_reads_total{resource=\"%s\"} %llu\n"
               "wcache_proxy_etcd_revision_probes_total{resource=\"%s\"} %llu\n",
               G.res[i].name, es.synced, G.res[i].name, (unsigned long long)es.lists,
               G.res[i].name, (unsigned long long)es.reconnects, G.res[i].name,
               (unsigned long long)es.events, G.res[i].name,
               (unsigned long long)es.revision_reads, G.res[i].name,
               (unsigned long long)es.revision_probes);
    }
    pb_str(&b, "# HELP wcache_proxy_requests_total Requests by verb and HTTP code.\n"
               "# TYPE wcache_proxy_requests_total counter\n");
    for (int v = 0; v < V_N; v++)
        for (int k = 0; k <= NCODES; k++) {
            unsigned long long n = atomic_load(&m_req[v][k]);
            if (n)
                pb_fmt(&b, "wcache_proxy_requests_total{verb=\"%s\",code=\"%s%d\"} %llu\n",
                       verb_names[v], k == NCODES ? "other" : "",
                       k == NCODES ? 0 : code_list[k], n);
        }
    pb_str(&b, "# HELP wcache_proxy_request_duration_seconds Request latency (not watches).\n"
               "# TYPE wcache_proxy_request_duration_seconds histogram\n");
    for (int v = 0; v < V_N; v++) {
        if (v == V_WATCH)
            continue;
        unsigned long long cum = 0;
        for (int k = 0; k <= NLAT; k++) {
            cum += atomic_load(&m_lat[v][k]);
            if (k < NLAT)
                pb_fmt(&b,
                       "wcache_proxy_request_duration_seconds_bucket{verb=\"%s\",le=\"%g\"} "
                       "%llu\n",
                       verb_names[v], lat_bounds[k], cum);
            else
                pb_fmt(&b,
                       "wcache_proxy_request_duration_seconds_bucket{verb=\"%s\",le=\"+Inf\"} "
                       "%llu\n",
                       verb_names[v], cum);
        }
        pb_fmt(&b, "wcache_proxy_request_duration_seconds_sum{verb=\"%s\"} %.6f\n",
               verb_names[v], (double)atomic_load(&m_lat_sum_us[v]) / 1e6);
        pb_fmt(&b, "wcache_proxy_request_duration_seconds_count{verb=\"%s\"} %llu\n",
               verb_names[v], cum);
    }
    return reply_buf(c, 200, &b, "text/plain; version=0.0.4");
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    rctx *x = *con_cls;
    if (!x)
        return;
    int k = NCODES;
    for (int i = 0; i < NCODES; i++)
        if (code_list[i] == x->code)
            k = i;
    atomic_fetch_add(&m_req[x->verb][k], 1);
    int64_t d = now_us() - x->t0_us;
    int b = NLAT;
    for (int i = 0; i < NLAT; i++)
        if ((double)d / 1e6 <= lat_bounds[i]) {
            b = i;
            break;
        }
    atomic_fetch_add(&m_lat[x->verb][b], 1);
    atomic_fetch_add(&m_lat_sum_us[x->verb], (unsigned long long)d);
    free(x);
    *con_cls = NULL;
}

/* ------------------------------------------------------------------------ */
/* authentication and allow-lists                                            */
/* ------------------------------------------------------------------------ */

static int auth_required(void)
{
    return G.ntokens > 0 || (tls_on && G.client_ca);
}

/* The identity of the client, or NULL; *bad = 1 when credentials were
 * offered but are wrong. */
static const char *identify(struct MHD_Connection *c, char *cn, size_t cnlen)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (h && G.ntokens > 0 && strncmp(h, "Bearer ", 7) == 0) {
        const char *t = h + 7;
        size_t tl = strlen(t);
        const char *who = NULL;
        for (int i = 0; i < G.ntokens; i++) {
            const char *k = G.tokens[i].token;
            size_t kl = strlen(k);
            unsigned diff = (unsigned)(kl ^ tl);
            for (size_t j = 0; j < tl && j < kl; j++) /* no early exit: timing */
                diff |= (unsigned char)(k[j] ^ t[j]);
            if (!diff)
                who = G.tokens[i].user;
        }
        if (who)
            return who;
    }
    if (tls_on && G.client_ca) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        if (ci && ci->tls_session) {
            gnutls_session_t s = (gnutls_session_t)ci->tls_session;
            unsigned status = 1;
            if (gnutls_certificate_verify_peers2(s, &status) == 0 && status == 0) {
                unsigned n = 0;
                const gnutls_datum_t *pc = gnutls_certificate_get_peers(s, &n);
                gnutls_x509_crt_t crt;
                if (pc && n > 0 && gnutls_x509_crt_init(&crt) == 0) {
                    size_t sz = cnlen;
                    int ok = gnutls_x509_crt_import(crt, &pc[0], GNUTLS_X509_FMT_DER) == 0 &&
                             gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0,
                                                           0, cn, &sz) == 0;
                    gnutls_x509_crt_deinit(crt);
                    if (ok)
                        return cn;
                }
            }
        }
    }
    return NULL;
}

static const px_user *find_user(const char *name)
{
    for (int i = 0; i < G.nusers; i++)
        if (!strcmp(G.users[i].name, name))
            return &G.users[i];
    return NULL;
}

int allowed_ns(const px_user *u, const char *ns)
{
    if (!u || u->nns == 0)
        return 1;
    if (!ns)
        return 0;
    for (int i = 0; i < u->nns; i++)
        if (!strcmp(u->namespaces[i], ns))
            return 1;
    return 0;
}

static int allowed_res(const px_user *u, const char *res)
{
    if (!u || u->nres == 0)
        return 1;
    for (int i = 0; i < u->nres; i++)
        if (!strcmp(u->resources[i], res))
            return 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the request handler                                                       */
/* ------------------------------------------------------------------------ */

static const char *qv(struct MHD_Connection *c, const char *k)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, k);
}

static int retry_after_unready(px_resource *r)
{
    /* clamp(floor(e^(0.06 * downtime)), 1, 30), as the API server does */
    double down = (double)(now_ms() - atomic_load(&r->ready_change_ms)) / 1000.0;
    double v = 1;
    for (int i = 0; i < (int)(down * 0.06 * 10) && v < 30; i++)
        v *= 1.0060180; /* e^(0.006) per tenth */
    int ra = (int)v;
    return ra < 1 ? 1 : ra > 30 ? 30 : ra;
}

static int route(struct MHD_Connection *c, const char *url, const char *method, const char *who)
{
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (!strcmp(url, "/healthz") || !strcmp(url, "/livez")) {
        cur->verb = V_OTHER;
        return reply_text(c, 200, "ok", "text/plain");
    }
    if (!strcmp(url, "/readyz")) {
        cur->verb = V_OTHER;
        for (int i = 0; i < G.nres; i++)
            if (!atomic_load(&G.res[i].ready))
                return reply_text(c, 503, "not ready: caches not synced", "text/plain");
        return reply_text(c, 200, "ok", "text/plain");
    }
    if (auth_required() && !who)
        return reply_status(c, 401, "Unauthorized", "Unauthorized", NULL, NULL, 0);
    const px_user *u = NULL;
    if (who && G.nusers > 0) {
        u = find_user(who);
        if (!u) {
            char msg[300];
            snprintf(msg, sizeof msg, "user \"%s\" cannot read anything", who);
            return reply_status(c, 403, "Forbidden", msg, NULL, NULL, 0);
        }
    }
    if (!is_get) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "the server does not allow this method on the requested "
                 "resource (the proxy is read-only)");
        return reply_status(c, 405, "MethodNotAllowed", msg, NULL, NULL, 0);
    }
    if (!strcmp(url, "/metrics")) {
        cur->verb = V_OTHER;
        return metrics(c);
    }
    cur->verb = V_DISCOVERY;
    if (!strcmp(url, "/version"))
        return reply_text(c, 200,
                          "{\"major\":\"1\",\"minor\":\"32\",\"gitVersion\":\"v1.32.0-wcache\","
                          "\"gitCommit\":\"\",\"gitTreeState\":\"clean\",\"buildDate\":\"\","
                          "\"goVersion\":\"\",\"compiler\":\"c\",\"platform\":\"linux/amd64\"}",
                          "application/json");
    if (!strcmp(url, "/api") || !strcmp(url, "/api/"))
        return disc_api(c);
    if (!strcmp(url, "/apis") || !strcmp(url, "/apis/"))
        return reply_text(c, 200,
                          "{\"kind\":\"APIGroupList\",\"apiVersion\":\"v1\",\"groups\":[]}",
                          "application/json");
    if (!strcmp(url, "/api/v1") || !strcmp(url, "/api/v1/"))
        return disc_v1(c);
    if (strncmp(url, "/api/v1/", 8) != 0)
        return reply_status(c, 404, "NotFound",
                            "the server could not find the requested resource", NULL, NULL, 0);
    /* /api/v1/{res}[/{name}] | /api/v1/namespaces/{ns}/{res}[/{name}] */
    char path[1024];
    if (strlen(url + 8) >= sizeof path)
        return reply_status(c, 414, "RequestURITooLong", "path too long", NULL, NULL, 0);
    strcpy(path, url + 8);
    char *seg[6];
    int n = 0;
    for (char *save, *s = strtok_r(path, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (n == 6)
            return reply_status(c, 404, "NotFound",
                                "the server could not find the requested resource", NULL, NULL,
                                0);
        seg[n++] = s;
    }
    px_req q = {.conn = c};
    if (n >= 3 && !strcmp(seg[0], "namespaces") && n <= 4) {
        q.ns = seg[1];
        q.r = cfg_find_resource(seg[2]);
        q.name = n == 4 ? seg[3] : NULL;
        if (q.r && !q.r->namespaced)
            q.r = NULL;
    } else if (n == 2 && !strcmp(seg[0], "namespaces")) {
        q.r = cfg_find_resource("namespaces");
        q.name = seg[1];
    } else if (n == 1 || n == 2) {
        q.r = cfg_find_resource(seg[0]);
        q.name = n == 2 ? seg[1] : NULL;
        if (q.r && q.r->namespaced && q.name)
            q.r = NULL;
    }
    if (!q.r)
        return reply_status(c, 404, "NotFound",
                            "the server could not find the requested resource", NULL, NULL, 0);
    q.q_watch = qv(c, "watch");
    cur->verb = q.name ? V_GET
                : (q.q_watch && (!strcmp(q.q_watch, "true") || !strcmp(q.q_watch, "1")))
                    ? V_WATCH
                    : V_LIST;
    /* allow-lists: the read-only RBAC subset */
    if (u) {
        const char *ns = q.ns;
        if (!strcmp(q.r->name, "namespaces") && q.name)
            ns = q.name;
        if (!allowed_res(u, q.r->name) ||
            ((q.r->namespaced || !strcmp(q.r->name, "namespaces")) && !allowed_ns(u, ns))) {
            char msg[600];
            snprintf(msg, sizeof msg,
                     "%s is forbidden: User \"%s\" cannot %s resource \"%s\"%s%s%s", q.r->name,
                     who, verb_names[cur->verb], q.r->name, ns ? " in the namespace \"" : "",
                     ns ? ns : "", ns ? "\"" : " at the cluster scope");
            return reply_status(c, 403, "Forbidden", msg, q.r->name, q.name, 0);
        }
    }
    if (!atomic_load(&q.r->ready))
        return reply_status(c, 429, "TooManyRequests",
                            "the cache is not synced yet; retry later", NULL, NULL,
                            retry_after_unready(q.r));
    q.q_rv = qv(c, "resourceVersion");
    q.q_rvm = qv(c, "resourceVersionMatch");
    q.q_limit = qv(c, "limit");
    q.q_continue = qv(c, "continue");
    q.q_labels = qv(c, "labelSelector");
    q.q_fields = qv(c, "fieldSelector");
    q.q_timeout = qv(c, "timeoutSeconds");
    q.q_bookmarks = qv(c, "allowWatchBookmarks");
    q.q_sie = qv(c, "sendInitialEvents");
    q.q_include = qv(c, "includeObject");
    const char *acc = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
    q.table = acc && strstr(acc, "as=Table") != NULL;
    q.user = u;
    if (who)
        snprintf(q.client, sizeof q.client, "user:%s", who);
    else {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        char host[INET6_ADDRSTRLEN] = "?";
        if (ci && ci->client_addr) {
            const struct sockaddr *sa = ci->client_addr;
            if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host,
                          sizeof host);
            else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host,
                          sizeof host);
        }
        snprintf(q.client, sizeof q.client, "addr:%s", host);
    }
    return api_serve(&q);
}

static enum MHD_Result qsum(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
    (void)kind;
    *(size_t *)cls += strlen(k) + (v ? strlen(v) : 0) + 2;
    return MHD_YES;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    (void)cls, (void)version, (void)upload;
    rctx *x = *con_cls;
    if (!x) {
        x = calloc(1, sizeof *x);
        if (!x)
            return MHD_NO;
        x->t0_us = now_us();
        x->verb = V_OTHER;
        *con_cls = x;
        /* answering a GET in this first call makes libmicrohttpd close the
         * connection after it: answer in the next one, so keep-alive works;
         * other methods (with bodies) are refused at once */
        if (!strcmp(method, "GET") || !strcmp(method, "HEAD"))
            return MHD_YES;
    } else if (x->code) {
        *upload_size = 0; /* answered already: drop any body */
        return MHD_YES;
    }
    cur = x;
    /* a bounded query: the sum of its arguments */
    size_t qlen = 0;
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, qsum, &qlen);
    if (qlen > (size_t)G.max_query_bytes) {
        int r =
            reply_status(c, 414, "RequestURITooLong", "the query is too long", NULL, NULL, 0);
        cur = NULL;
        return r == MHD_YES ? MHD_YES : MHD_NO;
    }
    int ret;
    char cn[256];
    const char *who = identify(c, cn, sizeof cn);
    ret = route(c, url, method, who);
    cur = NULL;
    return ret == MHD_YES ? MHD_YES : MHD_NO;
}

/* ------------------------------------------------------------------------ */
/* the daemon                                                                */
/* ------------------------------------------------------------------------ */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    pbuf b = {0};
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        pb_add(&b, tmp, n);
    fclose(f);
    pb_add(&b, "", 1);
    return b.p;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = 0;
    px_log("http: %s", msg);
}

static void mhd_panic(void *cls, const char *file, unsigned line, const char *reason)
{
    (void)cls;
    fprintf(stderr, "wcache-proxy: libmicrohttpd failure at %s:%u: %s\n", file, line,
            reason ? reason : "");
    abort();
}

/* Parse HOST:PORT ([v6]:PORT too) into addr; -1 on error. */
static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *sl)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || strlen(s) >= sizeof host)
        return -1;
    size_t hl = (size_t)(colon - s);
    const char *h = s;
    if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']')
        h = s + 1, hl -= 2;
    memcpy(host, h, hl);
    host[hl] = 0;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai)
        return -1;
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *sl = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

int http_start(void)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_listen(G.listen, &ss, &sl)) {
        fprintf(stderr, "wcache-proxy: --listen %s: expected HOST:PORT\n", G.listen);
        return -1;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    struct MHD_OptionItem opts[32];
    int n = 0;
#define OPT(o, v, p) opts[n++] = (struct MHD_OptionItem){o, (intptr_t)(v), p}
    OPT(MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL); /* first: it covers what follows */
    OPT(MHD_OPTION_SOCK_ADDR, 0, &ss);
    OPT(MHD_OPTION_THREAD_POOL_SIZE, G.threads, NULL);
    OPT(MHD_OPTION_CONNECTION_LIMIT, G.max_connections, NULL);
    if (G.max_connections_per_ip > 0)
        OPT(MHD_OPTION_PER_IP_CONNECTION_LIMIT, G.max_connections_per_ip, NULL);
    OPT(MHD_OPTION_CONNECTION_TIMEOUT, G.idle_timeout_s, NULL);
    /* bounds the request line and headers of one request */
    OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)G.max_header_bytes * 2, NULL);
    OPT(MHD_OPTION_NOTIFY_COMPLETED, completed, NULL);
    OPT(MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL);
    if (G.tls_cert) {
        if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
            fprintf(stderr, "wcache-proxy: this libmicrohttpd has no TLS\n");
            return -1;
        }
        tls_cert_mem = slurp(G.tls_cert);
        tls_key_mem = G.tls_key ? slurp(G.tls_key) : NULL;
        if (!tls_cert_mem || !tls_key_mem) {
            fprintf(stderr, "wcache-proxy: cannot read %s\n",
                    !tls_cert_mem ? G.tls_cert
                    : G.tls_key   ? G.tls_key
                                  : "--tls-key (missing)");
            return -1;
        }
        flags |= MHD_USE_TLS;
        OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, tls_cert_mem);
        OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, tls_key_mem);
        if (G.client_ca) {
            tls_ca_mem = slurp(G.client_ca);
            if (!tls_ca_mem) {
                fprintf(stderr, "wcache-proxy: cannot read %s\n", G.client_ca);
                return -1;
            }
            OPT(MHD_OPTION_HTTPS_MEM_TRUST, 0, tls_ca_mem);
        }
        tls_on = 1;
    }
    OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
    MHD_set_panic_func(mhd_panic, NULL);
    daemon_ = MHD_start_daemon(flags, 0, NULL, NULL, handler, NULL, MHD_OPTION_ARRAY, opts,
                               MHD_OPTION_END);
    if (!daemon_) {
        fprintf(stderr, "wcache-proxy: cannot listen on %s\n", G.listen);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
    char host[INET6_ADDRSTRLEN] = "127.0.0.1";
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
    if (ss.ss_family == AF_INET6)
        printf("LISTEN=[%s]:%u\n", host, di ? di->port : 0);
    else
        printf("LISTEN=%s:%u\n", host, di ? di->port : 0);
    fflush(stdout);
    return 0;
}

void api_stop_dispatcher(void);

void http_stop(void)
{
    if (!daemon_)
        return;
    MHD_quiesce_daemon(daemon_); /* no new connections */
    api_shutdown();
    MHD_stop_daemon(daemon_);
    daemon_ = NULL;
    api_stop_dispatcher();
    free(tls_cert_mem);
    free(tls_key_mem);
    free(tls_ca_mem);
}
