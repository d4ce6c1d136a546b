/*
 * selector.c - Kubernetes label selectors: parse, validate, match.
 *
 * The lexer and parser follow apimachinery's labels.Parse token for token,
 * so that a selector means here what it means to the API server, quirks
 * included: "in" and "notin" are keywords only where an operator may
 * stand (a key or a value may be called "in"), "x in ()" is x in {""},
 * and empty entries of a value list are empty values.
 *
 * Parsing runs twice over the input: a counting pass that validates
 * everything and sizes the result, then a filling pass over a private copy
 * of the text, so that a selector is a single allocation pointing into
 * itself: nothing is left half-built when that allocation fails, and
 * freeing is one call.  The second pass cannot fail: it reads the same
 * bytes.
 *
 * Values of a set are sorted and de-duplicated, and label sets are sorted
 * by key, so that matching is a binary search per requirement.
 */
#include "selector.h"

#include <stdarg.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OP_EQ, OP_NE, OP_IN, OP_NOTIN, OP_EXISTS, OP_NOTEXISTS, OP_GT, OP_LT };

typedef struct sel_str {
    const char *s;
    size_t n;
} sel_str;

typedef struct sel_req {
    sel_str key;
    sel_str *vals; /* sorted, unique */
    size_t nvals;
    int64_t num; /* the bound of > and < */
    int op;
} sel_req;

struct wci_selector {
    size_t nreq;
    sel_req *req;
};

/* ---- byte strings ---- */

static int str_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c)
        return c;
    return an < bn ? -1 : an > bn;
}

static int sel_str_qcmp(const void *a, const void *b)
{
    const sel_str *x = a, *y = b;
    return str_cmp(x->s, x->n, y->s, y->n);
}

