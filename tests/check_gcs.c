/*
 * check_gcs.c - the gs:// store backend (lib/store_gcs.c), black-box.
 *
 * THE PEER IS A STAND-IN, NOT GCS.  There is no GCS emulator here, so every
 * test talks to tests/peers/gcs-server.py, a loopback server written from
 * Google's documentation of the JSON API (simple and resumable uploads,
 * ranged media download, list with page tokens, delete, JSON errors, the
 * bearer-token check) and of the XML API with HMAC keys (GOOG4-HMAC-SHA256
 * signatures recomputed and checked by the server).  Google's own Node
 * client is run against that server by tests/peers/gcs-node-check (a
 * separate `make check` step), which is what makes it a fair stand-in;
 * these tests are therefore "stub-verified".  The server also injects the
 * faults the tests ask for through its /_gcs/ control API: 5xx and 429
 * answers, dropped connections, truncated and corrupted bodies, a session
 * that keeps only part of a chunk, and a wrong checksum in the answer.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <watchcache.h>

#include "testutil.h"

#define TOKEN "ya29.test-token-do-not-log"
#define HMAC_ID "GOOGTS7C7FUP3AIRVJTE2BCDKINBTES3HC2GY5CBFJDCQ2SYHV6A6XXVTJFSA"
#define HMAC_SECRET "bGoa+V7g/yqDXvKRqq+JTFn4uQZbPiQJo4pf9RzJ"

static char EP[128];      /* http://127.0.0.1:PORT of the stand-in */
static pid_t SRV = -1;    /* its pid */
static int SRV_IN = -1;   /* its stdin: it exits when this closes */
static char TDIR[256];    /* scratch directory */
static char TOKFILE[300]; /* holds TOKEN */
static char errbuf[1024];

static int under_valgrind(void)
{
    return getenv("WCACHE_VALGRIND") != NULL;
}

/* ------------------------------------------------------------------ */
/* the stand-in                                                        */
/* ------------------------------------------------------------------ */

static void srv_start_args(const char *max_page)
{
    tu_tmpdir(TDIR, sizeof TDIR, "wcgcs");
    snprintf(TOKFILE, sizeof TOKFILE, "%s/token", TDIR);
    FILE *f = fopen(TOKFILE, "w");
    ck_assert_ptr_nonnull(f);
    fputs(TOKEN "\n", f);
    fclose(f);
    int in[2], out[2];
    ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execlp("python3", "python3", "tests/peers/gcs-server.py", "--bucket", "snaps",
               "--token", TOKEN, "--forbid-token", "forbidden-token", "--hmac",
               HMAC_ID ":" HMAC_SECRET, "--max-page", max_page, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    SRV = pid;
    SRV_IN = in[1];
    /* The endpoint line comes once the server listens (bounded: a dead
     * server closes the pipe). */
    FILE *o = fdopen(out[0], "r");
    char line[256] = "";
    if (!fgets(line, sizeof line, o))
        line[0] = 0;
    fclose(o);
    ck_assert_msg(strncmp(line, "GCS_ENDPOINT=", 13) == 0,
                  "tests/peers/gcs-server.py did not start (python3 missing?)");
    line[strcspn(line, "\r\n")] = 0;
    snprintf(EP, sizeof EP, "%.100s", line + 13);
    errbuf[0] = 0;
    unsetenv("STORAGE_EMULATOR_HOST");
    unsetenv("GOOGLE_OAUTH_ACCESS_TOKEN");
    unsetenv("GCS_HMAC_ACCESS_ID");
    unsetenv("GCS_HMAC_SECRET");
}

static void srv_start(void)
{
    srv_start_args("1000");
}

/* Pages of two objects: every list crosses page tokens. */
static void srv_start_paged(void)
{
    srv_start_args("2");
}

static void srv_stop(void)
{
    if (SRV > 0) {
        close(SRV_IN);
        kill(SRV, SIGTERM);
        waitpid(SRV, NULL, 0);
        SRV = -1;
    }
    if (TDIR[0])
        tu_rm_rf(TDIR);
    TDIR[0] = 0;
}

typedef struct mem {
    char *p;
    size_t len;
} mem;

static size_t mem_write(char *p, size_t s, size_t n, void *ud)
{
    mem *m = ud;
    char *np = realloc(m->p, m->len + s * n + 1);
    if (!np)
        return 0;
    memcpy(np + m->len, p, s * n);
    m->p = np;
    m->len += s * n;
    m->p[m->len] = 0;
    return s * n;
}

/* A control request to the stand-in; the answer (free it), or NULL. */
static char *ctl(const char *method, const char *path, const char *body)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", EP, path);
    CURL *e = curl_easy_init();
    mem m = {NULL, 0};
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, mem_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &m);
    CURLcode cc = curl_easy_perform(e);
    curl_easy_cleanup(e);
    ck_assert_msg(cc == CURLE_OK, "control %s: %s", path, curl_easy_strerror(cc));
    return m.p;
}

static void fault(const char *json)
{
    free(ctl("POST", "/_gcs/fault", json));
}

/* How many logged requests contain every one of the given substrings. */
static int log_count(const char *a, const char *b)
{
    char *log = ctl("GET", "/_gcs/log", NULL);
    int n = 0;
    /* The log is a JSON array of strings: one request per element. */
    for (char *p = log; p && (p = strchr(p, '"')) != NULL;) {
        char *q = strchr(p + 1, '"');
        if (!q)
            break;
        *q = 0;
        if (strstr(p + 1, a) && (!b || strstr(p + 1, b)))
            n++;
        p = q + 1;
    }
    free(log);
    return n;
}

