/*
 * wb_selector.c - label selectors and label extraction (lib/selector.c).
 *
 * The expected results are Kubernetes' documented semantics, the cases of
 * apimachinery's labels tests restated as tables: what parses, what does
 * not (and where the message points), and what matches which label set.
 * Label sets are written "k=v,k2=v2" and go through the JSON extraction,
 * so every match case exercises both halves the watch filter uses.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "selector.h"
#include "testutil.h"

static tu_alloc_state ST;
static wci_alloc AL;

static void setup(void)
{
    AL = tu_wci_alloc(&ST);
}

static void teardown(void)
{
    tu_wci_alloc_done(&ST);
}

/* {"metadata":{"labels":{...}}} from "k=v,k2=v2" (no quoting needed). */
static char *labels_json(const char *spec)
{
    size_t cap = 64 + 4 * strlen(spec), n = 0;
    char *j = malloc(cap);
    ck_assert_ptr_nonnull(j);
    n += (size_t)snprintf(j, cap, "{\"metadata\":{\"labels\":{");
    for (const char *p = spec; *p;) {
        size_t kl = strcspn(p, "=,"), vl = p[kl] == '=' ? strcspn(p + kl + 1, ",") : 0;
        n += (size_t)snprintf(j + n, cap - n, "%s\"%.*s\":\"%.*s\"", p == spec ? "" : ",",
                              (int)kl, p, (int)vl, p + kl + 1);
        p += kl + (p[kl] == '=' ? 1 + vl : 0);
        p += *p == ',';
    }
    snprintf(j + n, cap - n, "}}}");
    return j;
}

static wci_labels labels_of(const char *spec)
{
    char *j = labels_json(spec);
    wci_labels l;
    ck_assert_int_eq(wci_labels_from_json(&AL, j, strlen(j), &l), 0);
    free(j);
    return l;
}

static int matches(const char *sel, const char *spec)
{
    wci_selector *s;
    char err[256] = "";
    wcache_code rc = wci_selector_parse(&AL, sel, strlen(sel), &s, err, sizeof err);
    ck_assert_msg(rc == WCACHE_OK, "\"%s\": %s", sel, err);
    wci_labels l = labels_of(spec);
    int m = wci_selector_match(s, &l);
    wci_labels_free(&AL, &l);
    wci_selector_free(&AL, s);
    return m;
}

/* ---- matching ---- */

static const struct match_case {
    const char *sel, *labels;
    int want;
} MATCH[] = {
    /* labels.Everything() */
    {"", "x=y", 1},
    {"", "", 1},
    {" \t\r\n", "x=y", 1},
    /* equality */
    {"x=y", "x=y", 1},
    {"x==y", "x=y", 1},
    {"x = y", "x=y", 1},
    {"x=y", "x=z", 0},
    {"x=z", "", 0},
    {"x=y,z=w", "x=y,z=w", 1},
    {"x=y,z=w", "x=w,z=w", 0},
    {"x=y,z=w", "x=y", 0},
    /* inequality holds when the key is absent */
    {"x!=y,z!=w", "x=z,z=a", 1},
    {"x!=y,z!=w", "x=z,z=w", 0},
    {"x!=y", "", 1},
    {"x!=y", "x=y", 0},
    /* empty values */
    {"x=", "x=", 1},
    {"x=", "", 0},
    {"x==", "x=", 1},
    {"x!=", "", 1},
    {"x!=", "x=", 0},
    {"x=,z= ", "x=,z=", 1},
    /* keywords are plain names outside the operator position */
    {"notin=in", "notin=in", 1},
    {"in in (in)", "in=in", 1},
    {"notin notin (notin)", "notin=notin", 0},
    {"notin notin (notin)", "notin=in", 1},
    {"in", "in=x", 1},
    /* existence */
    {"x", "x=z", 1},
    {"x", "x=", 1},
    {"x", "y=z", 0},
    {"!x", "y=z", 1},
    {"!x", "x=z", 0},
    {"! x", "", 1},
    {"x,!y", "x=1", 1},
    {"x,!y", "x=1,y=2", 0},
    /* sets */
    {"x in (y)", "x=y", 1},
    {"x in (a,b,y)", "x=y", 1},
    {"x in ( a , b )", "x=b", 1},
    {"x in (a,b)", "x=c", 0},
    {"x in (a,b)", "", 0},
    {"x in (a,a,b)", "x=a", 1},
    {"x notin (a,b)", "", 1},
    {"x notin (a,b)", "x=c", 1},
    {"x notin (a,b)", "x=b", 0},
    {"x in ()", "x=", 1},
    {"x in ()", "x=a", 0},
    {"x notin ()", "x=a", 1},
    {"x in (a,,b)", "x=", 1},
    {"x in (a,)", "x=", 1},
    {"x in (,a)", "x=", 1},
    {"x in (a,b),y notin (c)", "x=a,y=d", 1},
    {"x in (a,b),y notin (c)", "x=a,y=c", 0},
    /* integers */
    {"x>1", "x=2", 1},
    {"x>1", "x=1", 0},
    {"x>1", "x=0", 0},
    {"x<1", "x=0", 1},
    {"x<1", "x=2", 0},
    {"x<1", "x=-5", 1},
    {"x>1", "x=abc", 0},
    {"x>1", "", 0},
    {"x<1", "", 0},
    {"x>1,z<5", "x=2,z=4", 1},
    {" x > 1 , z < 5 ", "x=2,z=5", 0},
    {"x>007", "x=8", 1},
    {"x<9223372036854775807", "x=9223372036854775806", 1},
    {"x>0", "x=99999999999999999999", 0},
    /* qualified keys */
    {"example.com/name=v", "example.com/name=v", 1},
    {"example.com/name", "name=v", 0},
    {"a.b-c_d=E_f.G-h", "a.b-c_d=E_f.G-h", 1},
    {"x=Y", "x=y", 0},
    /* requirements on one key are all applied */
    {"x=a,x!=a", "x=a", 0},
    {"x,x in (a,b),x!=c", "x=b", 1},
};

