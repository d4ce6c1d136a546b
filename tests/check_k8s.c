/*
 * check_k8s.c - the Kubernetes watch-stream source (wcache_k8s_*),
 * black-box.
 *
 * No Kubernetes API server can run here, so a small loopback HTTP server
 * below (plain sockets, one thread per connection) stands in for one: it
 * serves LIST pages (limit and continue, one resourceVersion per list,
 * items without kind as a typed list has them), the resourceVersion of a
 * limit=1 LIST for consistent reads, and scripted watch streams cut into
 * tiny HTTP chunks; it checks the bearer token and records the
 * resourceVersion every watch asked for.
 *
 * Cases: every event type through a pipe with lines split across reads; a
 * catalogue of malformed and oversized lines (each a clear error, nothing
 * of the line applied); ERROR 410 in a piped stream re-listing through the
 * loopback list endpoint and reconciling (vanished keys reach a watcher as
 * deletes, exactly once, with no gap); the URL input with a bearer token
 * (paginated list, a stream the server ends, a 410, a refused token); the
 * synthetic stream (deterministic bytes, a fixed digest, every line
 * parses, a watch from R is the stream's suffix) and a restart that
 * restores a snapshot and catches up from its revision.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <watchcache.h>

#include "testutil.h"

#define PFX "/registry/pods/"

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

static int slow(void)
{
    const char *v = getenv("WCACHE_VALGRIND");
    return v && *v && strcmp(v, "0") != 0;
}

static wcache_k8s_stats kstat(const wcache_k8s *s)
{
    wcache_k8s_stats st = {.size = sizeof st};
    ck_assert_ok(wcache_k8s_stat(s, &st));
    return st;
}

static int not_running(void *ud)
{
    return !kstat(ud).running;
}

static void wait_done(wcache_k8s *s)
{
    ck_assert_msg(tu_wait_for(not_running, s, 60000), "the source did not end");
}

static void log_fn(int level, const char *msg, size_t len, void *ud)
{
    (void)ud;
    if (getenv("WCACHE_TEST_LOG"))
        fprintf(stderr, "log %d: %.*s\n", level, (int)len, msg);
}

static wcache_cache *new_cache(void)
{
    wcache_cache *c;
    ck_assert_ok(wcache_cache_create(&c, NULL));
    ck_assert_ok(wcache_cache_set_log(c, log_fn, WCACHE_LOG_DEBUG, NULL));
    return c;
}

static wcache_k8s_opts base_opts(void)
{
    wcache_k8s_opts o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.name = "test-pods";
    o.prefix = PFX;
    o.prefix_len = strlen(PFX);
    o.backoff_min_ms = 10;
    o.backoff_max_ms = 50;
    return o;
}

/* The value at key, at rev (0: latest), into buf; 0 when absent. */
static int get_at(wcache_cache *c, int64_t rev, const char *key, char *buf, size_t cap)
{
    wcache_view *v;
    ck_assert_ok(wcache_view_create(c, &v));
    ck_assert_ok(wcache_view_begin(v, rev));
    wcache_kv kv;
    wcache_code rc = wcache_view_get(v, key, strlen(key), &kv);
    int found = rc == WCACHE_OK;
    if (found) {
        size_t n = kv.value_len < cap - 1 ? kv.value_len : cap - 1;
        memcpy(buf, kv.value, n);
        buf[n] = 0;
    } else {
        ck_assert_wc(rc, WCACHE_ENOTFOUND);
    }
    wcache_view_free(v);
    return found;
}

/* Every revision in [lo, hi) reads as compacted. */
static void expect_compacted(wcache_cache *c, int64_t lo, int64_t hi)
{
    wcache_view *v;
    ck_assert_ok(wcache_view_create(c, &v));
    for (int64_t r = lo; r < hi; r++)
        ck_assert_wc(wcache_view_begin(v, r), WCACHE_ECOMPACTED);
    wcache_view_free(v);
}

static uint64_t count_at(wcache_cache *c, int64_t rev)
{
    wcache_view *v;
    ck_assert_ok(wcache_view_create(c, &v));
    ck_assert_ok(wcache_view_begin(v, rev));
    uint64_t n = 0;
    ck_assert_ok(wcache_view_count(v, NULL, &n));
    wcache_view_free(v);
    return n;
}

/* What a watcher saw, one line per delivery: "TYPE rev key". */
typedef struct seen {
    char text[8192];
    size_t len;
} seen;

static void drain(wcache_watch *w, seen *s, int64_t until_rev)
{
    int64_t end = tu_now_ms() + 30000, last = 0;
    while (last < until_rev && tu_now_ms() < end) {
        wcache_watch_event ev[16];
        size_t n = 0;
        ck_assert_ok(wcache_watch_wait(w, ev, 16, &n, 50));
        for (size_t i = 0; i < n; i++) {
            static const char *names[] = {"?",       "ADDED",    "MODIFIED",
                                          "DELETED", "BOOKMARK", "END"};
            if (ev[i].type != WCACHE_EV_BOOKMARK && ev[i].type != WCACHE_EV_INITIAL_END)
                s->len += (size_t)snprintf(s->text + s->len, sizeof s->text - s->len,
                                           "%s %lld %.*s\n", names[ev[i].type],
                                           (long long)ev[i].revision, (int)ev[i].kv.key_len,
                                           (const char *)ev[i].kv.key);
            last = ev[i].revision;
            wcache_event_unref(ev[i].ev);
        }
    }
}

static wcache_watch *watch_all(wcache_cache *c, int64_t from)
{
    wcache_watch_opts o = {.size = sizeof o};
    o.start_revision = from;
    o.queue_size = 100000;
    wcache_watch *w;
    ck_assert_ok(wcache_watch_open(c, &o, &w));
    return w;
}

static char *msgf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *msgf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    ck_assert_int_ge(vasprintf(&s, fmt, ap), 0);
    va_end(ap);
    return s;
}

/* A pod event line. */
static char *ev_line(const char *type, const char *ns, const char *name, int64_t rv,
                     const char *node)
{
    char nsf[128] = "";
    if (ns)
        snprintf(nsf, sizeof nsf, "\"namespace\":\"%s\",", ns);
    return msgf("{\"type\":\"%s\",\"object\":{\"apiVersion\":\"v1\",\"kind\":\"Pod\","
                "\"metadata\":{%s\"name\":\"%s\",\"resourceVersion\":\"%lld\","
                "\"labels\":{\"app\":\"web\"}},\"spec\":{\"nodeName\":\"%s\"}}}\n",
                type, nsf, name, (long long)rv, node);
}

static char *bm_line(int64_t rv)
{
    return msgf("{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\","
                "\"metadata\":{\"resourceVersion\":\"%lld\"}}}\n",
                (long long)rv);
}

static const char *GONE =
    "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},"
    "\"status\":\"Failure\",\"message\":\"too old resource version: 5 (9)\","
    "\"reason\":\"Expired\",\"code\":410}}\n";

/* A list item (no kind, as in a typed list). */
static char *item(const char *ns, const char *name, int64_t rv, const char *node)
{
    return msgf("{\"metadata\":{\"namespace\":\"%s\",\"name\":\"%s\",\"resourceVersion\":"
                "\"%lld\"},\"spec\":{\"nodeName\":\"%s\"}}",
                ns, name, (long long)rv, node);
}

/* ------------------------------------------------------------------ */
/* the stand-in API server                                             */
/* ------------------------------------------------------------------ */

#define SV_MAX_STREAMS 8
#define SV_MAX_STEPS 16
#define SV_MAX_ITEMS 16

typedef struct lspec {
    int64_t rev;
    const char *items[SV_MAX_ITEMS]; /* NULL-terminated */
} lspec;