static int is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* strconv.ParseInt(s, 10, 64): optional sign, at least one digit. */
static int parse_i64(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    int neg = n > 0 && s[0] == '-';
    if (n > 0 && (s[0] == '-' || s[0] == '+'))
        i = 1;
    if (i == n)
        return -1;
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (lim - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* ---- lexer ---- */

enum {
    T_EOS,
    T_ID,
    T_IN,
    T_NOTIN,
    T_NOT,
    T_EQ,
    T_EQEQ,
    T_NE,
    T_GT,
    T_LT,
    T_LP,
    T_RP,
    T_COMMA,
    T_NUL
};

typedef struct tok {
    int t;
    size_t pos, n;
    const char *s;
} tok;

typedef struct parser {
    const char *s;
    size_t len, pos;
    tok cur;      /* the lookahead */
    sel_req *req; /* NULL in the counting pass */
    sel_str *vals;
    size_t nreq, nvals;
    char *err;
    size_t errlen;
} parser;

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_special(char c)
{
    return c == '=' || c == '!' || c == '(' || c == ')' || c == ',' || c == '>' || c == '<';
}

/* The longest operator at s: only "!=" and "==" have two characters. */
static int lex_special(const char *s, size_t avail, size_t *n)
{
    *n = 1;
    if (avail > 1 && s[1] == '=' && (s[0] == '!' || s[0] == '=')) {
        *n = 2;
        return s[0] == '!' ? T_NE : T_EQEQ;
    }
    switch (s[0]) {
    case '!': return T_NOT;
    case '=': return T_EQ;
    case '>': return T_GT;
    case '<': return T_LT;
    case '(': return T_LP;
    case ')': return T_RP;
    default: return T_COMMA;
    }
}

static void lex(parser *p)
{
    while (p->pos < p->len && is_space(p->s[p->pos]))
        p->pos++;
    tok *t = &p->cur;
    t->pos = p->pos;
    t->s = p->s + p->pos;
    t->n = 0;
    if (p->pos == p->len) {
        t->t = T_EOS;
    } else if (p->s[p->pos] == '\0') {
        t->t = T_NUL;
    } else if (is_special(p->s[p->pos])) {
        t->t = lex_special(t->s, p->len - p->pos, &t->n);
    } else {
        while (t->n < p->len - p->pos && !is_space(t->s[t->n]) && !is_special(t->s[t->n]) &&
               t->s[t->n] != '\0')
            t->n++;
        t->t = T_ID;
        if (t->n == 2 && memcmp(t->s, "in", 2) == 0)
            t->t = T_IN;
        else if (t->n == 5 && memcmp(t->s, "notin", 5) == 0)
            t->t = T_NOTIN;
    }
    p->pos += t->n;
}

/* Outside the operator position the keywords are plain identifiers
 * (apimachinery's "Values" context). */
static int is_ident(const tok *t)
{
    return t->t == T_ID || t->t == T_IN || t->t == T_NOTIN;
}

/* ---- errors ---- */

/* The offending text, quoted safely: the input is arbitrary bytes. */
static void quote(char *dst, size_t cap, const tok *t)
{
    static const char *const names[] = {[T_EOS] = "end of string", [T_NUL] = "NUL byte"};
    if (t->t == T_EOS || t->t == T_NUL) {
        snprintf(dst, cap, "%s", names[t->t]);
        return;
    }
    size_t n = t->n < 32 ? t->n : 32, j = 0;
    dst[j++] = '\'';
    for (size_t i = 0; i < n; i++)
        dst[j++] = (t->s[i] > ' ' && t->s[i] < 127) ? t->s[i] : '?';
    if (n < t->n)
        j += (size_t)snprintf(dst + j, cap - j, "...");
    snprintf(dst + j, cap - j, "'");
}

__attribute__((format(printf, 3, 4))) static wcache_code fail(parser *p, size_t pos,
                                                              const char *fmt, ...)
{
    if (!p->err || p->errlen == 0)
        return WCACHE_EINVAL;
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "label selector: position %zu: %s", pos, msg);
    return WCACHE_EINVAL;
}

static wcache_code unexpected(parser *p, const char *expected)
{
    char q[48];
    quote(q, sizeof q, &p->cur);
    return fail(p, p->cur.pos, "found %s, expected: %s", q, expected);
}

/* ---- validation (apimachinery's util/validation) ---- */

/* [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])? ; dns: lower case, [-a-z0-9.]
 * with every dot-separated part beginning and ending alphanumeric. */
static const char *bad_name(const char *s, size_t n, int dns)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int edge = i == 0 || i + 1 == n || (dns && (s[i - 1] == '.' || s[i + 1] == '.'));
        if (dns && c >= 'A' && c <= 'Z')
            return "must be lower case";
        if (edge && !is_alnum(c))
            return "must begin and end with an alphanumeric character";
        if (!is_alnum(c) && c != '-' && c != '.' && (dns || c != '_'))
            return dns ? "may contain only [-a-z0-9.]" : "may contain only [-A-Za-z0-9_.]";
    }
    return NULL;
}

static wcache_code check_key(parser *p, const tok *t)
{
    const char *slash = memchr(t->s, '/', t->n), *why = NULL;
    size_t nlen = t->n, plen = 0;
    if (slash) {
        plen = (size_t)(slash - t->s);
        nlen = t->n - plen - 1;
        if (memchr(slash + 1, '/', nlen))
            why = "may contain at most one '/'";
        else if (plen == 0)
            why = "prefix part must not be empty";
        else if (plen > 253)
            why = "prefix part must be at most 253 characters";
        else if (bad_name(t->s, plen, 1))
            why = "prefix part must be a DNS subdomain: lower case [-a-z0-9.], each "
                  "dot-separated part beginning and ending alphanumeric";
    }
    if (!why && nlen == 0)
        why = "name part must not be empty";
    else if (!why && nlen > 63)
        why = "name part must be at most 63 characters";
    else if (!why)
        why = bad_name(t->s + plen + (slash != NULL), nlen, 0);
    if (!why)
        return WCACHE_OK;
    char q[48];
    quote(q, sizeof q, t);
    return fail(p, t->pos, "invalid label key %s: %s", q, why);
}

static wcache_code check_value(parser *p, const tok *t)
{
    const char *why = t->n > 63 ? "must be at most 63 characters" : bad_name(t->s, t->n, 0);
    if (!why)
        return WCACHE_OK;
    char q[48];
    quote(q, sizeof q, t);
    return fail(p, t->pos, "invalid label value %s: %s", q, why);
}

