/*
 * check_s3.c - black-box tests of snapshot stores (wcache_store(3)).
 *
 * Suite "store": the local-directory store and everything the front end
 * does for every backend (URLs, layout keys, newest, retention, verified
 * downloads, restore).  Suite "s3": the S3 backend against a real S3
 * server (s3rver) behind a gate that verifies AWS Signature V4, both
 * started on 127.0.0.1 by tests/peers/s3-local; awscli cross-checks what
 * we write and read; a fault proxy written here (drops, 500/503, truncated
 * bodies) sits between us and the gate for the fault tests.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <watchcache.h>

#include "testutil.h"

static char tdir[256];
static char errbuf[512];

static void tmp_setup(void)
{
    tu_tmpdir(tdir, sizeof tdir, "wcstore-test");
    errbuf[0] = 0;
}

static void tmp_teardown(void)
{
    tu_rm_rf(tdir);
}

/* n keys with values of vbytes bytes, revisions 1..n. */
static void fill(wcache_cache *c, int n, size_t vbytes)
{
    char k[64];
    char *v = malloc(vbytes + 1);
    ck_assert_ptr_nonnull(v);
    for (int i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "/registry/pods/ns%d/pod-%06d", i % 7, i);
        /* Values that do not compress to nothing, so sizes are real. */
        uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ULL + 1;
        for (size_t j = 0; j < vbytes; j++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v[j] = (char)('a' + (x % 26));
        }
        ck_assert_int_eq(wcache_ingest_put(c, k, (size_t)kl, v, vbytes, i + 1), WCACHE_OK);
    }
    free(v);
}

/* b holds every key of a with the same value and revisions. */
static void same_content(wcache_cache *a, wcache_cache *b, int n)
{
    ck_assert_int_eq(wcache_cache_revision(a), wcache_cache_revision(b));
    wcache_view *va = NULL, *vb = NULL;
    ck_assert_int_eq(wcache_view_create(a, &va), WCACHE_OK);
    ck_assert_int_eq(wcache_view_create(b, &vb), WCACHE_OK);
    ck_assert_int_eq(wcache_view_begin(va, WCACHE_REV_LATEST), WCACHE_OK);
    ck_assert_int_eq(wcache_view_begin(vb, WCACHE_REV_LATEST), WCACHE_OK);
    wcache_list_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.size = sizeof lo;
    uint64_t na = 0, nb = 0;
    ck_assert_int_eq(wcache_view_count(va, &lo, &na), WCACHE_OK);
    ck_assert_int_eq(wcache_view_count(vb, &lo, &nb), WCACHE_OK);
    ck_assert_uint_eq(na, nb);
    char k[64];
    for (int i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "/registry/pods/ns%d/pod-%06d", i % 7, i);
        wcache_kv x, y;
        ck_assert_int_eq(wcache_view_get(va, k, (size_t)kl, &x), WCACHE_OK);
        ck_assert_int_eq(wcache_view_get(vb, k, (size_t)kl, &y), WCACHE_OK);
        ck_assert_uint_eq(x.value_len, y.value_len);
        ck_assert(memcmp(x.value, y.value, x.value_len) == 0);
        ck_assert_int_eq(x.mod_revision, y.mod_revision);
    }
    wcache_view_end(va);
    wcache_view_end(vb);
    wcache_view_free(va);
    wcache_view_free(vb);
}

static wcache_store *open_store(const char *url, wcache_store_opts *o)
{
    wcache_store_opts d;
    if (!o) {
        memset(&d, 0, sizeof d);
        d.size = sizeof d;
        o = &d;
    }
    o->errbuf = errbuf;
    o->errbuf_len = sizeof errbuf;
    wcache_store *st = NULL;
    int rc = wcache_store_open(&st, url, o);
    ck_assert_msg(rc == WCACHE_OK, "open %s: %s: %s", url, wcache_strerror(rc), errbuf);
    return st;
}

static wcache_snapshot_write_opts wopts(const char *id)
{
    wcache_snapshot_write_opts w;
    memset(&w, 0, sizeof w);
    w.size = sizeof w;
    w.source_id = id;
    w.source_id_len = strlen(id);
    w.errbuf = errbuf;
    w.errbuf_len = sizeof errbuf;
    return w;
}

static int count_cb(const wcache_store_object *o, void *ud)
{
    (void)o;
    (*(int *)ud)++;
    return 0;
}

