/*
 * check_index.c - secondary indexes, black-box: registration, LIST and
 * COUNT by value at the latest and at past revisions, paging tokens bound
 * to the value, watch by value with Kubernetes trigger semantics, pruning
 * by compaction, a randomized comparison against a naive model, and a
 * reader racing the writer (for TSan).
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <watchcache.h>

#include "testutil.h"

static wcache_cache *C;
static int NODE; /* the spec.nodeName index */

static void setup(void)
{
    ck_assert_ok(wcache_cache_create(&C, NULL));
    ck_assert_ok(wcache_cache_set_param(C, WCACHE_P_RETAIN_SECONDS, 0));
    ck_assert_ok(wcache_cache_add_index_json(C, "node", 4, "spec.nodeName", 13, &NODE));
    ck_assert_ok(wcache_cache_open(C));
}

static void teardown(void)
{
    wcache_cache_close(C);
    C = NULL;
}

/* A pod on node (NULL: not scheduled), generation gen. */
static size_t pod(char *buf, size_t cap, const char *node, int gen)
{
    if (!node)
        return (size_t)snprintf(buf, cap, "{\"spec\":{},\"gen\":%d}", gen);
    return (size_t)snprintf(buf, cap, "{\"spec\":{\"nodeName\":\"%s\"},\"gen\":%d}", node, gen);
}

static void put_pod(const char *key, const char *node, int64_t rev)
{
    char v[128];
    size_t n = pod(v, sizeof v, node, (int)rev);
    ck_assert_ok(wcache_ingest_put(C, key, strlen(key), v, n, rev));
}

static void del(const char *key, int64_t rev)
{
    ck_assert_ok(wcache_ingest_delete(C, key, strlen(key), rev));
}

/* The keys on node at rev, comma-separated, listed one at a time (pages of
 * one exercise every token). */
static void keys_in(wcache_view *v, const char *node, char *out, size_t cap)
{
    char tok[512] = "";
    size_t o = 0;
    out[0] = 0;
    for (;;) {
        wcache_list_opts lo = {.size = sizeof lo, .token = tok, .token_len = strlen(tok)};
        wcache_list_result res = {.size = sizeof res};
        wcache_kv kv[1];
        ck_assert_ok(wcache_view_list_index(v, NODE, node, strlen(node), &lo, kv, 1, &res));
        ck_assert_int_eq(res.revision, wcache_view_revision(v));
        if (res.count)
            o += (size_t)snprintf(out + o, cap - o, "%s%.*s", o ? "," : "", (int)kv[0].key_len,
                                  (const char *)kv[0].key);
        if (!res.more)
            break;
        ck_assert_ptr_nonnull(res.token);
        snprintf(tok, sizeof tok, "%s", res.token);
    }
    uint64_t cnt;
    ck_assert_ok(wcache_view_count_index(v, NODE, node, strlen(node), &cnt));
    size_t commas = 0;
    for (size_t i = 0; out[i]; i++)
        commas += out[i] == ',';
    ck_assert_uint_eq(cnt, out[0] ? commas + 1 : 0);
}

static void expect_in(wcache_view *v, const char *node, const char *want)
{
    char got[1024];
    keys_in(v, node, got, sizeof got);
    ck_assert_msg(strcmp(got, want) == 0, "rev %lld node %s: got \"%s\", want \"%s\"",
                  (long long)wcache_view_revision(v), node, got, want);
}

static void expect_on(int64_t rev, const char *node, const char *want)
{
    wcache_view *v;
    ck_assert_ok(wcache_view_create(C, &v));
    ck_assert_ok(wcache_view_begin(v, rev));
    expect_in(v, node, want);
    wcache_view_free(v);
}

/* ---- registration ---- */

static int first_byte(const void *key, size_t klen, const void *val, size_t vlen,
                      const void **out, size_t *olen, void *ud)
{
    (void)key, (void)klen, (void)ud;
    if (vlen == 4 && !memcmp(val, "FAIL", 4))
        return -1;
    if (!vlen)
        return 0;
    *out = val;
    *olen = 1;
    return 1;
}

