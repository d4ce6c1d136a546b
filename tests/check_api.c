/*
 * check_api.c - black-box unit tests of every public call of libwatchcache.
 *
 * Only <watchcache.h> is visible here: every expectation comes from the
 * header's contract (and, where the header says "as etcd", from etcd's
 * create_revision / mod_revision / version rules).  Where the header leaves
 * a choice to the library, the test accepts every documented outcome and
 * says so next to the assertion.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <pthread.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <watchcache.h>

#include "testutil.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static wcache_cache *C; /* the fixture's cache, open, default parameters */

static void setup(void)
{
    ck_assert_ok(wcache_cache_create(&C, NULL));
    ck_assert_ok(wcache_cache_open(C));
}

static void teardown(void)
{
    wcache_cache_close(C);
    C = NULL;
}

static wcache_code put_s(wcache_cache *c, const char *k, const char *v, int64_t rev)
{
    return wcache_ingest_put(c, k, strlen(k), v, v ? strlen(v) : 0, rev);
}

static wcache_code del_s(wcache_cache *c, const char *k, int64_t rev)
{
    return wcache_ingest_delete(c, k, strlen(k), rev);
}

static wcache_cache *open_with(wcache_param p1, int64_t v1, wcache_param p2, int64_t v2)
{
    wcache_cache *c = NULL;
    ck_assert_ok(wcache_cache_create(&c, NULL));
    if (p1)
        ck_assert_ok(wcache_cache_set_param(c, p1, v1));
    if (p2)
        ck_assert_ok(wcache_cache_set_param(c, p2, v2));
    ck_assert_ok(wcache_cache_open(c));
    return c;
}

/* GET key at rev through a fresh view; val NULL means "must be absent". */
#define EXPECT_GET(c, rev, k, kl, v, vl, cr, mr, ver) \
    expect_get_(__LINE__, c, rev, k, kl, v, vl, cr, mr, ver)
#define EXPECT_S(c, rev, k, v, cr, mr, ver) \
    expect_get_(__LINE__, c, rev, k, strlen(k), v, strlen(v), cr, mr, ver)
#define EXPECT_ABSENT(c, rev, k) expect_get_(__LINE__, c, rev, k, strlen(k), NULL, 0, 0, 0, 0)

static void expect_get_(int line, wcache_cache *c, int64_t rev, const void *k, size_t kl,
                        const void *v, size_t vl, int64_t cr, int64_t mr, int64_t ver)
{
    char kb[256];
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(c, &w));
    int rc = wcache_view_begin(w, rev);
    ck_assert_msg(rc == WCACHE_OK, "line %d: begin(%lld) = %s", line, (long long)rev,
                  wcache_strerror(rc));
    wcache_kv kv;
    memset(&kv, 0, sizeof kv);
    rc = wcache_view_get(w, k, kl, &kv);
    tu_hex(k, kl, kb, sizeof kb);
    if (!v) {
        ck_assert_msg(rc == WCACHE_ENOTFOUND, "line %d: get(%s)@%lld = %s, want ENOTFOUND",
                      line, kb, (long long)rev, wcache_strerror(rc));
    } else {
        ck_assert_msg(rc == WCACHE_OK, "line %d: get(%s)@%lld = %s", line, kb, (long long)rev,
                      wcache_strerror(rc));
        ck_assert_msg(kv.key_len == kl && memcmp(kv.key, k, kl) == 0,
                      "line %d: get(%s) returned another key", line, kb);
        ck_assert_msg(kv.value_len == vl && (vl == 0 || memcmp(kv.value, v, vl) == 0),
                      "line %d: get(%s)@%lld: wrong value (len %zu, want %zu)", line, kb,
                      (long long)rev, kv.value_len, vl);
        ck_assert_msg(kv.create_revision == cr && kv.mod_revision == mr && kv.version == ver,
                      "line %d: get(%s)@%lld: create/mod/version = %lld/%lld/%lld, want "
                      "%lld/%lld/%lld",
                      line, kb, (long long)rev, (long long)kv.create_revision,
                      (long long)kv.mod_revision, (long long)kv.version, (long long)cr,
                      (long long)mr, (long long)ver);
    }
    wcache_view_free(w);
}

/* A growable text buffer for state dumps. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#include <stdarg.h>
static void sb_add(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        ck_assert_int_ge(n, 0);
        if (b->p && b->n + (size_t)n < b->cap) {
            b->n += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
}

static void sb_kv(sbuf *b, const wcache_kv *kv)
{
    const unsigned char *k = kv->key, *v = kv->value;
    for (size_t i = 0; i < kv->key_len; i++)
        sb_add(b, "%02x", k[i]);
    sb_add(b, "=");
    for (size_t i = 0; i < kv->value_len; i++)
        sb_add(b, "%02x", v[i]);
    sb_add(b, " c%lld m%lld v%lld\n", (long long)kv->create_revision,
           (long long)kv->mod_revision, (long long)kv->version);
}

/*
 * Everything observable at rev in one string (revision, compacted revision
 * and a full LIST), to compare "before" and "after" a refused call.
 * Returns NULL when the view cannot be pinned at rev.
 */
static char *dump_at(wcache_cache *c, int64_t rev)
{
    sbuf b = {0};
    sb_add(&b, "rev %lld compacted %lld\n", (long long)wcache_cache_revision(c),
           (long long)wcache_cache_compacted_revision(c));
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(c, &w));
    if (wcache_view_begin(w, rev) != WCACHE_OK) {
        wcache_view_free(w);
        free(b.p);
        return NULL;
    }
    wcache_kv items[1000];
    wcache_list_opts o = {.size = sizeof o};
    wcache_list_result r = {.size = sizeof r};
    ck_assert_ok(wcache_view_list(w, &o, items, 1000, &r));
    ck_assert_int_eq(r.more, 0);
    for (size_t i = 0; i < r.count; i++)
        sb_kv(&b, &items[i]);
    wcache_view_free(w);
    return b.p;
}

/* Assert that every revision in [lo, hi] reads exactly as before. */
typedef struct snapshot {
    int64_t lo, hi;
    char *d[64];
} snapshot;

static void snap_take(snapshot *s, wcache_cache *c)
{
    s->hi = wcache_cache_revision(c);
    s->lo = wcache_cache_compacted_revision(c);
    ck_assert_int_le(s->hi - s->lo, 63);
    for (int64_t r = s->lo; r <= s->hi; r++)
        s->d[r - s->lo] = dump_at(c, r);
}

#define SNAP_CHECK(s, c) snap_check_(__LINE__, s, c)
static void snap_check_(int line, snapshot *s, wcache_cache *c)
{
    ck_assert_msg(wcache_cache_revision(c) == s->hi, "line %d: revision moved %lld -> %lld",
                  line, (long long)s->hi, (long long)wcache_cache_revision(c));
    ck_assert_msg(wcache_cache_compacted_revision(c) == s->lo,
                  "line %d: compacted revision moved", line);
    for (int64_t r = s->lo; r <= s->hi; r++) {
        char *now = dump_at(c, r);
        char *was = s->d[r - s->lo];
        ck_assert_msg((now == NULL) == (was == NULL) && (!now || strcmp(now, was) == 0),
                      "line %d: state at %lld changed:\nwas:\n%s\nnow:\n%s", line, (long long)r,
                      was ? was : "(unreadable)", now ? now : "(unreadable)");
        free(now);
    }
}

static void snap_free(snapshot *s)
{
    for (int64_t r = s->lo; r <= s->hi; r++)
        free(s->d[r - s->lo]);
}

/* ------------------------------------------------------------------------ */
/* strerror, version                                                         */
/* ------------------------------------------------------------------------ */

START_TEST(test_strerror)
{
    for (int i = 0; i < WCACHE_CODE_LAST; i++) {
        const char *s = wcache_strerror(i);
        ck_assert_msg(s != NULL && *s, "code %d has no string", i);
        ck_assert_msg(strcmp(s, "unknown error") != 0, "code %d is \"unknown error\"", i);
        for (int j = 0; j < i; j++)
            ck_assert_msg(strcmp(s, wcache_strerror(j)) != 0, "codes %d and %d share \"%s\"", i,
                          j, s);
    }
    const int bad[] = {WCACHE_CODE_LAST, WCACHE_CODE_LAST + 1, -1, 1000, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *s = wcache_strerror(bad[i]);
        ck_assert_ptr_nonnull(s);
        ck_assert_str_eq(s, "unknown error");
    }
}
END_TEST

START_TEST(test_version)
{
    ck_assert_uint_eq(wcache_version_number(), WCACHE_VERSION_NUMBER);
    ck_assert_ptr_nonnull(wcache_version_string());
    ck_assert_str_eq(wcache_version_string(), WCACHE_VERSION_STRING);
    char buf[32];
    snprintf(buf, sizeof buf, "%d.%d.%d", WCACHE_VERSION_MAJOR, WCACHE_VERSION_MINOR,
             WCACHE_VERSION_PATCH);
    ck_assert_str_eq(wcache_version_string(), buf);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Lifecycle and configuration                                               */
/* ------------------------------------------------------------------------ */

START_TEST(test_create_args)
{
    wcache_cache *c = NULL;
    ck_assert_wc(wcache_cache_create(NULL, NULL), WCACHE_EINVAL);

    tu_alloc_state st = {.fail_at = -1};
    wcache_allocator a = tu_allocator(&st);
    a.size = 0;
    ck_assert_wc(wcache_cache_create(&c, &a), WCACHE_EINVAL);
    a.size = sizeof a - 1;
    ck_assert_wc(wcache_cache_create(&c, &a), WCACHE_EINVAL);
    ck_assert_int_eq(st.live, 0);

    /* The allocator is copied at create: the caller's struct may go away. */
    a.size = sizeof a;
    ck_assert_ok(wcache_cache_create(&c, &a));
    ck_assert_ptr_nonnull(c);
    memset(&a, 0, sizeof a);
    ck_assert_ok(wcache_cache_open(c));
    ck_assert_ok(put_s(c, "k", "v", 1));
    wcache_cache_close(c);
    ck_assert_int_gt(st.total, 0);
    ck_assert_int_eq(st.live, 0);
    ck_assert_int_eq(st.bad_frees, 0);

    wcache_cache_close(NULL);
    wcache_batch_free(NULL);
    wcache_view_free(NULL);
}
END_TEST

/* The header's documented bounds and defaults. */
static const struct {
    wcache_param p;
    int64_t lo, hi, dflt; /* INT64_MIN: not stated by the header */
} documented[] = {
    {WCACHE_P_RETAIN_REVISIONS, 0, INT64_C(1) << 40, 0},
    {WCACHE_P_RETAIN_SECONDS, INT64_MIN, INT64_MIN, 75},
    {WCACHE_P_AUTO_COMPACT, 0, 1, 1},
    {WCACHE_P_READER_SLOTS, 1, 1048576, 1024},
    {WCACHE_P_MAX_KEY_BYTES, 1, 1 << 20, 65536},
    {WCACHE_P_MAX_VALUE_BYTES, 0, INT64_C(1) << 30, INT64_C(16) << 20},
};

START_TEST(test_params)
{
    wcache_cache *c = NULL;
    ck_assert_ok(wcache_cache_create(&c, NULL));
    for (size_t i = 0; i < sizeof documented / sizeof documented[0]; i++) {
        wcache_param p = documented[i].p;
        int64_t lo, hi, dflt, v;
        ck_assert_ok(wcache_param_bounds(p, &lo, &hi, &dflt));
        ck_assert_msg(lo <= dflt && dflt <= hi, "param %d: default outside bounds", p);
        if (documented[i].lo != INT64_MIN) {
            ck_assert_msg(lo == documented[i].lo && hi == documented[i].hi,
                          "param %d: bounds [%lld, %lld] differ from the header", p,
                          (long long)lo, (long long)hi);
        }
        ck_assert_msg(dflt == documented[i].dflt, "param %d: default %lld, header says %lld", p,
                      (long long)dflt, (long long)documented[i].dflt);
        ck_assert_ok(wcache_cache_get_param(c, p, &v));
        ck_assert_int_eq(v, dflt);

        if (lo > INT64_MIN)
            ck_assert_wc(wcache_cache_set_param(c, p, lo - 1), WCACHE_EINVAL);
        if (hi < INT64_MAX)
            ck_assert_wc(wcache_cache_set_param(c, p, hi + 1), WCACHE_EINVAL);
        ck_assert_wc(wcache_cache_set_param(c, p, INT64_MIN), WCACHE_EINVAL);
        ck_assert_ok(wcache_cache_get_param(c, p, &v));
        ck_assert_int_eq(v, dflt);

        ck_assert_ok(wcache_cache_set_param(c, p, lo));
        ck_assert_ok(wcache_cache_get_param(c, p, &v));
        ck_assert_int_eq(v, lo);
        ck_assert_ok(wcache_cache_set_param(c, p, hi));
        ck_assert_ok(wcache_cache_get_param(c, p, &v));
        ck_assert_int_eq(v, hi);
        ck_assert_ok(wcache_cache_set_param(c, p, dflt));
    }
    /* Unknown parameters. */
    const int unknown[] = {0, WCACHE_P_LAST, WCACHE_P_LAST + 7, -1};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        int64_t lo, hi, dflt, v;
        wcache_param p = (wcache_param)unknown[i];
        ck_assert_wc(wcache_param_bounds(p, &lo, &hi, &dflt), WCACHE_EINVAL);
        ck_assert_wc(wcache_cache_set_param(c, p, 1), WCACHE_EINVAL);
        ck_assert_wc(wcache_cache_get_param(c, p, &v), WCACHE_EINVAL);
    }
    int64_t v;
    ck_assert_wc(wcache_cache_set_param(NULL, WCACHE_P_READER_SLOTS, 4), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_get_param(NULL, WCACHE_P_READER_SLOTS, &v), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_get_param(c, WCACHE_P_READER_SLOTS, NULL), WCACHE_EINVAL);

    /* After open: setters refuse, getters still answer. */
    ck_assert_ok(wcache_cache_set_param(c, WCACHE_P_READER_SLOTS, 7));
    ck_assert_ok(wcache_cache_open(c));
    ck_assert_wc(wcache_cache_set_param(c, WCACHE_P_READER_SLOTS, 8), WCACHE_ESTATE);
    ck_assert_ok(wcache_cache_get_param(c, WCACHE_P_READER_SLOTS, &v));
    ck_assert_int_eq(v, 7);
    wcache_cache_close(c);
}
END_TEST

static void nop_log(int level, const char *msg, size_t len, void *ud)
{
    (void)level, (void)msg, (void)len, (void)ud;
}

static int64_t zero_clock(void *ud)
{
    (void)ud;
    return 0;
}

