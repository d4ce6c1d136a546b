/*
 * check_snapshot.c - black-box tests of snapshots (wcache_snapshot(3)):
 * round trips, crash points of the atomic write, every kind of damage the
 * reader must refuse with the cache left untouched, the golden file.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <dirent.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Header-only use: the runner links libwatchcache alone. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <watchcache.h>

#include "testutil.h"

#define FIXED_NS 1700000000000000000LL

static char dir[256];
static char path[300];
static char errbuf[256];

static void mkdir_tmp(void)
{
    tu_tmpdir(dir, sizeof dir, "wcsnap-test");
    snprintf(path, sizeof path, "%s/a.wcsnap", dir);
    errbuf[0] = 0;
}

static void rm_tmp(void)
{
    tu_rm_rf(dir);
}

/* n pod-like keys, some updated twice and some deleted, plus binary ones. */
static void fill(wcache_cache *c, int n, int64_t *rev)
{
    char k[64], v[256];
    for (int i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "/registry/pods/ns%d/pod-%05d", i % 7, i);
        int vl = snprintf(v, sizeof v, "{\"name\":\"pod-%05d\",\"gen\":1,\"pad\":\"%0*d\"}", i,
                          i % 120, 0);
        ck_assert_int_eq(wcache_ingest_put(c, k, (size_t)kl, v, (size_t)vl, ++*rev), WCACHE_OK);
        if (i % 5 == 0)
            ck_assert_int_eq(wcache_ingest_put(c, k, (size_t)kl, "v2", 2, ++*rev), WCACHE_OK);
        if (i % 11 == 3)
            ck_assert_int_eq(wcache_ingest_delete(c, k, (size_t)kl, ++*rev), WCACHE_OK);
    }
    static const unsigned char bk[] = {0x00, 0xff, 0x80, 'x', 0x00};
    static const unsigned char bv[] = {0xc3, 0x28, 0x00, 0xfe};
    ck_assert_int_eq(wcache_ingest_put(c, bk, sizeof bk, bv, sizeof bv, ++*rev), WCACHE_OK);
    ck_assert_int_eq(wcache_ingest_put(c, "\xff\xff", 2, "", 0, ++*rev), WCACHE_OK);
}

static int kv_eq(const wcache_kv *a, const wcache_kv *b)
{
    return a->key_len == b->key_len && a->value_len == b->value_len &&
           memcmp(a->key, b->key, a->key_len) == 0 &&
           (a->value_len == 0 || memcmp(a->value, b->value, a->value_len) == 0) &&
           a->create_revision == b->create_revision && a->mod_revision == b->mod_revision &&
           a->version == b->version;
}

/* Every LIST item and every GET of b at rb equals a's at ra, page by page. */
static void compare(wcache_cache *a, int64_t ra, wcache_cache *b, int64_t rb)
{
    wcache_view *va, *vb;
    ck_assert_int_eq(wcache_view_create(a, &va), WCACHE_OK);
    ck_assert_int_eq(wcache_view_create(b, &vb), WCACHE_OK);
    ck_assert_int_eq(wcache_view_begin(va, ra), WCACHE_OK);
    ck_assert_int_eq(wcache_view_begin(vb, rb), WCACHE_OK);
    wcache_list_opts lo = {.size = sizeof lo};
    wcache_kv ia[1000], g;
    wcache_list_result ra_ = {.size = sizeof ra_}, rb_ = {.size = sizeof rb_};
    ck_assert_int_eq(wcache_view_list(va, &lo, ia, 1000, &ra_), WCACHE_OK);
    ck_assert_int_eq(ra_.more, 0);
    uint64_t nb = 0;
    ck_assert_int_eq(wcache_view_count(vb, &lo, &nb), WCACHE_OK);
    ck_assert_uint_eq(nb, ra_.count);
    for (size_t i = 0; i < ra_.count; i++) {
        ck_assert_int_eq(wcache_view_get(vb, ia[i].key, ia[i].key_len, &g), WCACHE_OK);
        ck_assert(kv_eq(&ia[i], &g));
    }
    wcache_kv ib[1000];
    ck_assert_int_eq(wcache_view_list(vb, &lo, ib, 1000, &rb_), WCACHE_OK);
    ck_assert_uint_eq(rb_.count, ra_.count);
    for (size_t i = 0; i < rb_.count; i++)
        ck_assert(kv_eq(&ia[i], &ib[i]));
    wcache_view_free(va);
    wcache_view_free(vb);
}

static wcache_snapshot_write_opts wopts(void)
{
    wcache_snapshot_write_opts o = {.size = sizeof o};
    o.source_id = "etcd:cluster-1:/registry/";
    o.source_id_len = strlen(o.source_id);
    o.created_unix_ns = FIXED_NS;
    o.errbuf = errbuf;
    o.errbuf_len = sizeof errbuf;
    return o;
}

static wcache_snapshot_read_opts ropts(void)
{
    wcache_snapshot_read_opts o = {.size = sizeof o};
    o.errbuf = errbuf;
    o.errbuf_len = sizeof errbuf;
    return o;
}

static void roundtrip(int n, wcache_snapshot_write_opts *o)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache(), *b = tu_new_cache();
    fill(a, n, &rev);
    wcache_snapshot_info wi = {.size = sizeof wi}, ri = {.size = sizeof ri};
    ck_assert_msg(wcache_snapshot_write(a, path, o, &wi) == WCACHE_OK, "%s", errbuf);
    ck_assert_int_eq(wi.revision, rev);
    wcache_snapshot_read_opts r = ropts();
    ck_assert_msg(wcache_snapshot_restore(b, path, &r, &ri) == WCACHE_OK, "%s", errbuf);
    ck_assert_int_eq(ri.revision, rev);
    ck_assert_uint_eq(ri.objects, wi.objects);
    ck_assert_int_eq(wcache_cache_revision(b), rev);
    ck_assert_int_eq(wcache_cache_compacted_revision(b), rev);
    compare(a, rev, b, rev);
    wcache_cache_close(a);
    wcache_cache_close(b);
}

START_TEST(rt_basic)
{
    wcache_snapshot_write_opts o = wopts();
    roundtrip(500, &o);
}
END_TEST

START_TEST(rt_small_blocks_workers)
{
    wcache_snapshot_write_opts o = wopts();
    o.block_bytes = 4096;
    o.workers = 2;
    o.level = 3;
    roundtrip(700, &o);
}
END_TEST

/* Records larger than a block travel alone in an oversized block. */
START_TEST(rt_big_values)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache(), *b = tu_new_cache();
    size_t big = 300000;
    char *v = malloc(big);
    for (size_t i = 0; i < big; i++)
        v[i] = (char)(i * 7919 % 251);
    ck_assert_int_eq(wcache_ingest_put(a, "big1", 4, v, big, ++rev), WCACHE_OK);
    ck_assert_int_eq(wcache_ingest_put(a, "big2", 4, v, big / 2, ++rev), WCACHE_OK);
    ck_assert_int_eq(wcache_ingest_put(a, "small", 5, "s", 1, ++rev), WCACHE_OK);
    wcache_snapshot_write_opts o = wopts();
    o.block_bytes = 4096;
    ck_assert_int_eq(wcache_snapshot_write(a, path, &o, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_restore(b, path, NULL, NULL), WCACHE_OK);
    compare(a, rev, b, rev);
    free(v);
    wcache_cache_close(a);
    wcache_cache_close(b);
}
END_TEST

/* Past writeback steps (8 MiB of output each, handed to the disk
 * while the write goes on): incompressible values, so the file is as big
 * as they are, and it must still restore whole and verify. */
START_TEST(rt_past_writeback_steps)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache(), *b = tu_new_cache();
    /* 20 MiB, two steps and a half; under valgrind 10 MiB, one step. */
    const char *vg = getenv("WCACHE_VALGRIND");
    size_t each = 512 * 1024, n = vg && *vg && strcmp(vg, "0") ? 20 : 40;
    unsigned char *v = malloc(each);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < each; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            v[j] = (unsigned char)x;
        }
        char k[32];
        int kl = snprintf(k, sizeof k, "/big/%03zu", i);
        ck_assert_int_eq(wcache_ingest_put(a, k, (size_t)kl, v, each, ++rev), WCACHE_OK);
    }
    free(v);
    wcache_snapshot_write_opts o = wopts();
    o.workers = 2;
    wcache_snapshot_info wi = {.size = sizeof wi};
    ck_assert_msg(wcache_snapshot_write(a, path, &o, &wi) == WCACHE_OK, "%s", errbuf);
    ck_assert_uint_gt(wi.file_bytes, n / 20 * (8u << 20));
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq((uint64_t)st.st_size, wi.file_bytes);
    wcache_snapshot_read_opts r = ropts();
    wcache_snapshot *s;
    ck_assert_msg(wcache_snapshot_open(&s, path, &r) == WCACHE_OK, "%s", errbuf);
    ck_assert_msg(wcache_snapshot_verify(s) == WCACHE_OK, "%s", errbuf);
    wcache_snapshot_close(s);
    ck_assert_msg(wcache_snapshot_restore(b, path, &r, NULL) == WCACHE_OK, "%s", errbuf);
    compare(a, rev, b, rev);
    wcache_cache_close(a);
    wcache_cache_close(b);
}
END_TEST