typedef struct server {
    tu_srv srv;
    const char *token; /* NULL: no check */
    _Atomic int unauthorized;
    /* lists, in order: each list request with no continue takes the next */
    lspec lists[4];
    _Atomic int nlist;           /* lists begun */
    _Atomic int cur_list;        /* the list pages of continues come from */
    _Atomic int64_t current_rev; /* answer of limit=1 */
    _Atomic int limit1;          /* limit=1 requests */
    /* scripted watch streams, in order */
    const char *watch[SV_MAX_STREAMS][SV_MAX_STEPS];
    _Atomic int nwatch;
    _Atomic int64_t watch_rv[SV_MAX_STREAMS];
    _Atomic int bookmarks_asked;
} server;

static void reply(int fd, int status, const char *body)
{
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      status, strlen(body));
    tu_send_all(fd, head, (size_t)hl);
    tu_send_all(fd, body, strlen(body));
}

static long qnum(const char *q, const char *name, long dflt)
{
    char pat[64];
    snprintf(pat, sizeof pat, "%s=", name);
    for (const char *p = q; p && (p = strstr(p, pat)); p++)
        if (p == q || p[-1] == '?' || p[-1] == '&')
            return strtol(p + strlen(pat), NULL, 10);
    return dflt;
}

static void serve_list(server *sv, int fd, const char *q)
{
    long limit = qnum(q, "limit", 0);
    if (limit == 1) {
        atomic_fetch_add(&sv->limit1, 1);
        char b[160];
        snprintf(
            b, sizeof b,
            "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":"
            "\"%lld\"},\"items\":[]}",
            (long long)atomic_load(&sv->current_rev));
        reply(fd, 200, b);
        return;
    }
    long start = qnum(q, "continue", -1);
    int li;
    if (start < 0) {
        li = atomic_fetch_add(&sv->nlist, 1);
        atomic_store(&sv->cur_list, li);
        start = 0;
    } else {
        li = atomic_load(&sv->cur_list);
    }
    if (li >= 4 || sv->lists[li].rev == 0) {
        reply(fd, 500, "{\"kind\":\"Status\",\"code\":500}");
        return;
    }
    const lspec *l = &sv->lists[li];
    size_t n = 0;
    while (n < SV_MAX_ITEMS && l->items[n])
        n++;
    size_t end = limit > 0 && (size_t)(start + limit) < n ? (size_t)(start + limit) : n;
    char *b = msgf("{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{"
                   "\"resourceVersion\":\"%lld\"",
                   (long long)l->rev);
    if (end < n) {
        char *t = msgf("%s,\"continue\":\"%zu\"", b, end);
        free(b);
        b = t;
    }
    char *t = msgf("%s},\"items\":[", b);
    free(b);
    b = t;
    for (size_t i = (size_t)start; i < end; i++) {
        t = msgf("%s%s%s", b, i > (size_t)start ? "," : "", l->items[i]);
        free(b);
        b = t;
    }
    t = msgf("%s]}", b);
    free(b);
    reply(fd, 200, t);
    free(t);
}

static void serve_watch(server *sv, int fd, const char *q)
{
    int idx = atomic_fetch_add(&sv->nwatch, 1);
    if (idx >= SV_MAX_STREAMS)
        return;
    atomic_store(&sv->watch_rv[idx], qnum(q, "resourceVersion", -1));
    if (strstr(q, "allowWatchBookmarks=true"))
        atomic_fetch_add(&sv->bookmarks_asked, 1);
    tu_rng r = {(uint64_t)idx * 7919 + 1};
    const char *head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    if (tu_send_all(fd, head, strlen(head)))
        return;
    for (int i = 0; i < SV_MAX_STEPS && sv->watch[idx][i]; i++) {
        const char *s = sv->watch[idx][i];
        if (strcmp(s, "@HOLD") == 0) {
            tu_hold(&sv->srv, fd);
            return;
        }
        if (tu_send_chunked(fd, s, &r))
            return;
    }
    tu_send_all(fd, "0\r\n\r\n", 5); /* the server ends the stream */
}