static int count_objects(wcache_store *st, const char *prefix)
{
    int n = 0;
    ck_assert_int_eq(wcache_store_list(st, prefix, count_cb, &n), WCACHE_OK);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Shared by both suites: the whole life of snapshots in one store          */
/* ------------------------------------------------------------------------ */

/* Push three snapshots of a source through the layout, pick the newest,
 * keep two, restore the newest into an empty cache. */
static void layout_cycle(wcache_store *st, int n, size_t vbytes)
{
    const char *id = "cluster-1:/registry/";
    wcache_cache *c = tu_new_cache();
    fill(c, n, vbytes);
    int64_t rev = wcache_cache_revision(c);
    wcache_snapshot_write_opts w = wopts(id);
    for (int i = 0; i < 3; i++) {
        w.revision = rev - 2 + i;
        wcache_snapshot_info in;
        memset(&in, 0, sizeof in);
        in.size = sizeof in;
        int rc = wcache_store_put_snapshot(st, NULL, c, &w, 0, &in);
        ck_assert_msg(rc == WCACHE_OK, "put: %s: %s", wcache_strerror(rc), errbuf);
        ck_assert_int_eq(in.revision, rev - 2 + i);
    }
    char key[256];
    int64_t nr = 0;
    ck_assert_int_eq(wcache_store_newest(st, id, strlen(id), key, sizeof key, &nr), WCACHE_OK);
    ck_assert_int_eq(nr, rev);
    char want[256];
    ck_assert_int_eq(wcache_store_snapshot_key(id, strlen(id), rev, want, sizeof want),
                     WCACHE_OK);
    ck_assert_str_eq(key, want);

    size_t removed = 9;
    ck_assert_int_eq(wcache_store_retain(st, id, strlen(id), 2, &removed), WCACHE_OK);
    ck_assert_uint_eq(removed, 1);
    ck_assert_int_eq(count_objects(st, NULL), 2);

    wcache_cache *r = tu_new_cache();
    wcache_snapshot_read_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.size = sizeof ro;
    ro.expect_source_id = id;
    ro.expect_source_id_len = strlen(id);
    ro.errbuf = errbuf;
    ro.errbuf_len = sizeof errbuf;
    int rc = wcache_store_restore(st, NULL, r, &ro, NULL);
    ck_assert_msg(rc == WCACHE_OK, "restore: %s: %s", wcache_strerror(rc), errbuf);
    same_content(c, r, n);
    wcache_cache_close(r);
    wcache_cache_close(c);
}

/* ------------------------------------------------------------------------ */
/* Suite "store": file://                                                   */
/* ------------------------------------------------------------------------ */

START_TEST(file_layout_cycle)
{
    char url[400];
    snprintf(url, sizeof url, "file://%s/snaps/", tdir);
    wcache_store *st = open_store(url, NULL);
    layout_cycle(st, 300, 100);
    wcache_store_close(st);
}
END_TEST

START_TEST(file_push_pull_ls)
{
    char url[400], src[400], dst[400];
    snprintf(url, sizeof url, "file://%s", tdir);
    snprintf(src, sizeof src, "%s/src.wcsnap", tdir);
    snprintf(dst, sizeof dst, "%s/dst.wcsnap", tdir);
    wcache_cache *c = tu_new_cache();
    fill(c, 50, 40);
    wcache_snapshot_write_opts w = wopts("x");
    ck_assert_int_eq(wcache_snapshot_write(c, src, &w, NULL), WCACHE_OK);
    wcache_store *st = open_store(url, NULL);
    wcache_store_object o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    ck_assert_int_eq(wcache_store_put_file(st, "a/b/one.wcsnap", src, &o), WCACHE_OK);
    ck_assert_str_eq(o.key, "a/b/one.wcsnap");
    struct stat sb;
    ck_assert_int_eq(stat(src, &sb), 0);
    ck_assert_uint_eq(o.bytes, (uint64_t)sb.st_size);
    ck_assert_int_eq(wcache_store_get_file(st, "a/b/one.wcsnap", dst, 1, NULL), WCACHE_OK);
    ck_assert_int_eq(stat(dst, &sb), 0);
    ck_assert_uint_eq(o.bytes, (uint64_t)sb.st_size);
    ck_assert_int_eq(count_objects(st, "a/"), 1);
    ck_assert_int_eq(count_objects(st, "a/b/o"), 1);
    ck_assert_int_eq(count_objects(st, "a/c"), 0);
    /* Missing object, unsafe keys, a damaged snapshot is not taken. */
    ck_assert_int_eq(wcache_store_get_file(st, "a/nope", dst, 1, NULL), WCACHE_ENOTFOUND);
    ck_assert_int_eq(wcache_store_delete(st, "../x"), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_store_put_file(st, "/abs", src, NULL), WCACHE_EINVAL);
    char bad[400];
    snprintf(bad, sizeof bad, "%s/a/b/bad.wcsnap", tdir);
    FILE *f = fopen(bad, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not a snapshot", f);
    fclose(f);
    ck_assert_int_eq(wcache_store_get_file(st, "a/b/bad.wcsnap", dst, 1, NULL),
                     WCACHE_ECORRUPT);
    ck_assert_int_eq(stat(dst, &sb), 0); /* the good copy stays */
    ck_assert_int_eq(wcache_store_delete(st, "a/b/bad.wcsnap"), WCACHE_OK);
    ck_assert_int_eq(wcache_store_delete(st, "a/b/bad.wcsnap"), WCACHE_OK);
    wcache_store_close(st);
    wcache_cache_close(c);
}
END_TEST

START_TEST(urls_and_keys)
{
    wcache_store *st = NULL;
    ck_assert_int_eq(wcache_store_open(&st, NULL, NULL), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_store_open(&st, "ftp://x/y", NULL), WCACHE_ENOTSUP);
    ck_assert_ptr_null(st);
    ck_assert_int_eq(wcache_store_open(&st, "file://relative/dir", NULL), WCACHE_EINVAL);
    wcache_store_opts o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.part_bytes = 1024;
    o.errbuf = errbuf;
    o.errbuf_len = sizeof errbuf;
    ck_assert_int_eq(wcache_store_open(&st, "file:///tmp", &o), WCACHE_EINVAL);
    ck_assert_ptr_nonnull(strstr(errbuf, "5 MiB"));

    char k[64];
    ck_assert_int_eq(wcache_store_snapshot_key("c1:/reg/", 8, 42, k, sizeof k), WCACHE_OK);
    ck_assert_str_eq(k, "c1~3A~2Freg~2F/00000000000000000042.wcsnap");
    ck_assert_int_eq(wcache_store_snapshot_key("..", 2, 1, k, sizeof k), WCACHE_OK);
    ck_assert_str_eq(k, "~2E~2E/00000000000000000001.wcsnap");
    ck_assert_int_eq(wcache_store_snapshot_key("x", 1, 0, k, sizeof k), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_store_snapshot_key("", 0, 1, k, sizeof k), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_store_snapshot_key("abc", 3, 1, k, 10), WCACHE_ETOOBIG);

    ck_assert_int_eq(wcache_store_open(&st, "s3:///nobucket", NULL), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_store_open(&st, "s3://b@d/x", NULL), WCACHE_EINVAL);
    /* gs:// is ENOTSUP until its backend is built in. */
    int rc = wcache_store_open(&st, "gs://bucket/x", &o);
    if (rc == WCACHE_ENOTSUP)
        ck_assert_ptr_nonnull(strstr(errbuf, "not supported yet"));
    wcache_store_close(st);
    st = NULL;
    o.part_bytes = 0;
    o.endpoint = "ftp://x";
    ck_assert_int_eq(wcache_store_open(&st, "s3://b/p", &o), WCACHE_EINVAL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Suite "s3": a real S3 server on loopback                                 */
/* ------------------------------------------------------------------------ */

static char sdir[256];      /* s3-local's directory */
static char endpoint[128];  /* the SigV4 gate */
static char pendpoint[128]; /* the fault proxy in front of it */

static int env_on(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0");
}

/* The sanitizer and valgrind passes check our memory and threads; what
 * awscli thinks of the objects is the plain pass's business, and each
 * awscli start costs a second or more there. */
static int plain_pass(void)
{
    return !env_on("WCACHE_VALGRIND") && !env_on("WCACHE_ASAN") && !env_on("WCACHE_TSAN");
}

static void s3_up(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(sdir, sizeof sdir, "%s/wcs3-XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(sdir));
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "tests/peers/s3-local start %s/srv --bucket snaps >%s/start.out 2>%s/start.log",
             sdir, sdir, sdir);
    if (system(cmd) != 0) {
        snprintf(cmd, sizeof cmd, "cat %s/start.log >&2", sdir);
        (void)system(cmd);
        ck_abort_msg("tests/peers/s3-local start failed (needs node and npm); see above");
    }
    char path[400], line[256];
    snprintf(path, sizeof path, "%s/srv/env", sdir);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "S3_ENDPOINT=", 12))
            snprintf(endpoint, sizeof endpoint, "%s", strtok(line + 12, "\n"));
    fclose(f);
    ck_assert(endpoint[0]);
    /* For awscli and for the library's environment lookup alike. */
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    setenv("AWS_DEFAULT_REGION", "us-east-1", 1);
    setenv("AWS_CONFIG_FILE", "/dev/null", 1);
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null", 1);
    unsetenv("AWS_ENDPOINT_URL");
    unsetenv("AWS_PROFILE");
}

static void s3_down(void)
{
    char cmd[800];
    snprintf(cmd, sizeof cmd, "tests/peers/s3-local stop %s/srv >/dev/null 2>&1; rm -rf %s",
             sdir, sdir);
    if (system(cmd) != 0)
        fprintf(stderr, "check_s3: stopping s3-local in %s failed\n", sdir);
}

/* ---- the fault proxy ---------------------------------------------------- */

/* What the proxy does to the requests that match (method, and a substring
 * of the request line): fail N of them with 503/500, drop N (close without
 * an answer), truncate N answers halfway through their bytes, or lose N
 * answers (the server acts on the request, the client never hears).
 * F_CUT_412: truncate a matching request without If-Match, and answer one
 * with If-Match (a resume) 412 PreconditionFailed, as S3 does when the
 * object was replaced in between (s3rver ignores If-Match). */
enum { F_NONE, F_5XX, F_DROP, F_TRUNCATE, F_LOSE, F_REQTIMEOUT, F_CUT_412 };
static struct {
    int lfd;
    int port;
    pthread_t th;
    _Atomic int mode;
    _Atomic int count; /* faults left to inject; -1: forever */
    char method[8];
    char match[64];
    _Atomic int injected;
    _Atomic int requests;
    _Atomic int stop;
} px;

static void px_set(int mode, int count, const char *method, const char *match)
{
    snprintf(px.method, sizeof px.method, "%s", method);
    snprintf(px.match, sizeof px.match, "%s", match);
    atomic_store(&px.count, count);
    atomic_store(&px.injected, 0);
    atomic_store(&px.mode, mode);
}

/* One request (headers and a Content-Length body) into *buf; its length. */
static ssize_t read_request(int fd, char **buf)
{
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    char *end = NULL;
    while (!end) {
        if (n + 1 >= cap) {
            cap *= 2;
            b = realloc(b, cap);
        }
        ssize_t k = recv(fd, b + n, cap - n - 1, 0);
        if (k <= 0) {
            free(b);
            return -1;
        }
        n += (size_t)k;
        b[n] = '\0';
        end = strstr(b, "\r\n\r\n");
    }
    size_t hl = (size_t)(end + 4 - b), cl = 0;
    for (char *h = strcasestr(b, "\r\ncontent-length:"); h && h < end; h = NULL)
        cl = strtoul(h + 17, NULL, 10);
    while (n < hl + cl) {
        if (hl + cl + 1 > cap) {
            cap = hl + cl + 1;
            b = realloc(b, cap);
        }
        ssize_t k = recv(fd, b + n, hl + cl - n, 0);
        if (k <= 0) {
            free(b);
            return -1;
        }
        n += (size_t)k;
    }
    *buf = b;
    return (ssize_t)n;
}

static int take_fault(const char *req)
{
    int mode = atomic_load(&px.mode);
    if (mode == F_NONE || strncmp(req, px.method, strlen(px.method)) ||
        req[strlen(px.method)] != ' ')
        return F_NONE;
    const char *eol = strstr(req, "\r\n");
    const char *m = strstr(req, px.match);
    if (!m || m > eol)
        return F_NONE;
    int c = atomic_load(&px.count);
    while (c != 0) {
        if (c < 0 || atomic_compare_exchange_weak(&px.count, &c, c - 1)) {
            atomic_fetch_add(&px.injected, 1);
            return mode;
        }
    }
    return F_NONE;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    return a;
}

static void *px_conn(void *arg)
{
    int cfd = (int)(intptr_t)arg;
    char *req = NULL;
    ssize_t n;
    /* One request per connection: the upstream is asked to close after its
     * answer, which then marks the answer's end. */
    while ((n = read_request(cfd, &req)) > 0) {
        atomic_fetch_add(&px.requests, 1);
        int f = take_fault(req);
        if (f == F_CUT_412) {
            char *hend = strstr(req, "\r\n\r\n");
            char *im = strcasestr(req, "\r\nif-match:");
            if (!im || im > hend)
                f = F_TRUNCATE; /* not a resume: cut it */
        }
        if (f == F_DROP) {
            free(req);
            break;
        }
        if (f == F_5XX || f == F_REQTIMEOUT || f == F_CUT_412) {
            static const char slow[] = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code>"
                                       "<Message>injected by the test proxy</Message></Error>";
            static const char stalled[] = "<Error><Code>RequestTimeout</Code><Message>Your "
                                          "socket connection to the server was not read "
                                          "from or written to</Message></Error>";
            static const char precond[] = "<Error><Code>PreconditionFailed</Code><Message>At "
                                          "least one of the pre-conditions you specified did "
                                          "not hold</Message></Error>";
            const char *body = f == F_5XX ? slow : f == F_CUT_412 ? precond : stalled;
            char hdr[256];
            int code = f == F_REQTIMEOUT               ? 400
                       : f == F_CUT_412                ? 412
                       : atomic_load(&px.injected) % 2 ? 503
                                                       : 500;
            int hl = snprintf(hdr, sizeof hdr,
                              "HTTP/1.1 %d Injected\r\nContent-Type: application/xml\r\n"
                              "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                              code, strlen(body));
            (void)tu_send_all(cfd, hdr, (size_t)hl);
            (void)tu_send_all(cfd, body, strlen(body));
            free(req);
            break;
        }
        int ufd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = loopback(atoi(strrchr(endpoint, ':') + 1));
        if (connect(ufd, (struct sockaddr *)&a, sizeof a) != 0) {
            close(ufd);
            free(req);
            break;
        }
        char *eol = strstr(req, "\r\n");
        (void)tu_send_all(ufd, req, (size_t)(eol + 2 - req));
        (void)tu_send_all(ufd, "Connection: close\r\n", 19);
        (void)tu_send_all(ufd, eol + 2, (size_t)(n - (eol + 2 - req)));
        free(req);
        /* The whole answer, then forward all or half of it. */
        size_t cap = 1 << 16, got = 0;
        char *ans = malloc(cap);
        ssize_t k;
        while ((k = recv(ufd, ans + got, cap - got, 0)) > 0) {
            got += (size_t)k;
            if (got == cap)
                ans = realloc(ans, cap *= 2);
        }
        close(ufd);
        if (f != F_LOSE)
            (void)tu_send_all(cfd, ans, f == F_TRUNCATE ? got / 2 : got);
        free(ans);
        break;
    }
    close(cfd);
    return NULL;
}

static void *px_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&px.stop)) {
        int cfd = accept(px.lfd, NULL, NULL);
        if (cfd < 0)
            continue;
        if (atomic_load(&px.stop)) {
            close(cfd);
            break;
        }
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &at, px_conn, (void *)(intptr_t)cfd) != 0)
            close(cfd);
        pthread_attr_destroy(&at);
    }
    return NULL;
}

