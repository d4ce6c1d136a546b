/*
 * check_snapshot_etcd.c - restore + catch-up against a real etcd 3.4
 * started by tests/peers/etcd-local (as check_etcd.c does): a snapshot of
 * an etcd source, writes that go on after it, then a restore into a fresh
 * cache whose source resumes from S + 1 and converges to etcd's state; the
 * same when S + 1 was compacted meanwhile (the source re-lists and
 * reconciles); a snapshot of another cluster or prefix refused by the
 * source identity check; and a delta written on the way restored as a
 * chain.  Without an etcd binary the cases say so and pass.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <watchcache.h>

#include "testutil.h"

static char SE_BASE[256]; /* made by the runner's process: cleaned up even
                            after a failed case */
static char SE_DIR[300];  /* this case's, under SE_BASE */
static char SE_EPS[640];
static int SE_OK, SE_FAILED;
static char PFX[16] = "/snap/"; /* the case's prefix */
static char SE_SNAP[400];

static int64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Poll cond until it holds or ms pass: 1 when it held. */
static int until(int (*cond)(void *), void *ud, int64_t ms)
{
    int64_t end = ms_now() + ms;
    for (;;) {
        if (cond(ud))
            return 1;
        if (ms_now() > end)
            return 0;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* ---- the peer ---- */

static void se_base_up(void)
{
    const char *tmp = getenv("TMPDIR");
    struct stat sb;
    if (stat("/dev/shm", &sb) == 0 && access("/dev/shm", W_OK) == 0)
        tmp = "/dev/shm";
    snprintf(SE_BASE, sizeof SE_BASE, "%s/wcache-snapetcd-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(SE_BASE))
        SE_BASE[0] = 0;
}

static void se_base_down(void)
{
    if (!SE_BASE[0])
        return;
    char cmd[1024];
    snprintf(
        cmd, sizeof cmd,
        "for d in '%s'/*/etcd; do [ -f \"$d/pids\" ] && tests/peers/etcd-local stop \"$d\";"
        " done >/dev/null 2>&1; rm -rf '%s'",
        SE_BASE, SE_BASE);
    if (system(cmd) != 0)
        fprintf(stderr, "check_snapshot_etcd: cleanup of %s failed\n", SE_BASE);
    SE_BASE[0] = 0;
}

/* One etcd for all the cases, started by the runner's process; each case
 * works under a prefix of its own. */
static void se_up(void)
{
    SE_OK = 0;
    if (!SE_BASE[0])
        return;
    snprintf(SE_DIR, sizeof SE_DIR, "%s/case-XXXXXX", SE_BASE);
    if (!mkdtemp(SE_DIR))
        return;
    setenv("ETCD_LOCAL_EXTRA_ARGS", "--experimental-watch-progress-notify-interval 1s", 1);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "tests/peers/etcd-local start %s/etcd 2>%s/start.log", SE_DIR,
             SE_DIR);
    int rc = 1;
    for (int attempt = 0; attempt < 2 && (rc != 0 || !SE_EPS[0]); attempt++) {
        SE_EPS[0] = 0;
        FILE *p = popen(cmd, "r");
        if (!p)
            return;
        char line[700];
        while (fgets(line, sizeof line, p))
            if (strncmp(line, "ETCD_ENDPOINTS=", 15) == 0) {
                snprintf(SE_EPS, sizeof SE_EPS, "%.600s", line + 15);
                SE_EPS[strcspn(SE_EPS, "\r\n")] = 0;
            }
        rc = pclose(p);
    }
    if (rc != 0 || !SE_EPS[0]) {
        if (system("command -v etcd >/dev/null 2>&1") != 0) {
            fprintf(stderr, "check_snapshot_etcd: SKIPPED: etcd is not installed\n");
            return;
        }
        fprintf(stderr, "check_snapshot_etcd: etcd-local start failed; see %s/start.log\n",
                SE_DIR);
        SE_FAILED = 1;
        return;
    }
    SE_OK = 1;
}

static void base_and_etcd_up(void)
{
    se_base_up();
    se_up();
}

/* Each case: etcd must be there (or not installed at all). */
static void case_up(void)
{
    ck_assert_msg(!SE_FAILED, "etcd did not start");
    snprintf(SE_SNAP, sizeof SE_SNAP, "%s/s-%c.wcsnap", SE_DIR, PFX[2]);
}

/* ---- writes through the JSON gateway ---- */

static void b64(const char *s, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s), k = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)s[i + 2];
        out[k++] = t[v >> 18];
        out[k++] = t[(v >> 12) & 63];
        out[k++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[k++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[k] = 0;
}

static size_t keep_body(char *d, size_t sz, size_t nm, void *ud)
{
    char *buf = ud;
    size_t have = strlen(buf), n = sz * nm;
    if (have + n < 4096) {
        memcpy(buf + have, d, n);
        buf[have + n] = 0;
    }
    return n;
}

/* POST to the first endpoint; returns the answer's header revision. */
static int64_t gw(const char *path, const char *body)
{
    static CURL *e;
    char url[800], ans[4096] = "";
    snprintf(url, sizeof url, "%.*s%s", (int)strcspn(SE_EPS, ","), SE_EPS, path);
    if (!e)
        e = curl_easy_init();
    else
        curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, ans);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 20L);
    long st = 0;
    ck_assert_int_eq(curl_easy_perform(e), CURLE_OK);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &st);
    ck_assert_msg(st == 200, "%s: HTTP %ld: %s", path, st, ans);
    const char *r = strstr(ans, "\"revision\":\"");
    return r ? strtoll(r + 12, NULL, 10) : 0;
}