static void serve(tu_srv *srv, int fd)
{
    server *sv = srv->ud;
    char req[16384];
    size_t n = 0;
    while (n < sizeof req - 1) {
        ssize_t k = recv(fd, req + n, sizeof req - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        req[n] = 0;
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    req[n] = 0;
    char path[4096] = "";
    sscanf(req, "GET %4095s", path);
    if (sv->token) {
        char want[256];
        snprintf(want, sizeof want, "Authorization: Bearer %s\r\n", sv->token);
        if (!strstr(req, want)) {
            atomic_fetch_add(&sv->unauthorized, 1);
            reply(fd, 401, "{\"kind\":\"Status\",\"code\":401,\"reason\":\"Unauthorized\"}");
            return;
        }
    }
    if (strncmp(path, "/list", 5) == 0)
        serve_list(sv, fd, path);
    else if (strncmp(path, "/watch", 6) == 0)
        serve_watch(sv, fd, path);
    else
        reply(fd, 404, "{}");
}

static void server_start(server *sv)
{
    tu_srv_start(&sv->srv, serve, sv);
}

static void server_stop(server *sv)
{
    tu_srv_stop(&sv->srv);
}

/* ------------------------------------------------------------------ */
/* the cases                                                           */
/* ------------------------------------------------------------------ */

typedef struct bytes_at {
    wcache_k8s *s;
    uint64_t n;
} bytes_at;

static int read_up_to(void *ud)
{
    bytes_at *b = ud;
    return kstat(b->s).bytes >= b->n;
}

/* Write line in two parts, the second only once the source has read the
 * first: every line reaches the parser split across reads. */
static void write_split(int fd, wcache_k8s *s, const char *line, uint64_t *sent)
{
    size_t n = strlen(line), k = n / 2 + 1;
    ck_assert_int_eq(write(fd, line, k), (ssize_t)k);
    *sent += k;
    bytes_at b = {s, *sent};
    ck_assert(tu_wait_for(read_up_to, &b, 10000));
    ck_assert_int_eq(write(fd, line + k, n - k), (ssize_t)(n - k));
    *sent += n - k;
    b.n = *sent;
    ck_assert(tu_wait_for(read_up_to, &b, 10000));
}

START_TEST(k8s_fd_event_types)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    wcache_cache *c = new_cache();
    wcache_k8s_opts o = base_opts();
    o.input = WCACHE_K8S_INPUT_FD;
    o.fd = p[0];
    wcache_k8s *s;
    ck_assert_ok(wcache_k8s_create(&s, c, &o));
    ck_assert_ok(wcache_cache_open(c));
    int64_t cur;
    ck_assert_wc(wcache_k8s_current_revision(s, &cur), WCACHE_ENOTREADY);
    wcache_watch *w = watch_all(c, 0);
    ck_assert_ok(wcache_k8s_start(s));
    char *lines[] = {ev_line("ADDED", "ns1", "a", 5, "n1"),
                     ev_line("ADDED", NULL, "node-1", 6, "-"), /* cluster-scoped */
                     ev_line("MODIFIED", "ns1", "a", 8, "n2"),
                     bm_line(12),
                     msgf("  \r\n"), /* a blank line is no line */
                     ev_line("DELETED", "ns1", "a", 14, "n2"),
                     bm_line(14), /* the last event's revision: nothing new */
                     NULL};
    uint64_t sent = 0;
    for (int i = 0; lines[i]; i++)
        write_split(p[1], s, lines[i], &sent);
    close(p[1]);
    wait_done(s);
    wcache_k8s_stats st = kstat(s);
    ck_assert_int_eq(st.ended, 1);
    ck_assert_int_eq(st.last_error, 0);
    ck_assert_int_eq(st.errors, 0);
    ck_assert_int_eq(st.lines, 6);
    ck_assert_int_eq(st.events, 4);
    ck_assert_int_eq(st.bookmarks, 1);
    ck_assert_int_eq(st.revision, 14);
    ck_assert_int_eq(st.synced, 1);
    ck_assert_int_eq(wcache_cache_revision(c), 14);
    /* values: the object as compact JSON, as of each revision */
    char v[4096];
    ck_assert(get_at(c, 5, PFX "ns1/a", v, sizeof v));
    ck_assert_str_eq(v, "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"namespace\":"
                        "\"ns1\",\"name\":\"a\",\"resourceVersion\":\"5\",\"labels\":{\"app\":"
                        "\"web\"}},\"spec\":{\"nodeName\":\"n1\"}}");
    ck_assert(get_at(c, 12, PFX "ns1/a", v, sizeof v));
    ck_assert(strstr(v, "\"nodeName\":\"n2\""));
    ck_assert(!get_at(c, 0, PFX "ns1/a", v, sizeof v));
    ck_assert(get_at(c, 0, PFX "node-1", v, sizeof v));
    ck_assert_int_eq(count_at(c, 0), 1);
    /* exactly these deliveries, once each, in order */
    seen sn = {{0}, 0};
    drain(w, &sn, 14);
    ck_assert_str_eq(sn.text, "ADDED 5 " PFX "ns1/a\n"
                              "ADDED 6 " PFX "node-1\n"
                              "MODIFIED 8 " PFX "ns1/a\n"
                              "DELETED 14 " PFX "ns1/a\n");
    /* the input ended: its last revision is the current one */
    ck_assert_ok(wcache_k8s_current_revision(s, &cur));
    ck_assert_int_eq(cur, 14);
    wcache_view *vw;
    ck_assert_ok(wcache_view_create(c, &vw));
    ck_assert_ok(wcache_view_begin_fresh(vw, -1, 2000));
    ck_assert_int_eq(wcache_view_revision(vw), 14);
    wcache_view_free(vw);
    size_t idl = 0;
    ck_assert_str_eq(wcache_k8s_source_id(s, &idl), "test-pods");
    ck_assert_int_eq(idl, 9);
    wcache_watch_close(w);
    wcache_k8s_free(s);
    wcache_cache_close(c);
    close(p[0]);
    for (int i = 0; lines[i]; i++)
        free(lines[i]);
}
END_TEST

/* A descriptor source stopped in the middle of a line and started again
 * goes on where it was: the half line read before the stop is kept. */
START_TEST(k8s_fd_stop_restart)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    wcache_cache *c = new_cache();
    wcache_k8s_opts o = base_opts();
    o.input = WCACHE_K8S_INPUT_FD;
    o.fd = p[0];
    wcache_k8s *s;
    ck_assert_ok(wcache_k8s_create(&s, c, &o));
    ck_assert_ok(wcache_cache_open(c));
    ck_assert_ok(wcache_k8s_start(s));
    char *l1 = ev_line("ADDED", "ns", "a", 5, "n1"), *l2 = ev_line("ADDED", "ns", "b", 6, "n2");
    size_t n1 = strlen(l1), half = strlen(l2) / 2;
    ck_assert_int_eq(write(p[1], l1, n1), (ssize_t)n1);
    ck_assert_int_eq(write(p[1], l2, half), (ssize_t)half);
    bytes_at b = {s, n1 + half};
    ck_assert(tu_wait_for(read_up_to, &b, 10000));
    ck_assert_ok(wcache_k8s_stop(s));
    ck_assert_int_eq(wcache_cache_revision(c), 5);
    ck_assert_int_eq(kstat(s).ended, 0);
    ck_assert_ok(wcache_k8s_start(s));
    ck_assert_int_eq(write(p[1], l2 + half, strlen(l2) - half), (ssize_t)(strlen(l2) - half));
    close(p[1]);
    wait_done(s);
    wcache_k8s_stats st = kstat(s);
    ck_assert_int_eq(st.last_error, 0);
    ck_assert_int_eq(st.ended, 1);
    ck_assert_int_eq(st.events, 2);
    ck_assert_int_eq(wcache_cache_revision(c), 6);
    ck_assert_int_eq(count_at(c, 0), 2);
    wcache_k8s_free(s);
    wcache_cache_close(c);
    close(p[0]);
    free(l1), free(l2);
}
END_TEST

static char TMPD[256];