START_TEST(test_match)
{
    const struct match_case *c = &MATCH[_i];
    ck_assert_msg(matches(c->sel, c->labels) == c->want, "\"%s\" on {%s}: want %d", c->sel,
                  c->labels, c->want);
}
END_TEST

/* ---- invalid selectors: the message names the offending position ---- */

static const struct bad_case {
    const char *sel;
    const char *err; /* a substring of the message */
} BAD[] = {
    /* operators */
    {"x=a||y=b", "position 2: invalid label value 'a||y'"},
    {"x==a==b", "position 4: found '==', expected: ',' or end of string"},
    {"x===a", "position 3: found '=', expected: identifier"},
    {"!x=a", "position 2: found '='"},
    {"!!x", "position 1: found '!', expected: identifier"},
    {"x b", "position 2: found 'b', expected: in, notin"},
    {"x !in (a)", "position 2: found '!'"},
    {"x=(a)", "position 2: found '('"},
    {"x in a", "position 5: found 'a', expected: '('"},
    {"x in", "position 4: found end of string, expected: '('"},
    {"x notin", "expected: '('"},
    {"x<a", "position 2: for '>' and '<' the value must be an integer, not 'a'"},
    {"x>1.5", "must be an integer"},
    {"x>", "position 2: for '>' and '<' the value must be an integer, not end of string"},
    {"x>9223372036854775808", "must be an integer"},
    {"x>-1", "invalid label value '-1'"},
    /* structure */
    {"x=a,", "position 4: found end of string, expected: identifier after ','"},
    {",x=a", "position 0: found ',', expected: !, identifier, or end of string"},
    {"x=a,,y=b", "position 4: found ','"},
    {"x=a y=b", "position 4: found 'y', expected: ',' or end of string"},
    {"(x)", "position 0: found '('"},
    {")", "position 0"},
    {"=a", "position 0: found '='"},
    {"!", "position 1: found end of string, expected: identifier"},
    /* unbalanced parentheses */
    {"x in (a,b", "position 9: found end of string, expected: ',' or ')'"},
    {"x in (", "position 6: found end of string, expected: ',', ')' or identifier"},
    {"x in a,b)", "position 5"},
    {"x in ((a))", "position 6: found '('"},
    {"x in (a))", "position 8: found ')'"},
    {"x in (a b)", "position 8: found 'b', expected: ',' or ')'"},
    {"x in (=)", "position 6: found '='"},
    /* keys */
    {"/x=a", "position 0: invalid label key '/x': prefix part must not be empty"},
    {"example.com/=a", "name part must not be empty"},
    {"a/b/c", "at most one '/'"},
    {"Example.com/x", "prefix part must be a DNS subdomain"},
    {"ex..com/x", "prefix part must be a DNS subdomain"},
    {"-ex.com/x", "prefix part must be a DNS subdomain"},
    {"ex_a.com/x", "prefix part must be a DNS subdomain"},
    {"_x=a", "invalid label key '_x': must begin and end with an alphanumeric"},
    {"x.=a", "must begin and end with an alphanumeric"},
    {"x@y=a", "may contain only [-A-Za-z0-9_.]"},
    {"caf\xc3\xa9=a", "invalid label key 'caf\?\?'"},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "at most 63"},
    /* values */
    {"x=-a", "position 2: invalid label value '-a'"},
    {"x=a-", "must begin and end with an alphanumeric"},
    {"x=a/b", "may contain only"},
    {"x in (a,b_,c)", "position 8: invalid label value 'b_'"},
    {"x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "invalid label value 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...': must be at most 63"},
    {"x=\xff", "invalid label value '?'"},
};