static void px_up(void)
{
    memset(&px, 0, sizeof px);
    px.lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(px.lfd, 0);
    struct sockaddr_in a = loopback(0);
    socklen_t al = sizeof a;
    ck_assert_int_eq(bind(px.lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(px.lfd, 64), 0);
    ck_assert_int_eq(getsockname(px.lfd, (struct sockaddr *)&a, &al), 0);
    px.port = ntohs(a.sin_port);
    snprintf(pendpoint, sizeof pendpoint, "http://127.0.0.1:%d", px.port);
    ck_assert_int_eq(pthread_create(&px.th, NULL, px_main, NULL), 0);
    errbuf[0] = 0;
}

static void px_down(void)
{
    atomic_store(&px.stop, 1);
    /* Wake accept() with a connection of our own. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(px.port);
    (void)connect(fd, (struct sockaddr *)&a, sizeof a);
    close(fd);
    pthread_join(px.th, NULL);
    close(px.lfd);
}

/* ---- helpers ------------------------------------------------------------ */

static wcache_store_opts s3opts(const char *ep)
{
    wcache_store_opts o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.endpoint = ep;
    o.style = WCACHE_STORE_STYLE_PATH;
    o.backoff_ms = 1; /* the retries themselves are under test, not their pace */
    o.backoff_max_ms = 5;
    o.timeout_ms = 20000;
    return o;
}

/* Run a shell command with awscli's environment; its exit status. */
static int sh(const char *fmt, const char *a, const char *b)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, fmt, endpoint, a, b);
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static int same_file(const char *a, const char *b)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

/* Multipart uploads in progress in the bucket: in s3rver's upload
 * directory (the same place the gate's ListMultipartUploads reads), and in
 * the plain pass as awscli lists them too. */
static int open_uploads(void)
{
    char path[400];
    snprintf(path, sizeof path, "%s/srv/data/snaps/._S3rver_uploads", sdir);
    int n = 0;
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    if (d)
        closedir(d);
    if (!plain_pass())
        return n;
    char out[400];
    snprintf(out, sizeof out, "%s/uploads.json", sdir);
    ck_assert_int_eq(sh("aws --endpoint-url %s s3api list-multipart-uploads --bucket snaps "
                        "--output json >'%s' 2>&1%s",
                        out, ""),
                     0);
    FILE *f = fopen(out, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    int na = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "\"UploadId\""))
            na++;
    fclose(f);
    ck_assert_int_eq(na, n);
    return n;
}

