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
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <watchcache.h>

static char tdir[256];
static char errbuf[512];

static void rm_rf(const char *p)
{
    struct stat sb;
    if (lstat(p, &sb) != 0)
        return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(p);
        struct dirent *de;
        char q[1024];
        while (d && (de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                snprintf(q, sizeof q, "%s/%s", p, de->d_name);
                rm_rf(q);
            }
        }
        if (d)
            closedir(d);
        rmdir(p);
    } else {
        unlink(p);
    }
}

static void tmp_setup(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tdir, sizeof tdir, "%s/wcstore-test-XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tdir));
    errbuf[0] = 0;
}

static void tmp_teardown(void)
{
    rm_rf(tdir);
}

static wcache_cache *new_cache(void)
{
    wcache_cache *c = NULL;
    ck_assert_int_eq(wcache_cache_create(&c, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_set_param(c, WCACHE_P_AUTO_COMPACT, 0), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_open(c), WCACHE_OK);
    return c;
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
    wcache_cache *c = new_cache();
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

    wcache_cache *r = new_cache();
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
    wcache_cache *c = new_cache();
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
    suite_add_tcase(s, t);
    return s;
}
