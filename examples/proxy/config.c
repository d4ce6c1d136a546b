/*
 * config.c - watchcache.conf(5): the proxy's YAML configuration (libyaml's
 * document API, so that every error can name its line), the built-in
 * resources, and the bearer token file.
 */
#include "proxy.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

FILE *cfg_err; /* where the readers' messages go; NULL: stderr */

static FILE *cfg_errf(void)
{
    return cfg_err ? cfg_err : stderr;
}

void cfg_defaults(px_config *c)
{
    memset(c, 0, sizeof *c);
    c->retain_seconds = -1;
    c->retain_revisions = -1;
    c->snapshot_interval_s = 300;
    c->snapshot_keep = 3;
    c->threads = 2;
    c->max_connections = 4096;
    c->max_connections_per_ip = 0;
    c->max_watches_per_client = 1200;
    c->idle_timeout_s = 60;
    c->write_timeout_s = 10;
    c->watch_sndbuf = 256 * 1024;
    c->watch_queue = 4096;
    c->max_header_bytes = 16384;
    c->max_query_bytes = 8192;
    c->watch_timeout_s = 0;
    c->encode_cache_bytes = (int64_t)256 << 20;
    c->request_timeout_ms = 3000;
}

static px_resource *add_res(px_config *c, const char *name, const char *singular,
                            const char *kind, const char *shortn, int namespaced)
{
    if (c->nres >= PX_MAX_RESOURCES)
        return NULL;
    px_resource *r = &c->res[c->nres++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->singular, sizeof r->singular, "%s", singular);
    snprintf(r->kind, sizeof r->kind, "%s", kind);
    if (shortn && *shortn)
        snprintf(r->short_names[r->nshort++], sizeof r->short_names[0], "%s", shortn);
    r->namespaced = namespaced;
    snprintf(r->prefix, sizeof r->prefix, "/registry/%s/", name);
    return r;
}

void cfg_default_resources(px_config *c)
{
    if (c->nres > 0)
        return;
    px_resource *p = add_res(c, "pods", "pod", "Pod", "po", 1);
    snprintf(p->idx[0].path, sizeof p->idx[0].path, "spec.nodeName");
    p->nidx = 1;
    add_res(c, "configmaps", "configmap", "ConfigMap", "cm", 1);
    add_res(c, "namespaces", "namespace", "Namespace", "ns", 0);
}

