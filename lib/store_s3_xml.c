/*
 * store_s3_xml.c - the XML replies of S3 (Error, InitiateMultipartUpload,
 * CompleteMultipartUpload, ListObjectsV2), read with expat.
 *
 * expat rather than libxml2: these replies are flat records read once, in
 * order, which a streaming parser does with a few bytes of state and no
 * tree; expat never loads external entities and bounds entity expansion
 * (2.4+), and it is a smaller dependency.  Elements are matched on their
 * local name and their depth, never on the namespace: s3rver and real S3
 * disagree on it.
 */
#include "store_s3.h"

#include <expat.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_DEPTH 16
#define TEXT_MAX 2048

typedef struct xp {
    XML_Parser p;
    int depth;
    char names[MAX_DEPTH][48]; /* local names of the open elements */
    char text[TEXT_MAX];       /* text of the innermost element */
    size_t tlen;
    int too_long;
    int bad;
    /* what is being read */
    wci_s3_reply *r;
    wci_s3_entry cur;
    int in_contents;
    char cur_key[1024];
    wci_s3_list_fn fn;
    void *ud;
    int stopped;
} xp;

static const char *local(const char *name)
{
    const char *c = strrchr(name, ':');
    return c ? c + 1 : name;
}

static void XMLCALL on_start(void *ud, const char *name, const char **attrs)
{
    xp *x = ud;
    (void)attrs;
    if (x->depth >= MAX_DEPTH) {
        x->bad = 1;
        XML_StopParser(x->p, XML_FALSE);
        return;
    }
    snprintf(x->names[x->depth], sizeof x->names[0], "%s", local(name));
    x->depth++;
    x->tlen = 0;
    x->text[0] = '\0';
    x->too_long = 0;
    if (x->depth == 1)
        snprintf(x->r->root, sizeof x->r->root, "%s", x->names[0]);
    if (x->depth == 2 && !strcmp(x->names[1], "Contents")) {
        memset(&x->cur, 0, sizeof x->cur);
        x->cur_key[0] = '\0';
        x->in_contents = 1;
    }
}

static void XMLCALL on_text(void *ud, const char *s, int len)
{
    xp *x = ud;
    if (len < 0)
        return;
    if (x->tlen + (size_t)len >= sizeof x->text) {
        x->too_long = 1;
        return;
    }
    memcpy(x->text + x->tlen, s, (size_t)len);
    x->tlen += (size_t)len;
    x->text[x->tlen] = '\0';
}

/* Strip the quotes S3 puts around an ETag. */
static void copy_etag(char *out, size_t n, const char *s)
{
    size_t l = strlen(s);
    if (l >= 2 && s[0] == '"' && s[l - 1] == '"') {
        s++;
        l -= 2;
    } else if (l >= 12 && !strncmp(s, "&quot;", 6)) {
        s += 6;
        l -= 12;
    }
    snprintf(out, n, "%.*s", (int)l, s);
}

/* A decimal without sign; -1 when it is not one. */
static int64_t parse_u63(const char *s)
{
    int64_t v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

int64_t wci_s3_parse_time(const char *s)
{
    /* 2026-11-27T23:43:01.123Z */
    int y, mo, d, h, mi, se;
    char rest[16] = "";
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%15s", &y, &mo, &d, &h, &mi, &se, rest) < 6)
        return 0;
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        se > 60 || h < 0 || mi < 0 || se < 0)
        return 0;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    int64_t ns = 0;
    if (rest[0] == '.') {
        int64_t scale = 100000000;
        for (const char *q = rest + 1; *q >= '0' && *q <= '9' && scale; q++, scale /= 10)
            ns += (*q - '0') * scale;
    }
    time_t t = timegm(&tm);
    if (t < 0 || (int64_t)t > INT64_MAX / 1000000000 - 1)
        return 0; /* beyond 2262: not a time int64 ns can hold */
    return (int64_t)t * 1000000000 + ns;
}

/* Copy with truncation: these fields are for messages and ids that a
 * well-formed reply keeps far below their size. */
static void cpy(char *d, size_t n, const char *s)
{
    size_t l = strlen(s);
    if (l >= n)
        l = n - 1;
    memcpy(d, s, l);
    d[l] = '\0';
}