START_TEST(test_index_registration)
{
    wcache_cache *c;
    int id = -1;
    ck_assert_ok(wcache_cache_create(&c, NULL));
    ck_assert_wc(wcache_cache_add_index(NULL, "a", 1, first_byte, NULL, &id), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_add_index(c, NULL, 1, first_byte, NULL, &id), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_add_index(c, "a", 0, first_byte, NULL, &id), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_add_index(c, "a", 1, NULL, NULL, &id), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_add_index(c, "a", 1, first_byte, NULL, NULL), WCACHE_EINVAL);
    const char *bad[] = {"", ".a", "a.", "a..b", "."};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_wc(wcache_cache_add_index_json(c, "j", 1, bad[i], strlen(bad[i]), &id),
                     WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_add_index_json(c, "j", 1, NULL, 3, &id), WCACHE_EINVAL);
    ck_assert_ok(wcache_cache_add_index(c, "a", 1, first_byte, NULL, &id));
    ck_assert_int_eq(id, 0);
    ck_assert_wc(wcache_cache_add_index_json(c, "a", 1, "x", 1, &id), WCACHE_EEXIST);
    for (int i = 1; i < WCACHE_INDEX_MAX; i++) {
        char name[8];
        snprintf(name, sizeof name, "i%d", i);
        ck_assert_ok(wcache_cache_add_index_json(c, name, strlen(name), "x.y", 3, &id));
        ck_assert_int_eq(id, i);
    }
    ck_assert_wc(wcache_cache_add_index_json(c, "z", 1, "x", 1, &id), WCACHE_EBUSY);
    wcache_index_stat st = {.size = sizeof st};
    ck_assert_ok(wcache_cache_index_stat(c, 0, &st));
    ck_assert_wc(wcache_cache_index_stat(c, WCACHE_INDEX_MAX, &st), WCACHE_EINVAL);
    ck_assert_wc(wcache_cache_index_stat(c, -1, &st), WCACHE_EINVAL);
    ck_assert_ok(wcache_cache_open(c));
    ck_assert_wc(wcache_cache_add_index_json(c, "late", 4, "x", 1, &id), WCACHE_ESTATE);

    wcache_view *v;
    wcache_kv kv[4];
    wcache_list_result res = {.size = sizeof res};
    uint64_t n;
    ck_assert_ok(wcache_view_create(c, &v));
    ck_assert_wc(wcache_view_list_index(v, 0, "a", 1, NULL, kv, 4, &res), WCACHE_ESTATE);
    ck_assert_ok(wcache_view_begin(v, 0));
    ck_assert_wc(wcache_view_list_index(v, WCACHE_INDEX_MAX, "a", 1, NULL, kv, 4, &res),
                 WCACHE_EINVAL);
    ck_assert_wc(wcache_view_list_index(v, 0, NULL, 1, NULL, kv, 4, &res), WCACHE_EINVAL);
    ck_assert_wc(wcache_view_list_index(v, 0, "a", 1, NULL, kv, 0, &res), WCACHE_EINVAL);
    ck_assert_wc(wcache_view_count_index(v, 0, "a", 1, NULL), WCACHE_EINVAL);
    ck_assert_wc(wcache_view_count_index(v, -1, "a", 1, &n), WCACHE_EINVAL);
    ck_assert_ok(wcache_view_list_index(v, 0, "a", 1, NULL, kv, 4, &res));
    ck_assert_uint_eq(res.count, 0);
    ck_assert_int_eq(res.more, 0);

    /* an extractor failure fails the ingest and changes nothing */
    ck_assert_ok(wcache_ingest_put(c, "/k/1", 4, "abc", 3, 1));
    ck_assert_wc(wcache_ingest_put(c, "/k/2", 4, "FAIL", 4, 2), WCACHE_ENOMEM);
    ck_assert_wc(wcache_ingest_put(c, "/k/1", 4, "FAIL", 4, 2), WCACHE_ENOMEM);
    ck_assert_int_eq(wcache_cache_revision(c), 1);
    ck_assert_ok(wcache_ingest_put(c, "/k/2", 4, "", 0, 2)); /* no value */
    ck_assert_ok(wcache_view_begin(v, 0));
    ck_assert_ok(wcache_view_count_index(v, 0, "a", 1, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert_ok(wcache_view_list_index(v, 0, "a", 1, NULL, kv, 4, &res));
    ck_assert_uint_eq(res.count, 1);
    ck_assert_uint_eq(kv[0].key_len, 4);
    ck_assert(memcmp(kv[0].key, "/k/1", 4) == 0);
    ck_assert_uint_eq(kv[0].value_len, 3);
    ck_assert_ok(wcache_cache_index_stat(c, 0, &st));
    ck_assert_uint_eq(st.values, 1);
    ck_assert_uint_eq(st.current, 1);
    wcache_view_free(v);
    wcache_cache_close(c);

    /* closing a configured cache that was never opened frees the indexes */
    ck_assert_ok(wcache_cache_create(&c, NULL));
    ck_assert_ok(wcache_cache_add_index_json(c, "n", 1, "a.b", 3, &id));
    wcache_cache_close(c);
}
END_TEST

/* ---- LIST by value, at the latest and at past revisions ---- */

START_TEST(test_index_list_history)
{
    put_pod("/pods/a", "n1", 1);
    put_pod("/pods/b", "n1", 2);
    put_pod("/pods/c", "n2", 3);
    put_pod("/pods/a", "n2", 4);  /* moves */
    del("/pods/b", 5);            /* deleted */
    put_pod("/pods/b", "n2", 6);  /* re-created elsewhere */
    put_pod("/pods/c", "n2", 7);  /* changes, same node */
    put_pod("/pods/d", NULL, 8);  /* unscheduled */
    put_pod("/pods/d", "n1", 9);  /* scheduled */
    put_pod("/pods/a", NULL, 10); /* loses its value */
    const char *n1[] = {"/pods/a", "/pods/a,/pods/b", "/pods/a,/pods/b", "/pods/b", "", "", "",
                        "",        "/pods/d",         "/pods/d"};
    const char *n2[] = {"",
                        "",
                        "/pods/c",
                        "/pods/a,/pods/c",
                        "/pods/a,/pods/c",
                        "/pods/a,/pods/b,/pods/c",
                        "/pods/a,/pods/b,/pods/c",
                        "/pods/a,/pods/b,/pods/c",
                        "/pods/a,/pods/b,/pods/c",
                        "/pods/b,/pods/c"};
    for (int64_t r = 1; r <= 10; r++) {
        expect_on(r, "n1", n1[r - 1]);
        expect_on(r, "n2", n2[r - 1]);
        expect_on(r, "n3", "");
    }
    expect_on(0, "n2", "/pods/b,/pods/c");

    /* the listed object is the version of that revision */
    wcache_view *v;
    wcache_kv kv[4];
    wcache_list_result res = {.size = sizeof res};
    ck_assert_ok(wcache_view_create(C, &v));
    ck_assert_ok(wcache_view_begin(v, 6));
    ck_assert_ok(wcache_view_list_index(v, NODE, "n2", 2, NULL, kv, 4, &res));
    ck_assert_uint_eq(res.count, 3);
    ck_assert_int_eq(res.remaining, 0);
    ck_assert_int_eq(kv[2].mod_revision, 3);
    ck_assert_int_eq(kv[1].create_revision, 6);
    ck_assert_int_eq(kv[0].mod_revision, 4);
    ck_assert_int_eq(kv[0].version, 2);

    /* a key range narrows the value's objects */
    wcache_list_opts lo = {.size = sizeof lo, .start = "/pods/b", .start_len = 7};
    ck_assert_ok(wcache_view_list_index(v, NODE, "n2", 2, &lo, kv, 4, &res));
    ck_assert_uint_eq(res.count, 2);
    lo = (wcache_list_opts){.size = sizeof lo, .prefix = "/pods/c", .prefix_len = 7};
    ck_assert_ok(wcache_view_list_index(v, NODE, "n2", 2, &lo, kv, 4, &res));
    ck_assert_uint_eq(res.count, 1);
    wcache_view_free(v);
}
END_TEST

START_TEST(test_index_batch_and_load)
{
    wcache_batch *b;
    ck_assert_ok(wcache_batch_create(C, &b));
    char v[128];
    size_t n = pod(v, sizeof v, "n1", 1);
    ck_assert_ok(wcache_batch_put(b, "/p/1", 4, v, n));
    ck_assert_ok(wcache_batch_put(b, "/p/2", 4, v, n));
    n = pod(v, sizeof v, "n2", 1);
    ck_assert_ok(wcache_batch_put(b, "/p/3", 4, v, n));
    ck_assert_ok(wcache_ingest_batch(C, b, 1));
    wcache_batch_clear(b);
    n = pod(v, sizeof v, "n2", 2);
    ck_assert_ok(wcache_batch_put(b, "/p/1", 4, v, n));
    ck_assert_ok(wcache_batch_delete(b, "/p/2", 4));
    ck_assert_ok(wcache_batch_delete(b, "/nope", 5)); /* fails the batch */
    ck_assert_wc(wcache_ingest_batch(C, b, 2), WCACHE_ENOTFOUND);
    expect_on(0, "n1", "/p/1,/p/2");
    wcache_batch_clear(b);
    ck_assert_ok(wcache_batch_put(b, "/p/1", 4, v, n));
    ck_assert_ok(wcache_batch_delete(b, "/p/2", 4));
    ck_assert_ok(wcache_ingest_batch(C, b, 2));
    expect_on(0, "n1", "");
    expect_on(0, "n2", "/p/1,/p/3");
    expect_on(1, "n1", "/p/1,/p/2");
    wcache_batch_free(b);

    /* a bulk load indexes what it loads */
    wcache_cache *c2;
    int id;
    ck_assert_ok(wcache_cache_create(&c2, NULL));
    ck_assert_ok(wcache_cache_add_index_json(c2, "node", 4, "spec.nodeName", 13, &id));
    ck_assert_ok(wcache_cache_open(c2));
    ck_assert_ok(wcache_batch_create(c2, &b));
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "/p/%02d", 49 - i);
        n = pod(v, sizeof v, i % 2 ? "odd" : "even", 1);
        ck_assert_ok(wcache_batch_put_meta(b, k, strlen(k), v, n, 1, 1, 1));
    }
    ck_assert_ok(wcache_ingest_load(c2, b, 7));
    wcache_view *vw;
    uint64_t cnt;
    wcache_kv kv[32];
    wcache_list_result res = {.size = sizeof res};
    ck_assert_ok(wcache_view_create(c2, &vw));
    ck_assert_ok(wcache_view_begin(vw, 7));
    ck_assert_ok(wcache_view_count_index(vw, id, "odd", 3, &cnt));
    ck_assert_uint_eq(cnt, 25);
    ck_assert_ok(wcache_view_list_index(vw, id, "even", 4, NULL, kv, 32, &res));
    ck_assert_uint_eq(res.count, 25);
    for (size_t i = 1; i < res.count; i++)
        ck_assert(tu_keycmp(kv[i - 1].key, kv[i - 1].key_len, kv[i].key, kv[i].key_len) < 0);
    wcache_view_free(vw);
    wcache_batch_free(b);
    wcache_cache_close(c2);
}
END_TEST