/* ---- parser ---- */

static sel_req *cur_req(parser *p)
{
    return p->req ? &p->req[p->nreq] : NULL;
}

static wcache_code add_value(parser *p, const tok *t)
{
    wcache_code rc = t->n ? check_value(p, t) : WCACHE_OK;
    if (rc != WCACHE_OK)
        return rc;
    if (p->vals) {
        p->vals[p->nvals] = (sel_str){t->n ? t->s : "", t->n};
        p->req[p->nreq].nvals++;
    }
    p->nvals++;
    return WCACHE_OK;
}

/* '(' [v] { ',' [v] } ')' where a missing v is the empty value. */
static wcache_code parse_set(parser *p)
{
    if (p->cur.t != T_LP)
        return unexpected(p, "'('");
    lex(p);
    for (;;) {
        tok v = p->cur;
        if (is_ident(&v))
            lex(p);
        else
            v.n = 0;
        wcache_code rc = add_value(p, &v);
        if (rc != WCACHE_OK)
            return rc;
        if (p->cur.t == T_RP)
            break;
        if (p->cur.t != T_COMMA)
            return unexpected(p, is_ident(&v) && v.n ? "',' or ')'" : "',', ')' or identifier");
        lex(p);
    }
    lex(p);
    return WCACHE_OK;
}

static wcache_code parse_exact(parser *p, int op)
{
    tok v = p->cur;
    if (v.t == T_EOS || v.t == T_COMMA)
        v.n = 0;
    else if (is_ident(&v))
        lex(p);
    else
        return unexpected(p, "identifier");
    int64_t num = 0;
    if ((op == OP_GT || op == OP_LT) && parse_i64(v.s, v.n, &num) != 0) {
        char q[48];
        quote(q, sizeof q, &v);
        return fail(p, v.pos, "for '>' and '<' the value must be an integer, not %s", q);
    }
    if ((op == OP_GT || op == OP_LT) && p->req)
        p->req[p->nreq].num = num;
    return add_value(p, &v);
}

static int op_of(int t)
{
    switch (t) {
    case T_EQ:
    case T_EQEQ: return OP_EQ;
    case T_NE: return OP_NE;
    case T_IN: return OP_IN;
    case T_NOTIN: return OP_NOTIN;
    case T_GT: return OP_GT;
    case T_LT: return OP_LT;
    default: return -1;
    }
}

/* ['!'] key, and the operator when there is none to read (exists). */
static wcache_code parse_key(parser *p, sel_req *r, int *op)
{
    *op = -1;
    if (p->cur.t == T_NOT) {
        *op = OP_NOTEXISTS;
        lex(p);
    }
    if (!is_ident(&p->cur))
        return unexpected(p, "identifier");
    wcache_code rc = check_key(p, &p->cur);
    if (rc != WCACHE_OK)
        return rc;
    if (r)
        r->key = (sel_str){p->cur.s, p->cur.n};
    lex(p);
    if (*op < 0 && (p->cur.t == T_EOS || p->cur.t == T_COMMA))
        *op = OP_EXISTS;
    return WCACHE_OK;
}

static void finish_req(sel_req *r)
{
    if (!r || r->nvals < 2)
        return;
    qsort(r->vals, r->nvals, sizeof *r->vals, sel_str_qcmp);
    size_t j = 1;
    for (size_t i = 1; i < r->nvals; i++)
        if (sel_str_qcmp(&r->vals[i], &r->vals[j - 1]) != 0)
            r->vals[j++] = r->vals[i];
    r->nvals = j;
}

static wcache_code parse_req(parser *p)
{
    sel_req *r = cur_req(p);
    int op;
    wcache_code rc = parse_key(p, r, &op);
    if (rc == WCACHE_OK && op < 0) {
        op = op_of(p->cur.t);
        if (op < 0)
            return unexpected(p, "in, notin, =, ==, !=, >, <");
        lex(p);
        if (r)
            r->vals = p->vals + p->nvals;
        rc = op == OP_IN || op == OP_NOTIN ? parse_set(p) : parse_exact(p, op);
    }
    if (rc != WCACHE_OK)
        return rc;
    if (r) {
        r->op = op;
        finish_req(r);
    }
    p->nreq++;
    return WCACHE_OK;
}