START_TEST(test_lifecycle_state)
{
    wcache_cache *c = NULL;
    ck_assert_ok(wcache_cache_create(&c, NULL));
    /* Configuration state: the cache is neither readable nor writable. */
    ck_assert_wc(put_s(c, "a", "1", 1), WCACHE_ESTATE);
    ck_assert_wc(del_s(c, "a", 1), WCACHE_ESTATE);
    ck_assert_wc(wcache_ingest_progress(c, 1), WCACHE_ESTATE);
    ck_assert_wc(wcache_cache_compact(c, 0), WCACHE_ESTATE);
    wcache_view *w = NULL;
    if (wcache_view_create(c, &w) == WCACHE_OK) {
        ck_assert_wc(wcache_view_begin(w, WCACHE_REV_LATEST), WCACHE_ESTATE);
        wcache_view_free(w);
    }
    ck_assert_int_eq(wcache_cache_revision(c), 0);
    ck_assert_ok(wcache_cache_set_log(c, nop_log, WCACHE_LOG_DEBUG, NULL));
    ck_assert_ok(wcache_cache_set_log(c, NULL, WCACHE_LOG_ERROR, NULL));
    ck_assert_ok(wcache_cache_set_clock(c, zero_clock, NULL));
    ck_assert_ok(wcache_cache_set_clock(c, NULL, NULL));

    ck_assert_ok(wcache_cache_open(c));
    ck_assert_int_eq(wcache_cache_revision(c), 0);
    ck_assert_int_eq(wcache_cache_compacted_revision(c), 0);
    ck_assert_wc(wcache_cache_open(c), WCACHE_ESTATE);
    ck_assert_wc(wcache_cache_set_log(c, nop_log, WCACHE_LOG_DEBUG, NULL), WCACHE_ESTATE);
    ck_assert_wc(wcache_cache_set_clock(c, zero_clock, NULL), WCACHE_ESTATE);

    /* An empty open cache is readable at revision 0. */
    ck_assert_ok(wcache_view_create(c, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    wcache_kv kv;
    ck_assert_wc(wcache_view_get(w, "a", 1, &kv), WCACHE_ENOTFOUND);
    wcache_view_free(w);
    wcache_cache_close(c);

    /* NULL handles. */
    ck_assert_wc(wcache_cache_open(NULL), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_set_log(NULL, nop_log, 0, NULL), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_set_clock(NULL, zero_clock, NULL), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_set_errbuf(NULL, NULL, 0), WCACHE_EINVAL);
    ck_assert_wc(wcache_ingest_put(NULL, "a", 1, "b", 1, 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_ingest_delete(NULL, "a", 1, 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_compact(NULL, 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_view_create(NULL, &w), WCACHE_EINVAL);
    wcache_batch *b = NULL;
    ck_assert_wc(wcache_batch_create(NULL, &b), WCACHE_EINVAL);
    wcache_stat st = {.size = sizeof st};
    ck_assert_wc(wcache_cache_stat(NULL, &st), WCACHE_EINVAL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Single writes                                                             */
/* ------------------------------------------------------------------------ */

START_TEST(test_put_delete_revisions)
{
    ck_assert_ok(put_s(C, "a", "v1", 1));
    ck_assert_int_eq(wcache_cache_revision(C), 1);
    EXPECT_S(C, 1, "a", "v1", 1, 1, 1);

    ck_assert_ok(put_s(C, "a", "v2", 3));
    EXPECT_S(C, 3, "a", "v2", 1, 3, 2);
    EXPECT_S(C, 2, "a", "v1", 1, 1, 1); /* a gap revision reads as the one below */
    ck_assert_ok(put_s(C, "b", "w", 4));
    ck_assert_ok(put_s(C, "a", "v3", 5));
    EXPECT_S(C, 5, "a", "v3", 1, 5, 3);

    ck_assert_ok(del_s(C, "a", 6));
    ck_assert_int_eq(wcache_cache_revision(C), 6);
    EXPECT_ABSENT(C, 6, "a");
    EXPECT_S(C, 5, "a", "v3", 1, 5, 3);

    /* etcd: a put after a delete starts a new incarnation. */
    ck_assert_ok(put_s(C, "a", "v4", 8));
    EXPECT_S(C, 8, "a", "v4", 8, 8, 1);
    EXPECT_ABSENT(C, 7, "a");
    ck_assert_ok(put_s(C, "a", "v5", 9));
    EXPECT_S(C, 9, "a", "v5", 8, 9, 2);
    EXPECT_S(C, 9, "b", "w", 4, 4, 1);
    EXPECT_ABSENT(C, 3, "b");

    /* Revisions must move forward; a refused write changes nothing. */
    snapshot s;
    snap_take(&s, C);
    ck_assert_wc(put_s(C, "a", "x", 9), WCACHE_EORDER);
    ck_assert_wc(put_s(C, "a", "x", 8), WCACHE_EORDER);
    ck_assert_wc(put_s(C, "new", "x", 1), WCACHE_EORDER);
    ck_assert_wc(del_s(C, "a", 9), WCACHE_EORDER);
    ck_assert_wc(del_s(C, "b", 2), WCACHE_EORDER);
    /* Negative: either refusal is documented. */
    int rc = put_s(C, "a", "x", -5);
    ck_assert_msg(rc == WCACHE_EORDER || rc == WCACHE_EINVAL, "put at -5: %s",
                  wcache_strerror(rc));
    SNAP_CHECK(&s, C);
    snap_free(&s);
}
END_TEST

START_TEST(test_delete_absent)
{
    ck_assert_ok(put_s(C, "a", "1", 2));
    ck_assert_wc(del_s(C, "zz", 3), WCACHE_ENOTFOUND);
    ck_assert_int_eq(wcache_cache_revision(C), 2);
    ck_assert_ok(del_s(C, "a", 3));
    ck_assert_wc(del_s(C, "a", 4), WCACHE_ENOTFOUND); /* a tombstone is not live */
    ck_assert_int_eq(wcache_cache_revision(C), 3);
    /* The refused revision is still free to use. */
    ck_assert_ok(put_s(C, "b", "1", 4));
    ck_assert_int_eq(wcache_cache_revision(C), 4);
    /* An empty key names nothing that can be live: refused either way, and
     * the revision does not move. */
    int rc = wcache_ingest_delete(C, "b", 0, 5);
    ck_assert_msg(rc == WCACHE_EINVAL || rc == WCACHE_ENOTFOUND, "delete of empty key: %s",
                  wcache_strerror(rc));
    ck_assert_int_eq(wcache_cache_revision(C), 4);
}
END_TEST

START_TEST(test_put_args)
{
    ck_assert_wc(wcache_ingest_put(C, NULL, 3, "v", 1, 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_ingest_put(C, "k", 1, NULL, 3, 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_ingest_delete(C, NULL, 3, 1), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_cache_revision(C), 0);
    /* NULL with length 0 is an empty value. */
    ck_assert_ok(wcache_ingest_put(C, "k", 1, NULL, 0, 1));
    EXPECT_GET(C, 1, "k", 1, "", 0, 1, 1, 1);
}
END_TEST

START_TEST(test_progress)
{
    ck_assert_ok(put_s(C, "a", "1", 2));
    ck_assert_ok(wcache_ingest_progress(C, 2)); /* equal: no-op */
    ck_assert_int_eq(wcache_cache_revision(C), 2);
    ck_assert_ok(wcache_ingest_progress(C, 10));
    ck_assert_int_eq(wcache_cache_revision(C), 10);
    EXPECT_S(C, 10, "a", "1", 2, 2, 1);
    EXPECT_S(C, 7, "a", "1", 2, 2, 1);
    ck_assert_wc(wcache_ingest_progress(C, 9), WCACHE_EORDER);
    ck_assert_int_eq(wcache_cache_revision(C), 10);
    ck_assert_wc(put_s(C, "a", "2", 10), WCACHE_EORDER);
    ck_assert_ok(put_s(C, "a", "2", 11));
    EXPECT_S(C, 11, "a", "2", 2, 11, 2);
    ck_assert_ok(wcache_ingest_progress(C, 11));
}
END_TEST

/* wcache_ingest_changes: arguments, and where it stops on each error. */
START_TEST(test_changes)
{
    size_t applied = 99;
    wcache_change ch[6] = {
        {WCACHE_CHANGE_PUT, "a", 1, "1", 1, 2},
        {WCACHE_CHANGE_PUT, "b", 1, "2", 1, 3},
        {WCACHE_CHANGE_PUT, "a", 1, "3", 1, 5}, /* gaps are fine */
        {WCACHE_CHANGE_DELETE, "b", 1, NULL, 0, 6},
        {WCACHE_CHANGE_PUT, "b", 1, NULL, 0, 7}, /* a new incarnation, empty value */
        {WCACHE_CHANGE_DELETE, "a", 1, "ignored", 7, 8},
    };
    ck_assert_wc(wcache_ingest_changes(NULL, ch, 1, &applied), WCACHE_EINVAL);
    ck_assert_uint_eq(applied, 0);
    ck_assert_wc(wcache_ingest_changes(C, NULL, 1, &applied), WCACHE_EINVAL);
    ck_assert_ok(wcache_ingest_changes(C, NULL, 0, &applied));
    ck_assert_ok(wcache_ingest_changes(C, ch, 0, NULL));
    ck_assert_int_eq(wcache_cache_revision(C), 0);

    ck_assert_ok(wcache_ingest_changes(C, ch, 6, &applied));
    ck_assert_uint_eq(applied, 6);
    ck_assert_int_eq(wcache_cache_revision(C), 8);
    EXPECT_S(C, 3, "a", "1", 2, 2, 1);
    EXPECT_S(C, 5, "a", "3", 2, 5, 2);
    EXPECT_S(C, 5, "b", "2", 3, 3, 1);
    EXPECT_ABSENT(C, 6, "b");
    EXPECT_GET(C, 7, "b", 1, "", 0, 7, 7, 1);
    EXPECT_ABSENT(C, 8, "a");

    /* Each error stops at its change; the ones before stay applied. */
    struct {
        wcache_change bad;
        wcache_code want;
    } cases[] = {
        {{WCACHE_CHANGE_DELETE, "zz", 2, NULL, 0, 0}, WCACHE_ENOTFOUND},
        {{WCACHE_CHANGE_PUT, "k", 1, "v", 1, -1}, WCACHE_EORDER}, /* rev: see below */
        {{9, "k", 1, "v", 1, 0}, WCACHE_EINVAL},
        {{WCACHE_CHANGE_PUT, NULL, 1, "v", 1, 0}, WCACHE_EINVAL},
        {{WCACHE_CHANGE_PUT, "k", 0, "v", 1, 0}, WCACHE_EINVAL},
        {{WCACHE_CHANGE_PUT, "k", 1, NULL, 1, 0}, WCACHE_EINVAL},
    };
    int64_t ok_created = wcache_cache_revision(C) + 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t r = wcache_cache_revision(C);
        wcache_change x[3] = {{WCACHE_CHANGE_PUT, "ok", 2, "v", 1, r + 1},
                              cases[i].bad,
                              {WCACHE_CHANGE_PUT, "after", 5, "v", 1, r + 3}};
        x[1].rev = cases[i].bad.rev == -1 ? r + 1 : r + 2; /* -1: repeat the revision */
        snapshot s;
        applied = 99;
        ck_assert_wc(wcache_ingest_changes(C, x, 3, &applied), cases[i].want);
        ck_assert_uint_eq(applied, 1);
        ck_assert_int_eq(wcache_cache_revision(C), r + 1);
        EXPECT_S(C, r + 1, "ok", "v", ok_created, r + 1, (int64_t)i + 1);
        EXPECT_ABSENT(C, r + 1, "after");
        /* nothing of the failing change or after it: the same call again
         * from the failing change changes nothing */
        snap_take(&s, C);
        ck_assert_wc(wcache_ingest_changes(C, x + 1, 2, &applied), cases[i].want);
        ck_assert_uint_eq(applied, 0);
        SNAP_CHECK(&s, C);
        snap_free(&s);
    }
}
END_TEST

/* A key that compaction removes in the middle of a wcache_ingest_changes
 * call, and that a change a few places later puts again: the look-ahead
 * saw the old key before it went (and was freed: no reader holds it), so
 * the put must make a new one.  Under ASan or valgrind a stale pointer is
 * a use after free; here, a put into the removed key would be invisible. */
START_TEST(test_changes_key_removed_midway)
{
    wcache_cache *c = open_with(WCACHE_P_RETAIN_REVISIONS, 1, WCACHE_P_RETAIN_SECONDS, 0);
    ck_assert_ok(put_s(c, "k", "old", 1));
    /* Changes are published, and compacted, 64 at a time: the delete of k
     * at index 62 is at or below the compaction revision that the publish
     * after index 63 computes, and k's put follows at index 64. */
    enum { N = 72 };
    wcache_change x[N];
    char names[N][8];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "f%02d", i);
        x[i] = (wcache_change){WCACHE_CHANGE_PUT, names[i], 3, "v", 1, 2 + i};
    }
    x[62] = (wcache_change){WCACHE_CHANGE_DELETE, "k", 1, NULL, 0, 2 + 62};
    x[64] = (wcache_change){WCACHE_CHANGE_PUT, "k", 1, "new", 3, 2 + 64};
    size_t applied = 0;
    ck_assert_ok(wcache_ingest_changes(c, x, N, &applied));
    ck_assert_uint_eq(applied, N);
    EXPECT_S(c, 2 + N - 1, "k", "new", 2 + 64, 2 + 64, 1);
    /* the removal did happen midway: the new k starts at version 1 */
    wcache_stat st = {.size = sizeof st};
    ck_assert_ok(wcache_cache_stat(c, &st));
    ck_assert_int_eq(st.objects, N - 1); /* f00..f71 but f62 and f64, plus k */
    wcache_cache_close(c);
}
END_TEST

START_TEST(test_toobig)
{
    wcache_cache *c = open_with(WCACHE_P_MAX_KEY_BYTES, 4, WCACHE_P_MAX_VALUE_BYTES, 3);
    ck_assert_ok(put_s(c, "abcd", "xyz", 1));
    ck_assert_wc(put_s(c, "abcde", "x", 2), WCACHE_ETOOBIG);
    ck_assert_wc(put_s(c, "a", "wxyz", 2), WCACHE_ETOOBIG);
    /* A key over the limit cannot be live: any refusal will do. */
    int rc = del_s(c, "abcde", 2);
    ck_assert_msg(rc == WCACHE_ETOOBIG || rc == WCACHE_ENOTFOUND || rc == WCACHE_EINVAL,
                  "delete of an over-long key: %s", wcache_strerror(rc));
    ck_assert_int_eq(wcache_cache_revision(c), 1);
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(c, &b));
    ck_assert_wc(wcache_batch_put(b, "abcde", 5, "x", 1), WCACHE_ETOOBIG);
    ck_assert_wc(wcache_batch_put(b, "a", 1, "wxyz", 4), WCACHE_ETOOBIG);
    ck_assert_wc(wcache_batch_put_meta(b, "abcde", 5, "x", 1, 1, 1, 1), WCACHE_ETOOBIG);
    ck_assert_uint_eq(wcache_batch_count(b), 0);
    ck_assert_ok(wcache_batch_put(b, "abcd", 4, "xyz", 3));
    ck_assert_uint_eq(wcache_batch_count(b), 1);
    wcache_batch_free(b);
    wcache_cache_close(c);

    /* Value limit 0: only empty values. */
    c = open_with(WCACHE_P_MAX_VALUE_BYTES, 0, 0, 0);
    ck_assert_ok(wcache_ingest_put(c, "k", 1, "", 0, 1));
    ck_assert_wc(wcache_ingest_put(c, "k", 1, "x", 1, 2), WCACHE_ETOOBIG);
    ck_assert_int_eq(wcache_cache_revision(c), 1);
    wcache_cache_close(c);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Batches                                                                   */
/* ------------------------------------------------------------------------ */

START_TEST(test_batch_apply)
{
    ck_assert_ok(put_s(C, "a", "1", 1));
    ck_assert_ok(put_s(C, "c", "1", 2));
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    ck_assert_uint_eq(wcache_batch_count(b), 0);
    ck_assert_ok(wcache_batch_put(b, "a", 1, "2", 1));
    ck_assert_ok(wcache_batch_put(b, "b", 1, "1", 1));
    ck_assert_ok(wcache_batch_delete(b, "c", 1));
    ck_assert_uint_eq(wcache_batch_count(b), 3);
    ck_assert_ok(wcache_ingest_batch(C, b, 5));
    ck_assert_uint_eq(wcache_batch_count(b), 3); /* left as it was */
    ck_assert_int_eq(wcache_cache_revision(C), 5);
    EXPECT_S(C, 5, "a", "2", 1, 5, 2);
    EXPECT_S(C, 5, "b", "1", 5, 5, 1);
    EXPECT_ABSENT(C, 5, "c");
    EXPECT_S(C, 4, "c", "1", 2, 2, 1);
    EXPECT_ABSENT(C, 4, "b");

    /* Clear and reuse; the key and value bytes were copied at add time. */
    wcache_batch_clear(b);
    ck_assert_uint_eq(wcache_batch_count(b), 0);
    char k[2] = "c", v[2] = "9";
    ck_assert_ok(wcache_batch_put(b, k, 1, v, 1));
    k[0] = 'x', v[0] = 'y';
    ck_assert_ok(wcache_batch_delete(b, "b", 1));
    ck_assert_ok(wcache_ingest_batch(C, b, 6));
    EXPECT_S(C, 6, "c", "9", 6, 6, 1);
    EXPECT_ABSENT(C, 6, "x");
    EXPECT_ABSENT(C, 6, "b");
    wcache_batch_free(b);
}
END_TEST

typedef wcache_code (*apply_fn)(wcache_cache *, const wcache_batch *, int64_t);

static void expect_apply_fails(apply_fn fn, wcache_batch *b, int64_t rev, wcache_code want,
                               const char *key);

static void expect_batch_fails(wcache_batch *b, int64_t rev, wcache_code want, const char *key)
{
    expect_apply_fails(wcache_ingest_batch, b, rev, want, key);
}

/* fn(C, b, rev) returns want, and every revision reads as before. */
static void expect_apply_fails(apply_fn fn, wcache_batch *b, int64_t rev, wcache_code want,
                               const char *key)
{
    char eb[256];
    strcpy(eb, "untouched");
    ck_assert_ok(wcache_cache_set_errbuf(C, eb, sizeof eb));
    size_t n = wcache_batch_count(b);
    snapshot s;
    snap_take(&s, C);
    ck_assert_wc(fn(C, b, rev), want);
    SNAP_CHECK(&s, C);
    snap_free(&s);
    ck_assert_uint_eq(wcache_batch_count(b), n);
    ck_assert_msg(memchr(eb, 0, sizeof eb) != NULL, "errbuf not NUL-terminated");
    ck_assert_msg(strcmp(eb, "untouched") != 0 && eb[0], "errbuf not written on %s",
                  wcache_strerror(want));
    if (key)
        ck_assert_msg(strstr(eb, key) != NULL, "errbuf \"%s\" does not name key \"%s\"", eb,
                      key);
    ck_assert_ok(wcache_cache_set_errbuf(C, NULL, 0));
}

START_TEST(test_batch_failures)
{
    ck_assert_ok(put_s(C, "live1", "1", 1));
    ck_assert_ok(put_s(C, "live2", "1", 2));
    ck_assert_ok(put_s(C, "gone", "1", 3));
    ck_assert_ok(del_s(C, "gone", 4));
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));

    /* A key twice: both as puts, and as put + delete. */
    ck_assert_ok(wcache_batch_put(b, "new1", 4, "x", 1));
    ck_assert_ok(wcache_batch_put(b, "dupkey", 6, "x", 1));
    ck_assert_ok(wcache_batch_put(b, "live1", 5, "x", 1));
    ck_assert_ok(wcache_batch_put(b, "dupkey", 6, "y", 1));
    expect_batch_fails(b, 5, WCACHE_EEXIST, "dupkey");
    wcache_batch_clear(b);
    ck_assert_ok(wcache_batch_put(b, "live2", 5, "x", 1));
    ck_assert_ok(wcache_batch_delete(b, "live2", 5));
    expect_batch_fails(b, 5, WCACHE_EEXIST, "live2");

    /* Delete of an absent key, and of a deleted one, after valid puts. */
    wcache_batch_clear(b);
    ck_assert_ok(wcache_batch_put(b, "live1", 5, "x", 1));
    ck_assert_ok(wcache_batch_delete(b, "live2", 5));
    ck_assert_ok(wcache_batch_delete(b, "nosuchkey", 9));
    expect_batch_fails(b, 5, WCACHE_ENOTFOUND, "nosuchkey");
    wcache_batch_clear(b);
    ck_assert_ok(wcache_batch_put(b, "new2", 4, "x", 1));
    ck_assert_ok(wcache_batch_delete(b, "gone", 4));
    expect_batch_fails(b, 5, WCACHE_ENOTFOUND, "gone");

    /* Revision order. */
    wcache_batch_clear(b);
    ck_assert_ok(wcache_batch_put(b, "new3", 4, "x", 1));
    expect_batch_fails(b, 4, WCACHE_EORDER, NULL);
    expect_batch_fails(b, 1, WCACHE_EORDER, NULL);

    /* Empty batch, and put_meta entries (those are for load only). */
    wcache_batch_clear(b);
    expect_batch_fails(b, 5, WCACHE_EINVAL, NULL);
    ck_assert_ok(wcache_batch_put_meta(b, "m", 1, "x", 1, 1, 1, 1));
    expect_batch_fails(b, 5, WCACHE_EINVAL, NULL);
    wcache_batch_clear(b);
    ck_assert_ok(wcache_batch_put(b, "new4", 4, "x", 1));
    ck_assert_ok(wcache_batch_put_meta(b, "m", 1, "x", 1, 1, 1, 1));
    expect_batch_fails(b, 5, WCACHE_EINVAL, NULL);

    /* After all that, revision 5 is still free and a good batch applies. */
    wcache_batch_clear(b);
    ck_assert_ok(wcache_batch_put(b, "live1", 5, "z", 1));
    ck_assert_ok(wcache_batch_delete(b, "live2", 5));
    ck_assert_ok(wcache_ingest_batch(C, b, 5));
    EXPECT_S(C, 5, "live1", "z", 1, 5, 2);
    EXPECT_ABSENT(C, 5, "live2");

    /* Argument errors while building. */
    ck_assert_wc(wcache_batch_put(NULL, "k", 1, "v", 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_batch_put(b, NULL, 1, "v", 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_batch_put(b, "k", 1, NULL, 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_batch_delete(b, NULL, 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_ingest_batch(C, NULL, 9), WCACHE_EINVAL);
    ck_assert_wc(wcache_batch_create(C, NULL), WCACHE_EINVAL);
    wcache_batch_free(b);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Re-list                                                                   */
/* ------------------------------------------------------------------------ */

static void add_meta(wcache_batch *b, const char *k, const char *v, int64_t cr, int64_t mr,
                     int64_t ver);

/* The next delivery of w that is not a bookmark, within a second. */
static wcache_watch_event next_change(wcache_watch *w)
{
    for (int i = 0; i < 100; i++) {
        wcache_watch_event e;
        size_t n = 0;
        ck_assert_ok(wcache_watch_wait(w, &e, 1, &n, 10));
        if (n == 1 && e.type != WCACHE_EV_BOOKMARK)
            return e;
        if (n == 1)
            wcache_event_unref(e.ev);
    }
    ck_abort_msg("no event");
    return (wcache_watch_event){0};
}

static void expect_event(wcache_watch *w, wcache_event_type type, const char *k, int64_t rev,
                         int64_t cr, int64_t mr, int64_t ver)
{
    wcache_watch_event e = next_change(w);
    ck_assert_int_eq(e.type, type);
    ck_assert_int_eq(e.revision, rev);
    ck_assert(e.kv.key_len == strlen(k) && memcmp(e.kv.key, k, e.kv.key_len) == 0);
    ck_assert_int_eq(e.kv.create_revision, cr);
    ck_assert_int_eq(e.kv.mod_revision, mr);
    ck_assert_int_eq(e.kv.version, ver);
    wcache_event_unref(e.ev);
}

START_TEST(test_relist)
{
    ck_assert_ok(put_s(C, "a", "1", 1));
    ck_assert_ok(put_s(C, "b", "1", 2));
    ck_assert_ok(put_s(C, "c", "1", 3));
    ck_assert_ok(put_s(C, "a", "2", 4));
    wcache_watch_opts wo = {.size = sizeof wo, .start_revision = 4};
    wcache_watch *wt = NULL;
    ck_assert_ok(wcache_watch_open(C, &wo, &wt));
    wcache_view *old = NULL, *w = NULL;
    ck_assert_ok(wcache_view_create(C, &old));
    ck_assert_ok(wcache_view_begin(old, WCACHE_REV_LATEST));

    /* The source's list at 10 after a gap: a modified 3 times, b deleted,
     * c deleted and created again, d created and modified, e with no
     * metadata of its own. */
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    add_meta(b, "a", "5", 1, 7, 5);
    ck_assert_ok(wcache_batch_delete(b, "b", 1));
    add_meta(b, "c", "new", 8, 8, 1);
    add_meta(b, "d", "2", 6, 9, 2);
    ck_assert_ok(wcache_batch_put(b, "e", 1, "x", 1));
    ck_assert_ok(wcache_ingest_relist(C, b, 10));
    ck_assert_uint_eq(wcache_batch_count(b), 5); /* left as it was */
    ck_assert_int_eq(wcache_cache_revision(C), 10);
    ck_assert_int_eq(wcache_cache_compacted_revision(C), 10);
    for (int64_t r = 10; r >= 0; r -= 10) { /* exactly 10, and the latest */
        EXPECT_S(C, r, "a", "5", 1, 7, 5);
        EXPECT_ABSENT(C, r, "b");
        EXPECT_S(C, r, "c", "new", 8, 8, 1);
        EXPECT_S(C, r, "d", "2", 6, 9, 2);
        EXPECT_S(C, r, "e", "x", 10, 10, 1);
    }
    char *d = dump_at(C, 10);
    ck_assert_str_eq(d, "rev 10 compacted 10\n"
                        "61=35 c1 m7 v5\n"
                        "63=6e6577 c8 m8 v1\n"
                        "64=32 c6 m9 v2\n"
                        "65=78 c10 m10 v1\n");
    free(d);

    /* The states between 4 and 10 are unknown: compacted, as is 4 itself
     * (etcd compacted it); a view pinned before still reads 4 whole. */
    ck_assert_ok(wcache_view_create(C, &w));
    for (int64_t r = 1; r < 10; r++)
        ck_assert_wc(wcache_view_begin(w, r), WCACHE_ECOMPACTED);
    ck_assert_wc(wcache_view_begin(w, 11), WCACHE_EFUTURE);
    wcache_kv kv;
    ck_assert_ok(wcache_view_get(old, "a", 1, &kv));
    ck_assert(kv.value_len == 1 && memcmp(kv.value, "2", 1) == 0 && kv.mod_revision == 4 &&
              kv.version == 2);
    ck_assert_wc(wcache_view_get(old, "d", 1, &kv), WCACHE_ENOTFOUND);
    ck_assert_ok(wcache_view_get(old, "b", 1, &kv));
    wcache_view_free(old);
    wcache_watch *late = NULL;
    wo.start_revision = 9;
    ck_assert_wc(wcache_watch_open(C, &wo, &late), WCACHE_ECOMPACTED);

    /* The running watcher: every change at 10, each with its metadata. */
    expect_event(wt, WCACHE_EV_MODIFIED, "a", 10, 1, 7, 5);
    expect_event(wt, WCACHE_EV_DELETED, "b", 10, 2, 2, 1);
    expect_event(wt, WCACHE_EV_MODIFIED, "c", 10, 8, 8, 1);
    expect_event(wt, WCACHE_EV_ADDED, "d", 10, 6, 9, 2);
    expect_event(wt, WCACHE_EV_ADDED, "e", 10, 10, 10, 1);

    /* Writes go on from the reported metadata. */
    ck_assert_ok(put_s(C, "a", "6", 11));
    EXPECT_S(C, 11, "a", "6", 1, 11, 6);
    expect_event(wt, WCACHE_EV_MODIFIED, "a", 11, 1, 11, 6);
    EXPECT_S(C, 10, "a", "5", 1, 7, 5);

    /* Nothing to change: the revision moves and the gap is compacted. */
    wcache_batch_clear(b);
    ck_assert_ok(wcache_ingest_relist(C, b, 15));
    ck_assert_int_eq(wcache_cache_revision(C), 15);
    ck_assert_int_eq(wcache_cache_compacted_revision(C), 15);
    ck_assert_wc(wcache_view_begin(w, 14), WCACHE_ECOMPACTED);
    EXPECT_S(C, 15, "a", "6", 1, 11, 6);
    wcache_view_free(w);
    wcache_watch_close(wt);
    wcache_batch_free(b);
}
END_TEST

START_TEST(test_relist_failures)
{
    ck_assert_ok(put_s(C, "live1", "1", 1));
    ck_assert_ok(put_s(C, "live2", "1", 2));
    ck_assert_ok(put_s(C, "live1", "2", 4));
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    /* Valid entries first in each batch: a refused one must take them back. */
    ck_assert_ok(wcache_batch_put(b, "new", 3, "x", 1));
    add_meta(b, "live2", "2", 2, 6, 2);
    add_meta(b, "over", "x", 5, 9, 1); /* mod_revision above the re-list's */
    expect_apply_fails(wcache_ingest_relist, b, 8, WCACHE_EINVAL, "over");
    wcache_batch_clear(b);
    add_meta(b, "live2", "2", 2, 6, 2);
    add_meta(b, "live1", "3", 1, 4, 3); /* not above the cache's revision 4 */
    expect_apply_fails(wcache_ingest_relist, b, 8, WCACHE_EINVAL, "live1");
    wcache_batch_clear(b);
    add_meta(b, "old", "3", 1, 2, 1); /* below it */
    expect_apply_fails(wcache_ingest_relist, b, 8, WCACHE_EINVAL, "old");
    /* put_meta refuses a version 0 or a creation after the modification */
    ck_assert_wc(wcache_batch_put_meta(b, "v0", 2, "x", 1, 5, 6, 0), WCACHE_EINVAL);
    ck_assert_wc(wcache_batch_put_meta(b, "cm", 2, "x", 1, 7, 6, 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_batch_put_meta(b, "c0", 2, "x", 1, 0, 6, 1), WCACHE_EINVAL);
    wcache_batch_clear(b);
    add_meta(b, "dup", "1", 5, 6, 1);
    ck_assert_ok(wcache_batch_put(b, "dup", 3, "x", 1));
    expect_apply_fails(wcache_ingest_relist, b, 8, WCACHE_EEXIST, "dup");
    wcache_batch_clear(b);
    add_meta(b, "live2", "2", 2, 6, 2);
    ck_assert_ok(wcache_batch_delete(b, "absent", 6));
    expect_apply_fails(wcache_ingest_relist, b, 8, WCACHE_ENOTFOUND, "absent");
    wcache_batch_clear(b);
    add_meta(b, "live2", "2", 2, 4, 2);
    expect_apply_fails(wcache_ingest_relist, b, 4, WCACHE_EORDER, NULL);
    wcache_batch_clear(b);
    expect_apply_fails(wcache_ingest_relist, b, 3, WCACHE_EORDER, NULL);
    ck_assert_wc(wcache_ingest_relist(C, NULL, 8), WCACHE_EINVAL);
    ck_assert_wc(wcache_ingest_relist(NULL, b, 8), WCACHE_EINVAL);
    wcache_cache *other = open_with(0, 0, 0, 0);
    ck_assert_wc(wcache_ingest_relist(other, b, 8), WCACHE_EINVAL); /* foreign batch */
    wcache_cache_close(other);

    /* After all that, 8 applies: mod_revision == the re-list's is fine. */
    add_meta(b, "live2", "2", 2, 8, 2);
    ck_assert_ok(wcache_ingest_relist(C, b, 8));
    EXPECT_S(C, 8, "live2", "2", 2, 8, 2);
    EXPECT_S(C, 8, "live1", "2", 1, 4, 2);
    wcache_batch_free(b);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Load                                                                      */
/* ------------------------------------------------------------------------ */

static void add_meta(wcache_batch *b, const char *k, const char *v, int64_t cr, int64_t mr,
                     int64_t ver)
{
    ck_assert_ok(wcache_batch_put_meta(b, k, strlen(k), v, strlen(v), cr, mr, ver));
}

static void load_and_check(int sorted)
{
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    if (sorted) {
        add_meta(b, "a", "va", 3, 10, 4);
        add_meta(b, "b", "vb", 12, 12, 1);
        add_meta(b, "c", "", 1, 20, 9);
    } else {
        add_meta(b, "c", "", 1, 20, 9);
        add_meta(b, "a", "va", 3, 10, 4);
        add_meta(b, "b", "vb", 12, 12, 1);
    }
    ck_assert_ok(wcache_ingest_load(C, b, 20));
    wcache_batch_free(b);
    ck_assert_int_eq(wcache_cache_revision(C), 20);
    ck_assert_int_eq(wcache_cache_compacted_revision(C), 20);
    EXPECT_S(C, 20, "a", "va", 3, 10, 4);
    EXPECT_S(C, 20, "b", "vb", 12, 12, 1);
    EXPECT_S(C, 20, "c", "", 1, 20, 9);
    char *d = dump_at(C, 20);
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(d, "rev 20 compacted 20\n"
                        "61=7661 c3 m10 v4\n"
                        "62=7662 c12 m12 v1\n"
                        "63= c1 m20 v9\n");
    free(d);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_wc(wcache_view_begin(w, 19), WCACHE_ECOMPACTED);
    ck_assert_wc(wcache_view_begin(w, 12), WCACHE_ECOMPACTED);
    ck_assert_wc(wcache_view_begin(w, 21), WCACHE_EFUTURE);
    wcache_view_free(w);
    /* Writes continue from the loaded metadata. */
    ck_assert_wc(put_s(C, "a", "x", 20), WCACHE_EORDER);
    ck_assert_ok(put_s(C, "a", "x", 21));
    EXPECT_S(C, 21, "a", "x", 3, 21, 5);
    ck_assert_ok(del_s(C, "b", 22));
    ck_assert_ok(put_s(C, "b", "y", 23));
    EXPECT_S(C, 23, "b", "y", 23, 23, 1);
    EXPECT_S(C, 20, "a", "va", 3, 10, 4);
}

START_TEST(test_load_sorted)
{
    load_and_check(1);
}
END_TEST

START_TEST(test_load_unsorted)
{
    load_and_check(0);
}
END_TEST

START_TEST(test_load_large_unsorted)
{
    /* Many keys in a scrambled order must come back sorted. */
    enum { N = 2000 };
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    for (unsigned i = 0; i < N; i++) {
        unsigned j = (i * 7919u) % N; /* a permutation: 7919 is prime, N is not its multiple */
        char k[16];
        snprintf(k, sizeof k, "k%05u", j);
        ck_assert_ok(wcache_batch_put_meta(b, k, strlen(k), k, strlen(k), 1 + j, 1 + j, 1));
    }
    ck_assert_ok(wcache_ingest_load(C, b, N + 5));
    wcache_batch_free(b);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    static wcache_kv items[N + 1];
    wcache_list_opts o = {.size = sizeof o};
    wcache_list_result r = {.size = sizeof r};
    ck_assert_ok(wcache_view_list(w, &o, items, N + 1, &r));
    ck_assert_uint_eq(r.count, N);
    ck_assert_int_eq(r.more, 0);
    ck_assert_int_eq(r.revision, N + 5);
    for (unsigned i = 0; i < N; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%05u", i);
        ck_assert_uint_eq(items[i].key_len, strlen(k));
        ck_assert_msg(memcmp(items[i].key, k, strlen(k)) == 0, "item %u out of order", i);
        ck_assert_int_eq(items[i].mod_revision, 1 + i);
    }
    uint64_t n = 0;
    ck_assert_ok(wcache_view_count(w, &o, &n));
    ck_assert_uint_eq(n, N);
    wcache_view_free(w);
}
END_TEST

START_TEST(test_load_errors)
{
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    /* Metadata that cannot exist. */
    ck_assert_wc(wcache_batch_put_meta(b, "k", 1, "v", 1, 0, 1, 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_batch_put_meta(b, "k", 1, "v", 1, 5, 4, 1), WCACHE_EINVAL);
    ck_assert_wc(wcache_batch_put_meta(b, "k", 1, "v", 1, 1, 1, 0), WCACHE_EINVAL);
    ck_assert_wc(wcache_batch_put_meta(b, "k", 1, "v", 1, -1, 1, 1), WCACHE_EINVAL);
    ck_assert_uint_eq(wcache_batch_count(b), 0);

    add_meta(b, "a", "1", 1, 2, 2);
    add_meta(b, "b", "1", 3, 9, 2);
    ck_assert_wc(wcache_ingest_load(C, b, 8), WCACHE_EINVAL); /* mod_rev 9 > 8 */
    ck_assert_wc(wcache_ingest_load(C, b, 0), WCACHE_EINVAL);
    ck_assert_wc(wcache_ingest_load(C, b, -3), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_cache_revision(C), 0);
    add_meta(b, "a", "2", 1, 3, 3);
    ck_assert_wc(wcache_ingest_load(C, b, 10), WCACHE_EEXIST);
    ck_assert_int_eq(wcache_cache_revision(C), 0);
    wcache_batch_clear(b);
    add_meta(b, "a", "1", 1, 2, 2);
    ck_assert_ok(wcache_batch_put(b, "p", 1, "1", 1));
    ck_assert_wc(wcache_ingest_load(C, b, 10), WCACHE_EINVAL);
    wcache_batch_clear(b);
    add_meta(b, "a", "1", 1, 2, 2);
    ck_assert_ok(wcache_batch_delete(b, "p", 1));
    ck_assert_wc(wcache_ingest_load(C, b, 10), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_cache_revision(C), 0);
    EXPECT_ABSENT(C, 0, "a");

    /* A good load, then a second load: the cache is no longer empty. */
    wcache_batch_clear(b);
    add_meta(b, "a", "1", 1, 2, 2);
    ck_assert_ok(wcache_ingest_load(C, b, 10));
    ck_assert_wc(wcache_ingest_load(C, b, 11), WCACHE_ESTATE);
    ck_assert_int_eq(wcache_cache_revision(C), 10);
    wcache_batch_free(b);

    /* Neither after a put nor after a bare progress is the cache empty. */
    wcache_cache *c = open_with(0, 0, 0, 0);
    ck_assert_ok(wcache_batch_create(c, &b));
    add_meta(b, "a", "1", 1, 2, 2);
    ck_assert_ok(wcache_ingest_progress(c, 3));
    ck_assert_wc(wcache_ingest_load(c, b, 10), WCACHE_ESTATE);
    wcache_batch_free(b);
    wcache_cache_close(c);

    c = open_with(0, 0, 0, 0);
    ck_assert_ok(wcache_batch_create(c, &b));
    add_meta(b, "a", "1", 1, 2, 2);
    ck_assert_ok(put_s(c, "z", "1", 1));
    ck_assert_wc(wcache_ingest_load(c, b, 10), WCACHE_ESTATE);
    ck_assert_int_eq(wcache_cache_revision(c), 1);
    wcache_batch_free(b);
    wcache_cache_close(c);
}
END_TEST

START_TEST(test_load_empty_batch)
{
    /* A source with no objects at all is a legitimate state at rev. */
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    int rc = wcache_ingest_load(C, b, 7);
    /* The header only refuses empty batches in wcache_ingest_batch; an empty
     * load is either accepted (state at 7) or refused without change. */
    if (rc == WCACHE_OK) {
        ck_assert_int_eq(wcache_cache_revision(C), 7);
        ck_assert_int_eq(wcache_cache_compacted_revision(C), 7);
    } else {
        ck_assert_wc(rc, WCACHE_EINVAL);
        ck_assert_int_eq(wcache_cache_revision(C), 0);
    }
    wcache_batch_free(b);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Views                                                                     */
/* ------------------------------------------------------------------------ */

START_TEST(test_view_begin)
{
    for (int r = 1; r <= 6; r++)
        ck_assert_ok(put_s(C, "k", r % 2 ? "odd" : "even", r));
    ck_assert_ok(wcache_cache_compact(C, 3));
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_int_eq(wcache_view_revision(w), 0);
    wcache_kv kv;
    ck_assert_wc(wcache_view_get(w, "k", 1, &kv), WCACHE_ESTATE);
    wcache_list_opts o = {.size = sizeof o};
    wcache_list_result r = {.size = sizeof r};
    ck_assert_wc(wcache_view_list(w, &o, &kv, 1, &r), WCACHE_ESTATE);
    uint64_t n;
    ck_assert_wc(wcache_view_count(w, &o, &n), WCACHE_ESTATE);

    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    ck_assert_int_eq(wcache_view_revision(w), 6);
    ck_assert_ok(wcache_view_begin(w, 4)); /* re-pin */
    ck_assert_int_eq(wcache_view_revision(w), 4);
    ck_assert_ok(wcache_view_get(w, "k", 1, &kv));
    ck_assert_int_eq(kv.mod_revision, 4);
    ck_assert_ok(wcache_view_begin(w, 3)); /* the compacted revision itself is readable */
    ck_assert_ok(wcache_view_get(w, "k", 1, &kv));
    ck_assert_int_eq(kv.mod_revision, 3);
    ck_assert_int_eq(kv.version, 3);

    /* Refusals leave the view unpinned, and are immediate. */
    ck_assert_wc(wcache_view_begin(w, 2), WCACHE_ECOMPACTED);
    ck_assert_int_eq(wcache_view_revision(w), 0);
    ck_assert_wc(wcache_view_get(w, "k", 1, &kv), WCACHE_ESTATE);
    ck_assert_wc(wcache_view_begin(w, 7), WCACHE_EFUTURE);
    ck_assert_wc(wcache_view_begin(w, INT64_MAX), WCACHE_EFUTURE);
    ck_assert_wc(wcache_view_begin(w, -1), WCACHE_EINVAL);
    ck_assert_wc(wcache_view_begin(NULL, 1), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_view_revision(w), 0);

    ck_assert_ok(wcache_view_begin(w, 6));
    wcache_view_end(w);
    wcache_view_end(w); /* no-op */
    ck_assert_int_eq(wcache_view_revision(w), 0);
    ck_assert_ok(wcache_view_begin(w, 5));
    ck_assert_wc(wcache_view_get(w, NULL, 1, &kv), WCACHE_EINVAL);
    ck_assert_wc(wcache_view_get(w, "k", 1, NULL), WCACHE_EINVAL);
    wcache_view_free(w); /* frees a pinned view */
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_wc(wcache_view_create(C, NULL), WCACHE_EINVAL);
    wcache_view_free(w);
}
END_TEST

START_TEST(test_view_survives_compaction)
{
    ck_assert_ok(put_s(C, "a", "1", 1));
    ck_assert_ok(put_s(C, "b", "1", 2));
    ck_assert_ok(put_s(C, "a", "2", 3));
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, 2));
    wcache_kv before;
    ck_assert_ok(wcache_view_get(w, "a", 1, &before));
    ck_assert_ok(del_s(C, "a", 4));
    ck_assert_ok(del_s(C, "b", 5));
    ck_assert_ok(put_s(C, "c", "1", 6));
    ck_assert_ok(wcache_cache_compact(C, 6));
    ck_assert_int_eq(wcache_cache_compacted_revision(C), 6);

    /* The borrowed pointer from before the compaction is still valid. */
    ck_assert_uint_eq(before.value_len, 1);
    ck_assert_mem_eq(before.value, "1", 1);
    ck_assert_int_eq(wcache_view_revision(w), 2);
    wcache_kv kv;
    ck_assert_ok(wcache_view_get(w, "a", 1, &kv));
    ck_assert_mem_eq(kv.value, "1", 1);
    ck_assert_int_eq(kv.mod_revision, 1);
    ck_assert_ok(wcache_view_get(w, "b", 1, &kv));
    ck_assert_int_eq(kv.mod_revision, 2);
    ck_assert_wc(wcache_view_get(w, "c", 1, &kv), WCACHE_ENOTFOUND);
    wcache_kv items[4];
    wcache_list_opts o = {.size = sizeof o};
    wcache_list_result r = {.size = sizeof r};
    ck_assert_ok(wcache_view_list(w, &o, items, 4, &r));
    ck_assert_uint_eq(r.count, 2);
    ck_assert_int_eq(r.revision, 2);
    /* More writes and compactions while still pinned. */
    for (int i = 7; i < 40; i++) {
        ck_assert_ok(put_s(C, "a", "x", i));
        ck_assert_ok(wcache_cache_compact(C, i));
    }
    ck_assert_ok(wcache_view_get(w, "a", 1, &kv));
    ck_assert_int_eq(kv.mod_revision, 1);
    ck_assert_mem_eq(before.value, "1", 1);

    /* Once ended, the revision cannot be pinned again. */
    wcache_view_end(w);
    ck_assert_wc(wcache_view_begin(w, 2), WCACHE_ECOMPACTED);
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    ck_assert_ok(wcache_view_get(w, "a", 1, &kv));
    ck_assert_int_eq(kv.mod_revision, 39);
    ck_assert_int_eq(kv.create_revision, 7);
    ck_assert_int_eq(kv.version, 33);
    wcache_view_free(w);
}
END_TEST

START_TEST(test_view_tombstone_compaction)
{
    /* A key deleted and compacted away while a view still reads it, then
     * re-created: the view keeps the old incarnation, new views the new. */
    ck_assert_ok(put_s(C, "k", "old1", 1));
    ck_assert_ok(put_s(C, "k", "old2", 2));
    ck_assert_ok(put_s(C, "other", "x", 3));
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, 2));
    ck_assert_ok(del_s(C, "k", 4));
    ck_assert_ok(put_s(C, "other", "y", 5));
    ck_assert_ok(wcache_cache_compact(C, 5)); /* past the tombstone */
    ck_assert_ok(put_s(C, "k", "new1", 6));
    ck_assert_ok(wcache_cache_compact(C, 6));
    wcache_kv kv;
    ck_assert_ok(wcache_view_get(w, "k", 1, &kv));
    ck_assert_int_eq(kv.mod_revision, 2);
    ck_assert_int_eq(kv.version, 2);
    ck_assert_mem_eq(kv.value, "old2", 4);
    EXPECT_S(C, 6, "k", "new1", 6, 6, 1);
    wcache_view_end(w);
    /* Now nothing pins revision 2: a compaction may drop the old chain. */
    ck_assert_ok(put_s(C, "k", "new2", 7));
    ck_assert_ok(wcache_cache_compact(C, 7));
    EXPECT_S(C, 7, "k", "new2", 6, 7, 2);

    /* The same with the view ended before the re-creation: the key may be
     * removed from the index entirely and come back as a new one. */
    ck_assert_ok(del_s(C, "k", 8));
    ck_assert_ok(put_s(C, "other", "z", 9));
    ck_assert_ok(wcache_cache_compact(C, 9));
    EXPECT_ABSENT(C, 9, "k");
    ck_assert_wc(del_s(C, "k", 10), WCACHE_ENOTFOUND);
    ck_assert_ok(put_s(C, "k", "again", 10));
    EXPECT_S(C, 10, "k", "again", 10, 10, 1);
    wcache_list_opts o = {.size = sizeof o};
    uint64_t n;
    ck_assert_ok(wcache_view_begin(w, 10));
    ck_assert_ok(wcache_view_count(w, &o, &n));
    ck_assert_uint_eq(n, 2);
    wcache_view_free(w);
}
END_TEST

START_TEST(test_view_pinned_across_load)
{
    /* A view pinned on the empty cache, then a load: the view keeps reading
     * the empty state; new views read the loaded one. */
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    ck_assert_ok(wcache_batch_put_meta(b, "a", 1, "1", 1, 3, 4, 2));
    ck_assert_ok(wcache_ingest_load(C, b, 10));
    wcache_batch_free(b);
    wcache_kv kv;
    ck_assert_wc(wcache_view_get(w, "a", 1, &kv), WCACHE_ENOTFOUND);
    wcache_kv items[2];
    wcache_list_opts o = {.size = sizeof o};
    wcache_list_result r = {.size = sizeof r};
    ck_assert_ok(wcache_view_list(w, &o, items, 2, &r));
    ck_assert_uint_eq(r.count, 0);
    ck_assert_int_eq(r.revision, 0);
    EXPECT_S(C, 10, "a", "1", 3, 4, 2);
    wcache_view_free(w);
}
END_TEST

START_TEST(test_view_slots)
{
    wcache_cache *c = open_with(WCACHE_P_READER_SLOTS, 2, 0, 0);
    ck_assert_ok(put_s(c, "a", "1", 1));
    ck_assert_ok(put_s(c, "a", "2", 2));
    wcache_view *v[3];
    for (int i = 0; i < 3; i++)
        ck_assert_ok(wcache_view_create(c, &v[i]));
    ck_assert_ok(wcache_view_begin(v[0], 1));
    ck_assert_ok(wcache_view_begin(v[1], 2));
    ck_assert_wc(wcache_view_begin(v[2], 2), WCACHE_EBUSY);
    ck_assert_int_eq(wcache_view_revision(v[2]), 0);
    /* Re-pinning a pinned view needs no second slot. */
    ck_assert_ok(wcache_view_begin(v[0], 2));
    ck_assert_ok(wcache_view_begin(v[0], 1));
    ck_assert_int_eq(wcache_view_revision(v[0]), 1);
    wcache_stat st = {.size = sizeof st};
    ck_assert_ok(wcache_cache_stat(c, &st));
    ck_assert_uint_eq(st.views_open, 2);
    wcache_view_end(v[1]);
    ck_assert_ok(wcache_view_begin(v[2], 2));
    ck_assert_wc(wcache_view_begin(v[1], 1), WCACHE_EBUSY);
    wcache_view_free(v[0]); /* freeing a pinned view releases its slot */
    ck_assert_ok(wcache_view_begin(v[1], 1));
    wcache_kv kv;
    ck_assert_ok(wcache_view_get(v[1], "a", 1, &kv));
    ck_assert_mem_eq(kv.value, "1", 1);
    wcache_view_free(v[1]);
    wcache_view_free(v[2]);
    ck_assert_ok(wcache_cache_stat(c, &st));
    ck_assert_uint_eq(st.views_open, 0);
    wcache_cache_close(c);

    /* One slot: the same view re-pins forever without EBUSY. */
    c = open_with(WCACHE_P_READER_SLOTS, 1, 0, 0);
    ck_assert_ok(put_s(c, "a", "1", 1));
    ck_assert_ok(wcache_view_create(c, &v[0]));
    for (int i = 0; i < 100; i++)
        ck_assert_ok(wcache_view_begin(v[0], i % 2));
    wcache_view_free(v[0]);
    wcache_cache_close(c);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* GET and LIST                                                              */
/* ------------------------------------------------------------------------ */

/* Sorted byte-wise, shortest first on a common prefix. */
static const struct {
    const char *k;
    size_t n;
} binkeys[] = {
    {"\x00", 1},     {"\x00\x00", 2},     {"\x00\x01", 2}, {"\x00\xff", 2}, {"a", 1},
    {"a\x00", 2},    {"a\x00z", 3},       {"a\x01", 2},    {"ab", 2},       {"a\xff", 2},
    {"b", 1},        {"\x7f", 1},         {"\x80", 1},     {"\xff", 1},     {"\xff\x00", 2},
    {"\xff\xff", 2}, {"\xff\xff\xff", 3},
};
#define NBIN (sizeof binkeys / sizeof binkeys[0])

static void put_binkeys(wcache_cache *c)
{
    /* Insert in a scrambled order so that sorting is the library's work. */
    for (size_t i = 0; i < NBIN; i++) {
        size_t j = (i * 5) % NBIN;
        char val[8];
        int vl = snprintf(val, sizeof val, "%zu", j);
        /* Key j's value is its index; key 3's value is empty. */
        ck_assert_ok(wcache_ingest_put(c, binkeys[j].k, binkeys[j].n, val,
                                       j == 3 ? 0 : (size_t)vl, (int64_t)i + 1));
    }
}

static void expect_list(wcache_view *w, const wcache_list_opts *o, size_t first, size_t n)
{
    wcache_kv items[NBIN + 1];
    wcache_list_result r = {.size = sizeof r};
    ck_assert_ok(wcache_view_list(w, o, items, NBIN + 1, &r));
    ck_assert_msg(r.count == n, "list returned %zu items, want %zu (from #%zu)", r.count, n,
                  first);
    ck_assert_int_eq(r.more, 0);
    ck_assert_ptr_null(r.token);
    for (size_t i = 0; i < n; i++) {
        char b1[64], b2[64];
        ck_assert_msg(items[i].key_len == binkeys[first + i].n &&
                          memcmp(items[i].key, binkeys[first + i].k, items[i].key_len) == 0,
                      "item %zu is %s, want %s", i,
                      tu_hex(items[i].key, items[i].key_len, b1, sizeof b1),
                      tu_hex(binkeys[first + i].k, binkeys[first + i].n, b2, sizeof b2));
    }
    uint64_t cnt = 0;
    ck_assert_ok(wcache_view_count(w, o, &cnt));
    ck_assert_uint_eq(cnt, n);
}

/* wcache_view_get_many answers as wcache_view_get does, key by key. */
START_TEST(test_get_many)
{
    enum { NKEYS = 300 }; /* more than its look-ahead, and keys it never wrote */
    char kb[NKEYS][16];
    const void *keys[NKEYS];
    size_t lens[NKEYS];
    for (int i = 0; i < NKEYS; i++) {
        lens[i] = (size_t)snprintf(kb[i], sizeof kb[i], "k%04d", i);
        keys[i] = kb[i];
        if (i % 3 != 2)
            ck_assert_ok(wcache_ingest_put(C, kb[i], lens[i], kb[i], lens[i], i + 1));
    }
    for (int i = 1; i < NKEYS; i += 3)
        ck_assert_ok(wcache_ingest_delete(C, kb[i], lens[i], i + 1000));
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    static wcache_kv out[NKEYS];
    wcache_code codes[NKEYS];
    ck_assert_wc(wcache_view_get_many(w, keys, lens, NKEYS, out, codes), WCACHE_ESTATE);
    int64_t revs[2] = {500, WCACHE_REV_LATEST};
    for (int r = 0; r < 2; r++) {
        ck_assert_ok(wcache_view_begin(w, revs[r]));
        memset(out, 0, sizeof out);
        ck_assert_ok(wcache_view_get_many(w, keys, lens, NKEYS, out, codes));
        for (int i = 0; i < NKEYS; i++) {
            wcache_kv one;
            wcache_code want = wcache_view_get(w, keys[i], lens[i], &one);
            ck_assert_int_eq(want, (i % 3 == 0 || (i % 3 == 1 && r == 0)) ? WCACHE_OK
                                                                          : WCACHE_ENOTFOUND);
            ck_assert_msg(codes[i] == want, "key %d: %s, want %s", i, wcache_strerror(codes[i]),
                          wcache_strerror(want));
            if (want == WCACHE_OK)
                ck_assert_mem_eq(&out[i], &one, sizeof one);
        }
    }
    ck_assert_ok(wcache_view_get_many(w, NULL, NULL, 0, NULL, NULL));
    ck_assert_wc(wcache_view_get_many(NULL, keys, lens, 1, out, codes), WCACHE_EINVAL);
    ck_assert_wc(wcache_view_get_many(w, NULL, lens, 1, out, codes), WCACHE_EINVAL);
    ck_assert_wc(wcache_view_get_many(w, keys, lens, 1, out, NULL), WCACHE_EINVAL);
    keys[5] = NULL;
    ck_assert_wc(wcache_view_get_many(w, keys, lens, 6, out, codes), WCACHE_EINVAL);
    lens[5] = 0; /* NULL with length 0: the empty key, absent */
    ck_assert_ok(wcache_view_get_many(w, keys, lens, 6, out, codes));
    ck_assert_int_eq(codes[5], WCACHE_ENOTFOUND);
    wcache_view_free(w);
}
END_TEST

START_TEST(test_binary_keys)
{
    ck_assert_uint_eq(NBIN, 17); /* the permutation in put_binkeys needs gcd(5, NBIN) = 1 */
    put_binkeys(C);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    for (size_t j = 0; j < NBIN; j++) {
        wcache_kv kv;
        ck_assert_ok(wcache_view_get(w, binkeys[j].k, binkeys[j].n, &kv));
        ck_assert_uint_eq(kv.key_len, binkeys[j].n);
        ck_assert_mem_eq(kv.key, binkeys[j].k, binkeys[j].n);
        char val[8];
        int vl = snprintf(val, sizeof val, "%zu", j);
        if (j == 3) {
            ck_assert_uint_eq(kv.value_len, 0);
        } else {
            ck_assert_uint_eq(kv.value_len, (size_t)vl);
            ck_assert_mem_eq(kv.value, val, (size_t)vl);
        }
        ck_assert_int_eq(kv.version, 1);
    }
    /* Keys that differ from stored ones only after a NUL are distinct. */
    wcache_kv kv;
    ck_assert_wc(wcache_view_get(w, "\x00\x02", 2, &kv), WCACHE_ENOTFOUND);
    ck_assert_wc(wcache_view_get(w, "a\x00y", 3, &kv), WCACHE_ENOTFOUND);
    ck_assert_wc(wcache_view_get(w, "\xff\xff\xff\xff", 4, &kv), WCACHE_ENOTFOUND);

    wcache_list_opts o = {.size = sizeof o};
    expect_list(w, &o, 0, NBIN);
    /* Prefixes, including ones made of NUL and 0xff bytes. */
    o.prefix = "\x00";
    o.prefix_len = 1;
    expect_list(w, &o, 0, 4);
    o.prefix = "a\x00";
    o.prefix_len = 2;
    expect_list(w, &o, 5, 2);
    o.prefix = "a";
    o.prefix_len = 1;
    expect_list(w, &o, 4, 6);
    o.prefix = "\xff";
    o.prefix_len = 1;
    expect_list(w, &o, 13, 4);
    o.prefix = "\xff\xff";
    o.prefix_len = 2;
    expect_list(w, &o, 15, 2);
    o.prefix = "zz";
    o.prefix_len = 2;
    expect_list(w, &o, 0, 0);
    /* The prefix wins over a range. */
    o.prefix = "a";
    o.prefix_len = 1;
    o.start = "b";
    o.start_len = 1;
    o.end = "c";
    o.end_len = 1;
    expect_list(w, &o, 4, 6);

    /* [start, end): start inclusive, end exclusive. */
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.start = "a\x00";
    o.start_len = 2;
    o.end = "\x80";
    o.end_len = 1;
    expect_list(w, &o, 5, 7);
    o.start = "a\x00\x00"; /* between "a\0" and "a\0z" */
    o.start_len = 3;
    expect_list(w, &o, 6, 6);
    o.end = NULL;
    o.end_len = 0;
    expect_list(w, &o, 6, NBIN - 6);
    o.start = NULL;
    o.start_len = 0;
    o.end = "\x00\x01";
    o.end_len = 2;
    expect_list(w, &o, 0, 2);
    o.end = "\x00"; /* nothing sorts below the one-byte NUL key */
    o.end_len = 1;
    expect_list(w, &o, 0, 0);
    o.start = "b";
    o.start_len = 1;
    o.end = "a";
    o.end_len = 1;
    expect_list(w, &o, 0, 0); /* inverted: empty, not an error */
    o.start = "b";
    o.end = "b";
    expect_list(w, &o, 0, 0);
    wcache_view_free(w);
}
END_TEST

START_TEST(test_list_result_fields)
{
    put_binkeys(C);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    wcache_kv items[NBIN];
    wcache_list_opts o = {.size = sizeof o};
    wcache_list_result r = {.size = sizeof r};
    ck_assert_ok(wcache_view_list(w, &o, items, 5, &r));
    ck_assert_uint_eq(r.count, 5);
    ck_assert_int_eq(r.more, 1);
    ck_assert_int_eq(r.remaining, -1); /* not asked for */
    ck_assert_int_eq(r.revision, (int64_t)NBIN);
    ck_assert_ptr_nonnull(r.token);
    ck_assert_uint_gt(r.token_len, 0);
    ck_assert_uint_eq(strlen(r.token), r.token_len);
    int64_t trev = 0;
    ck_assert_ok(wcache_token_revision(r.token, r.token_len, &trev));
    ck_assert_int_eq(trev, (int64_t)NBIN);

    o.count_remaining = 1;
    ck_assert_ok(wcache_view_list(w, &o, items, 5, &r));
    ck_assert_int_eq(r.remaining, (int64_t)NBIN - 5);
    /* The last page says remaining 0 even when not asked to count. */
    o.count_remaining = 0;
    ck_assert_ok(wcache_view_list(w, &o, items, NBIN + 0, &r));
    ck_assert_int_eq(r.remaining, 0);
    o.count_remaining = 1;
    /* Exactly filling the page: nothing follows. */
    ck_assert_ok(wcache_view_list(w, &o, items, NBIN, &r));
    ck_assert_uint_eq(r.count, NBIN);
    ck_assert_int_eq(r.more, 0);
    ck_assert_int_eq(r.remaining, 0);
    ck_assert_ptr_null(r.token);
    /* One short. */
    ck_assert_ok(wcache_view_list(w, &o, items, NBIN - 1, &r));
    ck_assert_int_eq(r.more, 1);
    ck_assert_int_eq(r.remaining, 1);
    /* Past revisions report their own revision. */
    ck_assert_ok(wcache_view_begin(w, 4));
    ck_assert_ok(wcache_view_list(w, &o, items, NBIN, &r));
    ck_assert_uint_eq(r.count, 4);
    ck_assert_int_eq(r.revision, 4);
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    /* "opts NULL lists every key"; "cap ... >= 1". */
    ck_assert_ok(wcache_view_list(w, NULL, items, 5, &r));
    ck_assert_uint_eq(r.count, 5);
    ck_assert_int_eq(r.more, 1);
    ck_assert_ok(wcache_view_list(w, NULL, items, NBIN, &r));
    ck_assert_uint_eq(r.count, NBIN);
    ck_assert_int_eq(r.more, 0);
    ck_assert_int_eq(r.remaining, 0); /* "0 on the last page" */
    ck_assert_wc(wcache_view_list(w, &o, items, 0, &r), WCACHE_EINVAL);
    ck_assert_wc(wcache_view_list(w, &o, items, 5, NULL), WCACHE_EINVAL);
    ck_assert_wc(wcache_view_list(w, &o, NULL, 5, &r), WCACHE_EINVAL);
    wcache_list_opts bad = o;
    bad.size = 0;
    ck_assert_wc(wcache_view_list(w, &bad, items, 5, &r), WCACHE_EINVAL);
    wcache_list_result badr = {.size = 0};
    ck_assert_wc(wcache_view_list(w, &o, items, 5, &badr), WCACHE_EINVAL);
    ck_assert_wc(wcache_view_count(w, &o, NULL), WCACHE_EINVAL);
    wcache_view_free(w);
}
END_TEST

/* Page through a range with page size cap, collecting keys into out. */
typedef struct page_run {
    char *keys[256];
    int64_t mods[256];
    size_t n;
    int pages;
} page_run;

static void run_free(page_run *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->keys[i]);
    p->n = 0;
}

static void page_all(wcache_view *w, const wcache_list_opts *base, size_t cap, page_run *out)
{
    wcache_list_opts o = *base;
    char *tok = NULL;
    wcache_kv items[64];
    ck_assert_uint_le(cap, 64);
    out->n = 0;
    out->pages = 0;
    for (;;) {
        wcache_list_result r = {.size = sizeof r};
        o.token = tok;
        o.token_len = tok ? strlen(tok) : 0;
        o.count_remaining = 1;
        ck_assert_ok(wcache_view_list(w, &o, items, cap, &r));
        out->pages++;
        ck_assert_uint_le(r.count, cap);
        for (size_t i = 0; i < r.count; i++) {
            ck_assert_uint_lt(out->n, 256);
            char *k = malloc(items[i].key_len + 1);
            memcpy(k, items[i].key, items[i].key_len);
            k[items[i].key_len] = 0;
            out->mods[out->n] = items[i].mod_revision;
            out->keys[out->n++] = k;
        }
        free(tok);
        tok = NULL;
        if (!r.more) {
            ck_assert_ptr_null(r.token);
            ck_assert_int_eq(r.remaining, 0);
            break;
        }
        /* A page with more to come is a full page. */
        ck_assert_uint_eq(r.count, cap);
        ck_assert_int_gt(r.remaining, 0);
        ck_assert_ptr_nonnull(r.token);
        tok = strdup(r.token); /* borrowed only until the next list call */
        ck_assert_int_lt(out->pages, 1000);
    }
}

static void fill_keys(wcache_cache *c, int n, int64_t *rev)
{
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof k, "key/%03d", (i * 37) % n);
        ck_assert_ok(put_s(c, k, k, ++*rev));
    }
}

START_TEST(test_paging_equals_one_list)
{
    int64_t rev = 0;
    fill_keys(C, 50, &rev);
    ck_assert_ok(put_s(C, "aaa", "outside", ++rev));
    ck_assert_ok(put_s(C, "zzz", "outside", ++rev));
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    wcache_list_opts ranges[3];
    memset(ranges, 0, sizeof ranges);
    for (int i = 0; i < 3; i++)
        ranges[i].size = sizeof ranges[i];
    ranges[1].prefix = "key/";
    ranges[1].prefix_len = 4;
    ranges[2].start = "key/010";
    ranges[2].start_len = 7;
    ranges[2].end = "key/0405";
    ranges[2].end_len = 8;
    const size_t want[3] = {52, 50, 31};
    for (int ri = 0; ri < 3; ri++) {
        page_run big;
        page_all(w, &ranges[ri], 64, &big);
        ck_assert_uint_eq(big.n, want[ri]);
        ck_assert_int_eq(big.pages, 1);
        for (size_t cap = 1; cap <= 11; cap++) {
            page_run p;
            page_all(w, &ranges[ri], cap, &p);
            ck_assert_uint_eq(p.n, big.n);
            /* "more" means more keys follow: a last page that is exactly
             * full says so, and no empty page follows. */
            ck_assert_int_eq(p.pages, (int)((big.n + cap - 1) / cap));
            for (size_t i = 0; i < p.n; i++)
                ck_assert_str_eq(p.keys[i], big.keys[i]);
            run_free(&p);
        }
        run_free(&big);
    }
    wcache_view_free(w);
}
END_TEST

/* Copy the token of the first page of [prefix] at the view's revision. */
static char *first_page_token(wcache_view *w, const wcache_list_opts *o, size_t cap)
{
    wcache_kv items[64];
    wcache_list_result r = {.size = sizeof r};
    ck_assert_ok(wcache_view_list(w, o, items, cap, &r));
    ck_assert_int_eq(r.more, 1);
    ck_assert_ptr_nonnull(r.token);
    return strdup(r.token);
}

START_TEST(test_token_passed_back_directly)
{
    /* The natural loop hands res.token straight back as opts.token, while
     * the next call is what ends its borrow: the library must read it before
     * it replaces it.  (ASan / valgrind catch a use after free here.) */
    int64_t rev = 0;
    fill_keys(C, 57, &rev);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    for (size_t cap = 1; cap <= 9; cap += 4) {
        wcache_list_opts o = {.size = sizeof o, .prefix = "key/", .prefix_len = 4};
        wcache_list_result r = {.size = sizeof r};
        wcache_kv items[16];
        size_t seen = 0;
        int pages = 0;
        do {
            ck_assert_ok(wcache_view_list(w, &o, items, cap, &r));
            for (size_t i = 0; i < r.count; i++) {
                char k[16];
                snprintf(k, sizeof k, "key/%03zu", seen + i);
                ck_assert_mem_eq(items[i].key, k, 7);
            }
            seen += r.count;
            o.token = r.token; /* no copy */
            o.token_len = r.token_len;
            ck_assert_int_lt(++pages, 100);
        } while (r.more);
        ck_assert_uint_eq(seen, 57);
        /* The same with count: the token is an input there too. */
        ck_assert_ok(wcache_view_list(
            w, &(wcache_list_opts){.size = sizeof o, .prefix = "key/", .prefix_len = 4}, items,
            10, &r));
        o.token = r.token;
        o.token_len = r.token_len;
        uint64_t n = 0;
        ck_assert_ok(wcache_view_count(w, &o, &n));
        ck_assert_uint_eq(n, 47);
    }
    wcache_view_free(w);
}
END_TEST

START_TEST(test_list_items_borrowed_until_end)
{
    /* items[] stay valid until wcache_view_end(), across later list calls on
     * the same view and across writes and compactions meanwhile. */
    int64_t rev = 0;
    fill_keys(C, 30, &rev);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    int64_t pinned = rev;
    wcache_list_opts o = {.size = sizeof o};
    wcache_list_result r = {.size = sizeof r};
    wcache_kv first[10], later[10];
    ck_assert_ok(wcache_view_list(w, &o, first, 10, &r));
    char *tok = strdup(r.token);
    for (int i = 0; i < 30; i++) { /* overwrite and delete everything */
        char k[16];
        snprintf(k, sizeof k, "key/%03d", i);
        ck_assert_ok(i % 2 ? put_s(C, k, "overwritten", ++rev) : del_s(C, k, ++rev));
    }
    ck_assert_ok(wcache_cache_compact(C, rev));
    o.token = tok;
    o.token_len = strlen(tok);
    ck_assert_ok(wcache_view_list(w, &o, later, 10, &r));
    o.token = NULL;
    o.token_len = 0;
    ck_assert_ok(wcache_view_list(w, &o, later, 10, &r)); /* page one again */
    for (int i = 0; i < 10; i++) {
        char k[16];
        snprintf(k, sizeof k, "key/%03d", i);
        ck_assert_uint_eq(first[i].key_len, 7);
        ck_assert_mem_eq(first[i].key, k, 7);
        ck_assert_uint_eq(first[i].value_len, 7);
        ck_assert_mem_eq(first[i].value, k, 7);
        ck_assert_int_le(first[i].mod_revision, pinned);
    }
    free(tok);
    wcache_view_free(w);
}
END_TEST

START_TEST(test_token_after_writes)
{
    int64_t rev = 0;
    fill_keys(C, 40, &rev);
    int64_t r0 = rev;
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    wcache_list_opts o = {.size = sizeof o, .prefix = "key/", .prefix_len = 4};
    page_run all;
    page_all(w, &o, 64, &all);
    char *tok = first_page_token(w, &o, 10);
    wcache_view_end(w);

    /* Later writes inside and around the range, and a progress. */
    ck_assert_ok(del_s(C, "key/015", ++rev));
    ck_assert_ok(put_s(C, "key/020", "changed", ++rev));
    ck_assert_ok(put_s(C, "key/0155", "new", ++rev));
    ck_assert_ok(put_s(C, "key/999", "new", ++rev));
    ck_assert_ok(wcache_ingest_progress(C, rev + 5));

    int64_t trev = 0;
    ck_assert_ok(wcache_token_revision(tok, strlen(tok), &trev));
    ck_assert_int_eq(trev, r0);
    ck_assert_ok(wcache_view_begin(w, trev));
    wcache_kv items[64];
    wcache_list_result r = {.size = sizeof r};
    o.token = tok;
    o.token_len = strlen(tok);
    ck_assert_ok(wcache_view_list(w, &o, items, 64, &r));
    ck_assert_uint_eq(r.count, 30);
    ck_assert_int_eq(r.revision, r0);
    ck_assert_int_eq(r.more, 0);
    for (size_t i = 0; i < r.count; i++) {
        ck_assert_uint_eq(items[i].key_len, strlen(all.keys[10 + i]));
        ck_assert_mem_eq(items[i].key, all.keys[10 + i], items[i].key_len);
        ck_assert_int_eq(items[i].mod_revision, all.mods[10 + i]);
    }
    /* The same token with the latest view: another revision. */
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    ck_assert_wc(wcache_view_list(w, &o, items, 64, &r), WCACHE_EBADTOKEN);
    uint64_t n;
    ck_assert_wc(wcache_view_count(w, &o, &n), WCACHE_EBADTOKEN);
    /* ...and with a view one revision off. */
    ck_assert_ok(wcache_view_begin(w, r0 + 1));
    ck_assert_wc(wcache_view_list(w, &o, items, 64, &r), WCACHE_EBADTOKEN);
    ck_assert_ok(wcache_view_begin(w, r0 - 1));
    ck_assert_wc(wcache_view_list(w, &o, items, 64, &r), WCACHE_EBADTOKEN);

    /* Once the token's revision is compacted, it cannot be resumed. */
    wcache_view_end(w);
    ck_assert_ok(wcache_cache_compact(C, r0 + 1));
    ck_assert_wc(wcache_view_begin(w, trev), WCACHE_ECOMPACTED);
    free(tok);
    run_free(&all);
    wcache_view_free(w);
}
END_TEST

START_TEST(test_token_other_range)
{
    int64_t rev = 0;
    fill_keys(C, 30, &rev);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    wcache_list_opts o = {.size = sizeof o, .prefix = "key/", .prefix_len = 4};
    char *tok = first_page_token(w, &o, 5);
    wcache_kv items[64];
    wcache_list_result r = {.size = sizeof r};
    wcache_list_opts x[5];
    for (int i = 0; i < 5; i++) {
        x[i] = o;
        x[i].token = tok;
        x[i].token_len = strlen(tok);
    }
    x[0].prefix = "key/0"; /* a narrower prefix still containing the token's key */
    x[0].prefix_len = 5;
    x[1].prefix = "key";
    x[1].prefix_len = 3;
    x[2].prefix = NULL; /* the whole key space */
    x[2].prefix_len = 0;
    x[3].prefix = NULL;
    x[3].prefix_len = 0;
    x[3].start = "key/";
    x[3].start_len = 4;
    x[3].end = "key0";
    x[3].end_len = 4; /* the same keys as the prefix, spelled as a range */
    x[4].prefix = "kez/";
    for (int i = 0; i < 5; i++) {
        int rc = wcache_view_list(w, &x[i], items, 64, &r);
        /* Range 3 selects the same keys; a library may accept it as the same
         * range, but no other range may resume. */
        if (i == 3 && rc == WCACHE_OK)
            continue;
        ck_assert_msg(rc == WCACHE_EBADTOKEN, "range %d: %s", i, wcache_strerror(rc));
    }
    /* The unchanged range still resumes. */
    o.token = tok;
    o.token_len = strlen(tok);
    ck_assert_ok(wcache_view_list(w, &o, items, 64, &r));
    ck_assert_uint_eq(r.count, 25);
    free(tok);

    /* A range token is bound to its range too. */
    wcache_list_opts ro = {
        .size = sizeof ro, .start = "key/005", .start_len = 7, .end = "key/025", .end_len = 7};
    tok = first_page_token(w, &ro, 3);
    ro.token = tok;
    ro.token_len = strlen(tok);
    ck_assert_ok(wcache_view_list(w, &ro, items, 64, &r));
    ck_assert_uint_eq(r.count, 17);
    ro.end = "key/026";
    ck_assert_wc(wcache_view_list(w, &ro, items, 64, &r), WCACHE_EBADTOKEN);
    ro.end = "key/025";
    ro.start = "key/004";
    ck_assert_wc(wcache_view_list(w, &ro, items, 64, &r), WCACHE_EBADTOKEN);
    free(tok);
    wcache_view_free(w);
}
END_TEST

/* The page a token resumes to, as a dump; NULL when refused. */
static char *resume_dump(wcache_view *w, const wcache_list_opts *base, const char *tok,
                         size_t len, int *rc)
{
    wcache_list_opts o = *base;
    o.token = tok;
    o.token_len = len;
    wcache_kv items[64];
    wcache_list_result r = {.size = sizeof r};
    *rc = wcache_view_list(w, &o, items, 64, &r);
    if (*rc != WCACHE_OK)
        return NULL;
    sbuf b = {0};
    sb_add(&b, "more %d\n", r.more);
    for (size_t i = 0; i < r.count; i++)
        sb_kv(&b, &items[i]);
    return b.p;
}

START_TEST(test_token_garbage)
{
    int64_t rev = 0;
    fill_keys(C, 30, &rev);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    wcache_list_opts o = {.size = sizeof o, .prefix = "key/", .prefix_len = 4};
    char *tok = first_page_token(w, &o, 7);
    size_t len = strlen(tok);
    int rc;
    char *good = resume_dump(w, &o, tok, len, &rc);
    ck_assert_ok(rc);
    int64_t trev;

    /*
     * Every truncation, every single-byte change and junk appended.  A
     * mangled token must be refused; the only acceptable OK is one that
     * resumes exactly where the real token does (a lax but harmless decoder,
     * e.g. case-insensitive hex).  Resuming anywhere else is a forgery that
     * got through.
     */
    char *t = malloc(len + 16);
    for (size_t cut = 1; cut < len; cut++) {
        memcpy(t, tok, cut);
        t[cut] = 0;
        char *d = resume_dump(w, &o, t, cut, &rc);
        ck_assert_msg(rc == WCACHE_EBADTOKEN || (rc == WCACHE_OK && strcmp(d, good) == 0),
                      "token cut to %zu/%zu: %s", cut, len, wcache_strerror(rc));
        free(d);
        rc = wcache_token_revision(t, cut, &trev);
        ck_assert_msg(rc == WCACHE_EBADTOKEN || (rc == WCACHE_OK && trev == rev),
                      "token_revision of cut %zu: %s", cut, wcache_strerror(rc));
    }
    static const unsigned char deltas[] = {0x01, 0x02, 0x04, 0x08, 0x10,
                                           0x20, 0x40, 0x80, 0x03, 0xff};
    for (size_t i = 0; i < len; i++) {
        for (size_t d = 0; d < sizeof deltas; d++) {
            memcpy(t, tok, len + 1);
            t[i] = (char)(t[i] ^ deltas[d]);
            char *dd = resume_dump(w, &o, t, len, &rc);
            ck_assert_msg(rc == WCACHE_EBADTOKEN || (rc == WCACHE_OK && strcmp(dd, good) == 0),
                          "token byte %zu ^ 0x%02x: %s", i, deltas[d], wcache_strerror(rc));
            free(dd);
        }
    }
    memcpy(t, tok, len);
    memcpy(t + len, "AAAA", 5);
    char *d = resume_dump(w, &o, t, len + 4, &rc);
    ck_assert_msg(rc == WCACHE_EBADTOKEN || (rc == WCACHE_OK && strcmp(d, good) == 0),
                  "token with junk appended: %s", wcache_strerror(rc));
    free(d);

    /* Random bytes, random printable text, and strings that look like
     * encodings (all-'A' base64, all-zero hex). */
    tu_rng rng = {tu_seed(12345)};
    char junk[200];
    for (int i = 0; i < 2000; i++) {
        size_t n = 1 + tu_below(&rng, sizeof junk - 1);
        for (size_t j = 0; j < n; j++)
            junk[j] = (char)(i % 2 ? 0x20 + tu_below(&rng, 0x5f) : tu_below(&rng, 256));
        ck_assert_wc(wcache_token_revision(junk, n, &trev), WCACHE_EBADTOKEN);
        char *dd = resume_dump(w, &o, junk, n, &rc);
        ck_assert_msg(rc == WCACHE_EBADTOKEN, "random token #%d (seed %llu): %s", i,
                      (unsigned long long)tu_seed(12345), wcache_strerror(rc));
        free(dd);
    }
    for (size_t n = 1; n < 80; n++) {
        memset(junk, 'A', n);
        ck_assert_wc(wcache_token_revision(junk, n, &trev), WCACHE_EBADTOKEN);
        char *dd = resume_dump(w, &o, junk, n, &rc);
        ck_assert_wc(rc, WCACHE_EBADTOKEN);
        free(dd);
        memset(junk, '0', n);
        dd = resume_dump(w, &o, junk, n, &rc);
        ck_assert_wc(rc, WCACHE_EBADTOKEN);
        free(dd);
    }
    rc = wcache_token_revision(NULL, 4, &trev);
    ck_assert_msg(rc == WCACHE_EBADTOKEN || rc == WCACHE_EINVAL, "NULL token: %s",
                  wcache_strerror(rc));
    rc = wcache_token_revision(tok, len, NULL);
    ck_assert_msg(rc == WCACHE_EBADTOKEN || rc == WCACHE_EINVAL, "NULL rev: %s",
                  wcache_strerror(rc));
    free(t);
    free(good);
    free(tok);
    wcache_view_free(w);
}
END_TEST

START_TEST(test_count)
{
    int64_t rev = 0;
    fill_keys(C, 20, &rev);
    ck_assert_ok(del_s(C, "key/005", ++rev));
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    wcache_list_opts o = {.size = sizeof o};
    uint64_t n = 0;
    ck_assert_ok(wcache_view_count(w, &o, &n));
    ck_assert_uint_eq(n, 19);
    o.prefix = "key/01";
    o.prefix_len = 6;
    ck_assert_ok(wcache_view_count(w, &o, &n));
    ck_assert_uint_eq(n, 10);
    ck_assert_ok(wcache_view_begin(w, rev - 1));
    o.prefix = "key/00";
    ck_assert_ok(wcache_view_count(w, &o, &n));
    ck_assert_uint_eq(n, 10);
    ck_assert_ok(wcache_view_begin(w, 3));
    ck_assert_ok(wcache_view_count(w, &o, &n));
    ck_assert_uint_le(n, 3);
    wcache_view_free(w);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Compaction                                                                */
/* ------------------------------------------------------------------------ */

START_TEST(test_compact_explicit)
{
    for (int r = 1; r <= 10; r++)
        ck_assert_ok(put_s(C, r % 3 ? "a" : "b", "v", r));
    ck_assert_wc(wcache_cache_compact(C, 11), WCACHE_EFUTURE);
    ck_assert_wc(wcache_cache_compact(C, -1), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_cache_compacted_revision(C), 0);
    ck_assert_ok(wcache_cache_compact(C, 0));
    ck_assert_ok(wcache_cache_compact(C, 5));
    ck_assert_int_eq(wcache_cache_compacted_revision(C), 5);
    ck_assert_ok(wcache_cache_compact(C, 3)); /* below: no-op */
    ck_assert_ok(wcache_cache_compact(C, 5)); /* equal: no-op */
    ck_assert_int_eq(wcache_cache_compacted_revision(C), 5);
    EXPECT_S(C, 5, "a", "v", 1, 5, 4);
    EXPECT_S(C, 5, "b", "v", 3, 3, 1);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_wc(wcache_view_begin(w, 4), WCACHE_ECOMPACTED);
    ck_assert_wc(wcache_view_begin(w, 1), WCACHE_ECOMPACTED);
    /* Revision 0 is "latest", never compacted. */
    ck_assert_ok(wcache_view_begin(w, 0));
    ck_assert_int_eq(wcache_view_revision(w), 10);
    wcache_view_free(w);
    /* Up to the current revision; a progress-only revision too. */
    ck_assert_ok(wcache_ingest_progress(C, 12));
    ck_assert_ok(wcache_cache_compact(C, 12));
    ck_assert_int_eq(wcache_cache_compacted_revision(C), 12);
    EXPECT_S(C, 12, "a", "v", 1, 10, 7);
    EXPECT_S(C, 12, "b", "v", 3, 9, 3);
    /* Creation metadata survives the compaction of the creating revision. */
    ck_assert_ok(put_s(C, "a", "w", 13));
    EXPECT_S(C, 13, "a", "w", 1, 13, 8);
    ck_assert_ok(del_s(C, "b", 14));
    ck_assert_ok(wcache_cache_compact(C, 14));
    ck_assert_ok(put_s(C, "b", "new", 15));
    EXPECT_S(C, 15, "b", "new", 15, 15, 1);
    wcache_stat st = {.size = sizeof st};
    ck_assert_ok(wcache_cache_stat(C, &st));
    ck_assert_uint_ge(st.compactions, 1);
    ck_assert_int_eq(st.compacted_revision, 14);
}
END_TEST

START_TEST(test_compact_delete_then_recreate)
{
    /* A tombstone below the compacted revision must not resurrect history. */
    ck_assert_ok(put_s(C, "k", "1", 1));
    ck_assert_ok(put_s(C, "k", "2", 2));
    ck_assert_ok(del_s(C, "k", 3));
    ck_assert_ok(put_s(C, "other", "x", 4));
    ck_assert_ok(wcache_cache_compact(C, 4));
    EXPECT_ABSENT(C, 4, "k");
    ck_assert_wc(del_s(C, "k", 5), WCACHE_ENOTFOUND);
    ck_assert_ok(put_s(C, "k", "3", 5));
    EXPECT_S(C, 5, "k", "3", 5, 5, 1);
    EXPECT_ABSENT(C, 4, "k");
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, 4));
    uint64_t n;
    wcache_list_opts o = {.size = sizeof o};
    ck_assert_ok(wcache_view_count(w, &o, &n));
    ck_assert_uint_eq(n, 1);
    wcache_view_free(w);
}
END_TEST

START_TEST(test_auto_compact_revisions)
{
    const int64_t keep = 5;
    wcache_cache *c = open_with(WCACHE_P_RETAIN_REVISIONS, keep, WCACHE_P_RETAIN_SECONDS, 0);
    int64_t last = 0;
    for (int64_t r = 1; r <= 40; r++) {
        ck_assert_ok(put_s(c, r % 2 ? "a" : "b", "v", r));
        int64_t cr = wcache_cache_compacted_revision(c);
        /* "Keep at least this many revisions readable below the current one." */
        ck_assert_msg(cr <= (r - keep > 0 ? r - keep : 0), "rev %lld: compacted to %lld",
                      (long long)r, (long long)cr);
        ck_assert_int_ge(cr, last);
        last = cr;
        if (r > keep)
            EXPECT_S(c, r - keep, (r - keep) % 2 ? "a" : "b", "v", (r - keep) % 2 ? 1 : 2,
                     r - keep, (r - keep + 1) / 2);
    }
    /* "Compact automatically after ingest when a bound is exceeded": 35
     * revisions past the bound, something must have been compacted. */
    ck_assert_int_gt(wcache_cache_compacted_revision(c), 0);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(c, &w));
    ck_assert_wc(wcache_view_begin(w, 1), WCACHE_ECOMPACTED);
    wcache_view_free(w);
    wcache_cache_close(c);

    /* With auto compaction off, the bound is not applied. */
    c = open_with(WCACHE_P_RETAIN_REVISIONS, keep, WCACHE_P_AUTO_COMPACT, 0);
    for (int64_t r = 1; r <= 40; r++)
        ck_assert_ok(put_s(c, "a", "v", r));
    ck_assert_int_eq(wcache_cache_compacted_revision(c), 0);
    EXPECT_S(c, 1, "a", "v", 1, 1, 1);
    wcache_cache_close(c);
}
END_TEST

START_TEST(test_auto_compact_age)
{
    tu_clock clk = {.now_ns = 1000 * TU_NS_PER_S};
    wcache_cache *c = NULL;
    ck_assert_ok(wcache_cache_create(&c, NULL));
    ck_assert_ok(wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 10));
    ck_assert_ok(wcache_cache_set_param(c, WCACHE_P_RETAIN_REVISIONS, 0));
    ck_assert_ok(wcache_cache_set_clock(c, tu_clock_fn, &clk));
    ck_assert_ok(wcache_cache_open(c));
    for (int r = 1; r <= 5; r++)
        ck_assert_ok(put_s(c, "a", "v", r));
    ck_assert_int_eq(wcache_cache_compacted_revision(c), 0);
    clk.now_ns += 5 * TU_NS_PER_S;
    ck_assert_ok(put_s(c, "b", "v", 6));
    /* Nothing is 10 s old yet. */
    ck_assert_int_eq(wcache_cache_compacted_revision(c), 0);
    EXPECT_S(c, 1, "a", "v", 1, 1, 1);

    clk.now_ns += 15 * TU_NS_PER_S; /* t = 1020: revisions 1..5 are >= 15 s old */
    ck_assert_ok(put_s(c, "b", "w", 7));
    int64_t cr = wcache_cache_compacted_revision(c);
    ck_assert_msg(cr >= 6 && cr <= 7, "compacted %lld after aging revisions 1..5 out",
                  (long long)cr);
    EXPECT_S(c, 7, "b", "w", 6, 7, 2);

    clk.now_ns += 5 * TU_NS_PER_S; /* t = 1025: revision 7 is 5 s old: kept */
    ck_assert_ok(put_s(c, "b", "x", 8));
    ck_assert_int_le(wcache_cache_compacted_revision(c), 7);
    EXPECT_S(c, 7, "b", "w", 6, 7, 2);
    ck_assert_int_gt(clk.calls, 0);

    /* The clock is a hint, not a law: one going backwards must not make the
     * library compact revisions that are still young. */
    clk.now_ns -= 100 * TU_NS_PER_S;
    ck_assert_ok(put_s(c, "b", "y", 9));
    ck_assert_int_le(wcache_cache_compacted_revision(c), 8);
    EXPECT_S(c, 8, "b", "x", 6, 8, 3);
    wcache_cache_close(c);
}
END_TEST

START_TEST(test_compaction_reclaims)
{
    /* Keys created, deleted and compacted away by the thousand: lookups stay
     * right and what the cache holds stays proportional to what is live
     * (no growth with history, no lost tombstones). */
    int64_t rev = 0;
    int n = tu_long() ? 200000 : 20000;
    for (int i = 0; i < n; i++) {
        char k[24];
        snprintf(k, sizeof k, "churn/%d", i);
        ck_assert_ok(put_s(C, k, "v", ++rev));
        if (i % 10 != 0) /* every tenth key stays */
            ck_assert_ok(del_s(C, k, ++rev));
        if (i % 100 == 99)
            ck_assert_ok(wcache_cache_compact(C, rev));
    }
    ck_assert_ok(wcache_cache_compact(C, rev));
    wcache_stat st = {.size = sizeof st};
    ck_assert_ok(wcache_cache_stat(C, &st));
    uint64_t live = (uint64_t)n / 10;
    ck_assert_uint_eq(st.objects, live);
    ck_assert_msg(st.versions <= live + 256, "%llu versions kept for %llu live keys",
                  (unsigned long long)st.versions, (unsigned long long)live);
    ck_assert_msg(st.key_bytes <= (live + 256) * 16, "%llu key bytes kept for %llu live keys",
                  (unsigned long long)st.key_bytes, (unsigned long long)live);
    ck_assert_uint_le(st.history_events, 256);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    for (int i = 0; i < n; i += 7) {
        char k[24];
        snprintf(k, sizeof k, "churn/%d", i);
        wcache_kv kv;
        ck_assert_wc(wcache_view_get(w, k, strlen(k), &kv),
                     i % 10 == 0 ? WCACHE_OK : WCACHE_ENOTFOUND);
    }
    uint64_t cnt;
    wcache_list_opts o = {.size = sizeof o, .prefix = "churn/", .prefix_len = 6};
    ck_assert_ok(wcache_view_count(w, &o, &cnt));
    ck_assert_uint_eq(cnt, live);
    wcache_view_free(w);
    /* Re-creating removed keys starts new incarnations. */
    ck_assert_ok(put_s(C, "churn/1", "again", ++rev));
    EXPECT_S(C, rev, "churn/1", "again", rev, rev, 1);
}
END_TEST

/* Versions kept while a view pins an old revision, and after it ends. */
static void pinned_memory_case(wcache_cache *c, int explicit_compaction)
{
    int64_t rev = 0;
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "pin/%02d", i);
        ck_assert_ok(put_s(c, k, "v0", ++rev));
    }
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(c, &w));
    ck_assert_ok(wcache_view_begin(w, rev));
    int64_t pinned = rev;
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 50; i++) {
            char k[16];
            snprintf(k, sizeof k, "pin/%02d", i);
            ck_assert_ok(put_s(c, k, "vN", ++rev));
        }
        if (explicit_compaction)
            ck_assert_ok(wcache_cache_compact(c, rev - 10));
    }
    wcache_stat st = {.size = sizeof st};
    ck_assert_ok(wcache_cache_stat(c, &st));
    /* The view needs the old versions: they are all still there. */
    ck_assert_uint_ge(st.versions, 50 + 50);
    wcache_kv kv;
    ck_assert_ok(wcache_view_get(w, "pin/07", 6, &kv));
    ck_assert_mem_eq(kv.value, "v0", 2);
    ck_assert_int_le(kv.mod_revision, pinned);
    wcache_view_free(w);
    /* "freed once no open view needs it": give the library its next
     * chances (a compaction call, a few hundred ingests). */
    for (int i = 0; i < 300; i++)
        ck_assert_ok(put_s(c, "pin/00", "tick", ++rev));
    if (explicit_compaction)
        ck_assert_ok(wcache_cache_compact(c, rev - 10));
    ck_assert_ok(wcache_cache_stat(c, &st));
    ck_assert_msg(st.versions <= 50 + 300, "%llu versions still stored for 50 keys",
                  (unsigned long long)st.versions);
}