/* ---- the JSON extractor agrees with a full JSON parse ---- */

START_TEST(test_index_json_extractor)
{
    static const struct {
        const char *json, *want; /* want NULL: no value */
    } cases[] = {
        {"{\"spec\":{\"nodeName\":\"a\"}}", "a"},
        {"  {\"spec\" : { \"x\":[1,2,{\"nodeName\":\"no\"}], \"nodeName\" : \"b\" } }\n", "b"},
        {"{\"spec\":{\"nodeName\":\"c\"},\"spec\":{\"other\":1}}", NULL},
        {"{\"spec\":{\"nodeName\":\"x\"},\"spec\":{\"nodeName\":\"d\"}}", "d"},
        {"{\"spec\":{\"nodeName\":\"e\\\"q\"}}", "e\"q"},
        {"{\"spec\":{\"nodeName\":\"f\"}} trailing", NULL},
        {"{\"spec\":{\"nodeName\":\"g\"}", NULL},
        {"{\"spec\":{\"nodeName\":7}}", NULL},
        {"[\"spec\"]", NULL},
        {"{\"a\":\"\\q\",\"spec\":{\"nodeName\":\"h\"}}", NULL},
        {"{\"n\":1e400,\"spec\":{\"nodeName\":\"i\"}}", NULL},
        {"{\"n\":-0.5,\"t\":true,\"f\":false,\"z\":null,\"spec\":{\"nodeName\":\"j\"}}", "j"},
        {"{\"spec\":{\"nodeName\":\"k\\u00e9\"}}", "k\xc3\xa9"},
        {"{\"n\":01,\"spec\":{\"nodeName\":\"l\"}}", NULL},
        {"{\"spec\":{\"node\\u004eame\":\"m\"}}", "m"},
        {"{\"x\":\"\xc3\xa9\",\"spec\":{\"nodeName\":\"o\"}}", "o"},
        {"{\"x\":\"\xff\",\"spec\":{\"nodeName\":\"p\"}}", NULL}, /* not UTF-8 */
        {"{\"spec\":{\"nodeName\":\"\"}}", ""},
        {"{\"spec\":\"nodeName\"}", NULL},
        {"", NULL},
        {"{\"spec\":{\"nodeName\":\"q\",}}", NULL},
        {"{\"big\":123456789012345678901234567890,\"spec\":{\"nodeName\":\"r\"}}", NULL},
        {"{\"spec\":{\"nodeName\":\"s\t\"}}", NULL}, /* raw control character */
    };
    size_t ncases = sizeof cases / sizeof *cases, nval = 0;
    for (size_t i = 0; i < ncases; i++) {
        char key[16];
        snprintf(key, sizeof key, "/j/%02zu", i);
        ck_assert_ok(wcache_ingest_put(C, key, strlen(key), cases[i].json,
                                       strlen(cases[i].json), (int64_t)i + 1));
    }
    wcache_view *v;
    ck_assert_ok(wcache_view_create(C, &v));
    ck_assert_ok(wcache_view_begin(v, 0));
    for (size_t i = 0; i < ncases; i++) {
        if (!cases[i].want)
            continue;
        nval++;
        char key[16];
        snprintf(key, sizeof key, "/j/%02zu", i);
        wcache_kv kv[8];
        wcache_list_result res = {.size = sizeof res};
        ck_assert_ok(wcache_view_list_index(v, NODE, cases[i].want, strlen(cases[i].want), NULL,
                                            kv, 8, &res));
        ck_assert_msg(res.count == 1 && kv[0].key_len == strlen(key) &&
                          !memcmp(kv[0].key, key, strlen(key)),
                      "case %zu: %s not under \"%s\"", i, cases[i].json, cases[i].want);
    }
    wcache_index_stat st = {.size = sizeof st};
    ck_assert_ok(wcache_cache_index_stat(C, NODE, &st));
    ck_assert_uint_eq(st.current, nval);
    wcache_view_free(v);
}
END_TEST

