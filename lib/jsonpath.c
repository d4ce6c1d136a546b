/*
 * jsonpath.c - find the string at a dotted path of object members in JSON
 * text, for the built-in index extractor (index.c).
 *
 * It walks the whole text, checking it as jansson would, and returns the
 * path's string without copying it.  Anything it does not handle exactly
 * as jansson does (an escape it would have to compare or return, a byte
 * above 0x7f, which jansson checks as UTF-8, a number jansson might find
 * out of range, deep nesting) it hands back to the caller for jansson.
 * Duplicate members: the last one counts, as in jansson.
 * tests/fuzz/fuzz_jsonpath.c holds it to jansson's answers.
 */
#include "jsonpath.h"

#include <stdint.h>
#include <string.h>

enum { J_BAD = -1, J_JANSSON = WCI_JP_JANSSON };

typedef struct jscan {
    const char *p, *end;
    char *const *path;
    size_t npath;
    const char *hit; /* the path's string; NULL: none */
    size_t hitlen;
} jscan;

static void jws(jscan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* A string at s->p; *esc: it holds an escape. */
static int jstr(jscan *s, bool *esc)
{
    *esc = false;
    for (s->p++; s->p < s->end;) {
        unsigned char ch = (unsigned char)*s->p++;
        if (ch == '"')
            return 0;
        if (ch >= 0x80)
            return J_JANSSON;
        if (ch < 0x20)
            return J_BAD;
        if (ch == '\\') {
            *esc = true;
            char e = s->p < s->end ? *s->p++ : 0;
            if (e == 'u')
                return J_JANSSON; /* surrogates, \u0000: jansson's rules */
            if (!e || !strchr("\"\\/bfnrt", e))
                return J_BAD;
        }
    }
    return J_BAD;
}

static bool jdigit(const jscan *s)
{
    return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

/* JSON's number grammar; long ones and exponents go to jansson (range). */
static int jnum(jscan *s)
{
    const char *b = s->p;
    if (*s->p == '-')
        s->p++;
    if (!jdigit(s))
        return J_BAD;
    if (*s->p++ != '0')
        while (jdigit(s))
            s->p++;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!jdigit(s))
            return J_BAD;
        while (jdigit(s))
            s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E'))
        return J_JANSSON;
    return s->p - b > 15 ? J_JANSSON : 0;
}

static int jlit(jscan *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n))
        return J_BAD;
    s->p += n;
    return 0;
}

static int jvalue(jscan *s, size_t at, int depth);

/* Members of an object at s->p; at: how much of the path led here
 * (SIZE_MAX: off the path). */
static int jobject(jscan *s, size_t at, int depth)
{
    s->p++;
    jws(s);
    if (s->p < s->end && *s->p == '}')
        return s->p++, 0;
    for (;;) {
        bool esc;
        jws(s);
        if (s->p >= s->end || *s->p != '"')
            return J_BAD;
        const char *k = s->p + 1;
        int rc = jstr(s, &esc);
        if (rc)
            return rc;
        size_t kl = (size_t)(s->p - 1 - k), next = SIZE_MAX;
        if (at < s->npath && esc)
            return J_JANSSON;
        if (at < s->npath && strlen(s->path[at]) == kl && !memcmp(k, s->path[at], kl)) {
            next = at + 1;
            s->hit = NULL; /* a later duplicate replaces an earlier one */
        }
        jws(s);
        if (s->p >= s->end || *s->p++ != ':')
            return J_BAD;
        if ((rc = jvalue(s, next, depth + 1)) != 0)
            return rc;
        jws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        return s->p < s->end && *s->p++ == '}' ? 0 : J_BAD;
    }
}

static int jarray(jscan *s, int depth)
{
    s->p++;
    jws(s);
    if (s->p < s->end && *s->p == ']')
        return s->p++, 0;
    for (;;) {
        int rc = jvalue(s, SIZE_MAX, depth + 1);
        if (rc)
            return rc;
        jws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        return s->p < s->end && *s->p++ == ']' ? 0 : J_BAD;
    }
}

static int jvalue(jscan *s, size_t at, int depth)
{
    jws(s);
    if (s->p >= s->end)
        return J_BAD;
    if (depth > 64)
        return J_JANSSON;
    switch (*s->p) {
    case '{': return jobject(s, at == s->npath ? SIZE_MAX : at, depth);
    case '[': return jarray(s, depth);
    case '"': {
        const char *b = s->p + 1;
        bool esc;
        int rc = jstr(s, &esc);
        if (rc == 0 && at == s->npath) {
            if (esc)
                return J_JANSSON;
            s->hit = b;
            s->hitlen = (size_t)(s->p - 1 - b);
        }
        return rc;
    }
    case 't': return jlit(s, "true", 4);
    case 'f': return jlit(s, "false", 5);
    case 'n': return jlit(s, "null", 4);
    default: return *s->p == '-' || (*s->p >= '0' && *s->p <= '9') ? jnum(s) : J_BAD;
    }
}

int wci_jsonpath_scan(char *const *path, size_t npath, const char *json, size_t len,
                      const void **out, size_t *olen)
{
    jscan s = {json, json + len, path, npath, NULL, 0};
    jws(&s);
    if (s.p >= s.end || (*s.p != '{' && *s.p != '['))
        return 0; /* jansson takes only an object or an array at the top */
    int rc = jvalue(&s, 0, 0);
    jws(&s);
    /* Text it finds broken goes to jansson too: jansson has leniencies of
     * its own (it stops at a NUL byte), and its answer is the contract. */
    if (rc != 0 || s.p != s.end)
        return J_JANSSON;
    if (!s.hit)
        return 0;
    *out = s.hit;
    *olen = s.hitlen;
    return 1;
}