START_TEST(test_pinned_view_memory_released)
{
    wcache_cache *c = open_with(WCACHE_P_AUTO_COMPACT, 0, 0, 0);
    pinned_memory_case(c, 1);
    wcache_cache_close(c);
    c = open_with(WCACHE_P_RETAIN_REVISIONS, 10, WCACHE_P_RETAIN_SECONDS, 0);
    pinned_memory_case(c, 0);
    wcache_cache_close(c);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Stats, errbuf, log                                                        */
/* ------------------------------------------------------------------------ */

START_TEST(test_stat)
{
    wcache_stat st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st - 1;
    ck_assert_wc(wcache_cache_stat(C, &st), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_stat(C, NULL), WCACHE_EINVAL);
    st.size = sizeof st;
    ck_assert_ok(wcache_cache_stat(C, &st));
    ck_assert_int_eq(st.revision, 0);
    ck_assert_uint_eq(st.objects, 0);
    ck_assert_uint_eq(st.events, 0);

    ck_assert_ok(put_s(C, "a", "xx", 1));
    ck_assert_ok(put_s(C, "b", "yyy", 2));
    ck_assert_ok(put_s(C, "a", "z", 3));
    ck_assert_ok(del_s(C, "b", 4));
    ck_assert_wc(del_s(C, "b", 5), WCACHE_ENOTFOUND); /* not an event */
    ck_assert_ok(wcache_ingest_progress(C, 6));       /* not an event either */
    ck_assert_ok(wcache_cache_stat(C, &st));
    ck_assert_int_eq(st.revision, 6);
    ck_assert_int_eq(st.compacted_revision, 0);
    ck_assert_uint_eq(st.objects, 1);
    ck_assert_uint_eq(st.events, 4);
    ck_assert_uint_eq(st.versions, 4); /* a@1, b@2, a@3 and b's tombstone */
    ck_assert_uint_eq(st.value_bytes, 6);
    ck_assert_uint_ge(st.key_bytes, 2);
    ck_assert_uint_eq(st.history_events, 4);
    ck_assert_uint_eq(st.views_open, 0);
    ck_assert_uint_eq(st.compactions, 0);

    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    ck_assert_ok(wcache_batch_put(b, "c", 1, "1", 1));
    ck_assert_ok(wcache_batch_put(b, "d", 1, "1", 1));
    ck_assert_ok(wcache_batch_delete(b, "a", 1));
    ck_assert_ok(wcache_ingest_batch(C, b, 7));
    wcache_batch_free(b);
    ck_assert_ok(wcache_cache_stat(C, &st));
    ck_assert_uint_eq(st.objects, 2);
    ck_assert_uint_eq(st.events, 7);

    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_cache_stat(C, &st));
    ck_assert_uint_eq(st.views_open, 0); /* created, not pinned */
    ck_assert_ok(wcache_view_begin(w, 2));
    ck_assert_ok(wcache_cache_stat(C, &st));
    ck_assert_uint_eq(st.views_open, 1);
    wcache_view_end(w);
    ck_assert_ok(wcache_cache_stat(C, &st));
    ck_assert_uint_eq(st.views_open, 0);
    wcache_view_free(w);

    ck_assert_ok(wcache_cache_compact(C, 7));
    ck_assert_ok(wcache_cache_stat(C, &st));
    ck_assert_int_eq(st.compacted_revision, 7);
    ck_assert_uint_ge(st.compactions, 1);
    ck_assert_uint_lt(st.history_events, 7);
    ck_assert_uint_eq(st.objects, 2);
    ck_assert_uint_eq(st.events, 7); /* since open, not in the window */
}
END_TEST