/* ---- key order of large matches: shared prefixes, NULs, prefixes ---- */

START_TEST(test_index_sort_order)
{
    tu_rng r = {tu_seed(77)};
    static const char alpha[] = {0, 1, 'a', 'b'};
    char val[128];
    size_t vn = pod(val, sizeof val, "big", 1);
    int64_t rev = 0;
    for (int i = 0; i < 1500; i++) {
        char key[40] = "/registry/pods/ns/";
        size_t kl = 18 + (size_t)tu_below(&r, 12);
        for (size_t j = 18; j < kl; j++)
            key[j] = alpha[tu_below(&r, 4)];
        ck_assert_ok(wcache_ingest_put(C, key, kl, val, vn, ++rev));
    }
    uint64_t objects = 0, seen = 0;
    wcache_stat st = {.size = sizeof st};
    ck_assert_ok(wcache_cache_stat(C, &st));
    objects = st.objects;
    wcache_view *v;
    ck_assert_ok(wcache_view_create(C, &v));
    ck_assert_ok(wcache_view_begin(v, 0));
    char tok[512] = "", last[40];
    size_t lastlen = 0;
    for (;;) {
        wcache_list_opts lo = {.size = sizeof lo, .token = tok, .token_len = strlen(tok)};
        wcache_list_result res = {.size = sizeof res};
        wcache_kv kv[97];
        ck_assert_ok(wcache_view_list_index(v, NODE, "big", 3, &lo, kv, 97, &res));
        for (size_t i = 0; i < res.count; i++, seen++) {
            if (seen)
                ck_assert(tu_keycmp(last, lastlen, kv[i].key, kv[i].key_len) < 0);
            memcpy(last, kv[i].key, kv[i].key_len);
            lastlen = kv[i].key_len;
        }
        if (!res.more)
            break;
        snprintf(tok, sizeof tok, "%s", res.token);
    }
    ck_assert_uint_eq(seen, objects);
    wcache_view_free(v);
}
END_TEST

/* ---- paging ---- */

START_TEST(test_index_paging_tokens)
{
    for (int i = 0; i < 10; i++) {
        char k[16];
        snprintf(k, sizeof k, "/pods/%d", 9 - i);
        put_pod(k, i == 4 ? "n2" : "n1", i + 1);
    }
    wcache_view *v;
    wcache_kv kv[3];
    wcache_list_result res = {.size = sizeof res};
    wcache_list_opts lo = {.size = sizeof lo, .count_remaining = 1};
    ck_assert_ok(wcache_view_create(C, &v));
    ck_assert_ok(wcache_view_begin(v, 0));
    ck_assert_ok(wcache_view_list_index(v, NODE, "n1", 2, &lo, kv, 3, &res));
    ck_assert_uint_eq(res.count, 3);
    ck_assert_int_eq(res.more, 1);
    ck_assert_int_eq(res.remaining, 6);
    ck_assert(memcmp(kv[0].key, "/pods/0", 7) == 0);
    char tok[256];
    snprintf(tok, sizeof tok, "%s", res.token);
    int64_t trev;
    ck_assert_ok(wcache_token_revision(tok, strlen(tok), &trev));
    ck_assert_int_eq(trev, 10);

    /* the token is bound to the index value, and to index LISTs */
    lo.token = tok;
    lo.token_len = strlen(tok);
    ck_assert_wc(wcache_view_list_index(v, NODE, "n2", 2, &lo, kv, 3, &res), WCACHE_EBADTOKEN);
    ck_assert_wc(wcache_view_list(v, &lo, kv, 3, &res), WCACHE_EBADTOKEN);
    lo.prefix = "/pods/";
    lo.prefix_len = 6;
    ck_assert_wc(wcache_view_list_index(v, NODE, "n1", 2, &lo, kv, 3, &res), WCACHE_EBADTOKEN);
    lo.prefix = NULL;
    lo.prefix_len = 0;
    lo.token_len = 5;
    ck_assert_wc(wcache_view_list_index(v, NODE, "n1", 2, &lo, kv, 3, &res), WCACHE_EBADTOKEN);
    lo.token_len = strlen(tok);

    /* a later page reads the token's revision, whatever changed since */
    put_pod("/pods/5", "n2", 11);
    ck_assert_ok(wcache_view_begin(v, 0));
    ck_assert_wc(wcache_view_list_index(v, NODE, "n1", 2, &lo, kv, 3, &res), WCACHE_EBADTOKEN);
    ck_assert_ok(wcache_view_begin(v, trev));
    ck_assert_ok(wcache_view_list_index(v, NODE, "n1", 2, &lo, kv, 3, &res));
    ck_assert_uint_eq(res.count, 3);
    ck_assert(memcmp(kv[0].key, "/pods/3", 7) == 0); /* /pods/5 is n2: skipped */
    ck_assert(memcmp(kv[2].key, "/pods/6", 7) == 0);
    ck_assert_int_eq(res.remaining, 3);
    snprintf(tok, sizeof tok, "%s", res.token);
    lo.token_len = strlen(tok);
    ck_assert_ok(wcache_view_list_index(v, NODE, "n1", 2, &lo, kv, 3, &res));
    ck_assert_uint_eq(res.count, 3);
    ck_assert_int_eq(res.more, 0);
    ck_assert_int_eq(res.remaining, 0);
    ck_assert_ptr_null(res.token);
    wcache_view_free(v);
}
END_TEST

/* ---- watch by index value ---- */

typedef struct got {
    wcache_event_type type;
    char key[32];
    char node[16]; /* from the delivered object */
    int64_t rev;
} got;