START_TEST(test_bad)
{
    const struct bad_case *c = &BAD[_i];
    wci_selector *s = (wci_selector *)&ST; /* must be reset to NULL */
    char err[256] = "";
    ck_assert_int_eq(wci_selector_parse(&AL, c->sel, strlen(c->sel), &s, err, sizeof err),
                     WCACHE_EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err, c->err) != NULL, "\"%s\": got \"%s\", want \"%s\"", c->sel, err,
                  c->err);
    ck_assert_int_eq(ST.total, 0); /* refused before allocating */
}
END_TEST

/* Limits are inclusive: 63 bytes of name or value, 253 of prefix. */
START_TEST(test_limits)
{
    char buf[512], err[256];
    wci_selector *s;
    memset(buf, 'a', 63);
    memcpy(buf + 63, "=", 1);
    memset(buf + 64, 'b', 64);
    ck_assert_int_eq(wci_selector_parse(&AL, buf, 127, &s, err, sizeof err), WCACHE_OK);
    wci_selector_free(&AL, s);
    ck_assert_int_eq(wci_selector_parse(&AL, buf, 128, &s, err, sizeof err), WCACHE_EINVAL);
    /* prefix: 253 bytes of "a.a.a..." */
    for (int i = 0; i < 253; i++)
        buf[i] = i % 2 ? '.' : 'a';
    memcpy(buf + 253, "/k", 2);
    ck_assert_int_eq(wci_selector_parse(&AL, buf, 255, &s, err, sizeof err), WCACHE_OK);
    wci_selector_free(&AL, s);
    memmove(buf + 2, buf, 255);
    memcpy(buf, "a.", 2);
    ck_assert_int_eq(wci_selector_parse(&AL, buf, 257, &s, err, sizeof err), WCACHE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "at most 253"));
}
END_TEST

/* A NUL byte ends nothing: apimachinery would stop reading and ignore the
 * rest, which would let "x=a\0,y=b" mean "x=a".  The length is the length. */
START_TEST(test_nul)
{
    wci_selector *s;
    char err[256];
    ck_assert_int_eq(wci_selector_parse(&AL, "x=a\0y", 5, &s, err, sizeof err), WCACHE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "position 3: found NUL byte"));
    ck_assert_int_eq(wci_selector_parse(&AL, "x=a,y=bXX", 7, &s, err, sizeof err), WCACHE_OK);
    ck_assert_uint_eq(wci_selector_count(s), 2);
    wci_selector_free(&AL, s);
    ck_assert_int_eq(wci_selector_parse(&AL, NULL, 0, &s, err, sizeof err), WCACHE_OK);
    ck_assert(wci_selector_empty(s));
    wci_selector_free(&AL, s);
}
END_TEST