static wcache_code parse_all(parser *p)
{
    lex(p);
    if (p->cur.t == T_EOS)
        return WCACHE_OK;
    for (;;) {
        if (!is_ident(&p->cur) && p->cur.t != T_NOT)
            return unexpected(p, p->nreq ? "identifier after ','"
                                         : "!, identifier, or end of string");
        wcache_code rc = parse_req(p);
        if (rc != WCACHE_OK)
            return rc;
        if (p->cur.t == T_EOS)
            return WCACHE_OK;
        if (p->cur.t != T_COMMA)
            return unexpected(p, "',' or end of string");
        lex(p);
    }
}

/* ---- the selector object ---- */

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

wcache_code wci_selector_parse(const wci_alloc *al, const char *s, size_t len,
                               wci_selector **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!s) {
        s = "";
        len = 0;
    }
    parser p = {.s = s, .len = len, .err = err, .errlen = errlen};
    wcache_code rc = parse_all(&p);
    if (rc != WCACHE_OK)
        return rc;
    /* Requirements and values each take an input byte or more, so with
     * len bounded these sizes cannot wrap. */
    if (len > SIZE_MAX / 128 || p.nreq > len || p.nvals > len)
        return WCACHE_ENOMEM;
    size_t oreq = align8(sizeof(wci_selector)), oval = oreq + p.nreq * sizeof(sel_req);
    size_t otext = oval + p.nvals * sizeof(sel_str);
    char *blk = wci_malloc(al, otext + len + 1);
    if (!blk)
        return WCACHE_ENOMEM;
    wci_selector *sel = (wci_selector *)blk;
    memcpy(blk + otext, s, len);
    blk[otext + len] = 0;
    parser q = {.s = blk + otext, .len = len};
    q.req = (sel_req *)(blk + oreq);
    q.vals = (sel_str *)(blk + oval);
    memset(q.req, 0, p.nreq * sizeof(sel_req));
    parse_all(&q); /* cannot fail: the same bytes passed above */
    sel->nreq = q.nreq;
    sel->req = q.req;
    *out = sel;
    return WCACHE_OK;
}

void wci_selector_free(const wci_alloc *al, wci_selector *sel)
{
    wci_free(al, sel);
}

int wci_selector_empty(const wci_selector *sel)
{
    return !sel || sel->nreq == 0;
}

size_t wci_selector_count(const wci_selector *sel)
{
    return sel ? sel->nreq : 0;
}

int wci_selector_exact(const wci_selector *sel, const char *key, size_t kl, const char **v,
                       size_t *vl)
{
    for (size_t i = 0; sel && i < sel->nreq; i++) {
        const sel_req *r = &sel->req[i];
        if ((r->op == OP_EQ || r->op == OP_IN) && r->nvals == 1 &&
            str_cmp(r->key.s, r->key.n, key, kl) == 0) {
            *v = r->vals[0].s;
            *vl = r->vals[0].n;
            return 1;
        }
    }
    return 0;
}

/* ---- matching ---- */

