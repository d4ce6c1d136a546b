/*
 * json.c - the bytes the proxy sends: objects with their resourceVersion
 * spliced in (encoded once per object version and shared by every
 * request), Status bodies, and meta.k8s.io/v1 Tables.
 */
#include "proxy.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

/* ------------------------------------------------------------------------ */
/* buffers                                                                   */
/* ------------------------------------------------------------------------ */

void pb_need(pbuf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    if (b->off > 0 && b->off >= b->len / 2) { /* reuse the sent part first */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + more <= b->cap)
            return;
    }
    size_t nc = b->cap ? b->cap * 2 : 4096;
    while (nc < b->len + more)
        nc *= 2;
    char *np = realloc(b->p, nc);
    if (!np) {
        fprintf(stderr, "wcache-proxy: out of memory\n");
        abort();
    }
    b->p = np;
    b->cap = nc;
}

void pb_add(pbuf *b, const void *s, size_t n)
{
    pb_need(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void pb_str(pbuf *b, const char *s)
{
    pb_add(b, s, strlen(s));
}

void pb_fmt(pbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        pb_add(b, tmp, (size_t)n);
        return;
    }
    pb_need(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void pb_jstr(pbuf *b, const char *s, size_t n)
{
    pb_need(b, n + 2);
    b->p[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            pb_add(b, e, 2);
        } else if (ch < 0x20) {
            pb_fmt(b, "\\u%04x", ch);
        } else {
            pb_add(b, &s[i], 1);
        }
    }
    pb_add(b, "\"", 1);
}

void pb_free(pbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

size_t pb_take(pbuf *b, char *dst, size_t max)
{
    size_t n = b->len - b->off;
    if (n > max)
        n = max;
    memcpy(dst, b->p + b->off, n);
    b->off += n;
    if (b->off == b->len)
        b->off = b->len = 0;
    return n;
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t realtime_s(void)
{
    return (int64_t)time(NULL);
}

/* ------------------------------------------------------------------------ */
/* splicing metadata.resourceVersion                                         */
/* ------------------------------------------------------------------------ */

static size_t ws(const char *j, size_t n, size_t i)
{
    while (i < n && (j[i] == ' ' || j[i] == '\t' || j[i] == '\n' || j[i] == '\r'))
        i++;
    return i;
}

/* Index after the string starting at j[i] == '"', or 0 when unterminated. */
static size_t skip_string(const char *j, size_t n, size_t i)
{
    for (i++; i < n; i++) {
        if (j[i] == '\\')
            i++;
        else if (j[i] == '"')
            return i + 1;
    }
    return 0;
}

/* Index after the value starting at j[i], or 0 when malformed.  Only the
 * structure is checked: the stored bytes were JSON when the API server
 * wrote them; this guards against reading past the end, nothing more. */
static size_t skip_value(const char *j, size_t n, size_t i)
{
    if (i >= n)
        return 0;
    if (j[i] == '"')
        return skip_string(j, n, i);
    if (j[i] == '{' || j[i] == '[') {
        int depth = 0;
        while (i < n) {
            char ch = j[i];
            if (ch == '"') {
                i = skip_string(j, n, i);
                if (!i)
                    return 0;
                continue;
            }
            if (ch == '{' || ch == '[')
                depth++;
            else if (ch == '}' || ch == ']') {
                if (--depth == 0)
                    return i + 1;
            }
            i++;
        }
        return 0;
    }
    while (i < n && j[i] != ',' && j[i] != '}' && j[i] != ']' && j[i] != ' ' && j[i] != '\n' &&
           j[i] != '\t' && j[i] != '\r')
        i++;
    return i;
}

/* Find member `name` of the object whose '{' is at j[o]: sets [*vs, *ve) to
 * its value; returns 1 found, 0 not found, -1 malformed.  *close gets the
 * index of the object's '}'. */
static int find_member(const char *j, size_t n, size_t o, const char *name, size_t *vs,
                       size_t *ve, size_t *close)
{
    size_t nl = strlen(name);
    size_t i = ws(j, n, o + 1);
    int found = 0;
    if (i < n && j[i] == '}') {
        *close = i;
        return 0;
    }
    for (;;) {
        if (i >= n || j[i] != '"')
            return -1;
        size_t ke = skip_string(j, n, i);
        if (!ke)
            return -1;
        int match = !found && ke - i - 2 == nl && memcmp(j + i + 1, name, nl) == 0;
        i = ws(j, n, ke);
        if (i >= n || j[i] != ':')
            return -1;
        i = ws(j, n, i + 1);
        size_t e = skip_value(j, n, i);
        if (!e)
            return -1;
        if (match) {
            *vs = i;
            *ve = e;
            found = 1;
        }
        i = ws(j, n, e);
        if (i < n && j[i] == ',') {
            i = ws(j, n, i + 1);
            continue;
        }
        if (i < n && j[i] == '}') {
            *close = i;
            return found;
        }
        return -1;
    }
}

int json_splice_rv(pbuf *out, const char *j, size_t n, int64_t rv)
{
    char rvs[32];
    int rl = snprintf(rvs, sizeof rvs, "\"%lld\"", (long long)rv);
    size_t o = ws(j, n, 0);
    if (o >= n || j[o] != '{')
        return -1;
    size_t ms, me, close;
    int f = find_member(j, n, o, "metadata", &ms, &me, &close);
    if (f < 0)
        return -1;
    if (f == 1 && j[ms] != '{') { /* metadata that is not an object: replace it */
        pb_add(out, j, ms);
        pb_fmt(out, "{\"resourceVersion\":%s}", rvs);
        pb_add(out, j + me, n - me);
        return 0;
    }
    if (f == 0) {
        /* no metadata: give it one */
        pb_add(out, j, o + 1);
        pb_fmt(out, "\"metadata\":{\"resourceVersion\":%s}", rvs);
        size_t rest = ws(j, n, o + 1);
        if (rest < n && j[rest] != '}')
            pb_add(out, ",", 1);
        pb_add(out, j + o + 1, n - o - 1);
        return 0;
    }
    size_t vs, ve, mclose;
    int g = find_member(j, n, ms, "resourceVersion", &vs, &ve, &mclose);
    if (g < 0)
        return -1;
    if (g == 1) {
        pb_add(out, j, vs);
        pb_add(out, rvs, (size_t)rl);
        pb_add(out, j + ve, n - ve);
        return 0;
    }
    pb_add(out, j, ms + 1);
    pb_fmt(out, "\"resourceVersion\":%s", rvs);
    if (j[ws(j, n, ms + 1)] != '}')
        pb_add(out, ",", 1);
    pb_add(out, j + ms + 1, n - ms - 1);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the encoded-object cache                                                  */
/* ------------------------------------------------------------------------ */

/* Every request for one object version gets the same bytes, spliced once:
 * keyed by (resource, key), holding the rv they were spliced with. */
#define ENC_SHARDS 64
typedef struct enc_ent {
    struct enc_ent *next;
    const px_resource *r;
    uint64_t h;
    int64_t rv;
    size_t klen, vlen;
    char *data; /* key bytes, then the value */
} enc_ent;

typedef struct enc_shard {
    pthread_mutex_t mu;
    enc_ent **tab;
    size_t nbuckets, count;
    size_t bytes;
} enc_shard;

static enc_shard shards[ENC_SHARDS];
static int64_t enc_max_bytes;
static atomic_ullong enc_hits, enc_misses;

void enc_cache_init(int64_t max_bytes)
{
    enc_max_bytes = max_bytes;
    for (int i = 0; i < ENC_SHARDS; i++) {
        pthread_mutex_init(&shards[i].mu, NULL);
        shards[i].nbuckets = 1024;
        shards[i].tab = calloc(shards[i].nbuckets, sizeof(enc_ent *));
        if (!shards[i].tab)
            abort();
    }
}

void enc_cache_stats(uint64_t *hits, uint64_t *misses, uint64_t *bytes)
{
    *hits = atomic_load(&enc_hits);
    *misses = atomic_load(&enc_misses);
    uint64_t b = 0;
    for (int i = 0; i < ENC_SHARDS; i++) {
        pthread_mutex_lock(&shards[i].mu);
        b += shards[i].bytes;
        pthread_mutex_unlock(&shards[i].mu);
    }
    *bytes = b;
}

static uint64_t hash_key(const px_resource *r, const void *k, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)r;
    const unsigned char *p = k;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static void shard_clear(enc_shard *s)
{
    for (size_t i = 0; i < s->nbuckets; i++) {
        enc_ent *e = s->tab[i];
        while (e) {
            enc_ent *nx = e->next;
            free(e->data);
            free(e);
            e = nx;
        }
        s->tab[i] = NULL;
    }
    s->count = 0;
    s->bytes = 0;
}

static void shard_grow(enc_shard *s)
{
    size_t nb = s->nbuckets * 2;
    enc_ent **nt = calloc(nb, sizeof *nt);
    if (!nt)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        enc_ent *e = s->tab[i];
        while (e) {
            enc_ent *nx = e->next;
            e->next = nt[e->h % nb];
            nt[e->h % nb] = e;
            e = nx;
        }
    }
    free(s->tab);
    s->tab = nt;
    s->nbuckets = nb;
}

void enc_object(pbuf *out, const px_resource *r, const wcache_kv *kv, int64_t rv)
{
    if (enc_max_bytes <= 0) {
        if (json_splice_rv(out, kv->value, kv->value_len, rv) != 0)
            pb_add(out, kv->value, kv->value_len);
        return;
    }
    uint64_t h = hash_key(r, kv->key, kv->key_len);
    enc_shard *s = &shards[(h >> 7) % ENC_SHARDS];
    pthread_mutex_lock(&s->mu);
    enc_ent **pp = &s->tab[h % s->nbuckets], *e;
    for (e = *pp; e; e = e->next)
        if (e->h == h && e->r == r && e->klen == kv->key_len &&
            memcmp(e->data, kv->key, kv->key_len) == 0)
            break;
    if (e && e->rv == rv) {
        pb_add(out, e->data + e->klen, e->vlen);
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add(&enc_hits, 1);
        return;
    }
    atomic_fetch_add(&enc_misses, 1);
    pbuf tmp = {0};
    pb_add(&tmp, kv->key, kv->key_len);
    if (json_splice_rv(&tmp, kv->value, kv->value_len, rv) != 0)
        pb_add(&tmp, kv->value, kv->value_len); /* not an object: as stored */
    pb_add(out, tmp.p + kv->key_len, tmp.len - kv->key_len);
    if (e) {
        s->bytes -= e->klen + e->vlen;
        free(e->data);
    } else {
        if ((int64_t)(s->bytes + tmp.len) * ENC_SHARDS > enc_max_bytes)
            shard_clear(s); /* crude, but bounded and rare */
        if (s->count >= s->nbuckets)
            shard_grow(s);
        e = calloc(1, sizeof *e);
        if (!e) {
            pthread_mutex_unlock(&s->mu);
            pb_free(&tmp);
            return;
        }
        e->h = h;
        e->r = r;
        e->klen = kv->key_len;
        e->next = s->tab[h % s->nbuckets];
        s->tab[h % s->nbuckets] = e;
        s->count++;
    }
    e->rv = rv;
    e->vlen = tmp.len - kv->key_len;
    e->data = tmp.p; /* handed over */
    s->bytes += tmp.len;
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------------------ */
/* Status                                                                    */
/* ------------------------------------------------------------------------ */

void status_body(pbuf *b, int code, const char *reason, const char *msg, const char *kind,
                 const char *name)
{
    pb_str(b,
           "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
           "\"message\":");
    pb_jstr(b, msg, strlen(msg));
    pb_str(b, ",\"reason\":");
    pb_jstr(b, reason, strlen(reason));
    if (kind || name) {
        pb_str(b, ",\"details\":{");
        if (name) {
            pb_str(b, "\"name\":");
            pb_jstr(b, name, strlen(name));
        }
        if (kind) {
            pb_str(b, name ? ",\"kind\":" : "\"kind\":");
            pb_jstr(b, kind, strlen(kind));
        }
        pb_str(b, "}");
    }
    pb_fmt(b, ",\"code\":%d}", code);
}

/* ------------------------------------------------------------------------ */
/* Tables                                                                    */
/* ------------------------------------------------------------------------ */

static void col(pbuf *b, int first, const char *name, const char *type, const char *format,
                int prio)
{
    pb_fmt(b,
           "%s{\"name\":\"%s\",\"type\":\"%s\",\"format\":\"%s\",\"description\":\"\","
           "\"priority\":%d}",
           first ? "" : ",", name, type, format, prio);
}

void table_columns(pbuf *b, const px_resource *r)
{
    pb_str(b, "[");
    col(b, 1, "Name", "string", "name", 0);
    if (strcmp(r->name, "pods") == 0) {
        col(b, 0, "Ready", "string", "", 0);
        col(b, 0, "Status", "string", "", 0);
        col(b, 0, "Restarts", "string", "", 0);
        col(b, 0, "Age", "string", "", 0);
        col(b, 0, "IP", "string", "", 1);
        col(b, 0, "Node", "string", "", 1);
    } else if (strcmp(r->name, "configmaps") == 0) {
        col(b, 0, "Data", "integer", "", 0);
        col(b, 0, "Age", "string", "", 0);
    } else if (strcmp(r->name, "namespaces") == 0) {
        col(b, 0, "Status", "string", "", 0);
        col(b, 0, "Age", "string", "", 0);
    } else {
        col(b, 0, "Age", "string", "", 0);
    }
    pb_str(b, "]");
}

/* kubectl's duration format (HumanDuration): 45s, 12m, 5h, 3d, 2y. */
static void age_cell(pbuf *b, json_t *meta)
{
    const char *ts = json_string_value(json_object_get(meta, "creationTimestamp"));
    struct tm tm = {0};
    if (!ts || !strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm)) {
        pb_str(b, "\"<unknown>\"");
        return;
    }
    int64_t d = realtime_s() - (int64_t)timegm(&tm);
    if (d < 0)
        d = 0;
    if (d < 120)
        pb_fmt(b, "\"%llds\"", (long long)d);
    else if (d < 3600 * 3)
        pb_fmt(b, "\"%lldm\"", (long long)(d / 60));
    else if (d < 86400 * 2)
        pb_fmt(b, "\"%lldh\"", (long long)(d / 3600));
    else if (d < 86400 * 365 * 2)
        pb_fmt(b, "\"%lldd\"", (long long)(d / 86400));
    else
        pb_fmt(b, "\"%lldy\"", (long long)(d / (86400 * 365)));
}

static const char *jpath_str(json_t *o, const char *a, const char *b)
{
    return json_string_value(json_object_get(json_object_get(o, a), b));
}

static void pod_cells(pbuf *b, json_t *o)
{
    json_t *st = json_object_get(o, "status");
    json_t *cs = json_object_get(st, "containerStatuses");
    json_t *containers = json_object_get(json_object_get(o, "spec"), "containers");
    size_t total = json_is_array(containers) ? json_array_size(containers) : 0;
    size_t ready = 0;
    long long restarts = 0;
    const char *reason = json_string_value(json_object_get(st, "reason"));
    const char *phase = json_string_value(json_object_get(st, "phase"));
    const char *status = reason ? reason : phase ? phase : "Unknown";
    size_t i;
    json_t *c;
    json_array_foreach(cs, i, c)
    {
        if (json_is_true(json_object_get(c, "ready")))
            ready++;
        restarts += json_integer_value(json_object_get(c, "restartCount"));
        const char *w = jpath_str(json_object_get(c, "state"), "waiting", "reason");
        const char *t = jpath_str(json_object_get(c, "state"), "terminated", "reason");
        if (w && *w)
            status = w;
        else if (t && *t)
            status = t;
    }
    if (json_array_size(cs) > total)
        total = json_array_size(cs);
    if (json_object_get(json_object_get(o, "metadata"), "deletionTimestamp"))
        status = "Terminating";
    pb_fmt(b, ",\"%zu/%zu\",", ready, total);
    pb_jstr(b, status, strlen(status));
    pb_fmt(b, ",\"%lld\",", restarts);
    age_cell(b, json_object_get(o, "metadata"));
    const char *ip = json_string_value(json_object_get(st, "podIP"));
    const char *node = jpath_str(o, "spec", "nodeName");
    pb_str(b, ",");
    pb_jstr(b, ip ? ip : "<none>", strlen(ip ? ip : "<none>"));
    pb_str(b, ",");
    pb_jstr(b, node ? node : "<none>", strlen(node ? node : "<none>"));
}

void table_row(pbuf *b, const px_resource *r, const wcache_kv *kv, int64_t rv, int include)
{
    json_error_t jerr;
    json_t *o = json_loadb(kv->value, kv->value_len, 0, &jerr);
    json_t *meta = json_object_get(o, "metadata");
    const char *name = json_string_value(json_object_get(meta, "name"));
    if (!name) { /* the key's last segment */
        const char *k = kv->key;
        size_t i = kv->key_len;
        while (i > 0 && k[i - 1] != '/')
            i--;
        pb_str(b, "{\"cells\":[");
        pb_jstr(b, k + i, kv->key_len - i);
    } else {
        pb_str(b, "{\"cells\":[");
        pb_jstr(b, name, strlen(name));
    }
    if (strcmp(r->name, "pods") == 0) {
        pod_cells(b, o);
    } else if (strcmp(r->name, "configmaps") == 0) {
        pb_fmt(b, ",%zu,",
               json_object_size(json_object_get(o, "data")) +
                   json_object_size(json_object_get(o, "binaryData")));
        age_cell(b, meta);
    } else if (strcmp(r->name, "namespaces") == 0) {
        const char *ph = jpath_str(o, "status", "phase");
        pb_str(b, ",");
        pb_jstr(b, ph ? ph : "Active", strlen(ph ? ph : "Active"));
        pb_str(b, ",");
        age_cell(b, meta);
    } else {
        pb_str(b, ",");
        age_cell(b, meta);
    }
    pb_str(b, "]");
    if (include == 2) {
        pb_str(b, ",\"object\":");
        enc_object(b, r, kv, rv);
    } else if (include == 1) {
        pb_str(b, ",\"object\":{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":"
                  "\"meta.k8s.io/v1\",\"metadata\":");
        if (json_is_object(meta)) {
            json_t *m = json_copy(meta);
            char rvs[24];
            snprintf(rvs, sizeof rvs, "%lld", (long long)rv);
            json_object_del(m, "managedFields");
            json_object_set_new(m, "resourceVersion", json_string(rvs));
            char *s = json_dumps(m, JSON_COMPACT);
            if (s) {
                pb_str(b, s);
                free(s);
            } else {
                pb_str(b, "{}");
            }
            json_decref(m);
        } else {
            pb_fmt(b, "{\"resourceVersion\":\"%lld\"}", (long long)rv);
        }
        pb_str(b, "}");
    }
    pb_str(b, "}");
    json_decref(o);
}