static void node_of(const wcache_kv *kv, char *out, size_t cap)
{
    const char *p = kv->value ? memmem(kv->value, kv->value_len, "nodeName\":\"", 11) : NULL;
    out[0] = 0;
    if (p) {
        p += 11;
        /* values are not NUL-terminated: stay inside value_len */
        const char *end = (const char *)kv->value + kv->value_len;
        const char *e = memchr(p, '"', (size_t)(end - p));
        if (e)
            snprintf(out, cap, "%.*s", (int)(e - p), p);
    }
}

static size_t take(wcache_watch *w, got *g, size_t cap)
{
    wcache_watch_event evs[64];
    size_t n, total = 0;
    while (wcache_watch_next(w, evs, 64, &n) == WCACHE_OK && n) {
        for (size_t i = 0; i < n; i++) {
            ck_assert_uint_lt(total, cap);
            got *x = &g[total++];
            x->type = evs[i].type;
            x->rev = evs[i].revision;
            snprintf(x->key, sizeof x->key, "%.*s", (int)evs[i].kv.key_len,
                     (const char *)evs[i].kv.key);
            node_of(&evs[i].kv, x->node, sizeof x->node);
            wcache_event_unref(evs[i].ev);
        }
    }
    return total;
}

static void expect_got(const got *g, wcache_event_type t, const char *key, const char *node,
                       int64_t rev)
{
    ck_assert_int_eq(g->type, t);
    ck_assert_str_eq(g->key, key);
    ck_assert_str_eq(g->node, node);
    ck_assert_int_eq(g->rev, rev);
}

static wcache_watch *watch_node(const char *node, int64_t from, int initial)
{
    wcache_watch_opts o = {.size = sizeof o,
                           .start_revision = from,
                           .initial_events = initial,
                           .index_id = NODE,
                           .index_value = node,
                           .index_value_len = strlen(node)};
    wcache_watch *w;
    ck_assert_ok(wcache_watch_open(C, &o, &w));
    return w;
}

static void moves(int64_t base)
{
    put_pod("/pods/a", "n1", base + 1); /* ADDED */
    put_pod("/pods/a", "n1", base + 2); /* MODIFIED */
    put_pod("/pods/b", "n2", base + 3); /* not ours */
    put_pod("/pods/a", "n2", base + 4); /* moved away: DELETED, last state on n1 */
    put_pod("/pods/b", "n1", base + 5); /* moved in: ADDED */
    del("/pods/b", base + 6);           /* DELETED */
    put_pod("/pods/c", NULL, base + 7); /* no value: nothing */
    put_pod("/pods/c", "n1", base + 8); /* ADDED */
}

static void expect_moves(const got *g, int64_t base)
{
    expect_got(&g[0], WCACHE_EV_ADDED, "/pods/a", "n1", base + 1);
    expect_got(&g[1], WCACHE_EV_MODIFIED, "/pods/a", "n1", base + 2);
    expect_got(&g[2], WCACHE_EV_DELETED, "/pods/a", "n1", base + 4);
    expect_got(&g[3], WCACHE_EV_ADDED, "/pods/b", "n1", base + 5);
    expect_got(&g[4], WCACHE_EV_DELETED, "/pods/b", "n1", base + 6);
    expect_got(&g[5], WCACHE_EV_ADDED, "/pods/c", "n1", base + 8);
}

START_TEST(test_index_watch_live_and_replay)
{
    wcache_watch *w = watch_node("n1", 0, 0);
    wcache_watch *w2 = watch_node("n2", 0, 0);
    moves(0);
    got g[32];
    size_t n = take(w, g, 32);
    ck_assert_uint_eq(n, 6);
    expect_moves(g, 0);
    n = take(w2, g, 32);
    ck_assert_uint_eq(n, 3); /* b ADDED, a ADDED (moved in), b DELETED (moved away) */
    expect_got(&g[0], WCACHE_EV_ADDED, "/pods/b", "n2", 3);
    expect_got(&g[1], WCACHE_EV_ADDED, "/pods/a", "n2", 4);
    expect_got(&g[2], WCACHE_EV_DELETED, "/pods/b", "n2", 5);
    wcache_watch_close(w2);

    del("/pods/a", 9);
    del("/pods/c", 10); /* n1's watcher: DELETED */
    n = take(w, g, 32);
    ck_assert_uint_eq(n, 1);
    expect_got(&g[0], WCACHE_EV_DELETED, "/pods/c", "n1", 10);
    wcache_watch_close(w);
    /* the same history, replayed from the ring */
    moves(10);
    w = watch_node("n1", 10, 0);
    n = take(w, g, 32);
    ck_assert_uint_eq(n, 6);
    expect_moves(g, 10);
    wcache_watch_close(w);

    /* a key range applies on top of the value */
    wcache_watch_opts po = {.size = sizeof po,
                            .prefix = "/pods/c",
                            .prefix_len = 7,
                            .index_id = NODE,
                            .index_value = "n1",
                            .index_value_len = 2};
    ck_assert_ok(wcache_watch_open(C, &po, &w));
    put_pod("/pods/a", "n1", 19);
    put_pod("/pods/c", "n1", 20);
    n = take(w, g, 32);
    ck_assert_uint_eq(n, 1);
    expect_got(&g[0], WCACHE_EV_MODIFIED, "/pods/c", "n1", 20);
    wcache_watch_close(w);

    /* a caller built before the index fields existed gets no index filter */
    wcache_watch_opts old = {.size = (uint32_t)offsetof(wcache_watch_opts, index_id),
                             .index_value = "n1",
                             .index_value_len = 2};
    ck_assert_ok(wcache_watch_open(C, &old, &w));
    put_pod("/pods/z", "n9", 21);
    n = take(w, g, 32);
    ck_assert_uint_eq(n, 1);
    expect_got(&g[0], WCACHE_EV_ADDED, "/pods/z", "n9", 21);
    wcache_watch_close(w);
    old.size = (uint32_t)offsetof(wcache_watch_opts, queue_size);
    ck_assert_wc(wcache_watch_open(C, &old, &w), WCACHE_EINVAL);

    /* bad index ids */
    po.index_id = WCACHE_INDEX_MAX;
    ck_assert_wc(wcache_watch_open(C, &po, &w), WCACHE_EINVAL);
    po.index_id = -1;
    ck_assert_wc(wcache_watch_open(C, &po, &w), WCACHE_EINVAL);
}
END_TEST