static void write_file(const char *path, size_t n, uint64_t seed)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        fputc((int)(x & 0xff), f);
    }
    fclose(f);
}

static void snap_file(const char *path, int n)
{
    wcache_cache *c = tu_new_cache();
    fill(c, n, 64);
    wcache_snapshot_write_opts w = wopts("snapfile");
    ck_assert_int_eq(wcache_snapshot_write(c, path, &w, NULL), WCACHE_OK);
    wcache_cache_close(c);
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(s3_layout_cycle)
{
    wcache_store_opts o = s3opts(endpoint);
    wcache_store *st = open_store("s3://snaps/cycle", &o);
    layout_cycle(st, plain_pass() ? 2000 : 200, 100);
    wcache_store_close(st);
}
END_TEST

/* Our uploads read back by awscli, awscli's uploads restored by us. */
START_TEST(s3_awscli_both_ways)
{
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/ours.wcsnap", tdir);
    snprintf(b, sizeof b, "%s/theirs.wcsnap", tdir);
    snap_file(a, 500);
    wcache_store_opts o = s3opts(endpoint);
    wcache_store *st = open_store("s3://snaps", &o);
    ck_assert_int_eq(wcache_store_put_file(st, "x/key with space+plus.wcsnap", a, NULL),
                     WCACHE_OK);
    if (!plain_pass()) {
        wcache_store_close(st);
        return;
    }
    ck_assert_int_eq(sh("aws --endpoint-url %s s3 cp 's3://snaps/x/key with space+plus.wcsnap' "
                        "'%s' >/dev/null%s",
                        b, ""),
                     0);
    ck_assert(same_file(a, b));

    /* awscli uploads (multipart above its 8 MiB threshold when not under
     * valgrind), we restore. */
    snap_file(a, 60000);
    ck_assert_int_eq(sh("aws --endpoint-url %s s3 cp '%s' s3://snaps/from-aws/s.wcsnap "
                        ">/dev/null%s",
                        a, ""),
                     0);
    wcache_cache *r = tu_new_cache();
    int rc = wcache_store_restore(st, "from-aws/s.wcsnap", r, NULL, NULL);
    ck_assert_msg(rc == WCACHE_OK, "restore: %s: %s", wcache_strerror(rc), errbuf);
    wcache_cache *c = tu_new_cache();
    fill(c, 60000, 64);
    same_content(c, r, 60000);
    wcache_cache_close(c);
    wcache_cache_close(r);
    wcache_store_close(st);
}
END_TEST

static char logged[8192];
static void log_cb(int level, const char *msg, size_t len, void *ud)
{
    (void)level, (void)ud;
    size_t have = strlen(logged);
    if (have + len + 2 < sizeof logged) {
        memcpy(logged + have, msg, len);
        logged[have + len] = '\n';
        logged[have + len + 1] = '\0';
    }
}

/* A wrong secret: a clear error that names bucket, key and status, no
 * retry, and the secret nowhere in the errbuf, the log or wcache's output. */
START_TEST(s3_wrong_secret)
{
    static const char secret[] = "wrong-SECRET-8f3a1c";
    wcache_store_opts o = s3opts(pendpoint);
    o.access_key_id = "S3RVER";
    o.secret_access_key = secret;
    o.session_token = "TOKEN-5e2b9d-secret";
    o.log = log_cb;
    logged[0] = 0;
    char a[400];
    snprintf(a, sizeof a, "%s/a.wcsnap", tdir);
    snap_file(a, 50);
    wcache_store *st = open_store("s3://snaps/auth", &o);
    px_set(F_NONE, 0, "", "");
    int before = atomic_load(&px.requests);
    ck_assert_int_eq(wcache_store_put_file(st, "one.wcsnap", a, NULL), WCACHE_EHTTP);
    ck_assert_int_eq(atomic_load(&px.requests) - before, 1); /* 4xx: no retry */
    ck_assert_ptr_nonnull(strstr(errbuf, "403"));
    ck_assert_ptr_nonnull(strstr(errbuf, "SignatureDoesNotMatch"));
    ck_assert_ptr_nonnull(strstr(errbuf, "s3://snaps/auth/one.wcsnap"));
    ck_assert_ptr_null(strstr(errbuf, secret));
    ck_assert_ptr_null(strstr(errbuf, "TOKEN-5e2b9d"));
    ck_assert_ptr_null(strstr(logged, secret));
    ck_assert_ptr_null(strstr(logged, "TOKEN-5e2b9d"));
    wcache_store_close(st);

    /* The CLI, with the secret in the environment. */
    char out[400];
    snprintf(out, sizeof out, "%s/cli.out", tdir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "AWS_SECRET_ACCESS_KEY='%s' AWS_SESSION_TOKEN=TOKEN-5e2b9d-secret ./tools/wcache "
             "push '%s' s3://snaps/auth/two.wcsnap --endpoint %s >'%s' 2>&1",
             secret, a, endpoint, out);
    int r = system(cmd);
    ck_assert(WIFEXITED(r) && WEXITSTATUS(r) == 1);
    snprintf(cmd, sizeof cmd,
             "grep -q SignatureDoesNotMatch '%s' && ! grep -q -e '%s' -e "
             "TOKEN-5e2b9d '%s'",
             out, secret, out);
    ck_assert_msg(system(cmd) == 0, "wcache push: wrong message or a leaked secret in %s", out);
}
END_TEST

/* Several parts in parallel, read back by awscli, no upload left open. */
START_TEST(s3_multipart)
{
    size_t n = plain_pass() ? 3000000 : 700000;
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/big.bin", tdir);
    snprintf(b, sizeof b, "%s/big.aws", tdir);
    write_file(a, n, 42);
    wcache_store_opts o = s3opts(endpoint);
    /* s3rver has no 5 MiB minimum, so small parts keep the test quick. */
    o.allow_small_parts = 1;
    o.part_bytes = 256 << 10;
    o.parallel_parts = 3;
    wcache_store *st = open_store("s3://snaps/mp", &o);
    wcache_store_object obj;
    memset(&obj, 0, sizeof obj);
    obj.size = sizeof obj;
    int rc = wcache_store_put_file(st, "big.bin", a, &obj);
    ck_assert_msg(rc == WCACHE_OK, "put: %s: %s", wcache_strerror(rc), errbuf);
    ck_assert_uint_eq(obj.bytes, n);
    if (plain_pass()) {
        ck_assert_int_eq(
            sh("aws --endpoint-url %s s3 cp s3://snaps/mp/big.bin '%s' >/dev/null%s", b, ""),
            0);
        ck_assert(same_file(a, b));
    }
    ck_assert_int_eq(open_uploads(), 0);
    ck_assert_int_eq(wcache_store_get_file(st, "big.bin", b, 0, NULL), WCACHE_OK);
    ck_assert(same_file(a, b));
    wcache_store_close(st);
}
END_TEST

/* Faults the retries must survive: 500/503, dropped connections, bodies
 * cut in half, on every kind of request. */
START_TEST(s3_faults_survived)
{
    size_t n = plain_pass() ? 2000000 : 600000;
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/f.bin", tdir);
    snprintf(b, sizeof b, "%s/f.out", tdir);
    write_file(a, n, 7);
    wcache_store_opts o = s3opts(pendpoint);
    o.allow_small_parts = 1;
    o.part_bytes = 200 << 10;
    o.parallel_parts = 2;
    o.max_retries = 4;
    wcache_store *st = open_store("s3://snaps/faults", &o);

    px_set(F_5XX, 3, "PUT", "partNumber=");
    ck_assert_int_eq(wcache_store_put_file(st, "a.bin", a, NULL), WCACHE_OK);
    ck_assert_int_eq(atomic_load(&px.injected), 3);
    px_set(F_DROP, 3, "PUT", "partNumber=");
    ck_assert_int_eq(wcache_store_put_file(st, "b.bin", a, NULL), WCACHE_OK);
    ck_assert_int_eq(atomic_load(&px.injected), 3);
    px_set(F_REQTIMEOUT, 2, "PUT", "partNumber=");
    ck_assert_int_eq(wcache_store_put_file(st, "a.bin", a, NULL), WCACHE_OK);
    ck_assert_int_eq(atomic_load(&px.injected), 2);
    px_set(F_5XX, 2, "POST", "uploads=");
    ck_assert_int_eq(wcache_store_put_file(st, "c.bin", a, NULL), WCACHE_OK);
    px_set(F_DROP, 1, "POST", "uploadId=");
    ck_assert_int_eq(wcache_store_put_file(st, "d.bin", a, NULL), WCACHE_OK);
    /* The server completes, the answer is lost: the retry finds no upload
     * (NoSuchUpload), and the object's size and ETag show it is ours. */
    px_set(F_LOSE, 1, "POST", "uploadId=");
    int rc = wcache_store_put_file(st, "e.bin", a, NULL);
    ck_assert_msg(rc == WCACHE_OK, "lost complete: %s: %s", wcache_strerror(rc), errbuf);
    ck_assert_int_eq(atomic_load(&px.injected), 1);
    ck_assert_int_eq(wcache_store_get_file(st, "e.bin", b, 0, NULL), WCACHE_OK);
    ck_assert(same_file(a, b));
    /* Lost answers to part uploads and to a plain PUT: retried, same data. */
    px_set(F_LOSE, 2, "PUT", "partNumber=");
    ck_assert_int_eq(wcache_store_put_file(st, "f.bin", a, NULL), WCACHE_OK);

    /* Downloads: truncated bodies resume where they stopped. */
    px_set(F_TRUNCATE, 3, "GET", "/faults/a.bin");
    rc = wcache_store_get_file(st, "a.bin", b, 0, NULL);
    ck_assert_msg(rc == WCACHE_OK, "get: %s: %s", wcache_strerror(rc), errbuf);
    ck_assert_int_eq(atomic_load(&px.injected), 3);
    ck_assert(same_file(a, b));
    px_set(F_DROP, 2, "GET", "/faults/b.bin");
    ck_assert_int_eq(wcache_store_get_file(st, "b.bin", b, 0, NULL), WCACHE_OK);
    ck_assert(same_file(a, b));
    px_set(F_5XX, 2, "GET", "list-type=2");
    ck_assert_int_eq(count_objects(st, NULL) >= 3, 1);
    px_set(F_5XX, 2, "DELETE", "/faults/c.bin");
    ck_assert_int_eq(wcache_store_delete(st, "c.bin"), WCACHE_OK);
    px_set(F_NONE, 0, "", "");
    ck_assert_int_eq(open_uploads(), 0);
    wcache_store_close(st);
}
END_TEST

/* Faults that outlast the retries: the upload is aborted (no parts left
 * behind) and no object appears; a download fails cleanly. */
START_TEST(s3_faults_give_up)
{
    size_t n = 900000;
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/g.bin", tdir);
    snprintf(b, sizeof b, "%s/g.out", tdir);
    write_file(a, n, 9);
    wcache_store_opts o = s3opts(pendpoint);
    o.allow_small_parts = 1;
    o.part_bytes = 200 << 10;
    o.parallel_parts = 2;
    o.max_retries = 2;
    wcache_store *st = open_store("s3://snaps/giveup", &o);
    px_set(F_5XX, -1, "PUT", "partNumber=3");
    int rc = wcache_store_put_file(st, "x.bin", a, NULL);
    ck_assert_int_eq(rc, WCACHE_EHTTP);
    ck_assert_ptr_nonnull(strstr(errbuf, "s3://snaps/giveup/x.bin"));
    ck_assert_int_eq(atomic_load(&px.injected), 3); /* the try and two retries */
    px_set(F_NONE, 0, "", "");
    ck_assert_int_eq(open_uploads(), 0);
    ck_assert_int_eq(wcache_store_get_file(st, "x.bin", b, 0, NULL), WCACHE_ENOTFOUND);

    /* Every answer truncated: the download gives up, b is untouched. */
    ck_assert_int_eq(wcache_store_put_file(st, "y.bin", a, NULL), WCACHE_OK);
    px_set(F_TRUNCATE, -1, "GET", "/giveup/y.bin");
    rc = wcache_store_get_file(st, "y.bin", b, 0, NULL);
    ck_assert_int_ne(rc, WCACHE_OK);
    ck_assert_int_eq(access(b, F_OK), -1);
    px_set(F_NONE, 0, "", "");
    wcache_store_close(st);
}
END_TEST

/* A restore never trusts an object whose checksums fail. */
START_TEST(s3_damaged_object_refused)
{
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/d.wcsnap", tdir);
    snprintf(b, sizeof b, "%s/d.out", tdir);
    struct stat sb;
    snap_file(a, 300);
    /* Flip one byte in the middle, then upload the damaged file. */
    FILE *f = fopen(a, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, len / 2, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, len / 2, SEEK_SET);
    fputc(ch ^ 0x20, f);
    fclose(f);
    wcache_store_opts o = s3opts(endpoint);
    wcache_store *st = open_store("s3://snaps/damage", &o);
    ck_assert_int_eq(wcache_store_put_file(st, "d.wcsnap", a, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_store_get_file(st, "d.wcsnap", b, 1, NULL), WCACHE_ECORRUPT);
    ck_assert_int_eq(access(b, F_OK), -1);
    wcache_cache *r = tu_new_cache();
    ck_assert_int_eq(wcache_store_restore(st, "d.wcsnap", r, NULL, NULL), WCACHE_ECORRUPT);
    ck_assert_int_eq(wcache_cache_revision(r), 0);
    /* A valid snapshot cut short, and one with its end missing only. */
    snap_file(a, 300);
    for (int cut = 0; cut < 2; cut++) {
        ck_assert_int_eq(stat(a, &sb), 0);
        ck_assert_int_eq(truncate(a, cut ? sb.st_size - 1 : sb.st_size / 2), 0);
        ck_assert_int_eq(wcache_store_put_file(st, "t.wcsnap", a, NULL), WCACHE_OK);
        ck_assert_int_eq(wcache_store_restore(st, "t.wcsnap", r, NULL, NULL), WCACHE_ECORRUPT);
        ck_assert_msg(strstr(errbuf, "truncated"), "%s", errbuf);
        ck_assert_int_eq(wcache_cache_revision(r), 0);
    }
    wcache_cache_close(r);
    ck_assert_int_eq(wcache_store_get_file(st, "nope.wcsnap", b, 1, NULL), WCACHE_ENOTFOUND);
    wcache_store_close(st);
}
END_TEST

/* ---- restore streamed from the store ----------------------------------- */

static _Atomic int resumes; /* "resuming" lines of the store's log */

static void count_resumes(int level, const char *msg, size_t len, void *ud)
{
    (void)level;
    (void)ud;
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)(len < 511 ? len : 511), msg);
    if (strstr(line, "resuming"))
        atomic_fetch_add(&resumes, 1);
}