static void tmp_up(void)
{
    snprintf(TMPD, sizeof TMPD, "%s/wcache-k8s.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(TMPD));
}

static void tmp_down(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", TMPD);
    if (system(cmd) != 0)
        fprintf(stderr, "check_k8s: could not remove %s\n", TMPD);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    ck_assert_int_eq(fclose(f), 0);
}

/* One bad line between two good ones, from a file: the input ends at the
 * bad line with code want; the first line is applied, nothing else. */
static void bad_line(const char *bad, int want, const char *list_url)
{
    char path[400];
    snprintf(path, sizeof path, "%s/bad.jsonl", TMPD);
    char *l1 = ev_line("ADDED", "ns", "a", 5, "n1"), *l3 = ev_line("ADDED", "ns", "z", 9, "n1");
    char *text = msgf("%s%s%s", l1, bad, l3);
    write_file(path, text);
    wcache_cache *c = new_cache();
    wcache_k8s_opts o = base_opts();
    o.input = WCACHE_K8S_INPUT_FILE;
    o.path = path;
    o.max_line_bytes = 4096;
    o.list_url = list_url;
    wcache_k8s *s;
    ck_assert_ok(wcache_k8s_create(&s, c, &o));
    ck_assert_ok(wcache_cache_open(c));
    ck_assert_ok(wcache_k8s_start(s));
    wait_done(s);
    wcache_k8s_stats st = kstat(s);
    ck_assert_msg(st.last_error == want, "%.60s: last_error %d (%s), want %d (%s)", bad,
                  st.last_error, wcache_strerror(st.last_error), want, wcache_strerror(want));
    ck_assert_int_eq(st.ended, 1);
    ck_assert_uint_ge(st.errors, 1);
    ck_assert_int_eq(st.events, 1);
    ck_assert_int_eq(wcache_cache_revision(c), 5);
    ck_assert_int_eq(count_at(c, 0), 1);
    char v[256];
    ck_assert(!get_at(c, 0, PFX "ns/z", v, sizeof v));
    int64_t cur;
    ck_assert_wc(wcache_k8s_current_revision(s, &cur),
                 list_url ? WCACHE_ECURL : WCACHE_ENOTREADY); /* no end reached */
    wcache_k8s_free(s);
    wcache_cache_close(c);
    free(l1), free(l3), free(text);
}

START_TEST(k8s_malformed_lines)
{
    char big[6000];
    memset(big, 'x', sizeof big);
    big[sizeof big - 1] = 0;
    char *oversized = msgf("{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"b\","
                           "\"namespace\":\"ns\",\"resourceVersion\":\"7\"},\"x\":\"%s\"}}\n",
                           big);
    struct {
        const char *line;
        int code;
    } cases[] = {
        {"{\"type\":\"ADDED\",\"object\":{\"metadata\":\n", WCACHE_ECORRUPT}, /* not JSON */
        {"[1,2,3]\n", WCACHE_ECORRUPT},
        {"{\"type\":\"ADDED\"}\n", WCACHE_ECORRUPT},           /* no object */
        {"{\"object\":{\"metadata\":{}}}\n", WCACHE_ECORRUPT}, /* no type */
        {"{\"type\":7,\"object\":{}}\n", WCACHE_ECORRUPT},
        {"{\"type\":\"RENAMED\",\"object\":{\"metadata\":{\"name\":\"b\",\"resourceVersion\":"
         "\"7\"}}}\n",
         WCACHE_ECORRUPT},
        {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a/b\",\"namespace\":\"ns\","
         "\"resourceVersion\":\"7\"}}}\n",
         WCACHE_ECORRUPT}, /* a name with a slash would forge another key */
        {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"..\",\"resourceVersion\":"
         "\"7\"}}}\n",
         WCACHE_ECORRUPT},
        {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"\",\"resourceVersion\":"
         "\"7\"}}}\n",
         WCACHE_ECORRUPT},
        {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"b\",\"namespace\":7,"
         "\"resourceVersion\":\"7\"}}}\n",
         WCACHE_ECORRUPT},
        {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"b\",\"resourceVersion\":"
         "\"seven\"}}}\n",
         WCACHE_ECORRUPT},
        {"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"b\"}}}\n",
         WCACHE_ECORRUPT}, /* no resourceVersion */
        {"{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{}}}\n", WCACHE_ECORRUPT},
        {"{\"type\":\"ADDED\",\"type\":\"DELETED\",\"object\":{}}\n", WCACHE_ECORRUPT},
        {"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":500,\"message\":"
         "\"etcdserver: request timed out\"}}\n",
         WCACHE_EHTTP},
        {oversized, WCACHE_ETOOBIG},
        /* without a list URL a 410 or a gap cannot be repaired */
        {GONE, WCACHE_ECOMPACTED},
        {"{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"ghost\",\"namespace\":"
         "\"ns\",\"resourceVersion\":\"7\"}}}\n",
         WCACHE_EORDER},
        {"{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"old\",\"namespace\":"
         "\"ns\",\"resourceVersion\":\"4\"}}}\n",
         WCACHE_EORDER}, /* behind what was applied */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        bad_line(cases[i].line, cases[i].code, NULL);
    free(oversized);
    /* with a list URL that cannot be reached, a 410 is retried until stopped:
     * here the list fails, so the source is stopped from outside */
    (void)0;
}
END_TEST

/* The source's thread is the writer: a 410 with an unreachable list URL
 * retries with backoff until stopped. */
START_TEST(k8s_relist_unreachable)
{
    char path[400];
    snprintf(path, sizeof path, "%s/gone.jsonl", TMPD);
    char *l1 = ev_line("ADDED", "ns", "a", 5, "n1");
    char *text = msgf("%s%s", l1, GONE);
    write_file(path, text);
    wcache_cache *c = new_cache();
    wcache_k8s_opts o = base_opts();
    o.input = WCACHE_K8S_INPUT_FILE;
    o.path = path;
    o.list_url = "http://127.0.0.1:1/list"; /* nothing listens on port 1 */
    wcache_k8s *s;
    ck_assert_ok(wcache_k8s_create(&s, c, &o));
    ck_assert_ok(wcache_cache_open(c));
    ck_assert_ok(wcache_k8s_start(s));
    int64_t end = tu_now_ms() + 20000;
    while (kstat(s).errors < 3 && tu_now_ms() < end)
        tu_pause_ms(5);
    wcache_k8s_stats st = kstat(s);
    ck_assert_uint_ge(st.errors, 3);
    ck_assert_int_eq(st.last_error, WCACHE_ECURL);
    ck_assert_int_eq(st.running, 1);
    ck_assert_ok(wcache_k8s_stop(s));
    ck_assert_int_eq(kstat(s).running, 0);
    ck_assert_int_eq(wcache_cache_revision(c), 5);
    wcache_k8s_free(s);
    wcache_cache_close(c);
    free(l1), free(text);
}
END_TEST

START_TEST(k8s_fd_relist_410)
{
    server *sv = calloc(1, sizeof *sv);
    /* the list at 20, items out of key order: d new, a modified at 12, c
     * unchanged (its bytes differ: kind is added back; its version does
     * not), e created at 15; b is gone */
    sv->lists[0].rev = 20;
    char *it[] = {item("ns", "d", 18, "n4"), item("ns", "a", 12, "n9"),
                  item("ns", "c", 7, "n3"), item("ns", "e", 15, "n5"), NULL};
    for (int i = 0; it[i]; i++)
        sv->lists[0].items[i] = it[i];
    server_start(sv);
    char lurl[128];
    snprintf(lurl, sizeof lurl, "http://127.0.0.1:%d/list/pods", sv->srv.port);

    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    wcache_cache *c = new_cache();
    wcache_k8s_opts o = base_opts();
    o.input = WCACHE_K8S_INPUT_FD;
    o.fd = p[0];
    o.list_url = lurl;
    o.page_limit = 3; /* two pages */
    wcache_k8s *s;
    ck_assert_ok(wcache_k8s_create(&s, c, &o));
    ck_assert_ok(wcache_cache_open(c));
    wcache_watch *w = watch_all(c, 0);
    ck_assert_ok(wcache_k8s_start(s));
    char *lines[] = {ev_line("ADDED", "ns", "a", 5, "n1"),
                     ev_line("ADDED", "ns", "b", 6, "n2"),
                     ev_line("ADDED", "ns", "c", 7, "n3"),
                     msgf("%s", GONE),
                     ev_line("ADDED", "ns", "e", 15, "n5"), /* the list has it: skipped */
                     ev_line("MODIFIED", "ns", "d", 21, "n6"),
                     bm_line(25),
                     NULL};
    uint64_t sent = 0;
    for (int i = 0; lines[i]; i++)
        write_split(p[1], s, lines[i], &sent);
    close(p[1]);
    wait_done(s);
    wcache_k8s_stats st = kstat(s);
    ck_assert_int_eq(st.last_error, 0);
    ck_assert_int_eq(st.ended, 1);
    ck_assert_int_eq(st.lists, 1);
    ck_assert_int_eq(st.relists, 1);
    ck_assert_int_eq(st.list_revision, 20);
    ck_assert_int_eq(st.relist_changes, 4);
    ck_assert_int_eq(st.skipped, 1);
    ck_assert_int_eq(st.bookmarks, 1);
    ck_assert_int_eq(wcache_cache_revision(c), 25);
    ck_assert_int_eq(atomic_load(&sv->nlist), 1);
    seen sn = {{0}, 0};
    drain(w, &sn, 21);
    ck_assert_str_eq(sn.text, "ADDED 5 " PFX "ns/a\n"
                              "ADDED 6 " PFX "ns/b\n"
                              "ADDED 7 " PFX "ns/c\n"
                              "MODIFIED 20 " PFX "ns/a\n"
                              "DELETED 20 " PFX "ns/b\n"
                              "ADDED 20 " PFX "ns/d\n"
                              "ADDED 20 " PFX "ns/e\n"
                              "MODIFIED 21 " PFX "ns/d\n");
    char v[1024];
    ck_assert(get_at(c, 20, PFX "ns/a", v, sizeof v));
    ck_assert_str_eq(v, "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"namespace\":"
                        "\"ns\",\"name\":\"a\",\"resourceVersion\":\"12\"},\"spec\":{"
                        "\"nodeName\":\"n9\"}}");
    ck_assert(get_at(c, 0, PFX "ns/c", v, sizeof v));
    ck_assert(strstr(v, "\"resourceVersion\":\"7\""));
    ck_assert_int_eq(count_at(c, 0), 4);
    /* what the re-list put reports the objects' resourceVersions as their
     * mod_revisions; the stream's numbering goes on from there */
    tu_expect_meta(c, 20, PFX "ns/a", 5, 12, 2);
    tu_expect_meta(c, 20, PFX "ns/c", 7, 7, 1);
    tu_expect_meta(c, 20, PFX "ns/d", 18, 18, 1);
    tu_expect_meta(c, 20, PFX "ns/e", 15, 15, 1);
    tu_expect_meta(c, 0, PFX "ns/d", 18, 21, 2);
    /* the states between 7 and 20 are not known */
    ck_assert_int_eq(wcache_cache_compacted_revision(c), 20);
    expect_compacted(c, 1, 20);
    /* the list URL answers consistent reads */
    atomic_store(&sv->current_rev, 25);
    int64_t cur = 0;
    ck_assert_ok(wcache_k8s_current_revision(s, &cur));
    ck_assert_int_eq(cur, 25);
    ck_assert_int_ge(atomic_load(&sv->limit1), 1);
    wcache_watch_close(w);
    wcache_k8s_free(s);
    wcache_cache_close(c);
    close(p[0]);
    server_stop(sv);
    for (int i = 0; lines[i]; i++)
        free(lines[i]);
    for (int i = 0; it[i]; i++)
        free(it[i]);
    free(sv);
}
END_TEST

typedef struct revwait {
    wcache_cache *c;
    int64_t rev;
} revwait;

static int rev_reached(void *ud)
{
    revwait *r = ud;
    return wcache_cache_revision(r->c) >= r->rev;
}

START_TEST(k8s_url_watch_token)
{
    server *sv = calloc(1, sizeof *sv);
    sv->token = "s3cret-token";
    sv->lists[0].rev = 100;
    char *l0[] = {item("ns", "x", 90, "n1"), item("ns", "y", 95, "n2"),
                  item("ns", "z", 99, "n3"), NULL};
    for (int i = 0; l0[i]; i++)
        sv->lists[0].items[i] = l0[i];
    /* the re-list at 200: x gone, w modified at 150, y and z unchanged */
    sv->lists[1].rev = 200;
    char *l1[] = {item("ns", "w", 150, "n7"), item("ns", "y", 95, "n2"),
                  item("ns", "z", 99, "n3"), NULL};
    for (int i = 0; l1[i]; i++)
        sv->lists[1].items[i] = l1[i];
    char *e101 = ev_line("MODIFIED", "ns", "x", 101, "n4"),
         *e102 = ev_line("ADDED", "ns", "w", 102, "n5");
    char *b110 = bm_line(110), *e201 = ev_line("ADDED", "ns", "v", 201, "n8");
    /* stream 0 from 100: two events and a bookmark, then the server ends it */
    sv->watch[0][0] = e101;
    sv->watch[0][1] = e102;
    sv->watch[0][2] = b110;
    /* stream 1 from 110: too old by now: 410, and the server closes */
    sv->watch[1][0] = GONE;
    /* stream 2 from 200, after the re-list */
    sv->watch[2][0] = e201;
    sv->watch[2][1] = "@HOLD";
    server_start(sv);
    char url[160], lurl[160];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/watch/pods?watch=true", sv->srv.port);
    snprintf(lurl, sizeof lurl, "http://127.0.0.1:%d/list/pods", sv->srv.port);

    wcache_cache *c = new_cache();
    wcache_k8s_opts o = base_opts();
    o.input = WCACHE_K8S_INPUT_URL;
    o.url = url;
    o.list_url = lurl;
    o.bearer_token = "s3cret-token";
    o.page_limit = 2; /* the first list comes in two pages */
    wcache_k8s *s;
    ck_assert_ok(wcache_k8s_create(&s, c, &o));
    ck_assert_ok(wcache_cache_open(c));
    /* live from the start: a watcher still replaying history from below
     * the re-list's revision would end compacted */
    wcache_watch *w = watch_all(c, 100);
    ck_assert_ok(wcache_k8s_start(s));
    revwait rw = {c, 201};
    ck_assert(tu_wait_for(rev_reached, &rw, 20000));
    wcache_k8s_stats st = kstat(s);
    ck_assert_int_eq(st.synced, 1);
    ck_assert_int_eq(st.running, 1);
    ck_assert_int_eq(st.lists, 2);
    ck_assert_int_eq(st.relists, 1);
    ck_assert_int_eq(st.relist_changes, 2);
    ck_assert_int_eq(st.list_revision, 200);
    ck_assert_int_ge(st.connects, 3);
    ck_assert_int_eq(atomic_load(&sv->watch_rv[0]), 100);
    ck_assert_int_eq(atomic_load(&sv->watch_rv[1]), 110);
    ck_assert_int_eq(atomic_load(&sv->watch_rv[2]), 200);
    ck_assert_int_eq(atomic_load(&sv->bookmarks_asked), atomic_load(&sv->nwatch));
    ck_assert_int_eq(atomic_load(&sv->unauthorized), 0);
    seen sn = {{0}, 0};
    drain(w, &sn, 201);
    ck_assert_str_eq(sn.text, "MODIFIED 101 " PFX "ns/x\n"
                              "ADDED 102 " PFX "ns/w\n"
                              "MODIFIED 200 " PFX "ns/w\n"
                              "DELETED 200 " PFX "ns/x\n"
                              "ADDED 201 " PFX "ns/v\n");
    ck_assert_int_eq(count_at(c, 0), 4);
    expect_compacted(c, 100, 200);
    tu_expect_meta(c, 200, PFX "ns/w", 102, 150, 2);
    tu_expect_meta(c, 200, PFX "ns/y", 95, 95, 1);
    tu_expect_meta(c, 0, PFX "ns/v", 201, 201, 1);
    /* consistent read: the server's current revision, then the cache */
    atomic_store(&sv->current_rev, 201);
    wcache_view *vw;
    ck_assert_ok(wcache_view_create(c, &vw));
    ck_assert_ok(wcache_view_begin_fresh(vw, -1, 3000));
    ck_assert_int_eq(wcache_view_revision(vw), 201);
    atomic_store(&sv->current_rev, 500); /* never reached: times out */
    ck_assert_wc(wcache_view_begin_fresh(vw, -1, 200), WCACHE_ETIMEDOUT);
    wcache_view_free(vw);
    ck_assert_ok(wcache_k8s_stop(s));
    ck_assert_int_eq(kstat(s).running, 0);
    wcache_watch_close(w);
    wcache_k8s_free(s);
    wcache_cache_close(c);

    /* a wrong token: refused, counted, nothing applied, retried */
    c = new_cache();
    o.bearer_token = "wrong";
    ck_assert_ok(wcache_k8s_create(&s, c, &o));
    ck_assert_ok(wcache_cache_open(c));
    ck_assert_ok(wcache_k8s_start(s));
    int64_t end = tu_now_ms() + 20000;
    while (kstat(s).errors < 2 && tu_now_ms() < end)
        tu_pause_ms(5);
    st = kstat(s);
    ck_assert_uint_ge(st.errors, 2);
    ck_assert_int_eq(st.last_error, WCACHE_EHTTP);
    ck_assert_int_eq(st.synced, 0);
    ck_assert_int_eq(wcache_cache_revision(c), 0);
    ck_assert_int_ge(atomic_load(&sv->unauthorized), 2);
    int64_t cur;
    ck_assert_wc(wcache_k8s_current_revision(s, &cur), WCACHE_EHTTP);
    wcache_k8s_free(s);
    wcache_cache_close(c);
    server_stop(sv);
    for (int i = 0; l0[i]; i++)
        free(l0[i]);
    for (int i = 0; l1[i]; i++)
        free(l1[i]);
    free(e101), free(e102), free(b110), free(e201);
    free(sv);
}
END_TEST

/* ---- HTTPS: openssl s_server -WWW stands in for the API server ---- */

/*
 * s_server -WWW answers "GET /PATH" with the file PATH under its working
 * directory, query string included in the name, then closes: enough for a
 * LIST, and for a watch that the server ends.  It checks no token (the
 * loopback server above does); what is tested here is TLS: verified with
 * the test's CA, refused without it, accepted with insecure = 1.
 */
static pid_t TLS_PID;
static int TLS_PORT;

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t al = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    return ntohs(a.sin_port);
}

static int tls_listening(void *ud)
{
    (void)ud;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)TLS_PORT)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Certificates made by openssl in TMPD (EC keys: fast), the files the
 * server serves, and the server.  0 when openssl is missing. */