static int open_sessions(void)
{
    char *s = ctl("GET", "/_gcs/state", NULL);
    char *p = strstr(s, "\"sessions\": ");
    int n = p ? atoi(p + 12) : -1;
    free(s);
    return n;
}

/* ------------------------------------------------------------------ */
/* caches, snapshots, stores                                            */
/* ------------------------------------------------------------------ */

/* n keys of vbytes poorly compressible bytes, revisions from *rev + 1. */
static void fill(wcache_cache *c, int n, size_t vbytes, int64_t *rev)
{
    char k[64];
    char *v = malloc(vbytes);
    ck_assert_ptr_nonnull(v);
    uint64_t x = 0x9e3779b97f4a7c15ULL + (uint64_t)*rev;
    for (int i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "/registry/pods/ns%d/pod-%06d", i % 7, i);
        for (size_t j = 0; j < vbytes; j++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v[j] = (char)(x >> 24);
        }
        ck_assert_int_eq(wcache_ingest_put(c, k, (size_t)kl, v, vbytes, ++*rev), WCACHE_OK);
    }
    free(v);
}

/* b holds exactly a's keys, values and revisions. */
static void same_content(wcache_cache *a, wcache_cache *b)
{
    ck_assert_int_eq(wcache_cache_revision(a), wcache_cache_revision(b));
    wcache_view *va = NULL, *vb = NULL;
    ck_assert_int_eq(wcache_view_create(a, &va), WCACHE_OK);
    ck_assert_int_eq(wcache_view_create(b, &vb), WCACHE_OK);
    ck_assert_int_eq(wcache_view_begin(va, WCACHE_REV_LATEST), WCACHE_OK);
    ck_assert_int_eq(wcache_view_begin(vb, WCACHE_REV_LATEST), WCACHE_OK);
    wcache_list_opts la = {.size = sizeof la}, lb = {.size = sizeof lb};
    wcache_kv ia[64], ib[64];
    char ta[512], tb[512];
    for (;;) {
        wcache_list_result ra = {.size = sizeof ra}, rb = {.size = sizeof rb};
        ck_assert_int_eq(wcache_view_list(va, &la, ia, 64, &ra), WCACHE_OK);
        ck_assert_int_eq(wcache_view_list(vb, &lb, ib, 64, &rb), WCACHE_OK);
        ck_assert_uint_eq(ra.count, rb.count);
        ck_assert_int_eq(ra.more, rb.more);
        for (size_t i = 0; i < ra.count; i++) {
            ck_assert_uint_eq(ia[i].key_len, ib[i].key_len);
            ck_assert(memcmp(ia[i].key, ib[i].key, ia[i].key_len) == 0);
            ck_assert_uint_eq(ia[i].value_len, ib[i].value_len);
            ck_assert(memcmp(ia[i].value, ib[i].value, ia[i].value_len) == 0);
            ck_assert_int_eq(ia[i].mod_revision, ib[i].mod_revision);
            ck_assert_int_eq(ia[i].create_revision, ib[i].create_revision);
        }
        if (!ra.more)
            break;
        ck_assert(ra.token_len < sizeof ta && rb.token_len < sizeof tb);
        memcpy(ta, ra.token, ra.token_len + 1);
        memcpy(tb, rb.token, rb.token_len + 1);
        la.token = ta;
        la.token_len = ra.token_len;
        lb.token = tb;
        lb.token_len = rb.token_len;
    }
    wcache_view_end(va);
    wcache_view_end(vb);
    wcache_view_free(va);
    wcache_view_free(vb);
}

static void base_opts(wcache_store_opts *o)
{
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->endpoint = EP;
    o->gcs_token_file = TOKFILE;
    o->part_bytes = 256 * 1024; /* GCS's chunk unit: several chunks per test */
    o->allow_small_parts = 1;
    o->backoff_ms = 1;
    o->backoff_max_ms = 20;
    o->tmp_dir = TDIR;
    o->errbuf = errbuf;
    o->errbuf_len = sizeof errbuf;
}

static wcache_store *open_gs(const char *url, wcache_store_opts *o)
{
    wcache_store *st = NULL;
    int rc = wcache_store_open(&st, url, o);
    ck_assert_msg(rc == WCACHE_OK, "open %s: %s: %s", url, wcache_strerror(rc), errbuf);
    return st;
}

/* Bytes of a whole object. */
static int to_mem(const void *buf, size_t len, void *ud)
{
    mem *m = ud;
    char *np = realloc(m->p, m->len + len + 1);
    if (!np)
        return WCACHE_ENOMEM;
    memcpy(np + m->len, buf, len);
    m->p = np;
    m->len += len;
    return WCACHE_OK;
}

/* The snapshot of c as bytes in memory (what a push must store). */
static mem snap_bytes(wcache_cache *c, const char *id)
{
    mem m = {NULL, 0};
    wcache_snapshot_write_opts w = {.size = sizeof w,
                                    .revision = WCACHE_REV_LATEST,
                                    .source_id = id,
                                    .source_id_len = strlen(id),
                                    .created_unix_ns = 1};
    ck_assert_int_eq(wcache_snapshot_write_to(c, to_mem, &m, &w, NULL), WCACHE_OK);
    return m;
}

/* Push c's snapshot as key through a streamed upload. */
static int push(wcache_store *st, const char *key, wcache_cache *c, const char *id)
{
    wcache_snapshot_write_opts w = {.size = sizeof w,
                                    .revision = WCACHE_REV_LATEST,
                                    .source_id = id,
                                    .source_id_len = strlen(id),
                                    .created_unix_ns = 1};
    return wcache_store_put_snapshot(st, key, c, &w, 0, NULL);
}