px_resource *cfg_find_resource(const char *name)
{
    for (int i = 0; i < G.nres; i++) {
        px_resource *r = &G.res[i];
        if (strcmp(r->name, name) == 0)
            return r;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* YAML                                                                      */
/* ------------------------------------------------------------------------ */

typedef struct ycx {
    yaml_document_t *doc;
    const char *file;
    char path[256]; /* dotted field name for messages */
} ycx;

static int yerr(ycx *y, yaml_node_t *n, const char *field, const char *why)
{
    fprintf(cfg_errf(), "wcache-proxy: %s:%lu: %s%s%s: %s\n", y->file,
            n ? (unsigned long)n->start_mark.line + 1 : 0UL, y->path, y->path[0] ? "." : "",
            field, why);
    return -1;
}

static const char *scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int get_str(ycx *y, yaml_node_t *v, const char *field, char **out)
{
    const char *s = scalar(v);
    if (!s)
        return yerr(y, v, field, "expected a string");
    free(*out);
    *out = strdup(s);
    return 0;
}

static int get_buf(ycx *y, yaml_node_t *v, const char *field, char *out, size_t cap)
{
    const char *s = scalar(v);
    if (!s)
        return yerr(y, v, field, "expected a string");
    if (strlen(s) >= cap)
        return yerr(y, v, field, "too long");
    snprintf(out, cap, "%s", s);
    return 0;
}

static int get_int(ycx *y, yaml_node_t *v, const char *field, int64_t lo, int64_t hi,
                   int64_t *out)
{
    const char *s = scalar(v);
    char *end;
    if (!s || !*s)
        return yerr(y, v, field, "expected an integer");
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || *end)
        return yerr(y, v, field, "expected an integer");
    if (x < lo || x > hi) {
        char why[128];
        snprintf(why, sizeof why, "%lld is out of range %lld..%lld", x, (long long)lo,
                 (long long)hi);
        return yerr(y, v, field, why);
    }
    *out = x;
    return 0;
}

static int get_intv(ycx *y, yaml_node_t *v, const char *field, int64_t lo, int64_t hi, int *out)
{
    int64_t x;
    if (get_int(y, v, field, lo, hi, &x))
        return -1;
    *out = (int)x;
    return 0;
}

static int get_bool(ycx *y, yaml_node_t *v, const char *field, int *out)
{
    const char *s = scalar(v);
    if (s && (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on"))) {
        *out = 1;
        return 0;
    }
    if (s && (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off"))) {
        *out = 0;
        return 0;
    }
    return yerr(y, v, field, "expected true or false");
}

/* A sequence of strings into out[cap][w]. */
static int get_list(ycx *y, yaml_node_t *v, const char *field, char *out, int w, int cap,
                    int *n)
{
    if (!v || v->type != YAML_SEQUENCE_NODE)
        return yerr(y, v, field, "expected a list");
    *n = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        yaml_node_t *e = yaml_document_get_node(y->doc, *it);
        if (*n >= cap)
            return yerr(y, e, field, "too many entries");
        if (get_buf(y, e, field, out + (size_t)*n * (size_t)w, (size_t)w))
            return -1;
        (*n)++;
    }
    return 0;
}

static int need_map(ycx *y, yaml_node_t *n, const char *field)
{
    if (!n || n->type != YAML_MAPPING_NODE)
        return yerr(y, n, field, "expected a mapping");
    return 0;
}

static void push(ycx *y, const char *seg, char *save)
{
    strcpy(save, y->path);
    size_t l = strlen(y->path);
    snprintf(y->path + l, sizeof y->path - l, "%s%s", l ? "." : "", seg);
}

/* A mapping's keys: each names a field of the struct being read, by type. */
typedef enum ftype {
    F_STR,  /* char *, strdup'ed */
    F_BUF,  /* char[cap] */
    F_INT,  /* int64_t in lo..hi */
    F_INTV, /* int in lo..hi */
    F_BOOL, /* int, 0 or 1 */
    F_LIST, /* char[hi][cap] strings, their count in the int at noff */
    F_FN,   /* fn reads it */
} ftype;

typedef struct field {
    const char *key;
    ftype t;
    size_t off, cap, noff;
    int64_t lo, hi;
    int (*fn)(ycx *y, void *target, yaml_node_t *v, const char *k);
} field;

/* the member's size, checked against the type the field is read as */
#define FSIZE(st, m, type) sizeof(char[sizeof((st *)0)->m == sizeof(type) ? 1 : -1])
#define FSTR(k, st, m)                                                 \
    {                                                                  \
        k, F_STR, offsetof(st, m), FSIZE(st, m, char *), 0, 0, 0, NULL \
    }
#define FBUF(k, st, m)                                               \
    {                                                                \
        k, F_BUF, offsetof(st, m), sizeof((st *)0)->m, 0, 0, 0, NULL \
    }
#define FINT(k, st, m, lo, hi)                                            \
    {                                                                     \
        k, F_INT, offsetof(st, m), FSIZE(st, m, int64_t), 0, lo, hi, NULL \
    }
#define FINTV(k, st, m, lo, hi)                                        \
    {                                                                  \
        k, F_INTV, offsetof(st, m), FSIZE(st, m, int), 0, lo, hi, NULL \
    }
#define FBOOL(k, st, m)                                              \
    {                                                                \
        k, F_BOOL, offsetof(st, m), FSIZE(st, m, int), 0, 0, 0, NULL \
    }
#define FLIST(k, st, m, n)                                                     \
    {                                                                          \
        k, F_LIST, offsetof(st, m), sizeof((st *)0)->m[0], offsetof(st, n), 0, \
            sizeof((st *)0)->m / sizeof((st *)0)->m[0], NULL                   \
    }
#define FFN(k, fn)                 \
    {                              \
        k, F_FN, 0, 0, 0, 0, 0, fn \
    }

static int get_field(ycx *y, const field *f, void *target, yaml_node_t *v)
{
    char *at = (char *)target + f->off;
    switch (f->t) {
    case F_STR: return get_str(y, v, f->key, (char **)(void *)at);
    case F_BUF: return get_buf(y, v, f->key, at, f->cap);
    case F_INT: return get_int(y, v, f->key, f->lo, f->hi, (int64_t *)(void *)at);
    case F_INTV: return get_intv(y, v, f->key, f->lo, f->hi, (int *)(void *)at);
    case F_BOOL: return get_bool(y, v, f->key, (int *)(void *)at);
    case F_LIST:
        return get_list(y, v, f->key, at, (int)f->cap, (int)f->hi,
                        (int *)(void *)((char *)target + f->noff));
    case F_FN: return f->fn(y, target, v, f->key);
    }
    return -1;
}

/* Every pair of mapping n, by the keys of tab (n fields), into target;
 * the first error ends it. */
static int for_each_pair(ycx *y, yaml_node_t *n, const field *tab, size_t nf, void *target)
{
    int rc = 0;
    for (yaml_node_pair_t *p_ = n->data.mapping.pairs.start;
         !rc && p_ < n->data.mapping.pairs.top; p_++) {
        const char *k = scalar(yaml_document_get_node(y->doc, p_->key));
        yaml_node_t *v = yaml_document_get_node(y->doc, p_->value);
        if (!k) {
            rc = yerr(y, v, "?", "expected a string key");
            continue;
        }
        size_t i = 0;
        while (i < nf && strcmp(k, tab[i].key))
            i++;
        rc = i < nf ? get_field(y, &tab[i], target, v) : yerr(y, v, k, "unknown field");
    }
    return rc;
}

#define NFIELDS(tab) (sizeof tab / sizeof tab[0])

/* A sequence of mappings, each read by one(y, c, item, its index). */
static int get_seq(ycx *y, px_config *c, yaml_node_t *v, const char *k,
                   int (*one)(ycx *, px_config *, yaml_node_t *, int))
{
    if (!v || v->type != YAML_SEQUENCE_NODE)
        return yerr(y, v, k, "expected a list");
    int rc = 0, i = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start;
         !rc && it < v->data.sequence.items.top; it++)
        rc = one(y, c, yaml_document_get_node(y->doc, *it), i++);
    return rc;
}

static int get_indexes(ycx *y, void *target, yaml_node_t *v, const char *k)
{
    px_resource *r = target;
    char tmp[PX_MAX_INDEXES][128];
    int rc = get_list(y, v, k, &tmp[0][0], 128, PX_MAX_INDEXES, &r->nidx);
    for (int i = 0; !rc && i < r->nidx; i++)
        memcpy(r->idx[i].path, tmp[i], 128);
    return rc;
}

static const field resource_fields[] = {
    FBUF("name", px_resource, name),
    FBUF("singular", px_resource, singular),
    FBUF("kind", px_resource, kind),
    FBUF("prefix", px_resource, prefix),
    FBOOL("namespaced", px_resource, namespaced),
    FLIST("shortNames", px_resource, short_names, nshort),
    FFN("indexes", get_indexes),
};

static int do_resource(ycx *y, px_config *c, yaml_node_t *n, int ix)
{
    char save[256], seg[32];
    snprintf(seg, sizeof seg, "resources[%d]", ix);
    if (need_map(y, n, seg))
        return -1;
    if (c->nres >= PX_MAX_RESOURCES)
        return yerr(y, n, seg, "too many resources");
    px_resource *r = &c->res[c->nres];
    memset(r, 0, sizeof *r);
    r->namespaced = 1;
    push(y, seg, save);
    int rc = for_each_pair(y, n, resource_fields, NFIELDS(resource_fields), r);
    if (!rc && !r->name[0])
        rc = yerr(y, n, "name", "required");
    if (!rc) {
        for (const char *s = r->name; *s; s++)
            if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
                rc = yerr(y, n, "name", "lower-case letters, digits and '-' only");
    }
    if (!rc && !r->kind[0])
        rc = yerr(y, n, "kind", "required");
    if (!rc) {
        if (!r->singular[0]) {
            size_t l = strlen(r->kind);
            for (size_t i = 0; i < l && i + 1 < sizeof r->singular; i++)
                r->singular[i] =
                    (char)(r->kind[i] >= 'A' && r->kind[i] <= 'Z' ? r->kind[i] - 'A' + 'a'
                                                                  : r->kind[i]);
        }
        if (!r->prefix[0]) {
            char nm[sizeof r->name];
            memcpy(nm, r->name, sizeof nm);
            snprintf(r->prefix, sizeof r->prefix, "/registry/%s/", nm);
        }
        for (int i = 0; i < c->nres; i++)
            if (!strcmp(c->res[i].name, r->name))
                rc = yerr(y, n, "name", "duplicate resource");
    }
    strcpy(y->path, save);
    if (!rc)
        c->nres++;
    return rc;
}

static const field user_fields[] = {
    FBUF("name", px_user, name),
    FLIST("resources", px_user, resources, nres),
    FLIST("namespaces", px_user, namespaces, nns),
};

static int do_user(ycx *y, px_config *c, yaml_node_t *n, int ix)
{
    char save[256], seg[32];
    snprintf(seg, sizeof seg, "users[%d]", ix);
    if (need_map(y, n, seg))
        return -1;
    if (c->nusers >= PX_MAX_USERS)
        return yerr(y, n, seg, "too many users");
    px_user *u = &c->users[c->nusers];
    memset(u, 0, sizeof *u);
    push(y, seg, save);
    int rc = for_each_pair(y, n, user_fields, NFIELDS(user_fields), u);
    if (!rc && !u->name[0])
        rc = yerr(y, n, "name", "required");
    strcpy(y->path, save);
    if (!rc)
        c->nusers++;
    return rc;
}

static int get_users(ycx *y, void *target, yaml_node_t *v, const char *k)
{
    return get_seq(y, target, v, k, do_user);
}

static const field sources_fields[] = {
    FSTR("etcd", px_config, etcd),
    FSTR("stream", px_config, stream),
};
static const field retention_fields[] = {
    FINT("seconds", px_config, retain_seconds, 0, (int64_t)1 << 32),
    FINT("revisions", px_config, retain_revisions, 0, (int64_t)1 << 40),
};
static const field snapshots_fields[] = {
    FSTR("dir", px_config, snapshot_dir),
    FSTR("url", px_config, snapshot_url),
    FINT("interval", px_config, snapshot_interval_s, 0, 86400 * 30),
    FINT("keep", px_config, snapshot_keep, 1, 1000),
};
static const field tls_fields[] = {
    FSTR("cert", px_config, tls_cert),
    FSTR("key", px_config, tls_key),
    FSTR("clientCA", px_config, client_ca),
};
static const field auth_fields[] = {
    FSTR("tokenFile", px_config, token_file),
    FBOOL("insecureAllowRemote", px_config, insecure_allow_remote),
    FFN("users", get_users),
};
static const field limits_fields[] = {
    FINTV("maxConnections", px_config, max_connections, 1, 1000000),
    FINTV("maxConnectionsPerIP", px_config, max_connections_per_ip, 0, 1000000),
    FINTV("maxWatchesPerClient", px_config, max_watches_per_client, 1, 1000000),
    FINTV("idleTimeout", px_config, idle_timeout_s, 1, 86400),
    FINTV("writeTimeout", px_config, write_timeout_s, 1, 86400),
    FINTV("watchSendBuffer", px_config, watch_sndbuf, 0, 64 << 20),
    FINTV("watchQueue", px_config, watch_queue, 16, 1 << 20),
    FINTV("maxHeaderBytes", px_config, max_header_bytes, 1024, 1 << 20),
    FINTV("maxQueryBytes", px_config, max_query_bytes, 256, 1 << 20),
    FINT("watchTimeout", px_config, watch_timeout_s, 1, 86400 * 7),
    FINT("encodeCacheBytes", px_config, encode_cache_bytes, 0, (int64_t)1 << 40),
    FINT("requestTimeoutMs", px_config, request_timeout_ms, 1, 600000),
    FINTV("threads", px_config, threads, 1, 256),
};

static const struct section {
    const char *name;
    const field *tab;
    size_t nf;
} sections[] = {
    {"sources", sources_fields, NFIELDS(sources_fields)},
    {"retention", retention_fields, NFIELDS(retention_fields)},
    {"snapshots", snapshots_fields, NFIELDS(snapshots_fields)},
    {"tls", tls_fields, NFIELDS(tls_fields)},
    {"auth", auth_fields, NFIELDS(auth_fields)},
    {"limits", limits_fields, NFIELDS(limits_fields)},
};

static int get_section(ycx *y, void *target, yaml_node_t *n, const char *sec)
{
    size_t i = 0;
    while (strcmp(sections[i].name, sec))
        i++; /* the top-level table names only these */
    char save[256];
    if (need_map(y, n, sec))
        return -1;
    push(y, sec, save);
    int rc = for_each_pair(y, n, sections[i].tab, sections[i].nf, target);
    strcpy(y->path, save);
    return rc;
}

static int get_resources(ycx *y, void *target, yaml_node_t *v, const char *k)
{
    return get_seq(y, target, v, k, do_resource);
}

static const field top_fields[] = {
    FSTR("listen", px_config, listen), FINTV("threads", px_config, threads, 1, 256),
    FFN("resources", get_resources),   FFN("sources", get_section),
    FFN("retention", get_section),     FFN("snapshots", get_section),
    FFN("tls", get_section),           FFN("auth", get_section),
    FFN("limits", get_section),
};

int cfg_load_yaml(px_config *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(cfg_errf(), "wcache-proxy: %s: %s\n", path, strerror(errno));
        return -1;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        fprintf(cfg_errf(), "wcache-proxy: %s:%lu: %s\n", path,
                (unsigned long)parser.problem_mark.line + 1,
                parser.problem ? parser.problem : "YAML syntax error");
        yaml_parser_delete(&parser);
        fclose(f);
        return -1;
    }
    ycx y = {.doc = &doc, .file = path};
    free(c->file);
    c->file = strdup(path);
    int rc = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        rc = 0; /* an empty file: every default */
    } else if (root->type != YAML_MAPPING_NODE) {
        rc = yerr(&y, root, "(top)", "expected a mapping");
    } else {
        rc = for_each_pair(&y, root, top_fields, NFIELDS(top_fields), c);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* tokens                                                                    */
/* ------------------------------------------------------------------------ */

/* kube-apiserver's static token file: token,user[,uid[,"groups"]] per line. */
int cfg_load_tokens(px_config *c)
{
    if (!c->token_file)
        return 0;
    FILE *f = fopen(c->token_file, "r");
    if (!f) {
        fprintf(cfg_errf(), "wcache-proxy: %s: %s\n", c->token_file, strerror(errno));
        return -1;
    }
    char line[4096];
    unsigned long ln = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        size_t l = strcspn(line, "\r\n");
        line[l] = 0;
        if (!line[0] || line[0] == '#')
            continue;
        char *comma = strchr(line, ',');
        if (!comma || comma == line || !comma[1] || comma[1] == ',') {
            fprintf(cfg_errf(), "wcache-proxy: %s:%lu: expected TOKEN,USER\n", c->token_file,
                    ln);
            fclose(f);
            return -1;
        }
        *comma = 0;
        char *user = comma + 1;
        user[strcspn(user, ",")] = 0;
        px_token *nt = realloc(c->tokens, (size_t)(c->ntokens + 1) * sizeof *nt);
        if (!nt)
            abort();
        c->tokens = nt;
        c->tokens[c->ntokens].token = strdup(line);
        c->tokens[c->ntokens].user = strdup(user);
        c->ntokens++;
    }
    fclose(f);
    if (c->ntokens == 0) {
        fprintf(cfg_errf(), "wcache-proxy: %s: no tokens\n", c->token_file);
        return -1;
    }
    return 0;
}