static int tls_up(void)
{
    char cmd[4096];
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; mkdir -p www/list www/watch; exec 2>openssl.log;"
             "openssl req -x509 %s -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=wcache-ca;"
             "printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >s.cnf;"
             "openssl req %s -keyout server-key.pem -out s.csr -subj /CN=127.0.0.1;"
             "openssl x509 -req -in s.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial "
             "-out server.pem -days 2 -extfile s.cnf",
             TMPD, ec, ec);
    if (system(cmd) != 0)
        return 0;
    char path[600];
    snprintf(path, sizeof path, "%s/www/list/pods?limit=10000", TMPD);
    char *i1 = item("ns", "x", 90, "n1");
    char *list = msgf("{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{"
                      "\"resourceVersion\":\"100\"},\"items\":[%s]}",
                      i1);
    write_file(path, list);
    snprintf(path, sizeof path,
             "%s/www/watch/pods?watch=true&allowWatchBookmarks=true&resourceVersion=100", TMPD);
    char *e1 = ev_line("MODIFIED", "ns", "x", 101, "n2"),
         *e2 = ev_line("ADDED", "ns", "y", 102, "n3");
    char *b = bm_line(110), *stream = msgf("%s%s%s", e1, e2, b);
    write_file(path, stream);
    free(i1), free(list), free(e1), free(e2), free(b), free(stream);
    TLS_PORT = free_port();
    TLS_PID = fork();
    ck_assert_int_ge(TLS_PID, 0);
    if (TLS_PID == 0) {
        char www[400], acc[64], cert[400], key[400];
        snprintf(www, sizeof www, "%s/www", TMPD);
        snprintf(acc, sizeof acc, "127.0.0.1:%d", TLS_PORT);
        snprintf(cert, sizeof cert, "%s/server.pem", TMPD);
        snprintf(key, sizeof key, "%s/server-key.pem", TMPD);
        if (chdir(www) != 0)
            _exit(127);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0), dup2(null, 1), dup2(null, 2);
        execlp("openssl", "openssl", "s_server", "-WWW", "-quiet", "-accept", acc, "-cert",
               cert, "-key", key, (char *)NULL);
        _exit(127);
    }
    ck_assert_msg(tu_wait_for(tls_listening, NULL, 20000), "openssl s_server did not start");
    return 1;
}