static mem pull(wcache_store *st, const char *key, int want)
{
    mem m = {NULL, 0};
    wcache_store_object o = {.size = sizeof o};
    int rc = wcache_store_get(st, key, to_mem, &m, &o);
    ck_assert_msg(rc == want, "get %s: %s (%s)", key, wcache_strerror(rc), errbuf);
    if (rc == WCACHE_OK)
        ck_assert_uint_eq(o.bytes, m.len);
    return m;
}

static int cache_size(void)
{
    return under_valgrind() ? 700 : 1400;
}

/* A cache of n keys of 400 poorly compressible bytes: with 256 KiB chunks
 * its snapshot takes a few. */
static wcache_cache *filled(int n, int64_t *rev)
{
    wcache_cache *c = tu_new_cache();
    fill(c, n, 400, rev);
    return c;
}

/* The object key holds exactly the snapshot of c (source id). */
static void pull_equals(wcache_store *st, const char *key, wcache_cache *c, const char *id)
{
    mem snap = snap_bytes(c, id);
    mem got = pull(st, key, WCACHE_OK);
    ck_assert_uint_eq(got.len, snap.len);
    ck_assert(memcmp(got.p, snap.p, snap.len) == 0);
    free(got.p);
    free(snap.p);
}

/* ------------------------------------------------------------------ */
/* tests                                                                */
/* ------------------------------------------------------------------ */

/* Push (resumable, several chunks) -> list -> newest -> restore -> equal;
 * the object is the snapshot byte for byte. */
START_TEST(json_roundtrip)
{
    int64_t rev = 0;
    wcache_cache *c = filled(cache_size(), &rev);
    wcache_store_opts o;
    base_opts(&o);
    wcache_store *st = open_gs("gs://snaps/prod/", &o);
    const char *id = "etcd-a/registry";
    wcache_snapshot_write_opts w = {.size = sizeof w,
                                    .revision = WCACHE_REV_LATEST,
                                    .source_id = id,
                                    .source_id_len = strlen(id),
                                    .created_unix_ns = 1};
    ck_assert_msg(wcache_store_put_snapshot(st, NULL, c, &w, 0, NULL) == WCACHE_OK, "%s",
                  errbuf);
    ck_assert_int_ge(log_count("PUT /upload/storage/v1/b/snaps/o?", "upload_id="), 2);
    ck_assert_int_eq(log_count("uploadType=resumable&name=prod%2F", NULL) >= 1, 1);

    char key[512];
    int64_t r = 0;
    ck_assert_int_eq(wcache_store_newest(st, id, strlen(id), key, sizeof key, &r), WCACHE_OK);
    ck_assert_int_eq(r, rev);
    char want[512];
    ck_assert_int_eq(wcache_store_snapshot_key(id, strlen(id), rev, want, sizeof want),
                     WCACHE_OK);
    ck_assert_str_eq(key, want);

    pull_equals(st, key, c, id);

    wcache_cache *d = tu_new_cache();
    wcache_snapshot_read_opts ro = {
        .size = sizeof ro, .expect_source_id = id, .expect_source_id_len = strlen(id)};
    ck_assert_msg(wcache_store_restore(st, NULL, d, &ro, NULL) == WCACHE_OK, "%s", errbuf);
    same_content(c, d);
    ck_assert_int_eq(open_sessions(), 0);
    wcache_store_close(st);
    wcache_cache_close(c);
    wcache_cache_close(d);
}
END_TEST

/* An object smaller than a chunk goes up in one simple upload; a missing
 * object is WCACHE_ENOTFOUND; delete is idempotent; the stand-in found via
 * $STORAGE_EMULATOR_HOST ("host:port") and the token via the environment. */
START_TEST(json_small_env)
{
    int64_t rev = 0;
    wcache_cache *c = tu_new_cache();
    fill(c, 20, 50, &rev);
    setenv("STORAGE_EMULATOR_HOST", EP + 7, 1);
    setenv("GOOGLE_OAUTH_ACCESS_TOKEN", TOKEN, 1);
    wcache_store_opts o;
    base_opts(&o);
    o.endpoint = NULL;
    o.gcs_token_file = NULL;
    wcache_store *st = open_gs("gs://snaps", &o);
    ck_assert_msg(push(st, "one file.wcsnap", c, "x") == WCACHE_OK, "%s", errbuf);
    ck_assert_int_eq(log_count("uploadType=media", "200"), 1);
    ck_assert_int_eq(log_count("uploadType=resumable", NULL), 0);
    pull_equals(st, "one file.wcsnap", c, "x");
    free(pull(st, "nope.wcsnap", WCACHE_ENOTFOUND).p);
    ck_assert_int_eq(wcache_store_delete(st, "one file.wcsnap"), WCACHE_OK);
    ck_assert_int_eq(wcache_store_delete(st, "one file.wcsnap"), WCACHE_OK);
    free(pull(st, "one file.wcsnap", WCACHE_ENOTFOUND).p);
    wcache_store_close(st);
    wcache_cache_close(c);
    unsetenv("STORAGE_EMULATOR_HOST");
    unsetenv("GOOGLE_OAUTH_ACCESS_TOKEN");
}
END_TEST

/* Every log message of a store, to check what it never says. */
static char LOGS[65536];
static size_t LOGS_LEN;