START_TEST(test_errbuf)
{
    char eb[64];
    ck_assert_ok(wcache_cache_set_errbuf(C, eb, sizeof eb));
    /* After installing: set_errbuf itself may initialise the buffer. */
    strcpy(eb, "sentinel");
    ck_assert_ok(put_s(C, "a", "1", 1));
    ck_assert_str_eq(eb, "sentinel"); /* unchanged on success */

    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    ck_assert_ok(wcache_batch_delete(b, "missing-key", 11));
    ck_assert_wc(wcache_ingest_batch(C, b, 2), WCACHE_ENOTFOUND);
    ck_assert_msg(strstr(eb, "missing-key") != NULL, "errbuf: \"%s\"", eb);

    /* A tiny buffer is still NUL-terminated and not overrun. */
    char tiny[8 + 8];
    memset(tiny, 'X', sizeof tiny);
    ck_assert_ok(wcache_cache_set_errbuf(C, tiny, 8));
    ck_assert_wc(wcache_ingest_batch(C, b, 2), WCACHE_ENOTFOUND);
    ck_assert_msg(memchr(tiny, 0, 8) != NULL, "errbuf of 8 not terminated");
    for (int i = 8; i < 16; i++)
        ck_assert_int_eq(tiny[i], 'X');

    /* Removed: nothing written any more. */
    ck_assert_ok(wcache_cache_set_errbuf(C, NULL, 0));
    strcpy(eb, "sentinel");
    ck_assert_wc(wcache_ingest_batch(C, b, 2), WCACHE_ENOTFOUND);
    ck_assert_str_eq(eb, "sentinel");
    wcache_batch_free(b);
}
END_TEST