START_TEST(test_index_watch_initial_events)
{
    put_pod("/pods/b", "n1", 1);
    put_pod("/pods/a", "n1", 2);
    put_pod("/pods/c", "n2", 3);
    put_pod("/pods/d", "n1", 4);
    put_pod("/pods/d", "n2", 5);
    wcache_watch *w = watch_node("n1", 0, 1);
    put_pod("/pods/c", "n1", 6);
    got g[16];
    size_t n = take(w, g, 16);
    ck_assert_uint_eq(n, 4);
    expect_got(&g[0], WCACHE_EV_ADDED, "/pods/a", "n1", 2);
    expect_got(&g[1], WCACHE_EV_ADDED, "/pods/b", "n1", 1);
    ck_assert_int_eq(g[2].type, WCACHE_EV_INITIAL_END);
    ck_assert_int_eq(g[2].rev, 5);
    expect_got(&g[3], WCACHE_EV_ADDED, "/pods/c", "n1", 6);
    wcache_watch_close(w);
}
END_TEST

/* ---- watchers by value follow a randomized run ---- */

#define WK 40
#define WREVS 2400

static signed char wmodel[WREVS + 1][WK];

typedef struct follower {
    wcache_watch *w;
    int node;
    bool in[WK];
    int64_t last;
} follower;

/* "/w/NN" -> NN (keys are not NUL-terminated: no sscanf). */
static int key_index(const wcache_kv *kv)
{
    const char *k = kv->key;
    ck_assert_uint_eq(kv->key_len, 5);
    return (k[3] - '0') * 10 + (k[4] - '0');
}

/* Apply what the watcher has: each event must be consistent with the set. */
static void follow(follower *f)
{
    wcache_watch_event evs[128];
    size_t n;
    char want[8], got_node[16];
    snprintf(want, sizeof want, "n%d", f->node);
    while (wcache_watch_next(f->w, evs, 128, &n) == WCACHE_OK && n) {
        for (size_t i = 0; i < n; i++) {
            wcache_watch_event *e = &evs[i];
            if (e->type == WCACHE_EV_INITIAL_END || e->type == WCACHE_EV_BOOKMARK) {
                wcache_event_unref(e->ev);
                continue;
            }
            ck_assert_int_gt(e->revision, 0);
            int k = key_index(&e->kv);
            node_of(&e->kv, got_node, sizeof got_node);
            ck_assert_str_eq(got_node, want);
            if (e->type == WCACHE_EV_ADDED)
                ck_assert_msg(!f->in[k], "ADDED %d twice at %lld", k, (long long)e->revision);
            else
                ck_assert_msg(f->in[k], "%d of %d absent at %lld", e->type, k,
                              (long long)e->revision);
            f->in[k] = e->type != WCACHE_EV_DELETED;
            f->last = e->revision;
            wcache_event_unref(e->ev);
        }
    }
}

static void follower_open(follower *f, int node, int64_t from, int initial, int64_t model_rev)
{
    char nn[8];
    snprintf(nn, sizeof nn, "n%d", node);
    wcache_watch_opts o = {.size = sizeof o,
                           .start_revision = from,
                           .initial_events = initial,
                           .queue_size = 1 << 16,
                           .index_id = NODE,
                           .index_value = nn,
                           .index_value_len = strlen(nn)};
    memset(f, 0, sizeof *f);
    f->node = node;
    ck_assert_ok(wcache_watch_open(C, &o, &f->w));
    for (int k = 0; !initial && k < WK; k++)
        f->in[k] = wmodel[model_rev][k] == node;
}

START_TEST(test_index_watch_model)
{
    tu_rng r = {tu_seed(0x77a7c4)};
    follower fs[10];
    int nf = 0;
    memset(wmodel[0], -1, WK);
    for (int node = 0; node < 4; node++)
        follower_open(&fs[nf++], node, 0, 0, 0);
    for (int64_t rev = 1; rev <= WREVS; rev++) {
        memcpy(wmodel[rev], wmodel[rev - 1], WK);
        int k = (int)tu_below(&r, WK);
        char key[16], val[128];
        snprintf(key, sizeof key, "/w/%02d", k);
        if (wmodel[rev][k] != -1 && tu_below(&r, 5) == 0) {
            ck_assert_ok(wcache_ingest_delete(C, key, strlen(key), rev));
            wmodel[rev][k] = -1;
        } else {
            int node = (int)tu_below(&r, 5) - 1; /* -1: no value */
            char nn[8];
            snprintf(nn, sizeof nn, "n%d", node);
            size_t n = pod(val, sizeof val, node >= 0 ? nn : NULL, (int)rev);
            ck_assert_ok(wcache_ingest_put(C, key, strlen(key), val, n, rev));
            wmodel[rev][k] = (signed char)(node >= 0 ? node : -2);
        }
        if (rev == 800) /* replays history from 400 */
            follower_open(&fs[nf++], 1, 400, 0, 400);
        if (rev == 1200) /* starts from the index's state */
            follower_open(&fs[nf++], 2, 0, 1, 1200);
        if (rev % 50 == 0)
            for (int i = 0; i < nf; i++)
                follow(&fs[i]);
    }
    for (int i = 0; i < nf; i++) {
        follow(&fs[i]);
        for (int k = 0; k < WK; k++)
            ck_assert_msg(fs[i].in[k] == (wmodel[WREVS][k] == fs[i].node),
                          "follower %d (n%d): key %d", i, fs[i].node, k);
        wcache_watch_close(fs[i].w);
    }
}
END_TEST

/* ---- compaction ---- */