/* Replaces the object being downloaded, once, from inside the download. */
static struct {
    wcache_store *direct;
    const char *key, *with;
    int done, rc;
} swap;

static int swap_on_progress(uint64_t done, uint64_t total, void *ud)
{
    (void)total;
    (void)ud;
    if (done && !swap.done) {
        swap.done = 1;
        swap.rc = wcache_store_put_file(swap.direct, swap.key, swap.with, NULL);
    }
    return 0;
}

static void restore_file(const char *path, wcache_cache *r)
{
    int rc = wcache_snapshot_restore(r, path, NULL, NULL);
    ck_assert_msg(rc == WCACHE_OK, "restore %s: %s", path, wcache_strerror(rc));
}

/* The streamed restore (wcache_store_restore) against the file restore of
 * the same object; a body cut mid-way twice is resumed (the store logs
 * each resume) and the result is the same; an object replaced between two
 * ranges is refused (If-Match) with the cache untouched. */
START_TEST(s3_restore_streams)
{
    int n = plain_pass() ? 3000 : 1200;
    char a[400], b[400], other[400];
    snprintf(a, sizeof a, "%s/s.wcsnap", tdir);
    snprintf(b, sizeof b, "%s/s.pulled", tdir);
    snprintf(other, sizeof other, "%s/other.wcsnap", tdir);
    wcache_cache *c = tu_new_cache();
    fill(c, n, 300);
    wcache_snapshot_write_opts w = wopts("stream-src");
    w.block_bytes = 64 << 10; /* many blocks, so a cut lands inside the stream */
    ck_assert_int_eq(wcache_snapshot_write(c, a, &w, NULL), WCACHE_OK);
    snap_file(other, 50);
    wcache_store_opts o = s3opts(pendpoint);
    o.log = count_resumes;
    o.max_retries = 3;
    wcache_store *st = open_store("s3://snaps/streams", &o);
    ck_assert_int_eq(wcache_store_put_file(st, "s.wcsnap", a, NULL), WCACHE_OK);

    ck_assert_int_eq(wcache_store_get_file(st, "s.wcsnap", b, 1, NULL), WCACHE_OK);
    wcache_cache *byfile = tu_new_cache();
    restore_file(b, byfile);
    wcache_cache *r = tu_new_cache();
    wcache_snapshot_info in;
    memset(&in, 0, sizeof in);
    in.size = sizeof in;
    int rc = wcache_store_restore(st, "s.wcsnap", r, NULL, &in);
    ck_assert_msg(rc == WCACHE_OK, "restore: %s: %s", wcache_strerror(rc), errbuf);
    struct stat sb;
    ck_assert_int_eq(stat(a, &sb), 0);
    ck_assert_uint_eq(in.file_bytes, (uint64_t)sb.st_size);
    same_content(byfile, r, n);
    same_content(c, r, n);
    wcache_cache_close(r);

    /* Another source: refused once the header is in, which stops the
     * download; a cache that is not empty: refused before it starts. */
    wcache_snapshot_read_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.size = sizeof ro;
    ro.expect_source_id = "another-src";
    ro.expect_source_id_len = strlen(ro.expect_source_id);
    ro.errbuf = errbuf;
    ro.errbuf_len = sizeof errbuf;
    int before = atomic_load(&px.requests);
    r = tu_new_cache();
    ck_assert_int_eq(wcache_store_restore(st, "s.wcsnap", r, &ro, NULL), WCACHE_EINVAL);
    ck_assert_msg(strstr(errbuf, "another-src"), "%s", errbuf);
    ck_assert_int_eq(wcache_cache_revision(r), 0);
    ck_assert_int_eq(wcache_store_restore(st, "s.wcsnap", c, NULL, NULL), WCACHE_ESTATE);
    ck_assert_int_eq(atomic_load(&px.requests) - before, 1);
    wcache_cache_close(r);

    /* Cut twice: two resumes with Range from the byte reached. */
    atomic_store(&resumes, 0);
    px_set(F_TRUNCATE, 2, "GET", "/streams/s.wcsnap");
    r = tu_new_cache();
    rc = wcache_store_restore(st, "s.wcsnap", r, NULL, NULL);
    ck_assert_msg(rc == WCACHE_OK, "restore through cuts: %s: %s", wcache_strerror(rc), errbuf);
    ck_assert_int_eq(atomic_load(&px.injected), 2);
    ck_assert_int_eq(atomic_load(&resumes), 2);
    same_content(c, r, n);
    wcache_cache_close(r);

    /* Cut, and replaced before the resume by a smaller object (the resume
     * is past its end) or a larger one (another ETag; s3rver does not
     * honour If-Match, S3 would answer 412): never two objects mixed. */
    char bigger[400];
    snprintf(bigger, sizeof bigger, "%s/bigger.wcsnap", tdir);
    wcache_cache *cb = tu_new_cache();
    fill(cb, n, 400);
    ck_assert_int_eq(wcache_snapshot_write(cb, bigger, &w, NULL), WCACHE_OK);
    wcache_store_opts d = s3opts(endpoint);
    swap.direct = open_store("s3://snaps/streams", &d);
    wcache_store_opts ow = o;
    ow.progress = swap_on_progress;
    wcache_store *sw = open_store("s3://snaps/streams", &ow);
    const char *with[2] = {other, bigger};
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(wcache_store_put_file(st, "s.wcsnap", a, NULL), WCACHE_OK);
        swap.key = "s.wcsnap";
        swap.with = with[i];
        swap.done = 0;
        px_set(F_TRUNCATE, 1, "GET", "/streams/s.wcsnap");
        char reb[512] = "";
        wcache_snapshot_read_opts ro;
        memset(&ro, 0, sizeof ro);
        ro.size = sizeof ro;
        ro.errbuf = reb;
        ro.errbuf_len = sizeof reb;
        r = tu_new_cache();
        rc = wcache_store_restore(sw, "s.wcsnap", r, &ro, NULL);
        ck_assert_int_eq(swap.rc, WCACHE_OK);
        ck_assert_msg(rc == WCACHE_ECORRUPT, "replaced: %s: %s", wcache_strerror(rc), reb);
        ck_assert_msg(strstr(reb, "changed during the download"), "%s", reb);
        ck_assert_int_eq(wcache_cache_revision(r), 0);
        /* The new object restores whole. */
        px_set(F_NONE, 0, "", "");
        ck_assert_int_eq(wcache_store_restore(st, "s.wcsnap", r, NULL, NULL), WCACHE_OK);
        if (i == 0)
            ck_assert_int_eq(wcache_cache_revision(r), 50);
        else
            same_content(cb, r, n);
        wcache_cache_close(r);
    }
    r = NULL;

    /* Cut, and the resume (Range + If-Match) refused with 412 because the
     * object changed: a clear error at once, no retry, nothing applied. */
    ck_assert_int_eq(wcache_store_put_file(st, "s.wcsnap", a, NULL), WCACHE_OK);
    px_set(F_CUT_412, 2, "GET", "/streams/s.wcsnap");
    before = atomic_load(&px.requests);
    r = tu_new_cache();
    rc = wcache_store_restore(st, "s.wcsnap", r, NULL, NULL);
    ck_assert_msg(rc == WCACHE_ECORRUPT, "412 on resume: %s: %s", wcache_strerror(rc), errbuf);
    ck_assert_msg(strstr(errbuf, "changed during the download") && strstr(errbuf, "HTTP 412"),
                  "%s", errbuf);
    ck_assert_int_eq(atomic_load(&px.injected), 2);
    ck_assert_int_eq(atomic_load(&px.requests) - before, 2);
    ck_assert_int_eq(wcache_cache_revision(r), 0);
    px_set(F_NONE, 0, "", "");
    wcache_cache_close(r);
    r = NULL;

    wcache_cache_close(cb);
    wcache_store_close(sw);
    wcache_store_close(swap.direct);
    wcache_cache_close(r);
    wcache_cache_close(byfile);
    wcache_cache_close(c);
    wcache_store_close(st);
}
END_TEST