typedef struct logrec {
    int n;
    int max_level_seen;
    int bad; /* a message whose length or termination was wrong */
} logrec;

static void rec_log(int level, const char *msg, size_t len, void *ud)
{
    logrec *l = ud;
    l->n++;
    if (level > l->max_level_seen)
        l->max_level_seen = level;
    if (!msg || strlen(msg) != len)
        l->bad++;
}

START_TEST(test_log)
{
    for (int max = WCACHE_LOG_ERROR; max <= WCACHE_LOG_DEBUG; max++) {
        logrec l = {.max_level_seen = -1};
        wcache_cache *c = NULL;
        ck_assert_ok(wcache_cache_create(&c, NULL));
        ck_assert_ok(wcache_cache_set_log(c, rec_log, max, &l));
        ck_assert_ok(wcache_cache_open(c));
        /* Exercise paths that a library might log: errors, compaction. */
        ck_assert_ok(put_s(c, "a", "1", 1));
        ck_assert_wc(put_s(c, "a", "1", 1), WCACHE_EORDER);
        ck_assert_wc(del_s(c, "zz", 2), WCACHE_ENOTFOUND);
        ck_assert_ok(put_s(c, "a", "2", 2));
        ck_assert_ok(wcache_cache_compact(c, 2));
        wcache_cache_close(c);
        /* Whether anything is logged is the library's choice; what is
         * logged must respect the level and be well formed. */
        ck_assert_int_le(l.max_level_seen, max);
        ck_assert_int_eq(l.bad, 0);
    }
}
END_TEST