const wci_label *wci_labels_find(const wci_labels *l, const char *key, size_t kl)
{
    size_t lo = 0, hi = l ? l->n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = str_cmp(l->l[mid].k, l->l[mid].kl, key, kl);
        if (c == 0)
            return &l->l[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int has_value(const sel_req *r, const wci_label *lb)
{
    sel_str want = {lb->v, lb->vl};
    return bsearch(&want, r->vals, r->nvals, sizeof *r->vals, sel_str_qcmp) != NULL;
}

static int req_match(const sel_req *r, const wci_labels *l)
{
    const wci_label *lb = wci_labels_find(l, r->key.s, r->key.n);
    int64_t v;
    switch (r->op) {
    case OP_EXISTS: return lb != NULL;
    case OP_NOTEXISTS: return lb == NULL;
    case OP_EQ:
    case OP_IN: return lb && has_value(r, lb);
    case OP_NE:
    case OP_NOTIN: return !lb || !has_value(r, lb);
    case OP_GT: return lb && parse_i64(lb->v, lb->vl, &v) == 0 && v > r->num;
    case OP_LT: return lb && parse_i64(lb->v, lb->vl, &v) == 0 && v < r->num;
    default: return 0;
    }
}

int wci_selector_match(const wci_selector *sel, const wci_labels *l)
{
    for (size_t i = 0; sel && i < sel->nreq; i++)
        if (!req_match(&sel->req[i], l))
            return 0;
    return 1;
}

/* ---- labels from JSON ---- */

/* Deeper than max outside strings?  A cheap pre-scan so that jansson's
 * recursion stays bounded.  On malformed input the count may drift, but
 * only past the point where jansson stops reading anyway. */
static int too_deep(const unsigned char *p, size_t n, int max)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        if (in_str) {
            if (p[i] == '\\')
                i++;
            else if (p[i] == '"')
                in_str = 0;
        } else if (p[i] == '"') {
            in_str = 1;
        } else if (p[i] == '[' || p[i] == '{') {
            if (++depth > max)
                return 1;
        } else if (p[i] == ']' || p[i] == '}') {
            depth--;
        }
    }
    return 0;
}

static int label_qcmp(const void *a, const void *b)
{
    const wci_label *x = a, *y = b;
    return str_cmp(x->k, x->kl, y->k, y->kl);
}

static char *put_str(char *dst, const char *s, size_t n)
{
    memcpy(dst, s, n);
    dst[n] = 0;
    return dst + n + 1;
}

/* One block: the label array, then every key and value, NUL-terminated. */
static int copy_labels(const wci_alloc *al, json_t *obj, wci_labels *out)
{
    const char *k;
    size_t kl, n = 0, bytes = 0;
    json_t *v;
    json_object_keylen_foreach(obj, k, kl, v)
    {
        if (json_is_string(v)) {
            n++;
            bytes += kl + json_string_length(v) + 2;
        }
    }
    if (n == 0)
        return 0;
    wci_label *l = wci_malloc(al, n * sizeof *l + bytes);
    if (!l)
        return -1;
    char *p = (char *)(l + n);
    size_t i = 0;
    json_object_keylen_foreach(obj, k, kl, v)
    {
        if (!json_is_string(v))
            continue;
        l[i] = (wci_label){p, kl, NULL, json_string_length(v)};
        p = put_str(p, k, kl);
        l[i].v = p;
        p = put_str(p, json_string_value(v), l[i].vl);
        i++;
    }
    qsort(l, n, sizeof *l, label_qcmp);
    *out = (wci_labels){l, n, l};
    return 0;
}

/* jansson allocates with its own (process-wide) malloc: redirecting it
 * with json_set_alloc_funcs would change it for the whole process, other
 * jansson users included.  Only the result is copied into memory from al. */
int wci_labels_from_json(const wci_alloc *al, const void *json, size_t len, wci_labels *out)
{
    *out = (wci_labels){NULL, 0, NULL};
    if (!json || len == 0 || len > WCI_LABELS_JSON_MAX ||
        too_deep(json, len, WCI_LABELS_MAX_DEPTH))
        return 0;
    json_error_t e;
    /* \u0000 inside some unrelated string must not hide the labels: Go
     * decodes it.  Without JSON_REJECT_DUPLICATES the last member wins,
     * again as in Go, which is how the API server reads these bytes. */
    json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, &e);
    if (!root)
        return json_error_code(&e) == json_error_out_of_memory ? -1 : 0;
    json_t *labels = json_object_get(json_object_get(root, "metadata"), "labels");
    int rc = json_is_object(labels) ? copy_labels(al, labels, out) : 0;
    json_decref(root);
    return rc;
}

void wci_labels_free(const wci_alloc *al, wci_labels *l)
{
    if (!l)
        return;
    wci_free(al, l->owner);
    *l = (wci_labels){NULL, 0, NULL};
}