/* The message is cut to errlen and NUL-terminated; no buffer is fine. */
START_TEST(test_errbuf)
{
    wci_selector *s;
    char err[12];
    memset(err, 'Z', sizeof err);
    ck_assert_int_eq(wci_selector_parse(&AL, "x in (", 6, &s, err, 8), WCACHE_EINVAL);
    ck_assert_str_eq(err, "label s");
    ck_assert_int_eq(err[8], 'Z');
    ck_assert_int_eq(wci_selector_parse(&AL, "x in (", 6, &s, NULL, 0), WCACHE_EINVAL);
    ck_assert_int_eq(wci_selector_parse(&AL, "x in (", 6, &s, err, 0), WCACHE_EINVAL);
    ck_assert_int_eq(err[0], 'l');
}
END_TEST

START_TEST(test_empty_and_exact)
{
    wci_selector *s;
    const char *v;
    size_t vl;
    ck_assert(wci_selector_empty(NULL));
    ck_assert(wci_selector_match(NULL, NULL));
    ck_assert_int_eq(
        wci_selector_parse(&AL, "a=b, c in (d), e in (f,g), h!=i", 31, &s, NULL, 0), WCACHE_OK);
    ck_assert(!wci_selector_empty(s));
    ck_assert_uint_eq(wci_selector_count(s), 4);
    ck_assert(wci_selector_exact(s, "a", 1, &v, &vl));
    ck_assert_int_eq((int)vl, 1);
    ck_assert_int_eq(v[0], 'b');
    ck_assert(wci_selector_exact(s, "c", 1, &v, &vl) && vl == 1 && v[0] == 'd');
    ck_assert(!wci_selector_exact(s, "e", 1, &v, &vl));
    ck_assert(!wci_selector_exact(s, "h", 1, &v, &vl));
    ck_assert(!wci_selector_exact(s, "ab", 2, &v, &vl));
    ck_assert(!wci_selector_match(s, NULL)); /* no labels: a=b fails */
    wci_selector_free(&AL, s);
    wci_selector_free(&AL, NULL);
}
END_TEST

/* ---- labels from JSON ---- */

static wci_labels from_json(const char *j, size_t len)
{
    wci_labels l = {(wci_label *)&ST, 99, &ST};
    ck_assert_int_eq(wci_labels_from_json(&AL, j, len, &l), 0);
    if (l.n == 0) {
        ck_assert_ptr_null(l.l);
        ck_assert_ptr_null(l.owner);
    }
    return l;
}

static void expect_labels(const char *json, const char *want)
{
    wci_labels l = from_json(json, strlen(json));
    char got[512] = "";
    size_t n = 0;
    for (size_t i = 0; i < l.n; i++) {
        ck_assert_int_eq(l.l[i].k[l.l[i].kl], 0);
        ck_assert_int_eq(l.l[i].v[l.l[i].vl], 0);
        n += (size_t)snprintf(got + n, sizeof got - n, "%s%.*s=%.*s", i ? "," : "",
                              (int)l.l[i].kl, l.l[i].k, (int)l.l[i].vl, l.l[i].v);
    }
    ck_assert_msg(strcmp(got, want) == 0, "%s: got {%s}, want {%s}", json, got, want);
    wci_labels_free(&AL, &l);
    ck_assert_ptr_null(l.owner);
}