static void tls_down(void)
{
    if (TLS_PID > 0) {
        kill(TLS_PID, SIGTERM);
        waitpid(TLS_PID, NULL, 0);
        TLS_PID = 0;
    }
}

static int errors_seen(void *ud)
{
    return kstat(ud).errors >= 1;
}

/* A source over https with the given CA / insecure; returns it started. */
static wcache_k8s *tls_source(wcache_cache **c, const char *ca, int insecure)
{
    char url[160], lurl[160];
    snprintf(url, sizeof url, "https://127.0.0.1:%d/watch/pods?watch=true", TLS_PORT);
    snprintf(lurl, sizeof lurl, "https://127.0.0.1:%d/list/pods", TLS_PORT);
    *c = new_cache();
    wcache_k8s_opts o = base_opts();
    o.input = WCACHE_K8S_INPUT_URL;
    o.url = url;
    o.list_url = lurl;
    o.ca_file = ca;
    o.insecure = insecure;
    o.bearer_token = "ignored-by-s_server";
    o.backoff_min_ms = 200; /* the stream ends at once: reconnects back off */
    o.backoff_max_ms = 400;
    wcache_k8s *s;
    ck_assert_ok(wcache_k8s_create(&s, *c, &o));
    ck_assert_ok(wcache_cache_open(*c));
    ck_assert_ok(wcache_k8s_start(s));
    return s;
}

START_TEST(k8s_https)
{
    if (!tls_up()) {
        fprintf(stderr, "check_k8s: SKIPPED https: openssl could not make certificates\n");
        return;
    }
    char ca[400];
    snprintf(ca, sizeof ca, "%s/ca.pem", TMPD);
    /* the test's CA; no verification (not under valgrind: libcrypto is slow there) */
    for (int mode = 0; mode < (slow() ? 1 : 2); mode++) {
        wcache_cache *c;
        wcache_k8s *s = tls_source(&c, mode == 0 ? ca : NULL, mode == 1);
        revwait rw = {c, 110};
        ck_assert_msg(tu_wait_for(rev_reached, &rw, 20000), "mode %d: revision %lld", mode,
                      (long long)wcache_cache_revision(c));
        wcache_k8s_stats st = kstat(s);
        ck_assert_int_eq(st.lists, 1);
        ck_assert_int_eq(st.events, 2);
        ck_assert_int_eq(count_at(c, 0), 2);
        char v[512];
        ck_assert(get_at(c, 0, PFX "ns/x", v, sizeof v));
        ck_assert(strstr(v, "\"resourceVersion\":\"101\""));
        wcache_k8s_free(s);
        wcache_cache_close(c);
    }
    /* the system's CAs do not know the test's: refused, nothing applied */
    wcache_cache *c;
    wcache_k8s *s = tls_source(&c, NULL, 0);
    ck_assert(tu_wait_for(errors_seen, s, 20000));
    wcache_k8s_stats st = kstat(s);
    ck_assert_int_eq(st.last_error, WCACHE_ECURL);
    ck_assert_int_eq(st.synced, 0);
    ck_assert_int_eq(wcache_cache_revision(c), 0);
    int64_t cur;
    ck_assert_wc(wcache_k8s_current_revision(s, &cur), WCACHE_ECURL);
    wcache_k8s_free(s);
    wcache_cache_close(c);
    tls_down();
}
END_TEST