static int64_t put(const char *k, const char *v)
{
    char kb[400], vb[800], body[1400];
    b64(k, kb);
    b64(v, vb);
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"value\":\"%s\"}", kb, vb);
    return gw("/v3/kv/put", body);
}

static int64_t del(const char *k)
{
    char kb[400], body[600];
    b64(k, kb);
    snprintf(body, sizeof body, "{\"key\":\"%s\"}", kb);
    return gw("/v3/kv/deleterange", body);
}

/* A key outside the prefix, then n pods under it (written last, so that
 * the watch alone brings a cache to etcd's revision). */
static int64_t seed(int from, int n, const char *gen)
{
    char k[64], v[128];
    int64_t r = 0;
    put("/other/x", gen);
    for (int i = from; i < from + n; i++) {
        snprintf(k, sizeof k, "%spods/p%04d", PFX, i);
        snprintf(v, sizeof v, "{\"name\":\"p%04d\",\"gen\":\"%s\"}", i, gen);
        r = put(k, v);
    }
    return r;
}

static void del_pod(int i)
{
    char k[64];
    snprintf(k, sizeof k, "%spods/p%04d", PFX, i);
    del(k);
}

static int64_t put_pod(int i, const char *v)
{
    char k[64];
    snprintf(k, sizeof k, "%spods/p%04d", PFX, i);
    return put(k, v);
}

/* ---- caches fed by the source ---- */

typedef struct fed {
    wcache_cache *c;
    wcache_etcd *src;
    char id[WCACHE_SNAP_MAX_SOURCE_ID];
    size_t idlen;
    int64_t want;
} fed;