static void XMLCALL on_end(void *ud, const char *name)
{
    xp *x = ud;
    (void)name;
    if (x->depth <= 0)
        return;
    const char *n = x->names[x->depth - 1];
    const char *t = x->text;
    wci_s3_reply *r = x->r;
    /* An id or token we cannot hold whole would name something else. */
    if ((x->too_long || x->tlen >= sizeof r->next_token) && x->depth == 2 &&
        (!strcmp(n, "NextContinuationToken") || !strcmp(n, "UploadId")))
        x->bad = 1;
    if (x->depth == 2) {
        if (!strcmp(n, "Code"))
            cpy(r->code, sizeof r->code, t);
        else if (!strcmp(n, "Message"))
            cpy(r->message, sizeof r->message, t);
        else if (!strcmp(n, "UploadId"))
            cpy(r->upload_id, sizeof r->upload_id, t);
        else if (!strcmp(n, "ETag"))
            copy_etag(r->etag, sizeof r->etag, t);
        else if (!strcmp(n, "IsTruncated"))
            r->truncated = !strcmp(t, "true");
        else if (!strcmp(n, "NextContinuationToken"))
            cpy(r->next_token, sizeof r->next_token, t);
        else if (!strcmp(n, "KeyCount"))
            r->key_count = parse_u63(t);
        else if (!strcmp(n, "Contents") && x->in_contents) {
            x->in_contents = 0;
            if (!x->cur_key[0] || x->cur.bytes < 0) {
                x->bad = 1;
            } else if (x->fn && !x->stopped) {
                r->entries++;
                x->cur.key = x->cur_key;
                if (x->fn(&x->cur, x->ud))
                    x->stopped = 1;
            } else {
                r->entries++;
            }
        }
    } else if (x->depth == 3 && x->in_contents) {
        if (!strcmp(n, "Key")) {
            if (x->too_long || x->tlen >= sizeof x->cur_key)
                x->bad = 1;
            else
                memcpy(x->cur_key, t, x->tlen + 1);
        } else if (!strcmp(n, "Size")) {
            x->cur.bytes = parse_u63(t);
        } else if (!strcmp(n, "ETag")) {
            copy_etag(x->cur.etag, sizeof x->cur.etag, t);
        } else if (!strcmp(n, "LastModified")) {
            x->cur.mtime_ns = wci_s3_parse_time(t);
        }
    }
    x->depth--;
    x->tlen = 0;
    x->text[0] = '\0';
    x->too_long = 0;
    if (x->bad)
        XML_StopParser(x->p, XML_FALSE);
}

/* A DOCTYPE has no business in an S3 reply; refusing it shuts out entity
 * tricks altogether. */
static void XMLCALL on_doctype(void *ud, const char *name, const char *sysid, const char *pubid,
                               int has_internal)
{
    xp *x = ud;
    (void)name, (void)sysid, (void)pubid, (void)has_internal;
    x->bad = 1;
    XML_StopParser(x->p, XML_FALSE);
}

int wci_s3_parse(const void *buf, size_t len, wci_s3_reply *r, wci_s3_list_fn fn, void *ud)
{
    memset(r, 0, sizeof *r);
    r->key_count = -1;
    if (len > (1u << 30))
        return WCACHE_ECORRUPT;
    xp *x = NULL;
    /* The state is big; keep it off small thread stacks. */
    static _Thread_local xp xs;
    x = &xs;
    memset(x, 0, sizeof *x);
    x->r = r;
    x->fn = fn;
    x->ud = ud;
    x->p = XML_ParserCreate("UTF-8");
    if (!x->p)
        return WCACHE_ENOMEM;
    XML_SetUserData(x->p, x);
    XML_SetElementHandler(x->p, on_start, on_end);
    XML_SetCharacterDataHandler(x->p, on_text);
    XML_SetStartDoctypeDeclHandler(x->p, on_doctype);
    enum XML_Status st = XML_Parse(x->p, buf, (int)len, XML_TRUE);
    int rc = WCACHE_OK;
    if (x->stopped && !x->bad)
        rc = WCACHE_ESTOPPED;
    else if (st != XML_STATUS_OK || x->bad || !r->root[0])
        rc = WCACHE_ECORRUPT;
    XML_ParserFree(x->p);
    return rc;
}