static void capture_log(int level, const char *msg, size_t len, void *ud)
{
    (void)level;
    (void)ud;
    if (LOGS_LEN + len + 2 < sizeof LOGS) {
        memcpy(LOGS + LOGS_LEN, msg, len);
        LOGS_LEN += len;
        LOGS[LOGS_LEN++] = '\n';
        LOGS[LOGS_LEN] = 0;
    }
}

/* A resumable upload through every fault the server can throw at a
 * session: a 429 and a 503 on the session start, 503s and a dropped
 * connection on chunks (each followed by a status query), a chunk stored
 * only in part.  The object is still exactly the snapshot, and no session
 * is left open. */
START_TEST(resumable_faults)
{
    int64_t rev = 0;
    wcache_cache *c = filled(1500, &rev); /* two 512 KiB chunks, whatever the runner */
    wcache_store_opts o;
    base_opts(&o);
    o.part_bytes = 512 * 1024;
    o.log = capture_log;
    LOGS_LEN = 0;
    LOGS[0] = 0;
    wcache_store *st = open_gs("gs://snaps/f", &o);
    fault("{\"match\":\"POST /upload/\",\"action\":\"status\",\"status\":429}");
    fault("{\"match\":\"POST /upload/\",\"action\":\"status\",\"status\":503}");
    fault("{\"match\":\"[bytes 0-\",\"action\":\"status\",\"status\":503,\"count\":2}");
    fault("{\"match\":\"[bytes 0-\",\"action\":\"short\"}");
    /* Twice: libcurl itself re-sends once on a reused connection that
     * died before answering; the second drop reaches our code. */
    fault("{\"match\":\"[bytes 524288-\",\"action\":\"drop\",\"count\":2}");
    ck_assert_msg(push(st, "s.wcsnap", c, "id") == WCACHE_OK, "%s", errbuf);
    ck_assert_int_eq(log_count("POST /upload/", " 429"), 1);
    ck_assert_int_eq(log_count("POST /upload/", " 503"), 1);
    ck_assert_int_eq(log_count("[bytes 0-", " 503"), 2);
    ck_assert_int_eq(log_count("[bytes 524288-", " dropped"), 2);
    ck_assert_int_eq(log_count("[bytes */*]", " 308"), 2);  /* status queries */
    ck_assert_int_eq(log_count("[bytes */", " 308"), 3);    /* and one with the size */
    ck_assert_int_ge(log_count("[bytes 262144-", NULL), 1); /* the rest of the short chunk */
    pull_equals(st, "s.wcsnap", c, "id");
    ck_assert_int_eq(open_sessions(), 0);
    /* The retries were logged, without the token or a session URI (its
     * upload_id is a credential for the session). */
    ck_assert_msg(strstr(LOGS, "retry"), "%s", LOGS);
    ck_assert_msg(!strstr(LOGS, TOKEN) && !strstr(LOGS, "upload_id"), "%s", LOGS);

    /* Past the retry budget: the error names the object and the status,
     * the session is cancelled, nothing is stored. */
    o.max_retries = 2;
    wcache_store_close(st);
    st = open_gs("gs://snaps/f", &o);
    fault("{\"match\":\"[bytes 0-\",\"action\":\"status\",\"status\":503,\"count\":10}");
    ck_assert_int_eq(push(st, "t.wcsnap", c, "id"), WCACHE_EHTTP);
    ck_assert_msg(strstr(errbuf, "gs://snaps/f/t.wcsnap") && strstr(errbuf, "503"), "%s",
                  errbuf);
    ck_assert_int_eq(open_sessions(), 0);
    ck_assert_msg(!strstr(errbuf, "upload_id") && !strstr(LOGS, TOKEN), "%s", errbuf);
    free(pull(st, "t.wcsnap", WCACHE_ENOTFOUND).p);
    wcache_store_close(st);
    wcache_cache_close(c);
}
END_TEST

/* Store another version of the object name (a new generation). */
static CURLcode replace_object(const char *name)
{
    char url[256], auth[128];
    snprintf(url, sizeof url, "%s/upload/storage/v1/b/snaps/o?uploadType=media&name=%s", EP,
             name);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", TOKEN);
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, auth);
    mem out = {NULL, 0};
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "another version");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, mem_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &out);
    CURLcode cc = curl_easy_perform(e);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(out.p);
    return cc;
}

/* A sink that replaces the object being downloaded at its first bytes. */
static int replacing_sink(const void *buf, size_t len, void *ud)
{
    mem *m = ud;
    if (m->len == 0 && replace_object("d.wcsnap") != CURLE_OK)
        return WCACHE_ECURL;
    return to_mem(buf, len, ud);
}

/* A progress callback that replaces s.wcsnap once the download has
 * begun (after the first, cut, transfer). */
static int replaced;
static int replacing_progress(uint64_t done, uint64_t total, void *ud)
{
    (void)total;
    (void)ud;
    if (done && !replaced++)
        ck_assert_int_eq(replace_object("s.wcsnap"), CURLE_OK);
    return 0;
}

/* wcache_store_restore streams the download into the restorer: the result
 * equals the restore of the pulled file; bodies cut twice are resumed
 * with ranged GETs of the same generation (the stand-in's log shows the
 * two truncations and two ranged requests); an object replaced between two
 * ranges is refused with the cache untouched. */