/* Credentials from the shared credentials file and a profile. */
START_TEST(s3_credentials_file)
{
    char cred[400];
    snprintf(cred, sizeof cred, "%s/credentials", tdir);
    FILE *f = fopen(cred, "w");
    ck_assert_ptr_nonnull(f);
    fputs("[default]\naws_access_key_id = NOPE\naws_secret_access_key = nope\n\n"
          "[profile test]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n",
          f);
    fclose(f);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    wcache_store_opts o = s3opts(endpoint);
    o.credentials_file = cred;
    o.profile = "test";
    wcache_store *st = open_store("s3://snaps/creds", &o);
    ck_assert_int_eq(count_objects(st, NULL), 0);
    wcache_store_close(st);
    o.profile = NULL; /* default: the wrong key */
    st = open_store("s3://snaps/creds", &o);
    int n = 0;
    ck_assert_int_eq(wcache_store_list(st, NULL, count_cb, &n), WCACHE_EHTTP);
    ck_assert_ptr_nonnull(strstr(errbuf, "InvalidAccessKeyId"));
    wcache_store_close(st);
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
}
END_TEST

/* Virtual-hosted addressing: BUCKET.s3.localhost (s3rver runs with
 * --service-endpoint localhost; libcurl resolves *.localhost itself). */