START_TEST(test_index_compaction_prunes)
{
    int64_t rev = 0;
    const char *nodes[] = {"n1", "n2", "n3"};
    for (int round = 0; round < 30; round++) {
        for (int i = 0; i < 10; i++) {
            char k[16];
            snprintf(k, sizeof k, "/pods/%d", i);
            put_pod(k, nodes[(round + i) % 3], ++rev);
        }
    }
    wcache_index_stat st = {.size = sizeof st};
    ck_assert_ok(wcache_cache_index_stat(C, NODE, &st));
    ck_assert_uint_eq(st.current, 10);
    ck_assert_uint_eq(st.postings, 300);
    ck_assert_uint_eq(st.values, 3);

    /* a view pinned in the past keeps what it can see */
    wcache_view *v;
    ck_assert_ok(wcache_view_create(C, &v));
    ck_assert_ok(wcache_view_begin(v, 5));
    ck_assert_ok(wcache_cache_compact(C, rev));
    expect_in(v, "n1", "/pods/0,/pods/3");
    ck_assert_ok(wcache_cache_index_stat(C, NODE, &st));
    ck_assert_uint_gt(st.postings, 10);
    wcache_view_end(v);
    ck_assert_ok(wcache_cache_compact(C, rev)); /* catches up */
    ck_assert_ok(wcache_cache_index_stat(C, NODE, &st));
    ck_assert_uint_eq(st.postings, 10);
    ck_assert_uint_eq(st.current, 10);

    /* deleted objects leave nothing; emptied values go */
    for (int i = 0; i < 10; i++) {
        char k[16];
        snprintf(k, sizeof k, "/pods/%d", i);
        del(k, ++rev);
    }
    ck_assert_ok(wcache_cache_compact(C, rev));
    ck_assert_ok(wcache_cache_index_stat(C, NODE, &st));
    ck_assert_uint_eq(st.postings, 0);
    ck_assert_uint_eq(st.current, 0);
    ck_assert_uint_eq(st.values, 0);
    expect_on(rev, "n1", "");
    put_pod("/pods/0", "n1", ++rev);
    expect_on(rev, "n1", "/pods/0");
    ck_assert_wc(wcache_view_begin(v, 5), WCACHE_ECOMPACTED);
    wcache_view_free(v);
}
END_TEST

/* ---- randomized comparison with a naive model ---- */

#define MK 48      /* keys */
#define MNODES 6   /* node values; -1 absent, -2 present without a value */
#define MREVS 4096 /* revisions kept by the model */

static signed char model[MREVS + 1][MK];

static int64_t apply_random(tu_rng *r, int64_t rev, signed char *state)
{
    int k = (int)tu_below(r, MK);
    char key[16], val[128];
    snprintf(key, sizeof key, "/m/%02d", k);
    if (state[k] != -1 && tu_below(r, 4) == 0) {
        ck_assert_ok(wcache_ingest_delete(C, key, strlen(key), rev));
        state[k] = -1;
        return rev;
    }
    int node = (int)tu_below(r, MNODES + 2) - 2; /* -2, -1: no value */
    size_t n;
    if (node == -1) {
        n = (size_t)snprintf(val, sizeof val, "not json %lld", (long long)rev);
    } else if (node == -2) {
        n = pod(val, sizeof val, NULL, (int)rev);
    } else {
        char nn[8];
        snprintf(nn, sizeof nn, "n%d", node);
        n = pod(val, sizeof val, nn, (int)rev);
    }
    ck_assert_ok(wcache_ingest_put(C, key, strlen(key), val, n, rev));
    state[k] = (signed char)(node >= 0 ? node : -2);
    return rev;
}

static void compare_at(int64_t rev)
{
    wcache_view *v;
    wcache_kv kv[MK];
    ck_assert_ok(wcache_view_create(C, &v));
    ck_assert_ok(wcache_view_begin(v, rev));
    for (int node = 0; node < MNODES; node++) {
        char nn[8];
        snprintf(nn, sizeof nn, "n%d", node);
        wcache_list_result res = {.size = sizeof res};
        ck_assert_ok(wcache_view_list_index(v, NODE, nn, strlen(nn), NULL, kv, MK, &res));
        size_t j = 0;
        for (int k = 0; k < MK; k++) {
            if (model[rev][k] != node)
                continue;
            char key[16];
            snprintf(key, sizeof key, "/m/%02d", k);
            ck_assert_msg(j < res.count, "rev %lld %s: %s missing", (long long)rev, nn, key);
            ck_assert_uint_eq(kv[j].key_len, strlen(key));
            ck_assert_msg(!memcmp(kv[j].key, key, strlen(key)), "rev %lld %s: %s vs %.*s",
                          (long long)rev, nn, key, (int)kv[j].key_len, (const char *)kv[j].key);
            char got_node[16];
            node_of(&kv[j], got_node, sizeof got_node);
            ck_assert_str_eq(got_node, nn);
            j++;
        }
        ck_assert_uint_eq(j, res.count);
        uint64_t cnt;
        ck_assert_ok(wcache_view_count_index(v, NODE, nn, strlen(nn), &cnt));
        ck_assert_uint_eq(cnt, j);
    }
    wcache_view_free(v);
}

START_TEST(test_index_model)
{
    tu_rng r = {tu_seed(0x1d3c5a7e)};
    int64_t window = 200;
    memset(model[0], -1, MK);
    int64_t revs = tu_long() ? MREVS : 2500;
    for (int64_t rev = 1; rev <= revs; rev++) {
        memcpy(model[rev], model[rev - 1], MK);
        apply_random(&r, rev, model[rev]);
        if (rev % 97 == 0 && rev > window)
            ck_assert_ok(wcache_cache_compact(C, rev - window));
        if (rev % 13 == 0) {
            int64_t lo = wcache_cache_compacted_revision(C);
            lo = lo < 1 ? 1 : lo;
            compare_at(rev);
            compare_at(tu_range(&r, lo, rev));
        }
    }
    wcache_index_stat st = {.size = sizeof st};
    ck_assert_ok(wcache_cache_compact(C, revs));
    ck_assert_ok(wcache_cache_index_stat(C, NODE, &st));
    uint64_t live = 0;
    for (int k = 0; k < MK; k++)
        live += model[revs][k] >= 0;
    ck_assert_uint_eq(st.current, live);
    ck_assert_uint_eq(st.postings, live);
    compare_at(revs);
}
END_TEST

/* ---- a failed ingest changes nothing, whichever allocation fails ---- */

/* Every node's list and count at the latest revision, as one string. */
static void state_of(wcache_cache *c, int id, char *out, size_t cap)
{
    wcache_view *v;
    size_t o = 0;
    ck_assert_ok(wcache_view_create(c, &v));
    ck_assert_ok(wcache_view_begin(v, 0));
    o += (size_t)snprintf(out + o, cap - o, "@%lld", (long long)wcache_view_revision(v));
    for (int node = 0; node < 4; node++) {
        char nn[8];
        snprintf(nn, sizeof nn, "n%d", node);
        wcache_kv kv[64];
        wcache_list_result res = {.size = sizeof res};
        ck_assert_ok(wcache_view_list_index(v, id, nn, strlen(nn), NULL, kv, 64, &res));
        o += (size_t)snprintf(out + o, cap - o, " %s:", nn);
        for (size_t i = 0; i < res.count; i++)
            o += (size_t)snprintf(out + o, cap - o, "%.*s,", (int)kv[i].key_len,
                                  (const char *)kv[i].key);
    }
    wcache_view_free(v);
}