START_TEST(streamed_restore)
{
    int64_t rev = 0;
    wcache_cache *c = filled(cache_size(), &rev);
    wcache_store_opts o;
    base_opts(&o);
    wcache_store *st = open_gs("gs://snaps", &o);
    ck_assert_msg(push(st, "s.wcsnap", c, "id") == WCACHE_OK, "%s", errbuf);
    char path[400];
    snprintf(path, sizeof path, "%s/s.pulled", TDIR);
    ck_assert_msg(wcache_store_get_file(st, "s.wcsnap", path, 1, NULL) == WCACHE_OK, "%s",
                  errbuf);
    wcache_cache *byfile = tu_new_cache(), *d = tu_new_cache();
    ck_assert_int_eq(wcache_snapshot_restore(byfile, path, NULL, NULL), WCACHE_OK);
    ck_assert_msg(wcache_store_restore(st, "s.wcsnap", d, NULL, NULL) == WCACHE_OK, "%s",
                  errbuf);
    same_content(byfile, d);
    same_content(c, d);
    wcache_cache_close(d);

    fault("{\"match\":\"GET /storage/v1/b/snaps/o/s.wcsnap?alt=media\",\"action\":\"truncate\","
          "\"count\":2}");
    d = tu_new_cache();
    ck_assert_msg(wcache_store_restore(st, "s.wcsnap", d, NULL, NULL) == WCACHE_OK, "%s",
                  errbuf);
    same_content(c, d);
    ck_assert_int_eq(log_count("s.wcsnap?alt=media", "truncated"), 2);
    ck_assert_int_eq(log_count("s.wcsnap?alt=media&generation=", "{bytes="), 2);
    wcache_cache_close(d);

    o.progress = replacing_progress;
    replaced = 0;
    wcache_store *sr = open_gs("gs://snaps", &o);
    fault(
        "{\"match\":\"GET /storage/v1/b/snaps/o/s.wcsnap?alt=media\",\"action\":\"truncate\"}");
    char reb[512] = "";
    wcache_snapshot_read_opts ro = {.size = sizeof ro, .errbuf = reb, .errbuf_len = sizeof reb};
    d = tu_new_cache();
    ck_assert_int_eq(wcache_store_restore(sr, "s.wcsnap", d, &ro, NULL), WCACHE_ECORRUPT);
    ck_assert_int_eq(replaced, 1);
    ck_assert_msg(strstr(reb, "replaced"), "%s", reb);
    ck_assert_int_eq(wcache_cache_revision(d), 0);
    /* What replaced it is not a snapshot: refused whole, cache untouched. */
    ck_assert_int_eq(wcache_store_restore(st, "s.wcsnap", d, &ro, NULL), WCACHE_ECORRUPT);
    ck_assert_msg(strstr(reb, "magic") || strstr(reb, "truncated"), "%s", reb);
    ck_assert_int_eq(wcache_cache_revision(d), 0);
    wcache_store_close(sr);
    wcache_store_close(st);
    wcache_cache_close(byfile);
    wcache_cache_close(d);
    wcache_cache_close(c);
}
END_TEST

/* Downloads resume where a broken transfer stopped (Range from the byte
 * reached, same generation), through truncated bodies, a 503 and a dropped
 * connection; an object replaced between two ranges and a body whose bytes
 * do not match the object's crc32c are refused. */