static const struct json_case {
    const char *json, *want;
} JSON[] = {
    {"{\"metadata\":{\"labels\":{\"b\":\"2\",\"a\":\"1\",\"ab\":\"3\"}}}", "a=1,ab=3,b=2"},
    {"{\"kind\":\"Pod\"}", ""},
    {"{\"metadata\":{\"name\":\"p\"}}", ""},
    {"{\"metadata\":5}", ""},
    {"{\"metadata\":null}", ""},
    {"{\"metadata\":{\"labels\":[\"a\"]}}", ""},
    {"{\"metadata\":{\"labels\":\"a=b\"}}", ""},
    {"{\"metadata\":{\"labels\":{}}}", ""},
    {"{\"labels\":{\"a\":\"b\"}}", ""},
    {"[{\"metadata\":{\"labels\":{\"a\":\"b\"}}}]", ""},
    /* non-string values are skipped */
    {"{\"metadata\":{\"labels\":{\"a\":1,\"b\":\"x\",\"c\":null,\"d\":{\"e\":\"f\"},"
     "\"g\":true,\"h\":[\"i\"],\"j\":1.5}}}",
     "b=x"},
    /* escapes and unicode are decoded to UTF-8 bytes */
    {"{\"metadata\":{\"labels\":{\"caf\\u00e9\":\"\\u65e5\\n\",\"q\":\"\\\"\"}}}",
     "caf\xc3\xa9=\xe6\x97\xa5\n,q=\""},
    {"{\"metadata\":{\"labels\":{\"\xc3\xa9\":\"\xf0\x9f\x98\x80\"}}}",
     "\xc3\xa9=\xf0\x9f\x98\x80"},
    {"{\"metadata\":{\"labels\":{\"a\":\"\\ud83d\\ude00\"}}}", "a=\xf0\x9f\x98\x80"},
    /* duplicates: the last one wins, as in Go's encoding/json */
    {"{\"metadata\":{\"labels\":{\"a\":\"1\",\"a\":\"2\"}}}", "a=2"},
    {"{\"metadata\":{\"labels\":{\"a\":\"1\"}},\"metadata\":{\"labels\":{\"b\":\"2\"}}}",
     "b=2"},
    {"{\"metadata\":{\"labels\":{\"a\":\"1\"},\"labels\":{\"c\":\"3\"}}}", "c=3"},
    /* a \u0000 elsewhere does not hide the labels */
    {"{\"spec\":\"x\\u0000y\",\"metadata\":{\"labels\":{\"a\":\"b\"}}}", "a=b"},
    /* jansson, unlike Go, refuses a NUL in a member name: no labels at all */
    {"{\"metadata\":{\"labels\":{\"a\\u0000b\":\"c\",\"d\":\"e\"}}}", ""},
    /* brackets inside strings are not nesting */
    {"{\"s\":\"[[[[{{{{\\\"[[[[\",\"metadata\":{\"labels\":{\"a\":\"]]}\"}}}", "a=]]}"},
    /* not JSON, or not all of it */
    {"", ""},
    {"null", ""},
    {"\"metadata\"", ""},
    {"{", ""},
    {"{\"metadata\":{\"labels\":{\"a\":\"b\"}}", ""},
    {"{\"metadata\":{\"labels\":{\"a\":\"b\"}}} x", ""},
    {"{\"metadata\":{\"labels\":{\"a\":\"b\",}}}", ""},
    {"{\"metadata\":{\"labels\":{\"a\":\"\xff\"}}}", ""},
    {"\xff\xfe\x00\x01garbage", ""},
};

START_TEST(test_json)
{
    expect_labels(JSON[_i].json, JSON[_i].want);
}
END_TEST

/* Lengths are honoured: no NUL needed, bytes past len never read, NUL
 * bytes inside values kept. */
START_TEST(test_json_lengths)
{
    const char *j = "{\"metadata\":{\"labels\":{\"a\":\"b\"}}}TRAILING";
    wci_labels l = from_json(j, strlen(j) - 8);
    ck_assert_uint_eq(l.n, 1);
    wci_labels_free(&AL, &l);
    char *exact = malloc(33); /* ASan would see a read past it */
    memcpy(exact, j, 33);
    l = from_json(exact, 33);
    ck_assert_uint_eq(l.n, 1);
    wci_labels_free(&AL, &l);
    free(exact);
    const char *z = "{\"metadata\":{\"labels\":{\"a\":\"x\\u0000y\"}}}";
    l = from_json(z, strlen(z));
    ck_assert_uint_eq(l.n, 1);
    ck_assert_uint_eq(l.l[0].vl, 3);
    ck_assert_int_eq(memcmp(l.l[0].v, "x\0y", 3), 0);
    wci_labels_free(&AL, &l);
    l = from_json(NULL, 10);
    ck_assert_uint_eq(l.n, 0);
    wci_labels_free(&AL, NULL);
}
END_TEST

/* Labels inside `depth` levels of nesting elsewhere in the object. */
static char *nested(int depth, size_t *len)
{
    const char *head = "{\"metadata\":{\"labels\":{\"a\":\"b\"}},\"spec\":";
    size_t hl = strlen(head);
    char *j = malloc(hl + 2 * (size_t)depth + 4);
    memcpy(j, head, hl);
    memset(j + hl, '[', (size_t)depth);
    memset(j + hl + depth, ']', (size_t)depth);
    j[hl + 2 * (size_t)depth] = '}';
    *len = hl + 2 * (size_t)depth + 1;
    return j;
}