static wcache_code oom_op(wcache_cache *c, tu_rng *r, int64_t rev, wcache_batch *b)
{
    char key[16], val[128], nn[8];
    snprintf(key, sizeof key, "/o/%02d", (int)tu_below(r, 24));
    snprintf(nn, sizeof nn, "n%d", (int)tu_below(r, 4));
    size_t n = pod(val, sizeof val, nn, (int)rev);
    switch (tu_below(r, 4)) {
    case 0: return wcache_ingest_delete(c, key, strlen(key), rev);
    case 1: {
        wcache_batch_clear(b);
        for (int i = 0; i < 6; i++) {
            snprintf(key, sizeof key, "/b/%d/%02d", (int)rev % 3, i);
            snprintf(nn, sizeof nn, "n%d", (int)tu_below(r, 4));
            n = pod(val, sizeof val, nn, (int)rev);
            wcache_code rc = wcache_batch_put(b, key, strlen(key), val, n);
            if (rc != WCACHE_OK)
                return rc;
        }
        return wcache_ingest_batch(c, b, rev);
    }
    default: return wcache_ingest_put(c, key, strlen(key), val, n, rev);
    }
}

START_TEST(test_index_oom)
{
    tu_alloc_state st;
    memset(&st, 0, sizeof st);
    st.fail_at = -1;
    wcache_allocator a = tu_allocator(&st);
    wcache_cache *c;
    wcache_batch *b;
    int id;
    ck_assert_ok(wcache_cache_create(&c, &a));
    ck_assert_ok(wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 0));
    ck_assert_ok(wcache_cache_set_param(c, WCACHE_P_RETAIN_REVISIONS, 20));
    ck_assert_ok(wcache_cache_add_index_json(c, "node", 4, "spec.nodeName", 13, &id));
    ck_assert_ok(wcache_cache_open(c));
    tu_rng r = {tu_seed(5)};
    char before[4096], after[4096];
    int64_t rev = 0;
    for (int step = 0; step < 150; step++) {
        tu_rng saved = r;
        state_of(c, id, before, sizeof before);
        for (long fail = 0;; fail++) {
            r = saved;
            ck_assert_ok(wcache_batch_create(c, &b)); /* outside the armed window */
            long failed = st.failed;
            tu_alloc_arm(&st, fail);
            wcache_code rc = oom_op(c, &r, rev + 1, b);
            tu_alloc_arm(&st, -1);
            wcache_batch_free(b);
            if (rc == WCACHE_OK) {
                rev++;
                break;
            }
            if (rc == WCACHE_ENOTFOUND && st.failed == failed)
                break; /* a delete of an absent key: nothing to do */
            ck_assert_msg(rc == WCACHE_ENOMEM, "step %d fail %ld: %s", step, fail,
                          wcache_strerror(rc));
            state_of(c, id, after, sizeof after);
            ck_assert_msg(!strcmp(before, after), "step %d fail %ld: %s became %s", step, fail,
                          before, after);
        }
    }
    wcache_cache_close(c);
    ck_assert_int_eq(st.live, 0);
    ck_assert_int_eq(st.bad_frees, 0);
}
END_TEST

/* ---- a reader racing the writer ---- */

static _Atomic int STOP;

static void *reader(void *arg)
{
    (void)arg;
    wcache_view *v;
    wcache_kv kv[64];
    ck_assert_ok(wcache_view_create(C, &v));
    long rounds = 0;
    while (!atomic_load(&STOP) || rounds < 10) {
        rounds++;
        if (wcache_view_begin(v, 0) != WCACHE_OK)
            continue;
        for (int node = 0; node < 4; node++) {
            char nn[8], got_node[16];
            snprintf(nn, sizeof nn, "n%d", node);
            wcache_list_result res = {.size = sizeof res};
            ck_assert_ok(wcache_view_list_index(v, NODE, nn, strlen(nn), NULL, kv, 64, &res));
            for (size_t i = 0; i < res.count; i++) {
                node_of(&kv[i], got_node, sizeof got_node);
                ck_assert_str_eq(got_node, nn);
            }
        }
        wcache_view_end(v);
    }
    wcache_view_free(v);
    return NULL;
}

START_TEST(test_index_concurrent_reader)
{
    pthread_t t[2];
    atomic_store(&STOP, 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, reader, NULL), 0);
    tu_rng r = {tu_seed(42)};
    int n = tu_long() ? 200000 : 20000;
    for (int64_t rev = 1; rev <= n; rev++) {
        char key[16], nn[8];
        snprintf(key, sizeof key, "/r/%02d", (int)tu_below(&r, 40));
        snprintf(nn, sizeof nn, "n%d", (int)tu_below(&r, 4));
        put_pod(key, nn, rev);
        if (rev % 64 == 0)
            ck_assert_ok(wcache_cache_compact(C, rev - 32));
    }
    atomic_store(&STOP, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
}
END_TEST

Suite *index_suite(void)
{
    Suite *s = suite_create("index");
    TCase *tc = tcase_create("index");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_index_registration);
    tcase_add_test(tc, test_index_list_history);
    tcase_add_test(tc, test_index_batch_and_load);
    tcase_add_test(tc, test_index_json_extractor);
    tcase_add_test(tc, test_index_sort_order);
    tcase_add_test(tc, test_index_paging_tokens);
    tcase_add_test(tc, test_index_watch_live_and_replay);
    tcase_add_test(tc, test_index_watch_initial_events);
    tcase_add_test(tc, test_index_watch_model);
    tcase_add_test(tc, test_index_compaction_prunes);
    tcase_add_test(tc, test_index_model);
    tcase_add_test(tc, test_index_oom);
    tcase_add_test(tc, test_index_concurrent_reader);
    tcase_set_timeout(tc, tu_timeout(120));
    suite_add_tcase(s, tc);
    return s;
}