START_TEST(download_faults)
{
    int64_t rev = 0;
    wcache_cache *c = filled(cache_size() / 2, &rev);
    wcache_store_opts o;
    base_opts(&o);
    wcache_store *st = open_gs("gs://snaps", &o);
    ck_assert_msg(push(st, "d.wcsnap", c, "id") == WCACHE_OK, "%s", errbuf);
    fault("{\"match\":\"GET /storage/v1/b/snaps/o/d.wcsnap?alt=media\",\"action\":\"truncate\","
          "\"count\":2}");
    fault("{\"match\":\"GET /storage/v1/b/snaps/o/d.wcsnap?alt=media\",\"action\":\"status\","
          "\"status\":503}");
    fault("{\"match\":\"GET /storage/v1/b/snaps/o/d.wcsnap?alt=media\",\"action\":\"drop\"}");
    pull_equals(st, "d.wcsnap", c, "id");
    ck_assert_int_eq(log_count("alt=media", "truncated"), 2);
    /* The second and later requests ask for the rest of one generation. */
    ck_assert_int_ge(log_count("alt=media&generation=", "{bytes="), 2);

    /* A resumed request answered with the whole object (Range ignored):
     * refused before the sink sees a byte of it. */
    fault("{\"match\":\"alt=media\",\"action\":\"truncate\"}");
    fault("{\"match\":\"alt=media\",\"action\":\"norange\"}");
    mem half = pull(st, "d.wcsnap", WCACHE_ECORRUPT);
    ck_assert_msg(strstr(errbuf, "asked for bytes from"), "%s", errbuf);
    mem snap = snap_bytes(c, "id");
    ck_assert_uint_lt(half.len, snap.len);
    ck_assert(memcmp(half.p, snap.p, half.len) == 0);
    free(half.p);
    free(snap.p);

    /* Replaced between two ranges: never spliced from two versions. */
    fault("{\"match\":\"alt=media\",\"action\":\"truncate\"}");
    mem m = {NULL, 0};
    ck_assert_int_eq(wcache_store_get(st, "d.wcsnap", replacing_sink, &m, NULL),
                     WCACHE_ECORRUPT);
    ck_assert_msg(strstr(errbuf, "replaced"), "%s", errbuf);
    free(m.p);
    ck_assert_msg(push(st, "d.wcsnap", c, "id") == WCACHE_OK, "%s", errbuf);

    fault("{\"match\":\"alt=media\",\"action\":\"corrupt\"}");
    mem bad = pull(st, "d.wcsnap", WCACHE_ECORRUPT);
    ck_assert_msg(strstr(errbuf, "crc32c"), "%s", errbuf);
    free(bad.p);

    /* A restore through a corrupted body leaves the cache untouched. */
    fault("{\"match\":\"alt=media\",\"action\":\"corrupt\"}");
    wcache_cache *d = tu_new_cache();
    ck_assert_int_ne(wcache_store_restore(st, "d.wcsnap", d, NULL, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_revision(d), 0);
    ck_assert_int_eq(wcache_store_restore(st, "d.wcsnap", d, NULL, NULL), WCACHE_OK);
    same_content(c, d);
    wcache_store_close(st);
    wcache_cache_close(c);
    wcache_cache_close(d);
}
END_TEST

/* A server that reports a crc32c other than what was sent: the upload
 * fails and the object is deleted again. */
START_TEST(upload_checksum_mismatch)
{
    int64_t rev = 0;
    wcache_cache *c = filled(cache_size(), &rev);
    wcache_store_opts o;
    base_opts(&o);
    wcache_store *st = open_gs("gs://snaps", &o);
    fault("{\"match\":\"upload_id=\",\"action\":\"lie\",\"count\":100}");
    ck_assert_int_eq(push(st, "lie.wcsnap", c, "id"), WCACHE_ECORRUPT);
    ck_assert_msg(strstr(errbuf, "crc32c") && strstr(errbuf, "lie.wcsnap"), "%s", errbuf);
    free(pull(st, "lie.wcsnap", WCACHE_ENOTFOUND).p);
    wcache_store_close(st);
    wcache_cache_close(c);
}
END_TEST

/* 401 and 403 are not retried, name bucket, object and status, and never
 * show the token; a token file is re-read when it changes. */
START_TEST(auth_failures)
{
    int64_t rev = 0;
    wcache_cache *c = tu_new_cache();
    fill(c, 10, 20, &rev);
    char bad[320];
    snprintf(bad, sizeof bad, "%s/bad-token", TDIR);
    FILE *f = fopen(bad, "w");
    fputs("wrong-token-secret\n", f);
    fclose(f);
    wcache_store_opts o;
    base_opts(&o);
    o.gcs_token_file = bad;
    wcache_store *st = open_gs("gs://snaps/a", &o);
    ck_assert_int_eq(push(st, "x.wcsnap", c, "id"), WCACHE_EHTTP);
    ck_assert_msg(strstr(errbuf, "gs://snaps/a/x.wcsnap") && strstr(errbuf, "401"), "%s",
                  errbuf);
    ck_assert_msg(!strstr(errbuf, "wrong-token-secret"), "token in errbuf: %s", errbuf);
    ck_assert_int_eq(log_count("uploadType=media", " 401"), 1); /* not retried */

    /* The sidecar writes a good token: the next call uses it. */
    struct timespec ts[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
    f = fopen(bad, "w");
    fputs(TOKEN "\n", f);
    fclose(f);
    /* Same-second rewrites keep st_mtim distinct only with ns stamps:
     * make sure the change is seen. */
    ts[1].tv_sec = time(NULL) + 5;
    ts[1].tv_nsec = 0;
    utimensat(AT_FDCWD, bad, ts, 0);
    ck_assert_msg(push(st, "x.wcsnap", c, "id") == WCACHE_OK, "%s", errbuf);
    wcache_store_close(st);

    setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "forbidden-token", 1);
    o.gcs_token_file = NULL;
    st = open_gs("gs://snaps/a", &o);
    mem m = {NULL, 0};
    ck_assert_int_eq(wcache_store_get(st, "x.wcsnap", to_mem, &m, NULL), WCACHE_EHTTP);
    free(m.p);
    ck_assert_msg(strstr(errbuf, "403") && strstr(errbuf, "gs://snaps/a/x.wcsnap"), "%s",
                  errbuf);
    ck_assert_msg(!strstr(errbuf, "forbidden-token"), "token in errbuf: %s", errbuf);
    ck_assert_int_eq(log_count("x.wcsnap?alt=media", " 403"), 1);
    wcache_store_close(st);
    unsetenv("GOOGLE_OAUTH_ACCESS_TOKEN");

    /* A token file that cannot be read fails at open. */
    o.gcs_token_file = "/nonexistent/token";
    wcache_store *none = NULL;
    ck_assert_int_eq(wcache_store_open(&none, "gs://snaps", &o), WCACHE_ESYS);
    ck_assert_ptr_null(none);
    /* TLS verification is on: a https endpoint that is really plain HTTP
     * fails below HTTP, not silently. */
    char https[160];
    snprintf(https, sizeof https, "https://%s", EP + 7);
    o.gcs_token_file = TOKFILE;
    o.endpoint = https;
    o.max_retries = -1;
    st = open_gs("gs://snaps", &o);
    m = (mem){NULL, 0};
    ck_assert_int_eq(wcache_store_get(st, "x.wcsnap", to_mem, &m, NULL), WCACHE_ECURL);
    free(m.p);
    wcache_store_close(st);
    wcache_cache_close(c);
}
END_TEST

/* Listing across page tokens (pages of two), newest, and retention. */
START_TEST(list_newest_retention)
{
    int64_t rev = 0;
    wcache_cache *c = tu_new_cache();
    wcache_store_opts o;
    base_opts(&o);
    wcache_store *st = open_gs("gs://snaps/cluster", &o);
    const char *id = "src-1";
    int64_t revs[5];
    for (int i = 0; i < 5; i++) {
        fill(c, 3, 10, &rev);
        revs[i] = rev;
        wcache_snapshot_write_opts w = {.size = sizeof w,
                                        .revision = WCACHE_REV_LATEST,
                                        .source_id = id,
                                        .source_id_len = strlen(id)};
        ck_assert_msg(wcache_store_put_snapshot(st, NULL, c, &w, 0, NULL) == WCACHE_OK, "%s",
                      errbuf);
    }
    /* Not a layout name: retention leaves it alone. */
    ck_assert_int_eq(push(st, "src-1/notes.txt", c, id), WCACHE_OK);
    char key[256];
    int64_t r = 0;
    ck_assert_int_eq(wcache_store_newest(st, id, strlen(id), key, sizeof key, &r), WCACHE_OK);
    ck_assert_int_eq(r, revs[4]);
    ck_assert_int_ge(log_count("pageToken=", NULL), 2);
    size_t removed = 0;
    ck_assert_int_eq(wcache_store_retain(st, id, strlen(id), 2, &removed), WCACHE_OK);
    ck_assert_uint_eq(removed, 3);
    ck_assert_int_eq(wcache_store_newest(st, id, strlen(id), key, sizeof key, &r), WCACHE_OK);
    ck_assert_int_eq(r, revs[4]);
    char k3[256];
    ck_assert_int_eq(wcache_store_snapshot_key(id, strlen(id), revs[3], k3, sizeof k3),
                     WCACHE_OK);
    mem m = pull(st, k3, WCACHE_OK);
    free(m.p);
    ck_assert_int_eq(wcache_store_snapshot_key(id, strlen(id), revs[2], k3, sizeof k3),
                     WCACHE_OK);
    free(pull(st, k3, WCACHE_ENOTFOUND).p);
    free(pull(st, "src-1/notes.txt", WCACHE_OK).p);
    ck_assert_int_eq(wcache_store_newest(st, "other", 5, key, sizeof key, &r),
                     WCACHE_ENOTFOUND);
    /* A list answered 503 is retried. */
    fault("{\"match\":\"GET /storage/v1/b/snaps/o?\",\"action\":\"status\",\"status\":503}");
    ck_assert_int_eq(wcache_store_newest(st, id, strlen(id), key, sizeof key, &r), WCACHE_OK);
    wcache_store_close(st);
    wcache_cache_close(c);
}
END_TEST

/* The XML API with HMAC keys: every request signed GOOG4-HMAC-SHA256 and
 * checked by the server; the same round trip, list pages and retention,
 * a chunk failure; a wrong secret is a clear 403 that never shows it. */
START_TEST(xml_hmac)
{
    int64_t rev = 0;
    wcache_cache *c = filled(cache_size(), &rev);
    wcache_store_opts o;
    base_opts(&o);
    o.gcs_token_file = NULL;
    o.gcs_hmac_access_id = HMAC_ID;
    o.gcs_hmac_secret = HMAC_SECRET;
    wcache_store *st = open_gs("gs://snaps/x", &o);
    const char *id = "xml/src";
    fault("{\"match\":\"[bytes 262144-\",\"action\":\"status\",\"status\":503}");
    wcache_snapshot_write_opts w = {.size = sizeof w,
                                    .revision = WCACHE_REV_LATEST,
                                    .source_id = id,
                                    .source_id_len = strlen(id),
                                    .created_unix_ns = 1};
    ck_assert_msg(wcache_store_put_snapshot(st, NULL, c, &w, 0, NULL) == WCACHE_OK, "%s",
                  errbuf);
    ck_assert_int_eq(log_count("POST /snaps/x/", " 201"), 1);
    ck_assert_int_ge(log_count("?upload_id=", " 308"), 2);
    fill(c, 2, 10, &rev);
    ck_assert_int_eq(wcache_store_put_snapshot(st, NULL, c, &w, 0, NULL), WCACHE_OK);
    fill(c, 2, 10, &rev);
    ck_assert_int_eq(wcache_store_put_snapshot(st, NULL, c, &w, 0, NULL), WCACHE_OK);
    char key[256];
    int64_t r = 0;
    ck_assert_int_eq(wcache_store_newest(st, id, strlen(id), key, sizeof key, &r), WCACHE_OK);
    ck_assert_int_eq(r, rev);
    ck_assert_int_ge(log_count("continuation-token=", " 200"), 1);
    wcache_cache *d = tu_new_cache();
    wcache_snapshot_read_opts ro = {
        .size = sizeof ro, .expect_source_id = id, .expect_source_id_len = strlen(id)};
    ck_assert_msg(wcache_store_restore(st, NULL, d, &ro, NULL) == WCACHE_OK, "%s", errbuf);
    same_content(c, d);
    size_t removed = 0;
    ck_assert_int_eq(wcache_store_retain(st, id, strlen(id), 1, &removed), WCACHE_OK);
    ck_assert_uint_eq(removed, 2);
    ck_assert_int_eq(log_count("SignatureDoesNotMatch", NULL), 0);
    ck_assert_int_eq(log_count(" 403", NULL), 0);
    wcache_store_close(st);

    o.gcs_hmac_secret = "bm90IHRoZSBzZWNyZXQgYXQgYWxsIG5vIG5vIG5v";
    st = open_gs("gs://snaps/x", &o);
    ck_assert_int_eq(wcache_store_newest(st, id, strlen(id), key, sizeof key, &r),
                     WCACHE_EHTTP);
    ck_assert_msg(strstr(errbuf, "403") && strstr(errbuf, "SignatureDoesNotMatch") &&
                      strstr(errbuf, "gs://snaps/"),
                  "%s", errbuf);
    ck_assert_msg(!strstr(errbuf, o.gcs_hmac_secret) && !strstr(errbuf, HMAC_SECRET), "%s",
                  errbuf);
    wcache_store_close(st);
    wcache_cache_close(c);
    wcache_cache_close(d);
}
END_TEST

/* Options and URLs that are refused before any request. */
START_TEST(open_errors)
{
    wcache_store_opts o;
    base_opts(&o);
    wcache_store *st = NULL;
    o.gcs_token_file = NULL;
    o.gcs_hmac_access_id = HMAC_ID; /* no secret */
    ck_assert_int_eq(wcache_store_open(&st, "gs://snaps", &o), WCACHE_EINVAL);
    ck_assert_msg(strstr(errbuf, "HMAC"), "%s", errbuf);
    base_opts(&o);
    o.endpoint = "ftp://127.0.0.1:1";
    ck_assert_int_eq(wcache_store_open(&st, "gs://snaps", &o), WCACHE_EINVAL);
    base_opts(&o);
    ck_assert_int_eq(wcache_store_open(&st, "gs:///key", &o), WCACHE_EINVAL);
    ck_assert_ptr_null(st);
    /* A bucket that does not exist: a clear error, not a crash. */
    st = open_gs("gs://nobucket", &o);
    int64_t r;
    char key[64];
    ck_assert_int_eq(wcache_store_newest(st, "s", 1, key, sizeof key, &r), WCACHE_EHTTP);
    ck_assert_msg(strstr(errbuf, "404") && strstr(errbuf, "nobucket"), "%s", errbuf);
    wcache_store_upload *up = NULL;
    ck_assert_int_eq(wcache_store_upload_begin(st, "k.wcsnap", &up), WCACHE_OK);
    ck_assert_int_eq(wcache_store_upload_sink("abc", 3, up), WCACHE_OK);
    ck_assert_int_eq(wcache_store_upload_commit(up, NULL), WCACHE_EHTTP);
    ck_assert_msg(strstr(errbuf, "404") && strstr(errbuf, "gs://nobucket/k.wcsnap"), "%s",
                  errbuf);
    wcache_store_close(st);
}
END_TEST

/* The CLI: wcache push, ls and pull on gs:// URLs (tools/wcache, built by
 * `make all`), with the token from --gcs-token-file or the environment; a
 * refused token fails with the status and never shows the token. */
static int sh(const char *fmt, const char *a, const char *b)
{
    char cmd[1024], full[1600];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    snprintf(full, sizeof full, "%.1023s --endpoint %.127s >%.255s/out 2>&1", cmd, EP, TDIR);
    int rc = system(full);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int out_has(const char *needle)
{
    char p[300], buf[8192];
    snprintf(p, sizeof p, "%s/out", TDIR);
    FILE *f = fopen(p, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

START_TEST(cli_push_pull_ls)
{
    ck_assert_msg(access("tools/wcache", X_OK) == 0, "tools/wcache is not built (make all)");
    int64_t rev = 0;
    wcache_cache *c = filled(cache_size(), &rev);
    char a[300], b[300];
    snprintf(a, sizeof a, "%s/a.wcsnap", TDIR);
    snprintf(b, sizeof b, "%s/b.wcsnap", TDIR);
    wcache_snapshot_write_opts w = {.size = sizeof w, .revision = WCACHE_REV_LATEST};
    ck_assert_int_eq(wcache_snapshot_write(c, a, &w, NULL), WCACHE_OK);
    ck_assert_int_eq(
        sh("tools/wcache push %s gs://snaps/cli/a.wcsnap --gcs-token-file %s", a, TOKFILE), 0);
    ck_assert_int_eq(sh("tools/wcache ls gs://snaps/cli --gcs-token-file %s%s", TOKFILE, ""),
                     0);
    ck_assert(out_has("a.wcsnap"));
    ck_assert_int_eq(sh("GOOGLE_OAUTH_ACCESS_TOKEN=" TOKEN " tools/wcache pull "
                        "gs://snaps/cli/a.wcsnap %s%s",
                        b, ""),
                     0);
    char cmp[700];
    snprintf(cmp, sizeof cmp, "cmp -s %s %s", a, b);
    ck_assert_int_eq(system(cmp), 0);
    ck_assert_int_ne(sh("GOOGLE_OAUTH_ACCESS_TOKEN=refused-secret-token tools/wcache ls "
                        "gs://snaps/cli%s%s",
                        "", ""),
                     0);
    ck_assert(out_has("401"));
    ck_assert(!out_has("refused-secret-token"));
    wcache_cache_close(c);
}
END_TEST

Suite *gcs_suite(void)
{
    Suite *s = suite_create("gcs");
    TCase *t = tcase_create("json");
    tcase_add_checked_fixture(t, srv_start, srv_stop);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, json_roundtrip);
    tcase_add_test(t, json_small_env);
    tcase_add_test(t, resumable_faults);
    tcase_add_test(t, download_faults);
    tcase_add_test(t, streamed_restore);
    tcase_add_test(t, upload_checksum_mismatch);
    tcase_add_test(t, auth_failures);
    tcase_add_test(t, open_errors);
    tcase_add_test(t, cli_push_pull_ls);
    suite_add_tcase(s, t);
    t = tcase_create("paged");
    tcase_add_checked_fixture(t, srv_start_paged, srv_stop);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, list_newest_retention);
    tcase_add_test(t, xml_hmac);
    suite_add_tcase(s, t);
    return s;
}