static void fed_open(fed *f, const char *prefix)
{
    wcache_etcd_opts o = {.size = sizeof o};
    o.endpoints = SE_EPS;
    o.prefix = prefix;
    o.prefix_len = strlen(prefix);
    o.backoff_max_ms = 500;
    ck_assert_int_eq(wcache_cache_create(&f->c, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_set_param(f->c, WCACHE_P_AUTO_COMPACT, 0), WCACHE_OK);
    ck_assert_int_eq(wcache_etcd_create(&f->src, f->c, &o), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_open(f->c), WCACHE_OK);
    ck_assert_int_eq(wcache_etcd_source_id(f->src, f->id, sizeof f->id, &f->idlen), WCACHE_OK);
}

static void fed_close(fed *f)
{
    wcache_etcd_free(f->src);
    wcache_cache_close(f->c);
}

static int reached(void *ud)
{
    fed *f = ud;
    return wcache_cache_revision(f->c) >= f->want;
}

/* Wait until the cache has applied etcd's current revision (progress
 * notifications bring an idle prefix there). */
static void converge(fed *f)
{
    wcache_etcd_range_info ri = {.size = sizeof ri};
    ck_assert_int_eq(wcache_etcd_range(f->src, 0, NULL, NULL, &ri), WCACHE_OK);
    f->want = ri.header_revision;
    ck_assert_msg(until(reached, f, 20000), "cache at %lld, etcd at %lld",
                  (long long)wcache_cache_revision(f->c), (long long)f->want);
}

typedef struct cmp {
    wcache_view *v;
    uint64_t n;
} cmp;

static int same_as_view(const wcache_kv *e, void *ud)
{
    cmp *k = ud;
    wcache_kv g;
    ck_assert_int_eq(wcache_view_get(k->v, e->key, e->key_len, &g), WCACHE_OK);
    ck_assert_uint_eq(g.value_len, e->value_len);
    ck_assert(memcmp(g.value, e->value, e->value_len) == 0);
    k->n++;
    ck_assert_int_eq(g.create_revision, e->create_revision);
    ck_assert_int_eq(g.mod_revision, e->mod_revision);
    ck_assert_int_eq(g.version, e->version);
    return 0;
}

/* The cache's state at rev is etcd's range at rev, key for key, with
 * etcd's create_revision, mod_revision and version (a re-list's included). */
static void equals_etcd(fed *f, int64_t rev)
{
    cmp k = {0};
    uint64_t have = 0;
    ck_assert_int_eq(wcache_view_create(f->c, &k.v), WCACHE_OK);
    ck_assert_int_eq(wcache_view_begin(k.v, rev), WCACHE_OK);
    wcache_etcd_range_info ri = {.size = sizeof ri};
    ck_assert_int_eq(wcache_etcd_range(f->src, rev, same_as_view, &k, &ri), WCACHE_OK);
    ck_assert_int_eq(wcache_view_count(k.v, NULL, &have), WCACHE_OK);
    ck_assert_uint_eq(have, k.n);
    wcache_view_free(k.v);
}

/* A snapshot of prefix at etcd's current revision; returns S. */
static int64_t snapshot_of(const char *prefix, const char *path, fed *f)
{
    fed_open(f, prefix);
    ck_assert_int_eq(wcache_etcd_start(f->src), WCACHE_OK);
    converge(f);
    wcache_etcd_stop(f->src);
    wcache_snapshot_write_opts o = {.size = sizeof o};
    wcache_snapshot_info in = {.size = sizeof in};
    o.source_id = f->id;
    o.source_id_len = f->idlen;
    ck_assert_int_eq(wcache_snapshot_write(f->c, path, &o, &in), WCACHE_OK);
    return in.revision;
}

/* Restore paths into a fresh cache with a source of prefix (not started). */
static void restore_only(fed *f, const char *prefix, const char *const *paths, size_t n)
{
    char eb[256] = "";
    fed_open(f, prefix);
    wcache_snapshot_read_opts r = {.size = sizeof r};
    r.expect_source_id = f->id;
    r.expect_source_id_len = f->idlen;
    r.errbuf = eb;
    r.errbuf_len = sizeof eb;
    ck_assert_msg(wcache_snapshot_restore_chain(f->c, paths, n, &r, NULL) == WCACHE_OK, "%s",
                  eb);
}

/* The same, then start the source: it resumes from S + 1. */
static void restore_into(fed *f, const char *prefix, const char *const *paths, size_t n)
{
    restore_only(f, prefix, paths, n);
    ck_assert_int_eq(wcache_etcd_start(f->src), WCACHE_OK);
}

START_TEST(restore_catch_up)
{
    snprintf(PFX, sizeof PFX, "/t1/");
    case_up();
    if (!SE_OK)
        return;
    seed(0, 120, "a");
    fed a;
    int64_t S = snapshot_of(PFX, SE_SNAP, &a);
    fed_close(&a);
    /* Writes go on after the snapshot: updates, new keys, deletes. */
    seed(100, 60, "b");
    for (int i = 0; i < 120; i += 7)
        del_pod(i);
    put_pod(500, "last");
    fed b;
    const char *p[1] = {SE_SNAP};
    restore_into(&b, PFX, p, 1);
    ck_assert_int_eq(wcache_cache_compacted_revision(b.c), S);
    converge(&b);
    equals_etcd(&b, b.want);
    /* Caught up through the watch from S + 1: no list at all. */
    wcache_etcd_stats st = {.size = sizeof st};
    ck_assert_int_eq(wcache_etcd_stat(b.src, &st), WCACHE_OK);
    ck_assert_uint_eq(st.lists, 0);
    ck_assert_uint_gt(st.events, 0);
    fed_close(&b);
}
END_TEST

START_TEST(restore_compacted_relists)
{
    snprintf(PFX, sizeof PFX, "/t2/");
    case_up();
    if (!SE_OK)
        return;
    seed(0, 80, "a");
    fed a;
    int64_t S = snapshot_of(PFX, SE_SNAP, &a);
    fed_close(&a);
    seed(40, 80, "b");
    del_pod(3);
    int64_t now = put_pod(1, "{\"late\":1}");
    char body[64];
    snprintf(body, sizeof body, "{\"revision\":\"%lld\",\"physical\":true}", (long long)now);
    gw("/v3/kv/compaction", body);
    ck_assert_int_gt(now, S + 1);
    fed b;
    const char *p[1] = {SE_SNAP};
    restore_into(&b, PFX, p, 1);
    converge(&b);
    equals_etcd(&b, b.want);
    wcache_etcd_stats st = {.size = sizeof st};
    ck_assert_int_eq(wcache_etcd_stat(b.src, &st), WCACHE_OK);
    ck_assert_uint_ge(st.relists, 1); /* S + 1 was gone: a full re-list */
    /* The re-list's metadata goes into a snapshot and comes back. */
    wcache_etcd_stop(b.src);
    wcache_snapshot_write_opts o = {.size = sizeof o};
    o.source_id = b.id;
    o.source_id_len = b.idlen;
    ck_assert_int_eq(wcache_snapshot_write(b.c, SE_SNAP, &o, NULL), WCACHE_OK);
    fed c;
    restore_only(&c, PFX, p, 1);
    ck_assert_int_eq(wcache_cache_revision(c.c), wcache_cache_revision(b.c));
    equals_etcd(&c, wcache_cache_revision(c.c));
    fed_close(&c);
    fed_close(&b);
}
END_TEST

START_TEST(restore_refuses_other_sources)
{
    snprintf(PFX, sizeof PFX, "/t3/");
    case_up();
    if (!SE_OK)
        return;
    seed(0, 10, "a");
    fed a, b;
    snapshot_of("/other/", SE_SNAP, &a);
    fed_close(&a);
    /* Another prefix of the same cluster. */
    char eb[256] = "";
    fed_open(&b, PFX);
    wcache_snapshot_read_opts r = {.size = sizeof r};
    r.expect_source_id = b.id;
    r.expect_source_id_len = b.idlen;
    r.errbuf = eb;
    r.errbuf_len = sizeof eb;
    ck_assert_int_eq(wcache_snapshot_restore(b.c, SE_SNAP, &r, NULL), WCACHE_EINVAL);
    ck_assert_ptr_nonnull(strstr(eb, "not the expected"));
    ck_assert_int_eq(wcache_cache_revision(b.c), 0);
    /* Another cluster: the same prefix under another cluster id. */
    fed c;
    int64_t S = snapshot_of(PFX, SE_SNAP, &c);
    wcache_snapshot_write_opts o = {.size = sizeof o};
    char other[WCACHE_SNAP_MAX_SOURCE_ID];
    memcpy(other, c.id, c.idlen);
    other[5] = other[5] == '0' ? '1' : '0'; /* "etcd:" then the cluster id */
    o.source_id = other;
    o.source_id_len = c.idlen;
    o.revision = S;
    ck_assert_int_eq(wcache_snapshot_write(c.c, SE_SNAP, &o, NULL), WCACHE_OK);
    fed_close(&c);
    ck_assert_int_eq(wcache_snapshot_restore(b.c, SE_SNAP, &r, NULL), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_cache_revision(b.c), 0);
    fed_close(&b);
}
END_TEST

/* A full snapshot, a delta written after more changes, more changes yet:
 * the chain restores and the source catches up from the delta's S + 1. */
START_TEST(chain_catch_up)
{
    snprintf(PFX, sizeof PFX, "/t4/");
    case_up();
    if (!SE_OK)
        return;
    seed(0, 60, "a");
    fed a;
    snapshot_of(PFX, SE_SNAP, &a);
    ck_assert_int_eq(wcache_etcd_start(a.src), WCACHE_OK);
    seed(30, 60, "b");
    del_pod(2);
    put_pod(500, "last");
    converge(&a);
    wcache_etcd_stop(a.src);
    char dpath[450];
    snprintf(dpath, sizeof dpath, "%s/d.wcsnap", SE_DIR);
    wcache_snapshot *base;
    ck_assert_int_eq(wcache_snapshot_open(&base, SE_SNAP, NULL), WCACHE_OK);
    wcache_snapshot_write_opts o = {.size = sizeof o};
    wcache_snapshot_info di = {.size = sizeof di};
    o.base = base;
    ck_assert_int_eq(wcache_snapshot_write(a.c, dpath, &o, &di), WCACHE_OK);
    ck_assert_uint_eq(di.tombstones, 1);
    wcache_snapshot_close(base);
    fed_close(&a);
    seed(80, 20, "c");
    fed b;
    const char *p[2] = {SE_SNAP, dpath};
    restore_into(&b, PFX, p, 2);
    ck_assert_int_eq(wcache_cache_compacted_revision(b.c), di.revision);
    converge(&b);
    equals_etcd(&b, b.want);
    equals_etcd(&b, di.revision);
    fed_close(&b);
}
END_TEST

Suite *snapshot_etcd_suite(void)
{
    Suite *s = suite_create("snapshot_etcd");
    TCase *t = tcase_create("etcd");
    tcase_add_unchecked_fixture(t, base_and_etcd_up, se_base_down);
    tcase_set_timeout(t, tu_timeout(120));
    tcase_add_test(t, restore_catch_up);
    tcase_add_test(t, restore_compacted_relists);
    tcase_add_test(t, restore_refuses_other_sources);
    tcase_add_test(t, chain_catch_up);
    suite_add_tcase(s, t);
    return s;
}