START_TEST(test_json_depth)
{
    size_t len;
    /* the labels object is at depth 3, the arrays start at depth 2 */
    char *j = nested(WCI_LABELS_MAX_DEPTH - 1, &len);
    wci_labels l = from_json(j, len);
    ck_assert_uint_eq(l.n, 1);
    wci_labels_free(&AL, &l);
    free(j);
    j = nested(WCI_LABELS_MAX_DEPTH, &len);
    l = from_json(j, len);
    ck_assert_uint_eq(l.n, 0);
    free(j);
    j = nested(1000000, &len);
    l = from_json(j, len);
    ck_assert_uint_eq(l.n, 0);
    free(j);
}
END_TEST

/* ---- randomized: against a naive evaluator written from the rules ---- */

static const char *const RKEYS[] = {"a", "b", "ab", "in", "x.io/a"};
static const char *const RVALS[] = {"", "1", "2", "10", "v", "V", "in"};
#define NK ((int)(sizeof RKEYS / sizeof RKEYS[0]))
#define NV ((int)(sizeof RVALS / sizeof RVALS[0]))

typedef struct rreq {
    int key, op, nv, v[4]; /* op: 0 = 1 == 2 != 3 in 4 notin 5 exists 6 !exists 7 > 8 < */
} rreq;

static int naive(const rreq *r, int nr, const int *lab) /* lab[k]: value index or -1 */
{
    for (int i = 0; i < nr; i++) {
        int have = lab[r[i].key], in = 0;
        for (int j = 0; j < r[i].nv; j++)
            in |= have >= 0 && have == r[i].v[j];
        const char *lv = have >= 0 ? RVALS[have] : "";
        long lnum = strtol(lv, NULL, 10), rnum = strtol(RVALS[r[i].v[0]], NULL, 10);
        int isnum = have >= 0 && *lv >= '0' && *lv <= '9';
        int ok[] = {in,
                    in,
                    !in,
                    in,
                    !in,
                    have >= 0,
                    have < 0,
                    isnum && lnum > rnum,
                    isnum && lnum < rnum};
        if (!ok[r[i].op])
            return 0;
    }
    return 1;
}

static size_t render(char *buf, const rreq *r, int nr)
{
    static const char *const ops[] = {"=", "==", "!=", " in ", " notin ", "", "", ">", "<"};
    size_t n = 0;
    for (int i = 0; i < nr; i++) {
        n += (size_t)sprintf(buf + n, "%s%s%s%s", i ? " , " : "", r[i].op == 6 ? "!" : "",
                             RKEYS[r[i].key], ops[r[i].op]);
        for (int j = 0; j < r[i].nv; j++)
            n += (size_t)sprintf(buf + n, "%s%s%s",
                                 (r[i].op == 3 || r[i].op == 4) && !j ? "(" : "",
                                 RVALS[r[i].v[j]], j + 1 < r[i].nv ? "," : "");
        n += (size_t)sprintf(buf + n, "%s", r[i].op == 3 || r[i].op == 4 ? ")" : "");
    }
    return n;
}

static void random_req(tu_rng *g, rreq *r)
{
    r->key = (int)(tu_next(g) % NK);
    r->op = (int)(tu_next(g) % 9);
    r->v[0] = 1; /* read as the bound by naive() whatever the operator */
    r->nv = r->op <= 2 || r->op >= 7 ? 1 : r->op >= 5 ? 0 : 1 + (int)(tu_next(g) % 4);
    for (int j = 0; j < r->nv; j++)
        r->v[j] = (int)(tu_next(g) % NV);
    if (r->op >= 7)
        r->v[0] = 1 + (int)(tu_next(g) % 3); /* an integer */
}