/* A log callback that tries to write into the cache it is logging for. */
typedef struct reentry {
    wcache_cache *c;
    int calls, depth;
    int rc_put, rc_progress, rc_compact, rc_delete, rc_batch;
    wcache_batch *b;
} reentry;

static void reenter_log(int level, const char *msg, size_t len, void *ud)
{
    (void)level, (void)msg, (void)len;
    reentry *r = ud;
    /* Only the outermost callback re-enters: a library that wrongly accepts
     * the call and logs again must fail the assertions below, not recurse
     * until the stack overflows. */
    if (r->depth++ == 0) {
        r->calls++;
        r->rc_put = wcache_ingest_put(r->c, "inner", 5, "x", 1, 1000);
        r->rc_progress = wcache_ingest_progress(r->c, 1000);
        r->rc_compact = wcache_cache_compact(r->c, 1000);
        r->rc_delete = wcache_ingest_delete(r->c, "a", 1, 1000);
        r->rc_batch = wcache_ingest_batch(r->c, r->b, 1000);
    }
    r->depth--;
}

/* A log callback running on one thread does not refuse another thread's
 * writes: only calls from inside the callback itself are recursive.  (The
 * etcd source's writes failed with WCACHE_ERECURSIVE while the embedder's
 * thread was logging.)  The logging thread is held inside its callback
 * while this thread writes. */