START_TEST(k8s_api_errors)
{
    wcache_cache *c = new_cache();
    wcache_k8s *s = NULL;
    wcache_k8s_opts o = base_opts();
    ck_assert_wc(wcache_k8s_create(&s, c, &o), WCACHE_EINVAL); /* no input */
    o.input = WCACHE_K8S_INPUT_FD;
    o.fd = -1;
    ck_assert_wc(wcache_k8s_create(&s, c, &o), WCACHE_EINVAL);
    o.input = WCACHE_K8S_INPUT_FILE;
    ck_assert_wc(wcache_k8s_create(&s, c, &o), WCACHE_EINVAL); /* no path */
    o.input = WCACHE_K8S_INPUT_URL;
    o.url = "http://127.0.0.1:1/watch";
    ck_assert_wc(wcache_k8s_create(&s, c, &o), WCACHE_EINVAL); /* no list URL */
    o.list_url = "ftp://127.0.0.1/list";
    ck_assert_wc(wcache_k8s_create(&s, c, &o), WCACHE_EINVAL);
    o.list_url = "http://127.0.0.1:1/list";
    o.bearer_token = "a\r\nX-Evil: 1";
    ck_assert_wc(wcache_k8s_create(&s, c, &o), WCACHE_EINVAL);
    o.bearer_token = NULL;
    o.name = NULL;
    ck_assert_wc(wcache_k8s_create(&s, c, &o), WCACHE_EINVAL); /* no name */
    o.name = "";
    ck_assert_wc(wcache_k8s_create(&s, c, &o), WCACHE_EINVAL);
    o.name = "x";
    o.size = 8;
    ck_assert_wc(wcache_k8s_create(&s, c, &o), WCACHE_EINVAL);
    o = base_opts();
    o.input = WCACHE_K8S_INPUT_SYNTHETIC;
    o.resources = 4;
    ck_assert_wc(wcache_k8s_create(&s, c, &o), WCACHE_EINVAL);
    o.resources = 0;
    o.name = NULL; /* the synthetic stream names itself */
    o.seed = 9;
    ck_assert_ok(wcache_k8s_create(&s, c, &o));
    ck_assert_str_eq(wcache_k8s_source_id(s, NULL),
                     "k8s-synthetic/v1 seed=9 resources=pods,configmaps");
    ck_assert_wc(wcache_k8s_start(s), WCACHE_ESTATE); /* cache not open */
    ck_assert_ok(wcache_cache_open(c));
    wcache_k8s *s2;
    ck_assert_wc(wcache_k8s_create(&s2, c, &o), WCACHE_ESTATE); /* open */
    ck_assert_ok(wcache_k8s_start(s));
    ck_assert_wc(wcache_k8s_start(s), WCACHE_ESTATE);
    ck_assert_ok(wcache_k8s_stop(s));
    ck_assert_ok(wcache_k8s_stop(s));
    wcache_k8s_stats st = {.size = 4};
    ck_assert_wc(wcache_k8s_stat(s, &st), WCACHE_EINVAL);
    ck_assert_wc(wcache_k8s_stat(NULL, &st), WCACHE_EINVAL);
    ck_assert_ptr_null(wcache_k8s_source_id(NULL, NULL));
    ck_assert_wc(wcache_k8s_start(NULL), WCACHE_EINVAL);
    ck_assert_wc(wcache_k8s_synthetic_write(-1, 1, 0, 0, NULL), WCACHE_EINVAL);
    ck_assert_wc(wcache_k8s_synthetic_write(1, 1, 8, 0, NULL), WCACHE_EINVAL);
    ck_assert_wc(wcache_k8s_synthetic_write(1, 1, 0, -1, NULL), WCACHE_EINVAL);
    /* a pipe nobody reads: an error, not a SIGPIPE that kills the program */
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    close(p[0]);
    ck_assert_wc(wcache_k8s_synthetic_write(p[1], 1, 0, 0, NULL), WCACHE_ESYS);
    ck_assert_int_eq(errno, EPIPE);
    close(p[1]);
    wcache_k8s_free(s);
    wcache_k8s_free(NULL);
    wcache_cache_close(c);
}
END_TEST

/* ---- the synthetic stream ---- */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    ck_assert_int_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void synth_to(const char *path, uint64_t seed, int res, int64_t after, int64_t *last)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_ok(wcache_k8s_synthetic_write(fd, seed, res, after, last));
    ck_assert_int_eq(close(fd), 0);
}

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
    return h;
}

START_TEST(k8s_synthetic_stream)
{
    /* Under valgrind only the configmaps (a tenth of the bytes). */
    int res = slow() ? WCACHE_K8S_CONFIGMAPS : 0;
    char a[400], b[400], t[400];
    snprintf(a, sizeof a, "%s/a.jsonl", TMPD);
    snprintf(b, sizeof b, "%s/b.jsonl", TMPD);
    snprintf(t, sizeof t, "%s/tail.jsonl", TMPD);
    int64_t last = 0, last2 = 0;
    synth_to(a, 2026, res, 0, &last);
    synth_to(b, 2026, res, 0, &last2);
    ck_assert_int_eq(last, 16800);
    ck_assert_int_eq(last2, last);
    size_t na, nb;
    char *A = slurp(a, &na), *B = slurp(b, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(A, B, na) == 0);
    /* The same bytes everywhere: a change of the generator (or of
     * bench/podgen.h) shows here, and must come with a new identity. */
    if (res == 0)
        ck_assert_msg(fnv1a(A, na) == 0xda9d33648fbb9820ULL, "digest %016llx",
                      (unsigned long long)fnv1a(A, na));
    free(B);
    synth_to(b, 2027, res, 0, NULL);
    B = slurp(b, &nb);
    ck_assert(nb != na || memcmp(A, B, na) != 0);
    free(B);
    /* Every line is a watch event whose object parses, in revision order;
     * the watch from R is exactly the lines above R. */
    int64_t R = 9000;
    synth_to(t, 2026, res, R, NULL);
    size_t nt;
    char *T = slurp(t, &nt);
    size_t suffix = 0;
    int64_t prev = 0;
    uint64_t counts[6] = {0};
    /* memchr, not strchr: ASan's strict_string_checks make every strchr
     * measure the rest of the 20 MB stream first (O(n^2): 3 minutes). */
    for (char *p = A; p < A + na;) {
        char *nl = memchr(p, '\n', (size_t)(A + na - p));
        ck_assert_ptr_nonnull(nl);
        json_error_t je;
        json_t *ev = json_loadb(p, (size_t)(nl - p), JSON_REJECT_DUPLICATES, &je);
        ck_assert_msg(ev != NULL, "line does not parse: %s", je.text);
        const char *type = json_string_value(json_object_get(ev, "type"));
        json_t *md = json_object_get(json_object_get(ev, "object"), "metadata");
        int64_t rv =
            strtoll(json_string_value(json_object_get(md, "resourceVersion")), NULL, 10);
        ck_assert_int_ge(rv, prev);
        prev = rv;
        if (strcmp(type, "BOOKMARK") != 0) {
            ck_assert(json_is_string(json_object_get(md, "namespace")));
            ck_assert(json_is_string(json_object_get(md, "uid")));
            ck_assert(json_is_string(json_object_get(md, "creationTimestamp")));
            ck_assert(json_is_object(json_object_get(md, "labels")));
        }
        counts[type[0] == 'A' ? 0 : type[0] == 'M' ? 1 : type[0] == 'D' ? 2 : 3]++;
        if (rv <= R)
            suffix = (size_t)(nl + 1 - A);
        json_decref(ev);
        p = nl + 1;
    }
    ck_assert_int_eq(prev, last);
    ck_assert_uint_gt(counts[0], 1000);
    ck_assert_uint_gt(counts[1], 1000);
    ck_assert_uint_gt(counts[2], 100);
    ck_assert_uint_gt(counts[3], 30);
    ck_assert_uint_eq(nt, na - suffix);
    ck_assert(memcmp(T, A + suffix, nt) == 0);
    free(T);
    free(A);
}
END_TEST

static wcache_k8s *synth_source(wcache_cache *c, int res)
{
    wcache_k8s_opts o = base_opts();
    o.name = NULL;
    o.input = WCACHE_K8S_INPUT_SYNTHETIC;
    o.seed = 2026;
    o.resources = res;
    wcache_k8s *s;
    ck_assert_ok(wcache_k8s_create(&s, c, &o));
    return s;
}

/* Two caches hold the same objects at the latest revision. */
static void same_latest(wcache_cache *x, wcache_cache *y)
{
    wcache_view *vx, *vy;
    ck_assert_ok(wcache_view_create(x, &vx));
    ck_assert_ok(wcache_view_create(y, &vy));
    ck_assert_ok(wcache_view_begin(vx, 0));
    ck_assert_ok(wcache_view_begin(vy, 0));
    ck_assert_int_eq(wcache_view_revision(vx), wcache_view_revision(vy));
    wcache_list_opts ox = {.size = sizeof ox}, oy = {.size = sizeof oy};
    wcache_kv ix[128], iy[128];
    char *tx = NULL, *ty = NULL;
    uint64_t total = 0;
    for (;;) {
        wcache_list_result rx = {.size = sizeof rx}, ry = {.size = sizeof ry};
        ck_assert_ok(wcache_view_list(vx, &ox, ix, 128, &rx));
        ck_assert_ok(wcache_view_list(vy, &oy, iy, 128, &ry));
        ck_assert_uint_eq(rx.count, ry.count);
        for (size_t i = 0; i < rx.count; i++) {
            ck_assert_uint_eq(ix[i].key_len, iy[i].key_len);
            ck_assert(memcmp(ix[i].key, iy[i].key, ix[i].key_len) == 0);
            ck_assert_uint_eq(ix[i].value_len, iy[i].value_len);
            ck_assert(memcmp(ix[i].value, iy[i].value, ix[i].value_len) == 0);
        }
        total += rx.count;
        ck_assert_int_eq(rx.more, ry.more);
        if (!rx.more)
            break;
        free(tx), free(ty);
        tx = strndup(rx.token, rx.token_len);
        ty = strndup(ry.token, ry.token_len);
        ox.token = tx, ox.token_len = rx.token_len;
        oy.token = ty, oy.token_len = ry.token_len;
    }
    ck_assert_uint_gt(total, 100);
    free(tx), free(ty);
    wcache_view_free(vx);
    wcache_view_free(vy);
}