START_TEST(rt_empty)
{
    wcache_cache *a = tu_new_cache(), *b = tu_new_cache();
    wcache_snapshot_info ri = {.size = sizeof ri};
    ck_assert_int_eq(wcache_snapshot_write(a, path, NULL, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_restore(b, path, NULL, &ri), WCACHE_OK);
    ck_assert_int_eq(ri.revision, 0);
    ck_assert_uint_eq(ri.objects, 0);
    ck_assert_int_eq(wcache_cache_revision(b), 0);
    wcache_cache_close(b);
    /* Everything deleted: empty, but at a revision. */
    ck_assert_int_eq(wcache_ingest_put(a, "k", 1, "v", 1, 5), WCACHE_OK);
    ck_assert_int_eq(wcache_ingest_delete(a, "k", 1, 6), WCACHE_OK);
    b = tu_new_cache();
    ck_assert_int_eq(wcache_snapshot_write(a, path, NULL, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_restore(b, path, NULL, &ri), WCACHE_OK);
    ck_assert_int_eq(ri.revision, 6);
    ck_assert_int_eq(wcache_cache_revision(b), 6);
    compare(a, 6, b, 6);
    wcache_cache_close(a);
    wcache_cache_close(b);
}
END_TEST

/* The writer reads one revision while ingest goes on (here: from inside
 * its own progress callback, which runs between blocks). */
static int ingest_during(int st, uint64_t bytes, uint64_t objs, uint64_t total, void *ud)
{
    (void)bytes, (void)objs, (void)total;
    wcache_cache *c = ud;
    if (st != WCACHE_SNAP_STEP_WRITE)
        return 0;
    int64_t r = wcache_cache_revision(c) + 1;
    char k[32];
    int kl = snprintf(k, sizeof k, "/registry/pods/ns0/pod-%05d", (int)(r % 300));
    return wcache_ingest_put(c, k, (size_t)kl, "late", 4, r) != WCACHE_OK;
}

START_TEST(rt_ingest_goes_on)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache(), *b = tu_new_cache();
    fill(a, 400, &rev);
    wcache_snapshot_write_opts o = wopts();
    o.block_bytes = 4096;
    o.progress = ingest_during;
    o.userdata = a;
    wcache_snapshot_info wi = {.size = sizeof wi};
    ck_assert_msg(wcache_snapshot_write(a, path, &o, &wi) == WCACHE_OK, "%s", errbuf);
    ck_assert_int_eq(wi.revision, rev);
    ck_assert_int_gt(wcache_cache_revision(a), rev);
    ck_assert_int_eq(wcache_snapshot_restore(b, path, NULL, NULL), WCACHE_OK);
    compare(a, rev, b, rev);
    wcache_cache_close(a);
    wcache_cache_close(b);
}
END_TEST

/* A real feed thread putting while another thread writes the snapshot.
 * About a thousand puts fit in a write here; the cap keeps a run whose
 * threads valgrind serialises (half a million puts) from spending minutes
 * on history that only the end of the test reads. */
#define FEED_MAX 20000
typedef struct feed {
    wcache_cache *c;
    atomic_int stop;
    int puts;
} feed;

static void *feed_main(void *arg)
{
    feed *f = arg;
    char k[64];
    while ((!atomic_load(&f->stop) || f->puts < 50) && f->puts < FEED_MAX) {
        int64_t r = wcache_cache_revision(f->c) + 1;
        int kl =
            snprintf(k, sizeof k, "/registry/pods/ns%d/pod-%05d", (int)(r % 7), (int)(r % 500));
        if (wcache_ingest_put(f->c, k, (size_t)kl, "fed", 3, r) != WCACHE_OK)
            break;
        f->puts++;
    }
    return NULL;
}

START_TEST(rt_concurrent_feed)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache(), *b = tu_new_cache();
    fill(a, 500, &rev);
    feed f = {.c = a};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, feed_main, &f), 0);
    wcache_snapshot_write_opts o = wopts();
    o.block_bytes = 4096;
    o.workers = 2;
    o.revision = rev;
    wcache_snapshot_info wi = {.size = sizeof wi};
    int rc = wcache_snapshot_write(a, path, &o, &wi);
    atomic_store(&f.stop, 1);
    pthread_join(th, NULL);
    ck_assert_msg(rc == WCACHE_OK, "%s", errbuf);
    ck_assert_int_eq(wi.revision, rev);
    ck_assert_int_ge(f.puts, 50);
    ck_assert_int_eq(wcache_snapshot_restore(b, path, NULL, NULL), WCACHE_OK);
    compare(a, rev, b, rev);
    wcache_cache_close(a);
    wcache_cache_close(b);
}
END_TEST

/* Same state, same options: the same bytes, with or without workers. */
typedef struct membuf {
    unsigned char *p;
    size_t n, cap;
} membuf;

static int mem_sink(const void *buf, size_t len, void *ud)
{
    membuf *m = ud;
    if (m->n + len > m->cap) {
        m->cap = (m->n + len) * 2;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->n, buf, len);
    m->n += len;
    return WCACHE_OK;
}

static membuf snap_bytes(wcache_cache *c, int workers)
{
    membuf m = {0};
    wcache_snapshot_write_opts o = wopts();
    o.block_bytes = 4096;
    o.workers = workers;
    ck_assert_int_eq(wcache_snapshot_write_to(c, mem_sink, &m, &o, NULL), WCACHE_OK);
    return m;
}

START_TEST(deterministic_workers)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache();
    fill(a, 600, &rev);
    membuf m0 = snap_bytes(a, 0), m3 = snap_bytes(a, 3);
    ck_assert_uint_eq(m0.n, m3.n);
    ck_assert(memcmp(m0.p, m3.p, m0.n) == 0);
    wcache_snapshot *s;
    ck_assert_int_eq(wcache_snapshot_open_mem(&s, m0.p, m0.n, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_verify(s), WCACHE_OK);
    wcache_snapshot_close(s);
    free(m0.p);
    free(m3.p);
    wcache_cache_close(a);
}
END_TEST

START_TEST(iterate_in_order)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache();
    fill(a, 300, &rev);
    ck_assert_int_eq(wcache_snapshot_write(a, path, NULL, NULL), WCACHE_OK);
    wcache_snapshot *s;
    wcache_snapshot_info in = {.size = sizeof in};
    ck_assert_int_eq(wcache_snapshot_open(&s, path, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_get_info(s, &in), WCACHE_OK);
    ck_assert_uint_eq(in.format_major, WCACHE_SNAP_FORMAT_MAJOR);
    wcache_kv kv;
    uint64_t n = 0;
    int rc;
    while ((rc = wcache_snapshot_next(s, &kv)) == WCACHE_OK)
        n++;
    ck_assert_int_eq(rc, WCACHE_ENOTFOUND);
    ck_assert_int_eq(wcache_snapshot_next(s, &kv), WCACHE_ENOTFOUND);
    ck_assert_uint_eq(n, in.objects);
    wcache_snapshot_close(s);
    wcache_cache_close(a);
}
END_TEST

/* A sink that fails after a few calls: its code is the write's. */
static int failing_sink(const void *buf, size_t len, void *ud)
{
    (void)buf, (void)len;
    int *left = ud;
    return (*left)-- > 0 ? WCACHE_OK : WCACHE_EHTTP;
}

START_TEST(sink_errors)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache();
    fill(a, 200, &rev);
    wcache_snapshot_write_opts o = wopts();
    o.block_bytes = 4096;
    for (int n = 0; n < 6; n++) {
        int left = n;
        ck_assert_int_eq(wcache_snapshot_write_to(a, failing_sink, &left, &o, NULL),
                         WCACHE_EHTTP);
    }
    ck_assert_int_eq(wcache_snapshot_write_to(a, NULL, NULL, &o, NULL), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_snapshot_write_to(NULL, mem_sink, NULL, &o, NULL), WCACHE_EINVAL);
    wcache_cache_close(a);
}
END_TEST

START_TEST(reader_arguments)
{
    wcache_snapshot *s = (wcache_snapshot *)1;
    ck_assert_int_eq(wcache_snapshot_open(&s, dir, NULL), WCACHE_EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(wcache_snapshot_open(NULL, path, NULL), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_snapshot_open_mem(&s, NULL, 5, NULL), WCACHE_EINVAL);
    wcache_snapshot_read_opts o = ropts();
    o.size = 4;
    ck_assert_int_eq(wcache_snapshot_open_mem(&s, "x", 1, &o), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_snapshot_next(NULL, NULL), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_snapshot_verify(NULL), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_snapshot_get_info(NULL, NULL), WCACHE_EINVAL);
    wcache_snapshot_close(NULL);
    char sub[400];
    snprintf(sub, sizeof sub, "%s/none", dir);
    ck_assert_int_eq(wcache_snapshot_prune(sub, NULL, 1, NULL), WCACHE_ESYS);
    /* A tiny errbuf is still NUL-terminated. */
    char small[8];
    memset(small, 'x', sizeof small);
    o = ropts();
    o.errbuf = small;
    o.errbuf_len = sizeof small;
    ck_assert_int_eq(wcache_snapshot_open_mem(&s, "not a snapshot at all, really", 29, &o),
                     WCACHE_ECORRUPT);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
}
END_TEST

/* Chaos allocator: fail allocation number n; every failure is clean. */
typedef struct chaos {
    int n, calls;
    long live;
} chaos;

static void *chaos_alloc(size_t n, void *ud)
{
    chaos *c = ud;
    if (c->calls++ == c->n)
        return NULL;
    c->live++;
    return malloc(n);
}

static void chaos_free(void *p, void *ud)
{
    chaos *c = ud;
    if (p)
        c->live--;
    free(p);
}

START_TEST(reader_out_of_memory)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache();
    fill(a, 150, &rev);
    membuf m = snap_bytes(a, 0);
    int ok = 0;
    for (int n = 0; !ok && n < 1000; n++) {
        chaos c = {.n = n};
        wcache_allocator al = {sizeof al, chaos_alloc, chaos_free, &c};
        wcache_snapshot_read_opts o = ropts();
        o.alloc = &al;
        wcache_snapshot *s;
        int rc = wcache_snapshot_open_mem(&s, m.p, m.n, &o);
        if (rc == WCACHE_OK) {
            rc = wcache_snapshot_verify(s);
            wcache_snapshot_close(s);
        }
        ck_assert_msg(rc == WCACHE_OK || rc == WCACHE_ENOMEM, "n=%d: %s", n,
                      wcache_strerror(rc));
        ck_assert_int_eq(c.live, 0);
        ok = rc == WCACHE_OK && c.calls <= n;
    }
    ck_assert(ok);
    free(m.p);
    wcache_cache_close(a);
}
END_TEST