START_TEST(test_random)
{
    tu_rng g = {tu_seed(0x5e1ec7)};
    for (int it = 0; it < 5000; it++) {
        rreq r[4];
        int nr = (int)(tu_next(&g) % 5), lab[NK];
        for (int i = 0; i < nr; i++)
            random_req(&g, &r[i]);
        char sel[512], spec[256] = "";
        size_t sl = render(sel, r, nr), n = 0;
        for (int k = 0; k < NK; k++) {
            lab[k] = tu_next(&g) % 3 ? (int)(tu_next(&g) % NV) : -1;
            if (lab[k] >= 0)
                n +=
                    (size_t)sprintf(spec + n, "%s%s=%s", n ? "," : "", RKEYS[k], RVALS[lab[k]]);
        }
        wci_selector *s;
        char err[256] = "";
        ck_assert_msg(wci_selector_parse(&AL, sel, sl, &s, err, sizeof err) == WCACHE_OK,
                      "\"%s\": %s", sel, err);
        wci_labels l = labels_of(spec);
        ck_assert_msg(wci_selector_match(s, &l) == naive(r, nr, lab), "\"%s\" on {%s}", sel,
                      spec);
        wci_labels_free(&AL, &l);
        wci_selector_free(&AL, s);
    }
}
END_TEST

/* ---- allocation failures: fail allocation N for N = 0.. until success ---- */

START_TEST(test_oom_parse)
{
    const char *sel = "a=b, c in (d,e,f), !g, h notin (i), j>5, k";
    wcache_code rc = WCACHE_ENOMEM;
    long n;
    for (n = 0; rc == WCACHE_ENOMEM; n++) {
        wci_selector *s = (wci_selector *)&ST;
        tu_alloc_arm(&ST, n);
        rc = wci_selector_parse(&AL, sel, strlen(sel), &s, NULL, 0);
        if (rc == WCACHE_ENOMEM) {
            ck_assert_ptr_null(s);
            ck_assert_int_eq(ST.live, 0);
        } else {
            ck_assert_int_eq(rc, WCACHE_OK);
            ck_assert_uint_eq(wci_selector_count(s), 6);
            wci_selector_free(&AL, s);
        }
        ck_assert_int_lt(n, 100);
    }
    ck_assert_int_ge(n, 2); /* at least one failure was walked */
}
END_TEST

START_TEST(test_oom_labels)
{
    char *j = labels_json("a=1,b=2,c=3");
    int rc = -1;
    long n;
    for (n = 0; rc == -1; n++) {
        wci_labels l = {(wci_label *)&ST, 99, &ST};
        tu_alloc_arm(&ST, n);
        rc = wci_labels_from_json(&AL, j, strlen(j), &l);
        if (rc == -1) {
            ck_assert_uint_eq(l.n, 0);
            ck_assert_ptr_null(l.owner);
            ck_assert_int_eq(ST.live, 0);
        } else {
            ck_assert_int_eq(rc, 0);
            ck_assert_uint_eq(l.n, 3);
            wci_labels_free(&AL, &l);
        }
        ck_assert_int_lt(n, 100);
    }
    ck_assert_int_ge(n, 2);
    free(j);
}
END_TEST

/* Labels built by hand (not from JSON) match the same way, NULL included. */
START_TEST(test_manual_labels)
{
    wci_label arr[] = {{"app", 3, "web", 3}, {"tier", 4, "fe", 2}};
    wci_labels l = {arr, 2, NULL};
    wci_selector *s;
    ck_assert_int_eq(wci_selector_parse(&AL, "app=web,tier in (fe,be),!x", 26, &s, NULL, 0),
                     WCACHE_OK);
    ck_assert(wci_selector_match(s, &l));
    ck_assert(!wci_selector_match(s, NULL));
    ck_assert_ptr_eq(wci_labels_find(&l, "tier", 4), &arr[1]);
    ck_assert_ptr_null(wci_labels_find(&l, "tie", 3));
    ck_assert_ptr_null(wci_labels_find(NULL, "tier", 4));
    wci_selector_free(&AL, s);
}
END_TEST

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

Suite *selector_suite(void)
{
    Suite *s = suite_create("selector");
    TCase *tc = tcase_create("parse");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_match, 0, NELEM(MATCH));
    tcase_add_loop_test(tc, test_bad, 0, NELEM(BAD));
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_nul);
    tcase_add_test(tc, test_errbuf);
    tcase_add_test(tc, test_empty_and_exact);
    tcase_add_test(tc, test_manual_labels);
    tcase_add_test(tc, test_random);
    suite_add_tcase(s, tc);
    tc = tcase_create("json");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_json, 0, NELEM(JSON));
    tcase_add_test(tc, test_json_lengths);
    tcase_add_test(tc, test_json_depth);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_oom_parse);
    tcase_add_test(tc, test_oom_labels);
    suite_add_tcase(s, tc);
    return s;
}