START_TEST(k8s_synthetic_restore_catch_up)
{
    int res = slow() ? WCACHE_K8S_CONFIGMAPS : WCACHE_K8S_PODS;
    /* A: the whole stream through the synthetic input */
    wcache_cache *a = new_cache();
    ck_assert_ok(wcache_cache_set_param(a, WCACHE_P_RETAIN_REVISIONS, 100000));
    wcache_k8s *sa = synth_source(a, res);
    ck_assert_ok(wcache_cache_open(a));
    ck_assert_ok(wcache_k8s_start(sa));
    wait_done(sa);
    wcache_k8s_stats st = kstat(sa);
    ck_assert_int_eq(st.last_error, 0);
    ck_assert_int_eq(st.errors, 0);
    ck_assert_int_eq(st.ended, 1);
    ck_assert_int_eq(st.revision, 16800);
    ck_assert_uint_gt(st.bookmarks, 5);
    /* the same stream from a file through the file input (not under
     * valgrind: the default and sanitizer runs cover it) */
    if (!slow()) {
        char path[400];
        snprintf(path, sizeof path, "%s/synth.jsonl", TMPD);
        synth_to(path, 2026, res, 0, NULL);
        wcache_cache *f = new_cache();
        wcache_k8s_opts o = base_opts();
        o.input = WCACHE_K8S_INPUT_FILE;
        o.path = path;
        wcache_k8s *sf;
        ck_assert_ok(wcache_k8s_create(&sf, f, &o));
        ck_assert_ok(wcache_cache_open(f));
        ck_assert_ok(wcache_k8s_start(sf));
        wait_done(sf);
        ck_assert_int_eq(kstat(sf).errors, 0);
        ck_assert_uint_eq(kstat(sf).events, st.events);
        same_latest(a, f);
        wcache_k8s_free(sf);
        wcache_cache_close(f);
    }

    /* a snapshot of A at a past revision S, as if the process had written
     * it then; B restores it and the synthetic input catches up from S */
    const int64_t S = 9000;
    char snap[400];
    snprintf(snap, sizeof snap, "%s/pods.wcsnap", TMPD);
    size_t idl;
    const char *id = wcache_k8s_source_id(sa, &idl);
    wcache_snapshot_write_opts wo = {.size = sizeof wo};
    wo.revision = S;
    wo.source_id = id;
    wo.source_id_len = idl;
    ck_assert_ok(wcache_snapshot_write(a, snap, &wo, NULL));
    wcache_cache *b = new_cache();
    wcache_k8s *sb = synth_source(b, res);
    ck_assert_ok(wcache_cache_open(b));
    wcache_snapshot_read_opts ro = {.size = sizeof ro};
    ro.expect_source_id = wcache_k8s_source_id(sb, &ro.expect_source_id_len);
    ck_assert_ok(wcache_snapshot_restore(b, snap, &ro, NULL));
    ck_assert_int_eq(wcache_cache_revision(b), S);
    wcache_watch *w = watch_all(b, S);
    ck_assert_ok(wcache_k8s_start(sb));
    wait_done(sb);
    wcache_k8s_stats sbs = kstat(sb);
    ck_assert_int_eq(sbs.errors, 0);
    ck_assert_int_eq(sbs.revision, 16800);
    ck_assert_uint_lt(sbs.events, st.events); /* only what followed S */
    same_latest(a, b);
    /* the watcher on B saw every change after S once: as many as A has */
    wcache_watch *wa = watch_all(a, S);
    seen sa_seen = {{0}, 0}, sb_seen = {{0}, 0};
    (void)sa_seen, (void)sb_seen;
    uint64_t na = 0, nb = 0;
    int64_t end = tu_now_ms() + 30000, la = 0, lb = 0;
    while ((la < 16800 || lb < 16800) && tu_now_ms() < end) {
        wcache_watch_event ev[64];
        size_t n = 0;
        ck_assert_ok(wcache_watch_wait(wa, ev, 64, &n, 10));
        for (size_t i = 0; i < n; i++) {
            ck_assert_int_gt(ev[i].revision, la);
            la = ev[i].revision;
            na++;
            wcache_event_unref(ev[i].ev);
        }
        ck_assert_ok(wcache_watch_wait(w, ev, 64, &n, 10));
        for (size_t i = 0; i < n; i++) {
            ck_assert_int_gt(ev[i].revision, lb);
            lb = ev[i].revision;
            nb++;
            wcache_event_unref(ev[i].ev);
        }
        if (la >= wcache_cache_revision(a) && lb >= wcache_cache_revision(b))
            break;
    }
    ck_assert_uint_eq(na, nb);
    ck_assert_uint_eq(nb, sbs.events);
    /* a snapshot of another source is refused */
    wcache_cache *d = new_cache();
    ck_assert_ok(wcache_cache_open(d));
    ro.expect_source_id = "k8s-synthetic/v1 seed=1 resources=pods";
    ro.expect_source_id_len = strlen(ro.expect_source_id);
    ck_assert_wc(wcache_snapshot_restore(d, snap, &ro, NULL), WCACHE_EINVAL);
    wcache_cache_close(d);
    wcache_watch_close(w);
    wcache_watch_close(wa);
    wcache_k8s_free(sb);
    wcache_cache_close(b);
    wcache_k8s_free(sa);
    wcache_cache_close(a);
}
END_TEST

Suite *k8s_suite(void)
{
    Suite *s = suite_create("k8s");
    TCase *tc = tcase_create("stream");
    tcase_set_timeout(tc, tu_timeout(120));
    tcase_add_unchecked_fixture(tc, tmp_up, tmp_down);
    tcase_add_test(tc, k8s_api_errors);
    tcase_add_test(tc, k8s_fd_event_types);
    tcase_add_test(tc, k8s_fd_stop_restart);
    tcase_add_test(tc, k8s_malformed_lines);
    tcase_add_test(tc, k8s_relist_unreachable);
    tcase_add_test(tc, k8s_fd_relist_410);
    tcase_add_test(tc, k8s_url_watch_token);
    suite_add_tcase(s, tc);
    tc = tcase_create("https");
    tcase_set_timeout(tc, tu_timeout(120));
    tcase_add_unchecked_fixture(tc, tmp_up, tmp_down);
    tcase_add_checked_fixture(tc, NULL, tls_down);
    tcase_add_test(tc, k8s_https);
    suite_add_tcase(s, tc);
    tc = tcase_create("synthetic");
    tcase_set_timeout(tc, tu_timeout(300));
    tcase_add_unchecked_fixture(tc, tmp_up, tmp_down);
    tcase_add_test(tc, k8s_synthetic_stream);
    tcase_add_test(tc, k8s_synthetic_restore_catch_up);
    suite_add_tcase(s, tc);
    return s;
}