typedef struct held_log {
    pthread_t logger;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inside, release;
} held_log;

static void hold_log(int level, const char *msg, size_t len, void *ud)
{
    (void)level, (void)msg, (void)len;
    held_log *h = ud;
    if (!pthread_equal(pthread_self(), h->logger))
        return;
    pthread_mutex_lock(&h->mu);
    h->inside = 1;
    pthread_cond_broadcast(&h->cv);
    while (!h->release)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

static void *log_from_thread(void *arg)
{
    wcache_cache *c = arg;
    wcache_watch_opts o = {.size = 1}; /* invalid: logged, then refused */
    wcache_watch *w = NULL;
    int rc = wcache_watch_open(c, &o, &w);
    return rc == WCACHE_EINVAL ? c : NULL;
}

START_TEST(test_log_other_thread)
{
    held_log h = {.inside = 0};
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    wcache_cache *c = NULL;
    ck_assert_ok(wcache_cache_create(&c, NULL));
    ck_assert_ok(wcache_cache_set_log(c, hold_log, WCACHE_LOG_DEBUG, &h));
    ck_assert_ok(wcache_cache_open(c));
    pthread_mutex_lock(&h.mu); /* h.logger is set before the thread can log */
    ck_assert_int_eq(pthread_create(&h.logger, NULL, log_from_thread, c), 0);
    while (!h.inside)
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
    /* the other thread is inside the log callback now */
    ck_assert_ok(put_s(c, "a", "1", 1));
    ck_assert_ok(put_s(c, "a", "2", 2));
    ck_assert_ok(wcache_cache_compact(c, 2));
    ck_assert_ok(wcache_ingest_progress(c, 3));
    pthread_mutex_lock(&h.mu);
    h.release = 1;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    void *ret = NULL;
    ck_assert_int_eq(pthread_join(h.logger, &ret), 0);
    ck_assert_ptr_eq(ret, c);
    EXPECT_S(c, 3, "a", "2", 1, 2, 2);
    wcache_cache_close(c);
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.mu);
}
END_TEST