START_TEST(s3_virtual_hosted)
{
    char ep[160], a[400], b[400];
    snprintf(ep, sizeof ep, "http://s3.localhost:%s", strrchr(endpoint, ':') + 1);
    snprintf(a, sizeof a, "%s/v.wcsnap", tdir);
    snprintf(b, sizeof b, "%s/v.out", tdir);
    snap_file(a, 100);
    wcache_store_opts o = s3opts(ep);
    o.style = WCACHE_STORE_STYLE_VIRTUAL;
    wcache_store *st = open_store("s3://snaps/vhost", &o);
    int rc = wcache_store_put_file(st, "k 1.wcsnap", a, NULL);
    ck_assert_msg(rc == WCACHE_OK, "put: %s: %s", wcache_strerror(rc), errbuf);
    ck_assert_int_eq(count_objects(st, NULL), 1);
    ck_assert_int_eq(wcache_store_get_file(st, "k 1.wcsnap", b, 1, NULL), WCACHE_OK);
    ck_assert(same_file(a, b));
    wcache_store_close(st);
    /* The same object, path style. */
    o = s3opts(endpoint);
    st = open_store("s3://snaps/vhost", &o);
    ck_assert_int_eq(wcache_store_delete(st, "k 1.wcsnap"), WCACHE_OK);
    ck_assert_int_eq(count_objects(st, NULL), 0);
    wcache_store_close(st);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Tcase "halt" of suite "store": stops that must not wait out a backoff     */
/* ------------------------------------------------------------------------ */

/*
 * A fault server on loopback that stands in for S3 and GCS alike, as far
 * as a download and a multipart upload go: the first GET is answered 200
 * with the object's first bytes only (the connection closes early, so the
 * client must resume), every later GET and every part PUT 503 -- and every
 * answer carries "Retry-After: 120", which wci_store_backoff() takes as
 * the floor of its wait (capped by backoff_max_ms, set to 120 s here).
 * Each request is counted by kind, so a test can tell that its call
 * returned because it was stopped (no retry was ever sent) and not
 * because the retries ran out.
 */
#define HALT_WAIT_S 120
static struct {
    tu_srv sv;
    const unsigned char *obj;
    size_t len, prefix;
    _Atomic int gets, parts, others;
} hs;

static void halt_reply(int fd, int code, const char *extra, const void *body, size_t n,
                       size_t clen)
{
    char hdr[512];
    int hl = snprintf(hdr, sizeof hdr,
                      "HTTP/1.1 %d Test\r\nContent-Length: %zu\r\nRetry-After: %d\r\n%s"
                      "Connection: close\r\n\r\n",
                      code, clen, HALT_WAIT_S, extra);
    (void)tu_send_all(fd, hdr, (size_t)hl);
    if (n)
        (void)tu_send_all(fd, body, n);
}

static void halt_serve(tu_srv *sv, int fd)
{
    (void)sv;
    char *req = NULL;
    if (read_request(fd, &req) <= 0)
        return;
    static const char busy[] = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code>"
                               "<Message>503 forever</Message></Error>";
    if (!strncmp(req, "GET ", 4)) {
        if (atomic_fetch_add(&hs.gets, 1) == 0) {
            char extra[256];
            snprintf(extra, sizeof extra,
                     "ETag: \"halt-test\"\r\nx-goog-generation: 7\r\n"
                     "x-goog-stored-content-length: %zu\r\n",
                     hs.len);
            halt_reply(fd, 200, extra, hs.obj, hs.prefix, hs.len);
        } else {
            halt_reply(fd, 503, "", busy, strlen(busy), strlen(busy));
        }
    } else if (!strncmp(req, "POST ", 5) && strstr(req, "uploads")) {
        static const char init[] =
            "<?xml version=\"1.0\"?><InitiateMultipartUploadResult><Bucket>snaps</Bucket>"
            "<Key>k</Key><UploadId>halt-upload</UploadId></InitiateMultipartUploadResult>";
        atomic_fetch_add(&hs.others, 1);
        halt_reply(fd, 200, "", init, strlen(init), strlen(init));
    } else if (!strncmp(req, "PUT ", 4) && strstr(req, "partNumber")) {
        atomic_fetch_add(&hs.parts, 1);
        halt_reply(fd, 503, "", busy, strlen(busy), strlen(busy));
    } else {
        atomic_fetch_add(&hs.others, 1); /* the abort's DELETE */
        halt_reply(fd, 204, "", NULL, 0, 0);
    }
    free(req);
}

static unsigned char *halt_snap;

static void halt_up(void)
{
    tmp_setup();
    /* A snapshot several times larger than the prefix sent, whose header
     * (in the prefix) names source "right". */
    char path[400];
    snprintf(path, sizeof path, "%s/halt.wcsnap", tdir);
    wcache_cache *c = tu_new_cache();
    fill(c, 2000, 100);
    wcache_snapshot_write_opts w = wopts("right");
    ck_assert_int_eq(wcache_snapshot_write(c, path, &w, NULL), WCACHE_OK);
    wcache_cache_close(c);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    halt_snap = malloc((size_t)n);
    ck_assert_uint_eq(fread(halt_snap, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    memset(&hs, 0, sizeof hs);
    hs.obj = halt_snap;
    hs.len = (size_t)n;
    hs.prefix = 4096;
    ck_assert_uint_gt(hs.len, 4 * hs.prefix);
    tu_srv_start(&hs.sv, halt_serve, NULL);
}

static void halt_down(void)
{
    tu_srv_stop(&hs.sv);
    free(halt_snap);
    halt_snap = NULL;
    tmp_teardown();
}

static wcache_store *halt_store(const char *scheme)
{
    static char ep[64], tok[400];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", hs.sv.port);
    snprintf(tok, sizeof tok, "%s/token", tdir);
    FILE *f = fopen(tok, "w");
    ck_assert_ptr_nonnull(f);
    fputs("halt-test-token\n", f);
    fclose(f);
    wcache_store_opts o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.endpoint = ep;
    o.style = WCACHE_STORE_STYLE_PATH;
    o.access_key_id = "halt";
    o.secret_access_key = "halt-secret";
    o.region = "us-east-1";
    o.gcs_token_file = tok;
    o.max_retries = 100; /* ran out, they would take 100 waits of 120 s */
    o.backoff_ms = HALT_WAIT_S * 1000;
    o.backoff_max_ms = HALT_WAIT_S * 1000;
    o.part_bytes = 64 * 1024;
    o.allow_small_parts = 1;
    o.parallel_parts = 3;
    char url[64];
    snprintf(url, sizeof url, "%s://snaps/halt", scheme);
    return open_store(url, &o);
}

/*
 * The restorer refuses the stream (a snapshot of another source) once the
 * header is in, while the download thread has just lost its connection
 * and waits Retry-After's 120 s before it resumes.  The restore must
 * return the restorer's refusal at once: the first GET is the only
 * request the server ever sees (without the stop the download would send
 * its resume after 120 s, then 99 more), and the call is far from the
 * 120 s wait.  Check's timeout (60 s) fails the test if the wait is
 * sat out.
 */
static void restore_stopped(const char *scheme)
{
    wcache_store *st = halt_store(scheme);
    wcache_cache *c = tu_new_cache();
    char reb[512] = "";
    wcache_snapshot_read_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.size = sizeof ro;
    ro.expect_source_id = "wrong";
    ro.expect_source_id_len = 5;
    ro.errbuf = reb;
    ro.errbuf_len = sizeof reb;
    int64_t t0 = tu_now_ms();
    int rc = wcache_store_restore(st, "obj.wcsnap", c, &ro, NULL);
    int64_t took = tu_now_ms() - t0;
    ck_assert_msg(rc == WCACHE_EINVAL, "%s: %s: %s", scheme, wcache_strerror(rc), reb);
    ck_assert_msg(strstr(reb, "not the expected") != NULL, "%s", reb);
    ck_assert_int_eq(atomic_load(&hs.gets), 1);
    ck_assert_int_eq(wcache_cache_revision(c), 0);
    ck_assert_int_lt(took, HALT_WAIT_S * 1000 / 2);
    wcache_cache_close(c);
    wcache_store_close(st);
}

START_TEST(halt_restore_s3)
{
    restore_stopped("s3");
}
END_TEST

START_TEST(halt_restore_gcs)
{
    restore_stopped("gs");
}
END_TEST

static int parts_refused(void *ud)
{
    return atomic_load(&hs.parts) >= *(int *)ud;
}

/*
 * A multipart upload whose parts are all answered 503 with Retry-After:
 * 120, aborted while its part threads wait to retry: the abort must join
 * them at once (one PUT each, none retried) and still send its DELETE.
 */
START_TEST(halt_upload_abort_s3)
{
    wcache_store *st = halt_store("s3");
    wcache_store_upload *up;
    ck_assert_int_eq(wcache_store_upload_begin(st, "big.bin", &up), WCACHE_OK);
    static unsigned char chunk[64 * 1024];
    memset(chunk, 'x', sizeof chunk);
    /* Three full parts go up while the writer goes on; the fourth waits
     * in the buffer for the commit. */
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(wcache_store_upload_sink(chunk, sizeof chunk, up), WCACHE_OK);
    int want = 3;
    ck_assert_msg(tu_wait_for(parts_refused, &want, 20000), "%d part PUTs",
                  atomic_load(&hs.parts));
    int64_t t0 = tu_now_ms();
    wcache_store_upload_abort(up);
    int64_t took = tu_now_ms() - t0;
    ck_assert_int_eq(atomic_load(&hs.parts), 3);
    ck_assert_int_eq(atomic_load(&hs.others), 2); /* initiate, abort */
    ck_assert_int_lt(took, HALT_WAIT_S * 1000 / 2);
    wcache_store_close(st);
}
END_TEST

Suite *s3_suite(void)
{
    Suite *s = suite_create("s3");
    TCase *t = tcase_create("s3");
    tcase_add_unchecked_fixture(t, s3_up, s3_down);
    tcase_add_checked_fixture(t, tmp_setup, tmp_teardown);
    tcase_add_checked_fixture(t, px_up, px_down);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, s3_layout_cycle);
    tcase_add_test(t, s3_awscli_both_ways);
    tcase_add_test(t, s3_wrong_secret);
    tcase_add_test(t, s3_multipart);
    tcase_add_test(t, s3_faults_survived);
    tcase_add_test(t, s3_faults_give_up);
    tcase_add_test(t, s3_damaged_object_refused);
    tcase_add_test(t, s3_restore_streams);
    tcase_add_test(t, s3_credentials_file);
    tcase_add_test(t, s3_virtual_hosted);
    suite_add_tcase(s, t);
    return s;
}

static void snap_file_at(const char *path, int n)
{
    wcache_cache *c = tu_new_cache();
    fill(c, n, 32);
    wcache_snapshot_write_opts w = wopts("oom");
    ck_assert_int_eq(wcache_snapshot_write(c, path, &w, NULL), WCACHE_OK);
    wcache_cache_close(c);
}

/* An allocator that fails its n-th allocation, to walk every error path. */
static long chaos_left;
static void *chaos_alloc(size_t n, void *ud)
{
    (void)ud;
    if (chaos_left >= 0 && chaos_left-- == 0)
        return NULL;
    return malloc(n ? n : 1);
}
static void chaos_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

/* Out of memory at every allocation of a file store's open, upload,
 * download, listing and layout calls: ENOMEM or success, never a crash or
 * a leak (the ASan and valgrind passes watch), nothing half-written. */
START_TEST(file_out_of_memory)
{
    char url[400], src[400], dst[400];
    snprintf(url, sizeof url, "file://%s/oom", tdir);
    snprintf(src, sizeof src, "%s/src.wcsnap", tdir);
    snprintf(dst, sizeof dst, "%s/dst.wcsnap", tdir);
    snap_file_at(src, 40);
    wcache_allocator al = {sizeof al, chaos_alloc, chaos_free, NULL};
    int done = 0;
    long k;
    for (k = 0; !done && k < 400; k++) {
        chaos_left = k;
        wcache_store_opts o;
        memset(&o, 0, sizeof o);
        o.size = sizeof o;
        o.alloc = &al;
        wcache_store *st = NULL;
        int rc = wcache_store_open(&st, url, &o);
        if (rc == WCACHE_OK)
            rc = wcache_store_put_file(st, "a/one.wcsnap", src, NULL);
        if (rc == WCACHE_OK)
            rc = wcache_store_get_file(st, "a/one.wcsnap", dst, 1, NULL);
        int n = 0;
        if (rc == WCACHE_OK)
            rc = wcache_store_list(st, NULL, count_cb, &n);
        if (rc == WCACHE_OK)
            rc = wcache_store_retain(st, "a", 1, 1, NULL);
        ck_assert_msg(rc == WCACHE_OK || rc == WCACHE_ENOMEM, "k=%ld: %s", k,
                      wcache_strerror(rc));
        done = rc == WCACHE_OK;
        wcache_store_close(st);
    }
    chaos_left = -1;
    ck_assert(done);
    ck_assert_int_gt(k, 10); /* so many allocations failed on the way */
}
END_TEST

Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *t = tcase_create("file");
    tcase_add_checked_fixture(t, tmp_setup, tmp_teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, urls_and_keys);
    tcase_add_test(t, file_push_pull_ls);
    tcase_add_test(t, file_layout_cycle);
    tcase_add_test(t, file_out_of_memory);
    suite_add_tcase(s, t);
    t = tcase_create("halt");
    tcase_add_checked_fixture(t, halt_up, halt_down);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, halt_restore_s3);
    tcase_add_test(t, halt_restore_gcs);
    tcase_add_test(t, halt_upload_abort_s3);
    suite_add_tcase(s, t);
    return s;
}