static int count_snaps(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        n += de->d_name[0] != '.' && l > 7 && strcmp(de->d_name + l - 7, ".wcsnap") == 0;
    }
    closedir(d);
    return n;
}

START_TEST(tick_policy)
{
    wcache_cache *c = tu_new_cache();
    wcache_snapshot_policy p = {.size = sizeof p, .dir = dir, .keep = 2};
    p.interval_ms = 1000;
    p.every_revisions = 10;
    wcache_snapshot_state st = {.size = sizeof st};
    int w = 7;
    /* An empty cache at revision 0 has nothing to write. */
    ck_assert_int_eq(wcache_snapshot_tick(c, &p, &st, 5000, &w), WCACHE_OK);
    ck_assert_int_eq(w, 0);
    ck_assert_int_eq(wcache_ingest_put(c, "k", 1, "v", 1, 1), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_tick(c, &p, &st, 5000, &w), WCACHE_OK);
    ck_assert_int_eq(w, 1);
    ck_assert_int_eq(st.last_revision, 1);
    /* Neither trigger yet: 5 revisions, 500 ms. */
    for (int r = 2; r <= 6; r++)
        ck_assert_int_eq(wcache_ingest_put(c, "k", 1, "v", 1, r), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_tick(c, &p, &st, 5500, &w), WCACHE_OK);
    ck_assert_int_eq(w, 0);
    /* The interval. */
    ck_assert_int_eq(wcache_snapshot_tick(c, &p, &st, 6000, &w), WCACHE_OK);
    ck_assert_int_eq(w, 1);
    /* No change since: the interval alone writes nothing. */
    ck_assert_int_eq(wcache_snapshot_tick(c, &p, &st, 9000, &w), WCACHE_OK);
    ck_assert_int_eq(w, 0);
    /* The revision count, before the interval. */
    for (int r = 7; r <= 16; r++)
        ck_assert_int_eq(wcache_ingest_put(c, "k", 1, "v", 1, r), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_tick(c, &p, &st, 9001, &w), WCACHE_OK);
    ck_assert_int_eq(w, 1);
    ck_assert_int_eq(st.last_revision, 16);
    ck_assert_int_eq(count_snaps(), 2);
    char f[400];
    snprintf(f, sizeof f, "%s/snap-%020d.wcsnap", dir, 16);
    ck_assert_int_eq(access(f, F_OK), 0);
    snprintf(f, sizeof f, "%s/snap-%020d.wcsnap", dir, 6);
    ck_assert_int_eq(access(f, F_OK), 0);
    /* A failed write leaves the state for the next tick to retry. */
    ck_assert_int_eq(wcache_ingest_put(c, "k", 1, "v", 1, 40), WCACHE_OK);
    snprintf(f, sizeof f, "%s/missing", dir);
    p.dir = f;
    ck_assert_int_eq(wcache_snapshot_tick(c, &p, &st, 20000, &w), WCACHE_ESYS);
    ck_assert_int_eq(st.last_revision, 16);
    p.size = 4;
    ck_assert_int_eq(wcache_snapshot_tick(c, &p, &st, 20000, &w), WCACHE_EINVAL);
    wcache_cache_close(c);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Crash points                                                             */
/* ------------------------------------------------------------------------ */

typedef struct crash {
    int at, calls, last_step, hard;
    int fd; /* hard: the child says how it ended through this pipe */
} crash;

/* The child's word, not its exit status: under valgrind a child's status
 * also reflects leaks inherited from earlier tests of the process. */
static void child_says(int fd, char c)
{
    if (write(fd, &c, 1) != 1)
        _exit(5);
}

static int crash_cb(int st, uint64_t bytes, uint64_t objs, uint64_t total, void *ud)
{
    (void)bytes, (void)objs, (void)total;
    crash *k = ud;
    k->last_step = st;
    if (st == WCACHE_SNAP_STEP_DONE || k->calls++ != k->at)
        return 0;
    if (k->hard) {
        child_says(k->fd, 'c');
        _exit(0); /* a real crash: nothing cleans up */
    }
    return 1;
}

static int count_temps(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d)) != NULL)
        n += strstr(de->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

/* Delta writes of the crash tests: the base they name, and its file. */
static wcache_snapshot *crash_base;
static char crash_base_path[300];

/* Restore the file at path, with its base when it is a delta. */
static int restore_any(wcache_cache *b)
{
    wcache_snapshot *s;
    wcache_snapshot_info in = {.size = sizeof in};
    ck_assert_int_eq(wcache_snapshot_open(&s, path, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_get_info(s, &in), WCACHE_OK);
    wcache_snapshot_close(s);
    const char *chain[2] = {crash_base_path, path};
    if (in.flags & WCACHE_SNAP_FLAG_DELTA)
        return wcache_snapshot_restore_chain(b, chain, 2, NULL, NULL);
    return wcache_snapshot_restore(b, path, NULL, NULL);
}

/* The file at path holds exactly the state of c at rev. */
static void assert_holds(wcache_cache *c, int64_t rev)
{
    wcache_cache *b = tu_new_cache();
    ck_assert_int_eq(restore_any(b), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_revision(b), rev);
    compare(c, rev, b, rev);
    wcache_cache_close(b);
}

/* Returns what the child said in a hard run ('c' crashed, 'd' done). */
static char crash_at(wcache_cache *old, int64_t old_rev, wcache_cache *c, int64_t rev, int at,
                     int hard, int *steps_seen)
{
    crash k = {.at = at, .hard = hard};
    char said = 0;
    wcache_snapshot_write_opts o = wopts();
    o.block_bytes = 4096;
    o.base = crash_base;
    o.progress = crash_cb;
    o.userdata = &k;
    int rc;
    if (hard) {
        int p[2];
        ck_assert_int_eq(pipe(p), 0);
        k.fd = p[1];
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            child_says(p[1], wcache_snapshot_write(c, path, &o, NULL) == WCACHE_OK ? 'd' : 'e');
            _exit(0);
        }
        close(p[1]);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_int_eq(read(p[0], &said, 1), 1);
        close(p[0]);
        ck_assert_msg(said == 'c' || said == 'd', "child at %d said %c", at, said);
    } else {
        rc = wcache_snapshot_write(c, path, &o, NULL);
        *steps_seen = k.calls;
        if (k.calls <= at) {
            ck_assert_int_eq(rc, WCACHE_OK);
            return said;
        }
        ck_assert_int_eq(rc, WCACHE_ESTOPPED);
        ck_assert_int_eq(count_temps(), 0);
    }
    /* Stopped before the rename: the old file; after it: the new one. */
    if (!hard && k.last_step == WCACHE_SNAP_STEP_SYNC_DIR)
        assert_holds(c, rev);
    else if (!hard)
        assert_holds(old, old_rev);
    else {
        wcache_cache *b = tu_new_cache();
        ck_assert_int_eq(restore_any(b), WCACHE_OK);
        int64_t r = wcache_cache_revision(b);
        ck_assert(r == old_rev || r == rev);
        compare(r == rev ? c : old, r, b, r);
        wcache_cache_close(b);
        /* A leftover temp file is no snapshot to prune or to restore. */
        size_t removed = 9;
        ck_assert_int_eq(wcache_snapshot_prune(dir, NULL, 1, &removed), WCACHE_OK);
        ck_assert_uint_eq(removed, 0);
        /* Start the directory afresh, but for the base of the deltas. */
        char p[600];
        snprintf(p, sizeof p, "%s.keep", dir);
        if (crash_base)
            ck_assert_int_eq(rename(crash_base_path, p), 0);
        rm_tmp();
        ck_assert_int_eq(mkdir(dir, 0700), 0);
        if (crash_base)
            ck_assert_int_eq(rename(p, crash_base_path), 0);
    }
    return said;
}

static void crash_points(int hard, int delta)
{
    int64_t r1 = 0, r2;
    wcache_cache *old = tu_new_cache();
    fill(old, 50, &r1);
    wcache_cache *c = tu_new_cache();
    r2 = 0;
    fill(c, 300, &r2);
    crash_base = NULL;
    if (delta) {
        /* The delta holds what changed after this base: updates, new
         * keys, deletes. */
        snprintf(crash_base_path, sizeof crash_base_path, "%s/base.delta-base", dir);
        wcache_snapshot_write_opts bo = wopts();
        ck_assert_int_eq(wcache_snapshot_write(c, crash_base_path, &bo, NULL), WCACHE_OK);
        ck_assert_int_eq(wcache_snapshot_open(&crash_base, crash_base_path, NULL), WCACHE_OK);
        char k[64];
        for (int i = 0; i < 60; i++) { /* a few blocks of puts and tombstones */
            int kl = snprintf(k, sizeof k, "/registry/pods/ns%d/pod-%05d", i % 7, i * 5);
            if (i % 4 == 0 && wcache_ingest_delete(c, k, (size_t)kl, r2 + 1) == WCACHE_OK)
                r2++;
            else
                ck_assert_int_eq(wcache_ingest_put(c, k, (size_t)kl, "later", 5, ++r2),
                                 WCACHE_OK);
        }
    }
    int total = 0;
    for (int at = 0;; at++) {
        if (hard || at == 0) {
            /* Put the previous snapshot back for every run. */
            ck_assert_int_eq(wcache_snapshot_write(old, path, NULL, NULL), WCACHE_OK);
        }
        int seen = 0;
        char said = crash_at(old, r1, c, r2, at, hard, &seen);
        if (!hard && seen <= at) {
            total = at;
            break;
        }
        if (!hard)
            ck_assert_int_eq(wcache_snapshot_write(old, path, NULL, NULL), WCACHE_OK);
        /* A write that got to its end got past every later point too:
         * those runs would only repeat this one. */
        if (hard && said == 'd') {
            total = at;
            break;
        }
        ck_assert_msg(!hard || at < 1000, "the write never finished");
    }
    ck_assert_msg(total > (delta ? 4 : 10), "crashed at %d points only", total);
    wcache_snapshot_close(crash_base);
    crash_base = NULL;
    wcache_cache_close(old);
    wcache_cache_close(c);
}

START_TEST(crash_soft_every_step)
{
    crash_points(0, 0);
}
END_TEST

START_TEST(crash_hard_fork)
{
    crash_points(1, 0);
}
END_TEST

START_TEST(crash_soft_delta)
{
    crash_points(0, 1);
}
END_TEST

START_TEST(crash_hard_delta)
{
    crash_points(1, 1);
}
END_TEST

START_TEST(write_errors)
{
    wcache_cache *c = tu_new_cache();
    wcache_snapshot_write_opts o = wopts();
    snprintf(path, sizeof path, "%s/no/such/dir/x.wcsnap", dir);
    ck_assert_int_eq(wcache_snapshot_write(c, path, &o, NULL), WCACHE_ESYS);
    ck_assert_ptr_nonnull(strstr(errbuf, "no/such"));
    o.level = 99;
    ck_assert_int_eq(wcache_snapshot_write(c, path, &o, NULL), WCACHE_EINVAL);
    o = wopts();
    o.revision = 5;
    snprintf(path, sizeof path, "%s/a.wcsnap", dir);
    ck_assert_int_eq(wcache_snapshot_write(c, path, &o, NULL), WCACHE_EFUTURE);
    ck_assert_int_eq(count_temps(), 0);
    wcache_cache_close(c);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Damage                                                                   */
/* ------------------------------------------------------------------------ */

static membuf good;

static void good_setup(void)
{
    int64_t rev = 0;
    mkdir_tmp();
    wcache_cache *a = tu_new_cache();
    fill(a, 120, &rev);
    good = snap_bytes(a, 0);
    wcache_cache_close(a);
}

static void good_teardown(void)
{
    free(good.p);
    memset(&good, 0, sizeof good);
    rm_tmp();
}

static int read_mem(const void *p, size_t n, wcache_snapshot_read_opts *o)
{
    wcache_snapshot *s;
    int rc = wcache_snapshot_open_mem(&s, p, n, o);
    if (rc)
        return rc;
    rc = wcache_snapshot_verify(s);
    wcache_snapshot_close(s);
    return rc;
}

/* A stream over bytes in memory for wcache_snapshot_restore_from(): hands
 * out step-varying odd chunks (1 .. step bytes; step 0: all that fits),
 * and can fail with fail_rc once fail_at bytes are out. */
typedef struct chunks {
    const unsigned char *p;
    size_t n, pos, fail_at;
    unsigned step;
    int fail_rc, oversize;
    unsigned long calls;
} chunks;

static int chunk_read(void *buf, size_t cap, size_t *got, void *ud)
{
    chunks *c = ud;
    c->calls++;
    size_t k = c->step ? (size_t)(c->calls * 7919 % c->step) + 1 : cap;
    size_t end = c->fail_rc && c->fail_at < c->n ? c->fail_at : c->n;
    if (k > cap)
        k = cap;
    if (k > end - c->pos)
        k = end - c->pos;
    if (k == 0 && c->fail_rc && c->pos == c->fail_at)
        return c->fail_rc;
    memcpy(buf, c->p + c->pos, k);
    c->pos += k;
    *got = c->oversize && k ? cap + 1 : k;
    return WCACHE_OK;
}

static int restore_stream(wcache_cache *c, const void *p, size_t n, unsigned step,
                          wcache_snapshot_read_opts *o, wcache_snapshot_info *info)
{
    chunks ch = {.p = p, .n = n, .step = step};
    errbuf[0] = 0;
    return wcache_snapshot_restore_from(c, chunk_read, &ch, o, info);
}

static void untouched(wcache_cache *b)
{
    wcache_stat st = {.size = sizeof st};
    ck_assert_int_eq(wcache_cache_revision(b), 0);
    ck_assert_int_eq(wcache_cache_stat(b, &st), WCACHE_OK);
    ck_assert_uint_eq(st.objects, 0);
}

/* Restore of damaged bytes, from a file and as a stream cut in odd
 * chunks: the given error with a message, and the cache left as it was. */
static void restore_fails(const void *p, size_t n, int code)
{
    FILE *f = fopen(path, "wb");
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    fclose(f);
    wcache_cache *c = tu_new_cache();
    wcache_snapshot_read_opts o = ropts();
    errbuf[0] = 0;
    ck_assert_int_eq(wcache_snapshot_restore(c, path, &o, NULL), code);
    ck_assert_msg(errbuf[0] != 0, "no message for %s", wcache_strerror(code));
    untouched(c);
    for (unsigned step = 0; step <= 13; step += 13) {
        int rc = restore_stream(c, p, n, step, &o, NULL);
        ck_assert_msg(rc == code, "stream, step %u: %s, not %s (%s)", step, wcache_strerror(rc),
                      wcache_strerror(code), errbuf);
        ck_assert_msg(errbuf[0] != 0, "stream: no message for %s", wcache_strerror(code));
        untouched(c);
    }
    wcache_cache_close(c);
}

START_TEST(damage_truncated)
{
    ck_assert_int_eq(read_mem(good.p, good.n, NULL), WCACHE_OK);
    for (size_t n = 0; n < good.n; n++)
        ck_assert_int_eq(read_mem(good.p, n, NULL), WCACHE_ECORRUPT);
    restore_fails(good.p, good.n - 1, WCACHE_ECORRUPT);
    restore_fails(good.p, good.n / 2, WCACHE_ECORRUPT);
}
END_TEST

START_TEST(damage_bit_flips)
{
    unsigned char *p = malloc(good.n);
    for (size_t i = 0; i < good.n; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            memcpy(p, good.p, good.n);
            p[i] ^= (unsigned char)(1u << bit);
            int rc = read_mem(p, good.n, NULL);
            ck_assert_msg(rc == WCACHE_ECORRUPT || rc == WCACHE_EVERSION ||
                              rc == WCACHE_EZSTD || rc == WCACHE_ETOOBIG,
                          "flip at %zu bit %d: %s", i, bit, wcache_strerror(rc));
        }
    }
    memcpy(p, good.p, good.n);
    p[good.n / 2] ^= 0x10;
    restore_fails(p, good.n, WCACHE_ECORRUPT);
    free(p);
}
END_TEST

static void rehash_header(unsigned char *p)
{
    uint32_t hl = (uint32_t)p[16] | (uint32_t)p[17] << 8 | (uint32_t)p[18] << 16;
    XXH64_hash_t h = XXH3_64bits(p, hl - 8);
    for (int i = 0; i < 8; i++)
        p[hl - 8 + i] = (unsigned char)(h >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Recompute the trailer's own and the whole-file checksums. */
static void rehash_trailer(unsigned char *p, size_t n)
{
    unsigned char *t = p + n - 64;
    put64(t + 40, XXH3_64bits(t, 40));
    put64(t + 48, XXH3_64bits(p, n - 16));
}

START_TEST(damage_magic_and_versions)
{
    unsigned char *p = malloc(good.n);
    memcpy(p, good.p, good.n);
    p[1] = 'X';
    ck_assert_int_eq(read_mem(p, good.n, NULL), WCACHE_ECORRUPT);
    restore_fails(p, good.n, WCACHE_ECORRUPT);
    memcpy(p, good.p, good.n);
    p[8] = 2; /* a future major version */
    ck_assert_int_eq(read_mem(p, good.n, NULL), WCACHE_EVERSION);
    restore_fails(p, good.n, WCACHE_EVERSION);
    /* A future minor version is read, ignoring what it does not know... */
    memcpy(p, good.p, good.n);
    p[10] = 7;
    p[14] = 0x5a; /* an optional flag */
    rehash_header(p);
    rehash_trailer(p, good.n);
    ck_assert_int_eq(read_mem(p, good.n, NULL), WCACHE_OK);
    /* ...unless it sets a flag that must be understood (0x1 is the delta
     * flag of 1.1; 0x2 is not defined yet). */
    p[12] = 0x02;
    rehash_header(p);
    rehash_trailer(p, good.n);
    ck_assert_int_eq(read_mem(p, good.n, NULL), WCACHE_EVERSION);
    restore_fails(p, good.n, WCACHE_EVERSION);
    free(p);
}
END_TEST

START_TEST(damage_counts)
{
    unsigned char *p = malloc(good.n);
    memcpy(p, good.p, good.n);
    p[40] ^= 1; /* header object count */
    rehash_header(p);
    rehash_trailer(p, good.n);
    ck_assert_int_eq(read_mem(p, good.n, NULL), WCACHE_ECORRUPT);
    restore_fails(p, good.n, WCACHE_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(errbuf, "count"));
    memcpy(p, good.p, good.n);
    p[good.n - 64 + 24] ^= 1; /* trailer kv byte count */
    rehash_trailer(p, good.n);
    ck_assert_int_eq(read_mem(p, good.n, NULL), WCACHE_ECORRUPT);
    restore_fails(p, good.n, WCACHE_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(errbuf, "count"));
    free(p);
}
END_TEST

/* Recompute the checksum of the block whose frame is at p + off. */
static void rehash_block(unsigned char *p, size_t off)
{
    uint32_t cs = (uint32_t)p[off + 16] | (uint32_t)p[off + 17] << 8 |
                  (uint32_t)p[off + 18] << 16 | (uint32_t)p[off + 19] << 24;
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, p + off, 24);
    XXH3_64bits_update(&st, p + off + 32, cs);
    put64(p + off + 24, XXH3_64bits_digest(&st));
}

/* A small file that decompresses to far more than the reader allows. */
START_TEST(damage_bomb)
{
    wcache_cache *a = tu_new_cache();
    size_t big = 3u << 20;
    char *v = calloc(1, big);
    ck_assert_int_eq(wcache_ingest_put(a, "zeros", 5, v, big, 1), WCACHE_OK);
    free(v);
    membuf m = {0};
    wcache_snapshot_write_opts o = wopts();
    ck_assert_int_eq(wcache_snapshot_write_to(a, mem_sink, &m, &o, NULL), WCACHE_OK);
    ck_assert_uint_lt(m.n, 4096);
    wcache_snapshot_read_opts r = ropts();
    r.max_block_bytes = 1u << 20;
    ck_assert_int_eq(read_mem(m.p, m.n, &r), WCACHE_ETOOBIG);
    ck_assert_ptr_nonnull(strstr(errbuf, "max_block_bytes"));
    ck_assert_int_eq(read_mem(m.p, m.n, NULL), WCACHE_OK);
    /* A frame header that understates the size is refused before zstd runs. */
    unsigned char *p = malloc(m.n);
    memcpy(p, m.p, m.n);
    size_t hl = (size_t)p[16] | (size_t)p[17] << 8;
    p[hl + 20] = 0x10, p[hl + 21] = 0, p[hl + 22] = 0, p[hl + 23] = 0;
    rehash_block(p, hl);
    rehash_trailer(p, m.n);
    ck_assert_int_eq(read_mem(p, m.n, NULL), WCACHE_ECORRUPT);
    restore_fails(p, m.n, WCACHE_ECORRUPT);
    /* A checksummed block that is not a zstd frame at all. */
    memcpy(p, m.p, m.n);
    p[hl + 32] ^= 0xff;
    rehash_block(p, hl);
    rehash_trailer(p, m.n);
    ck_assert_int_eq(read_mem(p, m.n, NULL), WCACHE_EZSTD);
    restore_fails(p, m.n, WCACHE_EZSTD);
    free(p);
    free(m.p);
    wcache_cache_close(a);
}
END_TEST

START_TEST(restore_refusals)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache();
    fill(a, 30, &rev);
    wcache_snapshot_write_opts w = wopts();
    ck_assert_int_eq(wcache_snapshot_write(a, path, &w, NULL), WCACHE_OK);
    wcache_cache *b = tu_new_cache();
    wcache_snapshot_read_opts r = ropts();
    r.expect_source_id = "etcd:cluster-2:/registry/";
    r.expect_source_id_len = strlen(r.expect_source_id);
    ck_assert_int_eq(wcache_snapshot_restore(b, path, &r, NULL), WCACHE_EINVAL);
    ck_assert_ptr_nonnull(strstr(errbuf, "cluster-2"));
    ck_assert_int_eq(wcache_cache_revision(b), 0);
    r.expect_source_id = w.source_id;
    r.expect_source_id_len = w.source_id_len;
    ck_assert_int_eq(wcache_snapshot_restore(b, path, &r, NULL), WCACHE_OK);
    /* Not empty any more. */
    ck_assert_int_eq(wcache_snapshot_restore(b, path, &r, NULL), WCACHE_ESTATE);
    ck_assert_int_eq(wcache_snapshot_restore(a, path, NULL, NULL), WCACHE_ESTATE);
    ck_assert_int_eq(wcache_cache_revision(a), rev);
    snprintf(path, sizeof path, "%s/missing.wcsnap", dir);
    wcache_cache *c = tu_new_cache();
    ck_assert_int_eq(wcache_snapshot_restore(c, path, NULL, NULL), WCACHE_ESYS);
    wcache_cache_close(a);
    wcache_cache_close(b);
    wcache_cache_close(c);
}
END_TEST

START_TEST(prune_keeps_newest)
{
    wcache_cache *c = tu_new_cache();
    char p[400];
    for (int i = 1; i <= 5; i++) {
        ck_assert_int_eq(wcache_ingest_put(c, "k", 1, "v", 1, i * 10), WCACHE_OK);
        snprintf(p, sizeof p, "%s/snap-%d.wcsnap", dir, 6 - i); /* names disagree with age */
        ck_assert_int_eq(wcache_snapshot_write(c, p, NULL, NULL), WCACHE_OK);
    }
    snprintf(p, sizeof p, "%s/snap-junk.wcsnap", dir);
    FILE *f = fopen(p, "w");
    fputs("not a snapshot", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/.snap-9.wcsnap.tmp.abcdef", dir);
    f = fopen(p, "w");
    fclose(f);
    size_t removed = 0;
    ck_assert_int_eq(wcache_snapshot_prune(dir, "snap-", 2, &removed), WCACHE_OK);
    ck_assert_uint_eq(removed, 3);
    const char *left[] = {"snap-1.wcsnap", "snap-2.wcsnap", "snap-junk.wcsnap",
                          ".snap-9.wcsnap.tmp.abcdef"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, left[i]);
        ck_assert_msg(access(p, F_OK) == 0, "%s", left[i]);
    }
    snprintf(p, sizeof p, "%s/snap-3.wcsnap", dir);
    ck_assert_int_ne(access(p, F_OK), 0);
    ck_assert_int_eq(wcache_snapshot_prune(dir, "other-", 0, &removed), WCACHE_OK);
    ck_assert_uint_eq(removed, 0);
    wcache_cache_close(c);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Golden file of format 1.0 (written by tests/data/gen_golden.c)          */
/* ------------------------------------------------------------------------ */

/* A file of tests/data, wherever the runner was started. */
static int open_data(wcache_snapshot **s, const char *name, char *found, size_t fl)
{
    const char *env = getenv("WCACHE_TEST_DATA");
    const char *dirs[] = {env ? env : "tests/data", "tests/data", "data", "../tests/data"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        snprintf(found, fl, "%s/%s", dirs[i], name);
        if (access(found, R_OK) == 0)
            return wcache_snapshot_open(s, found, NULL);
    }
    return WCACHE_ESYS;
}

static int open_golden(wcache_snapshot **s)
{
    char p[512];
    return open_data(s, "golden-v1.wcsnap", p, sizeof p);
}

START_TEST(golden_v1)
{
    wcache_snapshot *s;
    ck_assert_int_eq(open_golden(&s), WCACHE_OK);
    wcache_snapshot_info in = {.size = sizeof in};
    ck_assert_int_eq(wcache_snapshot_get_info(s, &in), WCACHE_OK);
    ck_assert_uint_eq(in.format_major, 1);
    ck_assert_uint_eq(in.format_minor, 0);
    ck_assert_int_eq(in.revision, 12);
    ck_assert_int_eq(in.compacted_revision, 3);
    ck_assert_uint_eq(in.objects, 4);
    ck_assert_int_eq(in.created_unix_ns, FIXED_NS);
    ck_assert_uint_eq(in.source_id_len, strlen("golden:/registry/"));
    ck_assert(memcmp(in.source_id, "golden:/registry/", in.source_id_len) == 0);
    static const wcache_kv want[] = {
        {"/registry/a", 11, "alpha-2", 7, 1, 9, 2},
        {"/registry/b\xff", 12, "\x00\x01\x02", 3, 2, 2, 1},
        {"/registry/c", 11, "", 0, 10, 10, 1},
        {"/registry/d", 11, "{\"kind\":\"Pod\"}", 14, 4, 12, 3},
    };
    wcache_kv kv;
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(wcache_snapshot_next(s, &kv), WCACHE_OK);
        ck_assert_msg(kv_eq(&kv, &want[i]), "record %zu", i);
    }
    ck_assert_int_eq(wcache_snapshot_next(s, &kv), WCACHE_ENOTFOUND);
    wcache_snapshot_close(s);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Deltas (format 1.1)                                                      */
/* ------------------------------------------------------------------------ */

static char dpath[3][300]; /* full, delta 1, delta 2 */

/* Changes after a base: updates, new keys, deletes, a delete and re-create,
 * a key created and deleted in between (which the delta must not hold). */
static void churn(wcache_cache *c, int round, int64_t *rev)
{
    char k[64];
    for (int i = round; i < 300; i += 9) {
        int kl = snprintf(k, sizeof k, "/registry/pods/ns%d/pod-%05d", i % 7, i);
        if (wcache_ingest_delete(c, k, (size_t)kl, *rev + 1) == WCACHE_OK)
            ++*rev;
        else
            ck_assert_int_eq(wcache_ingest_put(c, k, (size_t)kl, "back", 4, ++*rev), WCACHE_OK);
    }
    for (int i = 0; i < 40; i++) {
        int kl = snprintf(k, sizeof k, "/registry/new/r%d-%03d", round, i);
        ck_assert_int_eq(wcache_ingest_put(c, k, (size_t)kl, "n", 1, ++*rev), WCACHE_OK);
        if (i % 4 == 0)
            ck_assert_int_eq(wcache_ingest_put(c, k, (size_t)kl, "n2", 2, ++*rev), WCACHE_OK);
        if (i % 10 == 3)
            ck_assert_int_eq(wcache_ingest_delete(c, k, (size_t)kl, ++*rev), WCACHE_OK);
    }
    ck_assert_int_eq(
        wcache_ingest_put(c, "/registry/pods/ns0/pod-00000", 28, "again", 5, ++*rev),
        WCACHE_OK);
}

/* Write dpath[0] (full at r[0]), dpath[1] (delta at r[1]), dpath[2] (delta
 * on the delta at r[2]); c stays at r[2]. */
static wcache_cache *make_chain(int64_t r[3], wcache_snapshot_info di[3], int workers)
{
    int64_t rev = 0;
    wcache_cache *c = tu_new_cache();
    fill(c, 300, &rev);
    for (int i = 0; i < 3; i++) {
        snprintf(dpath[i], sizeof dpath[i], "%s/chain-%d.wcsnap", dir, i);
        if (i)
            churn(c, i, &rev);
        r[i] = rev;
        wcache_snapshot *base = NULL;
        if (i)
            ck_assert_int_eq(wcache_snapshot_open(&base, dpath[i - 1], NULL), WCACHE_OK);
        wcache_snapshot_write_opts o = wopts();
        o.base = base;
        o.block_bytes = 4096;
        o.workers = workers;
        di[i].size = sizeof di[i];
        ck_assert_msg(wcache_snapshot_write(c, dpath[i], &o, &di[i]) == WCACHE_OK, "%s",
                      errbuf);
        wcache_snapshot_close(base);
    }
    return c;
}

static int restore_n(wcache_cache *b, const char *p0, const char *p1, const char *p2, size_t n)
{
    const char *v[3] = {p0, p1, p2};
    wcache_snapshot_read_opts o = ropts();
    errbuf[0] = 0;
    return wcache_snapshot_restore_chain(b, v, n, &o, NULL);
}

START_TEST(delta_chain_roundtrip)
{
    int64_t r[3];
    wcache_snapshot_info di[3];
    wcache_cache *c = make_chain(r, di, _i);
    ck_assert_uint_eq(di[0].flags, 0);
    for (int i = 1; i < 3; i++) {
        ck_assert_uint_eq(di[i].flags, WCACHE_SNAP_FLAG_DELTA);
        ck_assert_uint_eq(di[i].format_minor, 1);
        ck_assert_int_eq(di[i].base_revision, r[i - 1]);
        ck_assert_uint_eq(di[i].base_file_hash, di[i - 1].file_hash);
        ck_assert_uint_gt(di[i].tombstones, 0);
        /* Only the changes: far fewer records than the state. */
        ck_assert_uint_lt(di[i].objects, di[0].objects / 2);
    }
    /* The reader says the same, and hands tombstones out with version 0. */
    wcache_snapshot *s;
    wcache_snapshot_info in = {.size = sizeof in};
    ck_assert_int_eq(wcache_snapshot_open(&s, dpath[1], NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_get_info(s, &in), WCACHE_OK);
    ck_assert_uint_eq(in.file_hash, di[1].file_hash);
    ck_assert_uint_eq(in.tombstones, di[1].tombstones);
    wcache_kv kv;
    uint64_t tombs = 0;
    while (wcache_snapshot_next(s, &kv) == WCACHE_OK) {
        ck_assert_int_gt(kv.mod_revision, r[0]);
        if (kv.version == 0) {
            tombs++;
            ck_assert_uint_eq(kv.value_len, 0);
            wcache_cache *v = c; /* deleted at r[1]: absent there */
            wcache_view *w;
            wcache_kv g;
            ck_assert_int_eq(wcache_view_create(v, &w), WCACHE_OK);
            ck_assert_int_eq(wcache_view_begin(w, r[1]), WCACHE_OK);
            ck_assert_int_eq(wcache_view_get(w, kv.key, kv.key_len, &g), WCACHE_ENOTFOUND);
            ck_assert_int_eq(wcache_view_begin(w, r[0]), WCACHE_OK);
            ck_assert_int_eq(wcache_view_get(w, kv.key, kv.key_len, &g), WCACHE_OK);
            wcache_view_free(w);
        }
    }
    ck_assert_uint_eq(tombs, di[1].tombstones);
    wcache_snapshot_close(s);
    for (size_t n = 1; n <= 3; n++) {
        wcache_cache *b = tu_new_cache();
        wcache_snapshot_info ri = {.size = sizeof ri};
        const char *v[3] = {dpath[0], dpath[1], dpath[2]};
        wcache_snapshot_read_opts o = ropts();
        o.expect_source_id = "etcd:cluster-1:/registry/";
        o.expect_source_id_len = strlen(o.expect_source_id);
        ck_assert_msg(wcache_snapshot_restore_chain(b, v, n, &o, &ri) == WCACHE_OK, "%s",
                      errbuf);
        ck_assert_int_eq(ri.revision, r[n - 1]);
        ck_assert_int_eq(wcache_cache_revision(b), r[n - 1]);
        ck_assert_int_eq(wcache_cache_compacted_revision(b), r[n - 1]);
        compare(c, r[n - 1], b, r[n - 1]);
        wcache_cache_close(b);
    }
    wcache_cache_close(c);
}
END_TEST

/* A delta with nothing changed, and one written while ingest goes on. */
START_TEST(delta_empty_and_live)
{
    int64_t rev = 0;
    wcache_cache *c = tu_new_cache(), *b = tu_new_cache();
    fill(c, 200, &rev);
    wcache_snapshot_write_opts o = wopts();
    ck_assert_int_eq(wcache_snapshot_write(c, path, &o, NULL), WCACHE_OK);
    wcache_snapshot *base;
    ck_assert_int_eq(wcache_snapshot_open(&base, path, NULL), WCACHE_OK);
    char p1[400];
    snprintf(p1, sizeof p1, "%s/d.wcsnap", dir);
    o.base = base;
    wcache_snapshot_info di = {.size = sizeof di};
    ck_assert_int_eq(wcache_snapshot_write(c, p1, &o, &di), WCACHE_OK);
    ck_assert_uint_eq(di.objects, 0);
    ck_assert_int_eq(restore_n(b, path, p1, NULL, 2), WCACHE_OK);
    compare(c, rev, b, rev);
    wcache_cache_close(b);
    /* Ingest from the progress callback while the delta is written. */
    churn(c, 1, &rev);
    int64_t at = rev;
    o.progress = ingest_during;
    o.userdata = c;
    o.block_bytes = 4096;
    ck_assert_msg(wcache_snapshot_write(c, p1, &o, &di) == WCACHE_OK, "%s", errbuf);
    ck_assert_int_eq(di.revision, at);
    ck_assert_int_gt(wcache_cache_revision(c), at);
    b = tu_new_cache();
    ck_assert_int_eq(restore_n(b, path, p1, NULL, 2), WCACHE_OK);
    compare(c, at, b, at);
    wcache_snapshot_close(base);
    wcache_cache_close(b);
    wcache_cache_close(c);
}
END_TEST

START_TEST(delta_broken_chains)
{
    int64_t r[3];
    wcache_snapshot_info di[3];
    wcache_cache *c = make_chain(r, di, 0), *b = tu_new_cache();
    /* A delta alone, or first. */
    wcache_snapshot_read_opts o = ropts();
    ck_assert_int_eq(wcache_snapshot_restore(b, dpath[1], &o, NULL), WCACHE_EINVAL);
    ck_assert_ptr_nonnull(strstr(errbuf, "full snapshot"));
    untouched(b);
    ck_assert_int_eq(restore_n(b, dpath[1], dpath[2], NULL, 2), WCACHE_EINVAL);
    untouched(b);
    /* A missing link, the wrong order, a full snapshot where a delta goes. */
    ck_assert_int_eq(restore_n(b, dpath[0], dpath[2], NULL, 2), WCACHE_EINVAL);
    ck_assert_ptr_nonnull(strstr(errbuf, "broken chain"));
    untouched(b);
    ck_assert_int_eq(restore_n(b, dpath[0], dpath[2], dpath[1], 3), WCACHE_EINVAL);
    untouched(b);
    ck_assert_int_eq(restore_n(b, dpath[0], dpath[0], NULL, 2), WCACHE_EINVAL);
    ck_assert_ptr_nonnull(strstr(errbuf, "not a delta"));
    untouched(b);
    /* The base rewritten: same revision, other bytes (creation time). */
    wcache_cache *c0 = tu_new_cache();
    ck_assert_int_eq(restore_n(c0, dpath[0], NULL, NULL, 1), WCACHE_OK);
    wcache_snapshot_write_opts w = wopts();
    w.created_unix_ns = FIXED_NS + 1;
    ck_assert_int_eq(wcache_snapshot_write(c0, dpath[0], &w, NULL), WCACHE_OK);
    ck_assert_int_eq(restore_n(b, dpath[0], dpath[1], dpath[2], 3), WCACHE_EINVAL);
    ck_assert_ptr_nonnull(strstr(errbuf, "checksum"));
    untouched(b);
    /* A link that is missing on disk names the file. */
    char gone[400];
    snprintf(gone, sizeof gone, "%s/gone.wcsnap", dir);
    ck_assert_int_eq(restore_n(b, dpath[0], gone, NULL, 2), WCACHE_ESYS);
    ck_assert_ptr_nonnull(strstr(errbuf, "gone.wcsnap"));
    untouched(b);
    /* Damage inside a delta: refused before the cache changes. */
    w = wopts(); /* the same options as make_chain: the same bytes */
    w.block_bytes = 4096;
    ck_assert_int_eq(wcache_snapshot_write(c0, dpath[0], &w, NULL), WCACHE_OK);
    ck_assert_int_eq(restore_n(b, dpath[0], dpath[1], NULL, 2), WCACHE_OK);
    wcache_cache_close(b);
    b = tu_new_cache();
    FILE *f = fopen(dpath[2], "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, (long)di[2].file_bytes / 2, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, (long)di[2].file_bytes / 2, SEEK_SET);
    fputc(ch ^ 0x20, f);
    fclose(f);
    ck_assert_int_eq(restore_n(b, dpath[0], dpath[1], dpath[2], 3), WCACHE_ECORRUPT);
    untouched(b);
    ck_assert_int_eq(wcache_snapshot_restore_chain(b, NULL, 2, NULL, NULL), WCACHE_EINVAL);
    ck_assert_int_eq(
        wcache_snapshot_restore_chain(b, (const char *[]){dpath[0]}, 0, NULL, NULL),
        WCACHE_EINVAL);
    wcache_cache_close(c0);
    wcache_cache_close(b);
    wcache_cache_close(c);
}
END_TEST

START_TEST(delta_write_refusals)
{
    int64_t rev = 0;
    wcache_cache *c = tu_new_cache();
    fill(c, 50, &rev);
    wcache_snapshot_write_opts o = wopts();
    ck_assert_int_eq(wcache_snapshot_write(c, path, &o, NULL), WCACHE_OK);
    wcache_snapshot *base;
    ck_assert_int_eq(wcache_snapshot_open(&base, path, NULL), WCACHE_OK);
    churn(c, 1, &rev);
    char p1[400];
    snprintf(p1, sizeof p1, "%s/d.wcsnap", dir);
    /* Another source identity than the base's. */
    o.base = base;
    o.source_id = "etcd:cluster-2:/registry/";
    o.source_id_len = strlen(o.source_id);
    ck_assert_int_eq(wcache_snapshot_write(c, p1, &o, NULL), WCACHE_EINVAL);
    /* A delta below its base. */
    o = wopts();
    o.base = base;
    o.revision = 3;
    ck_assert_int_eq(wcache_snapshot_write(c, p1, &o, NULL), WCACHE_EINVAL);
    /* The cache no longer holds the base revision. */
    o.revision = 0;
    ck_assert_int_eq(wcache_cache_compact(c, rev), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_write(c, p1, &o, NULL), WCACHE_ECOMPACTED);
    ck_assert_ptr_nonnull(strstr(errbuf, "full snapshot"));
    ck_assert_int_eq(count_temps(), 0);
    ck_assert_int_ne(access(p1, F_OK), 0);
    /* The policy writes full snapshots only. */
    wcache_snapshot_policy p = {.size = sizeof p, .dir = dir, .every_revisions = 1};
    wcache_snapshot_state st = {.size = sizeof st};
    p.write = &o;
    ck_assert_int_eq(wcache_snapshot_tick(c, &p, &st, 0, NULL), WCACHE_EINVAL);
    wcache_snapshot_close(base);
    wcache_cache_close(c);
}
END_TEST

/* Prune keeps the base of a kept delta, and that base's base. */
START_TEST(delta_prune_keeps_chains)
{
    wcache_cache *c = tu_new_cache();
    char p[5][400];
    const int revs[5] = {10, 30, 20, 25, 40}; /* F, D1 on F, G, H, D2 on D1 */
    wcache_snapshot *base = NULL;
    for (int i = 0; i < 5; i++)
        snprintf(p[i], sizeof p[i], "%s/snap-%d.wcsnap", dir, i);
    /* Written in revision order from one cache. */
    const int order[5] = {0, 2, 3, 1, 4};
    for (int o = 0; o < 5; o++) {
        int i = order[o];
        ck_assert_int_eq(wcache_ingest_put(c, "k", 1, "v", 1, revs[i]), WCACHE_OK);
        wcache_snapshot_write_opts w = wopts();
        w.base = i == 1 || i == 4 ? base : NULL;
        ck_assert_int_eq(wcache_snapshot_write(c, p[i], &w, NULL), WCACHE_OK);
        if (i == 0 || i == 1) {
            wcache_snapshot_close(base);
            ck_assert_int_eq(wcache_snapshot_open(&base, p[i], NULL), WCACHE_OK);
        }
    }
    wcache_snapshot_close(base);
    size_t removed = 0;
    ck_assert_int_eq(wcache_snapshot_prune(dir, "snap-", 1, &removed), WCACHE_OK);
    ck_assert_uint_eq(removed, 2); /* G and H; D2, D1 and F stay */
    ck_assert_int_eq(access(p[0], F_OK), 0);
    ck_assert_int_eq(access(p[1], F_OK), 0);
    ck_assert_int_eq(access(p[4], F_OK), 0);
    ck_assert_int_ne(access(p[2], F_OK), 0);
    ck_assert_int_ne(access(p[3], F_OK), 0);
    wcache_cache *b = tu_new_cache();
    ck_assert_int_eq(restore_n(b, p[0], p[1], p[4], 3), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_revision(b), 40);
    wcache_cache_close(b);
    wcache_cache_close(c);
}
END_TEST

/* An older caller's shorter option and info structs still work. */
START_TEST(delta_old_struct_sizes)
{
    int64_t rev = 0;
    wcache_cache *c = tu_new_cache();
    fill(c, 20, &rev);
    wcache_snapshot_write_opts o = wopts();
    o.size = (uint32_t)offsetof(wcache_snapshot_write_opts, base);
    wcache_snapshot_info in;
    memset(&in, 0x5a, sizeof in);
    in.size = (uint32_t)offsetof(wcache_snapshot_info, base_revision);
    ck_assert_int_eq(wcache_snapshot_write(c, path, &o, &in), WCACHE_OK);
    ck_assert_int_eq(in.revision, rev);
    ck_assert_uint_eq(in.file_hash, 0x5a5a5a5a5a5a5a5aULL); /* beyond its size: untouched */
    wcache_cache_close(c);
}
END_TEST

/* Golden files of format 1.1: a full snapshot and a delta on it. */
START_TEST(golden_v1_1)
{
    wcache_snapshot *s, *d;
    char pf[512], pd[512];
    ck_assert_int_eq(open_data(&s, "golden-v1.1.wcsnap", pf, sizeof pf), WCACHE_OK);
    ck_assert_int_eq(open_data(&d, "golden-v1.1-delta.wcsnap", pd, sizeof pd), WCACHE_OK);
    wcache_snapshot_info fi = {.size = sizeof fi}, in = {.size = sizeof in};
    ck_assert_int_eq(wcache_snapshot_get_info(s, &fi), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_get_info(d, &in), WCACHE_OK);
    ck_assert_uint_eq(fi.format_minor, 1);
    ck_assert_uint_eq(fi.flags, 0);
    ck_assert_int_eq(fi.revision, 12);
    ck_assert_uint_eq(in.format_minor, 1);
    ck_assert_uint_eq(in.flags, WCACHE_SNAP_FLAG_DELTA);
    ck_assert_int_eq(in.revision, 17);
    ck_assert_int_eq(in.base_revision, 12);
    ck_assert_uint_eq(in.base_file_hash, fi.file_hash);
    ck_assert_uint_eq(in.objects, 3);
    ck_assert_uint_eq(in.tombstones, 1);
    static const wcache_kv want[] = {
        {"/registry/a", 11, "", 0, 0, 13, 0},
        {"/registry/d", 11, "d-4", 3, 4, 14, 4},
        {"/registry/e", 11, "e", 1, 17, 17, 1},
    };
    wcache_kv kv;
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(wcache_snapshot_next(d, &kv), WCACHE_OK);
        ck_assert_msg(kv_eq(&kv, &want[i]), "record %zu", i);
    }
    ck_assert_int_eq(wcache_snapshot_next(d, &kv), WCACHE_ENOTFOUND);
    ck_assert_int_eq(wcache_snapshot_verify(s), WCACHE_OK);
    wcache_snapshot_close(s);
    wcache_snapshot_close(d);
    wcache_cache *b = tu_new_cache();
    ck_assert_int_eq(restore_n(b, pf, pd, NULL, 2), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_revision(b), 17);
    wcache_view *v;
    ck_assert_int_eq(wcache_view_create(b, &v), WCACHE_OK);
    ck_assert_int_eq(wcache_view_begin(v, 17), WCACHE_OK);
    ck_assert_int_eq(wcache_view_get(v, "/registry/a", 11, &kv), WCACHE_ENOTFOUND);
    ck_assert_int_eq(wcache_view_get(v, "/registry/c", 11, &kv), WCACHE_OK);
    ck_assert_int_eq(wcache_view_get(v, "/registry/e", 11, &kv), WCACHE_OK);
    uint64_t n = 0;
    ck_assert_int_eq(wcache_view_count(v, NULL, &n), WCACHE_OK);
    ck_assert_uint_eq(n, 4); /* b, c, d, e */
    wcache_view_free(v);
    wcache_cache_close(b);
}
END_TEST

/* A re-list's metadata (mod_revisions below the revision the changes
 * became visible at) is what a snapshot keeps and a restore reports; a
 * delta from a base below the re-list is refused (the cache compacted it),
 * one from a base after it carries on. */
START_TEST(rt_relist_meta)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache(), *b = tu_new_cache(), *d = tu_new_cache();
    fill(a, 100, &rev);
    wcache_snapshot_write_opts o = wopts();
    ck_assert_int_eq(wcache_snapshot_write(a, path, &o, NULL), WCACHE_OK);
    wcache_batch *bt;
    ck_assert_int_eq(wcache_batch_create(a, &bt), WCACHE_OK);
    const char *k1 = "/registry/pods/ns1/pod-00001", *k2 = "/registry/pods/ns2/pod-00002";
    ck_assert_int_eq(wcache_batch_put_meta(bt, k1, strlen(k1), "relisted", 8, 2, rev + 3, 7),
                     WCACHE_OK);
    ck_assert_int_eq(wcache_batch_put_meta(bt, "/registry/z", 11, "z", 1, rev + 2, rev + 7, 2),
                     WCACHE_OK);
    ck_assert_int_eq(wcache_batch_delete(bt, k2, strlen(k2)), WCACHE_OK);
    ck_assert_int_eq(wcache_ingest_relist(a, bt, rev + 10), WCACHE_OK);
    int64_t base_rev = rev;
    rev += 10;
    wcache_batch_free(bt);
    char p1[400], p2[400];
    snprintf(p1, sizeof p1, "%s/relisted.wcsnap", dir);
    snprintf(p2, sizeof p2, "%s/after.wcsnap", dir);
    ck_assert_int_eq(wcache_snapshot_write(a, p1, &o, NULL), WCACHE_OK);
    wcache_snapshot_read_opts r = ropts();
    ck_assert_msg(wcache_snapshot_restore(b, p1, &r, NULL) == WCACHE_OK, "%s", errbuf);
    compare(a, rev, b, rev);
    wcache_view *v;
    wcache_kv kv;
    ck_assert_int_eq(wcache_view_create(b, &v), WCACHE_OK);
    ck_assert_int_eq(wcache_view_begin(v, rev), WCACHE_OK);
    ck_assert_int_eq(wcache_view_get(v, k1, strlen(k1), &kv), WCACHE_OK);
    ck_assert(kv.create_revision == 2 && kv.mod_revision == rev - 7 && kv.version == 7);
    ck_assert_int_eq(wcache_view_get(v, "/registry/z", 11, &kv), WCACHE_OK);
    ck_assert(kv.create_revision == rev - 8 && kv.mod_revision == rev - 3 && kv.version == 2);
    wcache_view_free(v);
    /* deltas: from below the re-list, refused; from it, fine */
    wcache_snapshot *base;
    ck_assert_int_eq(wcache_snapshot_open(&base, path, NULL), WCACHE_OK);
    o.base = base;
    ck_assert_int_eq(wcache_snapshot_write(a, p2, &o, NULL), WCACHE_ECOMPACTED);
    wcache_snapshot_close(base);
    ck_assert_int_lt(base_rev, rev);
    churn(a, 1, &rev);
    ck_assert_int_eq(wcache_snapshot_open(&base, p1, NULL), WCACHE_OK);
    o.base = base;
    ck_assert_msg(wcache_snapshot_write(a, p2, &o, NULL) == WCACHE_OK, "%s", errbuf);
    wcache_snapshot_close(base);
    const char *chain[2] = {p1, p2};
    ck_assert_msg(wcache_snapshot_restore_chain(d, chain, 2, &r, NULL) == WCACHE_OK, "%s",
                  errbuf);
    compare(a, rev, d, rev);
    wcache_cache_close(a);
    wcache_cache_close(b);
    wcache_cache_close(d);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Restore from a stream                                                    */
/* ------------------------------------------------------------------------ */

/* Whatever the chunking, the stream restore equals the file restore, and
 * reports what the file holds. */
/* Valgrind runs every callback of a 1-byte stream some fifty times slower. */
static int slow_pass(void)
{
    const char *v = getenv("WCACHE_VALGRIND");
    return v && *v && strcmp(v, "0");
}

START_TEST(stream_roundtrip)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache();
    fill(a, slow_pass() ? 250 : 700, &rev);
    membuf m = snap_bytes(a, 1); /* 4 KiB blocks: many of them */
    FILE *f = fopen(path, "wb");
    ck_assert_uint_eq(fwrite(m.p, 1, m.n, f), m.n);
    fclose(f);
    wcache_snapshot *s;
    wcache_snapshot_info fi = {.size = sizeof fi};
    ck_assert_int_eq(wcache_snapshot_open(&s, path, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_snapshot_get_info(s, &fi), WCACHE_OK);
    wcache_snapshot_close(s);
    static const unsigned steps[] = {1, 2, 3, 31, 4097, 0};
    for (size_t i = slow_pass() ? 2 : 0; i < sizeof steps / sizeof steps[0]; i++) {
        wcache_cache *b = tu_new_cache();
        wcache_snapshot_read_opts o = ropts();
        wcache_snapshot_info si = {.size = sizeof si};
        int rc = restore_stream(b, m.p, m.n, steps[i], &o, &si);
        ck_assert_msg(rc == WCACHE_OK, "step %u: %s: %s", steps[i], wcache_strerror(rc),
                      errbuf);
        ck_assert_int_eq(si.revision, rev);
        ck_assert_uint_eq(si.objects, fi.objects);
        ck_assert_uint_gt(si.blocks, 3);
        ck_assert_uint_eq(si.blocks, fi.blocks);
        ck_assert_uint_eq(si.kv_bytes, fi.kv_bytes);
        ck_assert_uint_eq(si.file_hash, fi.file_hash);
        ck_assert_uint_eq(si.file_bytes, m.n);
        ck_assert_ptr_null(si.source_id);
        ck_assert_int_eq(wcache_cache_compacted_revision(b), rev);
        compare(a, rev, b, rev);
        /* Not empty any more. */
        ck_assert_int_eq(restore_stream(b, m.p, m.n, 0, &o, NULL), WCACHE_ESTATE);
        wcache_cache_close(b);
    }
    free(m.p);
    wcache_cache_close(a);
}
END_TEST

/* A stream that breaks anywhere (the header, a block, the trailer, after
 * the trailer before its end) fails with the reader's own code and leaves
 * the cache untouched; so do stray bytes after the trailer, a callback
 * that claims more bytes than there was room for, a delta and a snapshot
 * of another source (refused after the header, not after the download). */
START_TEST(stream_failures)
{
    int64_t rev = 0;
    wcache_cache *a = tu_new_cache(), *b = tu_new_cache();
    fill(a, slow_pass() ? 100 : 300, &rev);
    membuf m = snap_bytes(a, 0);
    wcache_snapshot_read_opts o = ropts();
    size_t cuts[] = {0, 1, 63, 64, 100, m.n / 3, m.n / 2, m.n - 64, m.n - 1, m.n};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        for (unsigned step = 0; step <= 5; step += 5) {
            chunks ch = {
                .p = m.p, .n = m.n, .step = step, .fail_at = cuts[i], .fail_rc = WCACHE_ECURL};
            errbuf[0] = 0;
            int rc = wcache_snapshot_restore_from(b, chunk_read, &ch, &o, NULL);
            ck_assert_msg(rc == WCACHE_ECURL, "cut at %zu: %s (%s)", cuts[i],
                          wcache_strerror(rc), errbuf);
            ck_assert_msg(strstr(errbuf, "reading the stream"), "%s", errbuf);
            ck_assert_uint_eq(ch.pos, cuts[i]);
            untouched(b);
        }
    }
    /* WCACHE_ENOTFOUND from the callback is that, not a sound end. */
    chunks nf = {.p = m.p, .n = m.n, .fail_at = m.n / 2, .fail_rc = WCACHE_ENOTFOUND};
    ck_assert_int_eq(wcache_snapshot_restore_from(b, chunk_read, &nf, &o, NULL),
                     WCACHE_ENOTFOUND);
    untouched(b);
    chunks big = {.p = m.p, .n = m.n, .oversize = 1};
    ck_assert_int_eq(wcache_snapshot_restore_from(b, chunk_read, &big, &o, NULL),
                     WCACHE_EINVAL);
    untouched(b);
    /* Another object run on after the trailer. */
    unsigned char *two = malloc(2 * m.n);
    memcpy(two, m.p, m.n);
    memcpy(two + m.n, m.p, m.n);
    ck_assert_int_eq(restore_stream(b, two, m.n + 1, 7, &o, NULL), WCACHE_ECORRUPT);
    ck_assert_msg(strstr(errbuf, "stray"), "%s", errbuf);
    ck_assert_int_eq(restore_stream(b, two, 2 * m.n, 0, &o, NULL), WCACHE_ECORRUPT);
    untouched(b);
    free(two);
    /* Another source: refused once the header is in. */
    o.expect_source_id = "etcd:cluster-2:/registry/";
    o.expect_source_id_len = strlen(o.expect_source_id);
    chunks other = {.p = m.p, .n = m.n, .step = 0};
    ck_assert_int_eq(wcache_snapshot_restore_from(b, chunk_read, &other, &o, NULL),
                     WCACHE_EINVAL);
    ck_assert_ptr_nonnull(strstr(errbuf, "cluster-2"));
    ck_assert_uint_lt(other.pos, 4096);
    untouched(b);
    o = ropts();
    /* A delta is restored with its base, never alone. */
    wcache_snapshot *base;
    ck_assert_int_eq(wcache_snapshot_open_mem(&base, m.p, m.n, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_ingest_put(a, "/registry/new", 13, "x", 1, ++rev), WCACHE_OK);
    membuf d = {0};
    wcache_snapshot_write_opts w = wopts();
    w.base = base;
    ck_assert_int_eq(wcache_snapshot_write_to(a, mem_sink, &d, &w, NULL), WCACHE_OK);
    wcache_snapshot_close(base);
    ck_assert_int_eq(restore_stream(b, d.p, d.n, 0, &o, NULL), WCACHE_EINVAL);
    ck_assert_ptr_nonnull(strstr(errbuf, "delta"));
    untouched(b);
    ck_assert_int_eq(wcache_snapshot_restore_from(NULL, chunk_read, &other, NULL, NULL),
                     WCACHE_EINVAL);
    ck_assert_int_eq(wcache_snapshot_restore_from(b, NULL, NULL, NULL, NULL), WCACHE_EINVAL);
    free(d.p);
    free(m.p);
    wcache_cache_close(a);
    wcache_cache_close(b);
}
END_TEST

Suite *snapshot_suite(void)
{
    Suite *s = suite_create("snapshot");
    TCase *t = tcase_create("roundtrip");
    tcase_add_checked_fixture(t, mkdir_tmp, rm_tmp);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, rt_basic);
    tcase_add_test(t, rt_relist_meta);
    tcase_add_test(t, rt_small_blocks_workers);
    tcase_add_test(t, rt_big_values);
    tcase_add_test(t, rt_empty);
    tcase_add_test(t, rt_past_writeback_steps);
    tcase_add_test(t, rt_ingest_goes_on);
    tcase_add_test(t, rt_concurrent_feed);
    tcase_add_test(t, deterministic_workers);
    tcase_add_test(t, iterate_in_order);
    tcase_add_test(t, restore_refusals);
    tcase_add_test(t, prune_keeps_newest);
    tcase_add_test(t, golden_v1);
    tcase_add_test(t, sink_errors);
    tcase_add_test(t, reader_arguments);
    tcase_add_test(t, reader_out_of_memory);
    tcase_add_test(t, tick_policy);
    suite_add_tcase(s, t);
    t = tcase_create("crash");
    tcase_add_checked_fixture(t, mkdir_tmp, rm_tmp);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, crash_soft_every_step);
    tcase_add_test(t, crash_hard_fork);
    tcase_add_test(t, crash_soft_delta);
    tcase_add_test(t, crash_hard_delta);
    tcase_add_test(t, write_errors);
    suite_add_tcase(s, t);
    t = tcase_create("delta");
    tcase_add_checked_fixture(t, mkdir_tmp, rm_tmp);
    tcase_set_timeout(t, 60);
    tcase_add_loop_test(t, delta_chain_roundtrip, 0, 3);
    tcase_add_test(t, delta_empty_and_live);
    tcase_add_test(t, delta_broken_chains);
    tcase_add_test(t, delta_write_refusals);
    tcase_add_test(t, delta_old_struct_sizes);
    tcase_add_test(t, delta_prune_keeps_chains);
    tcase_add_test(t, golden_v1_1);
    suite_add_tcase(s, t);
    t = tcase_create("damage");
    tcase_add_checked_fixture(t, good_setup, good_teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, damage_truncated);
    tcase_add_test(t, damage_bit_flips);
    tcase_add_test(t, damage_magic_and_versions);
    tcase_add_test(t, damage_counts);
    tcase_add_test(t, damage_bomb);
    suite_add_tcase(s, t);
    t = tcase_create("stream");
    tcase_add_checked_fixture(t, mkdir_tmp, rm_tmp);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, stream_roundtrip);
    tcase_add_test(t, stream_failures);
    suite_add_tcase(s, t);
    return s;
}