START_TEST(test_log_reentry)
{
    reentry r = {0};
    ck_assert_ok(wcache_cache_create(&r.c, NULL));
    ck_assert_ok(wcache_cache_set_log(r.c, reenter_log, WCACHE_LOG_DEBUG, &r));
    ck_assert_ok(wcache_cache_open(r.c));
    ck_assert_ok(wcache_batch_create(r.c, &r.b));
    ck_assert_ok(wcache_batch_put(r.b, "inner", 5, "x", 1));
    ck_assert_ok(put_s(r.c, "a", "1", 1));
    ck_assert_ok(put_s(r.c, "a", "2", 2));
    /* Failures are the likeliest things to be logged. */
    ck_assert_wc(del_s(r.c, "absent", 3), WCACHE_ENOTFOUND);
    ck_assert_wc(put_s(r.c, "a", "x", 1), WCACHE_EORDER);
    ck_assert_ok(wcache_cache_compact(r.c, 2));
    if (r.calls > 0) {
        ck_assert_wc(r.rc_put, WCACHE_ERECURSIVE);
        ck_assert_wc(r.rc_progress, WCACHE_ERECURSIVE);
        ck_assert_wc(r.rc_compact, WCACHE_ERECURSIVE);
        ck_assert_wc(r.rc_delete, WCACHE_ERECURSIVE);
        ck_assert_wc(r.rc_batch, WCACHE_ERECURSIVE);
    }
    ck_assert_int_eq(wcache_cache_revision(r.c), 2);
    EXPECT_ABSENT(r.c, 2, "inner");
    /* Outside the callback the same calls work again. */
    ck_assert_ok(put_s(r.c, "b", "1", 3));
    wcache_batch_free(r.b);
    wcache_cache_close(r.c);
}
END_TEST

START_TEST(test_misc_args)
{
    /* A batch belongs to the cache it was created for. */
    wcache_cache *other = open_with(0, 0, 0, 0);
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(other, &b));
    ck_assert_ok(wcache_batch_put(b, "k", 1, "v", 1));
    ck_assert_wc(wcache_ingest_batch(C, b, 1), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_cache_revision(C), 0);
    ck_assert_ok(wcache_ingest_batch(other, b, 1));
    wcache_batch_free(b);
    wcache_cache_close(other);

    /* Default key limit: 65536 bytes exactly is fine, one more is not. */
    size_t big = 65536;
    char *k = malloc(big + 1);
    memset(k, 0xab, big + 1);
    ck_assert_ok(wcache_ingest_put(C, k, big, "v", 1, 1));
    ck_assert_wc(wcache_ingest_put(C, k, big + 1, "v", 1, 2), WCACHE_ETOOBIG);
    EXPECT_GET(C, 1, k, big, "v", 1, 1, 1, 1);
    free(k);
    /* A value of 1 MiB round-trips. */
    size_t vbig = 1 << 20;
    char *v = malloc(vbig);
    for (size_t i = 0; i < vbig; i++)
        v[i] = (char)(i * 31 + 7);
    ck_assert_ok(wcache_ingest_put(C, "bigv", 4, v, vbig, 2));
    EXPECT_GET(C, 2, "bigv", 4, v, vbig, 2, 2, 1);
    free(v);

    ck_assert_int_eq(wcache_cache_last_errno(C), 0); /* nothing failed with ESYS */

    /* The same token works from another view at the same revision. */
    int64_t rev = 2;
    fill_keys(C, 20, &rev);
    wcache_view *w1 = NULL, *w2 = NULL;
    ck_assert_ok(wcache_view_create(C, &w1));
    ck_assert_ok(wcache_view_create(C, &w2));
    ck_assert_ok(wcache_view_begin(w1, WCACHE_REV_LATEST));
    wcache_list_opts o = {.size = sizeof o, .prefix = "key/", .prefix_len = 4};
    char *tok = first_page_token(w1, &o, 4);
    ck_assert_ok(wcache_view_begin(w2, rev));
    wcache_kv items[32];
    wcache_list_result r = {.size = sizeof r};
    o.token = tok;
    o.token_len = strlen(tok);
    ck_assert_ok(wcache_view_list(w2, &o, items, 32, &r));
    ck_assert_uint_eq(r.count, 16);
    ck_assert_mem_eq(items[0].key, "key/004", 7);
    /* count with a broken token refuses it like list does. */
    uint64_t n;
    o.token = "garbage!";
    o.token_len = 8;
    ck_assert_wc(wcache_view_count(w2, &o, &n), WCACHE_EBADTOKEN);
    free(tok);
    wcache_view_free(w1);
    wcache_view_free(w2);
}
END_TEST

/* ------------------------------------------------------------------------ */

Suite *api_suite(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("basics");
    tcase_add_test(tc, test_strerror);
    tcase_add_test(tc, test_version);
    tcase_add_test(tc, test_create_args);
    tcase_add_test(tc, test_params);
    tcase_add_test(tc, test_lifecycle_state);
    tcase_set_timeout(tc, tu_timeout(60));
    suite_add_tcase(s, tc);

    tc = tcase_create("ingest");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_put_delete_revisions);
    tcase_add_test(tc, test_delete_absent);
    tcase_add_test(tc, test_put_args);
    tcase_add_test(tc, test_changes);
    tcase_add_test(tc, test_progress);
    tcase_add_test(tc, test_changes_key_removed_midway);
    tcase_add_test(tc, test_toobig);
    tcase_add_test(tc, test_batch_apply);
    tcase_add_test(tc, test_batch_failures);
    tcase_add_test(tc, test_relist);
    tcase_add_test(tc, test_relist_failures);
    tcase_add_test(tc, test_load_sorted);
    tcase_add_test(tc, test_load_unsorted);
    tcase_add_test(tc, test_load_large_unsorted);
    tcase_add_test(tc, test_load_errors);
    tcase_add_test(tc, test_load_empty_batch);
    tcase_set_timeout(tc, tu_timeout(60));
    suite_add_tcase(s, tc);

    tc = tcase_create("read");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_view_begin);
    tcase_add_test(tc, test_view_survives_compaction);
    tcase_add_test(tc, test_view_slots);
    tcase_add_test(tc, test_view_tombstone_compaction);
    tcase_add_test(tc, test_view_pinned_across_load);
    tcase_add_test(tc, test_get_many);
    tcase_add_test(tc, test_binary_keys);
    tcase_add_test(tc, test_list_result_fields);
    tcase_add_test(tc, test_paging_equals_one_list);
    tcase_add_test(tc, test_token_passed_back_directly);
    tcase_add_test(tc, test_list_items_borrowed_until_end);
    tcase_add_test(tc, test_token_after_writes);
    tcase_add_test(tc, test_token_other_range);
    tcase_add_test(tc, test_token_garbage);
    tcase_add_test(tc, test_count);
    tcase_set_timeout(tc, tu_timeout(120));
    suite_add_tcase(s, tc);

    tc = tcase_create("compact");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_compact_explicit);
    tcase_add_test(tc, test_compact_delete_then_recreate);
    tcase_add_test(tc, test_auto_compact_revisions);
    tcase_add_test(tc, test_auto_compact_age);
    tcase_add_test(tc, test_compaction_reclaims);
    tcase_add_test(tc, test_pinned_view_memory_released);
    tcase_add_test(tc, test_stat);
    tcase_add_test(tc, test_errbuf);
    tcase_add_test(tc, test_log);
    tcase_add_test(tc, test_log_reentry);
    tcase_add_test(tc, test_log_other_thread);
    tcase_add_test(tc, test_misc_args);
    tcase_set_timeout(tc, tu_timeout(60));
    suite_add_tcase(s, tc);
    return s;
}
