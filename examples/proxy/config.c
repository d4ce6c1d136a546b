/*
 * config.c - watchcache.conf(5): the proxy's YAML configuration (libyaml's
 * document API, so that every error can name its line), the built-in
 * resources, and the bearer token file.
 */
#include "proxy.h"

#include <errno.h>
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
    int rc = 0;
    for (yaml_node_pair_t *p_ = n->data.mapping.pairs.start;
         !rc && p_ < n->data.mapping.pairs.top; p_++) {
        const char *k = scalar(yaml_document_get_node(y->doc, p_->key));
        yaml_node_t *v = yaml_document_get_node(y->doc, p_->value);
        if (!k)
            rc = yerr(y, v, "?", "expected a string key");
        else if (!strcmp(k, "name"))
            rc = get_buf(y, v, k, r->name, sizeof r->name);
        else if (!strcmp(k, "singular"))
            rc = get_buf(y, v, k, r->singular, sizeof r->singular);
        else if (!strcmp(k, "kind"))
            rc = get_buf(y, v, k, r->kind, sizeof r->kind);
        else if (!strcmp(k, "prefix"))
            rc = get_buf(y, v, k, r->prefix, sizeof r->prefix);
        else if (!strcmp(k, "namespaced"))
            rc = get_bool(y, v, k, &r->namespaced);
        else if (!strcmp(k, "shortNames"))
            rc = get_list(y, v, k, &r->short_names[0][0], sizeof r->short_names[0], 4,
                          &r->nshort);
        else if (!strcmp(k, "indexes")) {
            char tmp[PX_MAX_INDEXES][128];
            rc = get_list(y, v, k, &tmp[0][0], 128, PX_MAX_INDEXES, &r->nidx);
            for (int i = 0; !rc && i < r->nidx; i++)
                memcpy(r->idx[i].path, tmp[i], 128);
        } else
            rc = yerr(y, v, k, "unknown field");
    }
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
    int rc = 0;
    for (yaml_node_pair_t *p_ = n->data.mapping.pairs.start;
         !rc && p_ < n->data.mapping.pairs.top; p_++) {
        const char *k = scalar(yaml_document_get_node(y->doc, p_->key));
        yaml_node_t *v = yaml_document_get_node(y->doc, p_->value);
        if (!k)
            rc = yerr(y, v, "?", "expected a string key");
        else if (!strcmp(k, "name"))
            rc = get_buf(y, v, k, u->name, sizeof u->name);
        else if (!strcmp(k, "resources"))
            rc = get_list(y, v, k, &u->resources[0][0], 64, PX_MAX_LIST, &u->nres);
        else if (!strcmp(k, "namespaces"))
            rc = get_list(y, v, k, &u->namespaces[0][0], 64, PX_MAX_LIST, &u->nns);
        else
            rc = yerr(y, v, k, "unknown field");
    }
    if (!rc && !u->name[0])
        rc = yerr(y, n, "name", "required");
    strcpy(y->path, save);
    if (!rc)
        c->nusers++;
    return rc;
}

static int do_section(ycx *y, px_config *c, const char *sec, yaml_node_t *n)
{
    char save[256];
    if (need_map(y, n, sec))
        return -1;
    push(y, sec, save);
    int rc = 0;
    for (yaml_node_pair_t *p_ = n->data.mapping.pairs.start;
         !rc && p_ < n->data.mapping.pairs.top; p_++) {
        const char *k = scalar(yaml_document_get_node(y->doc, p_->key));
        yaml_node_t *v = yaml_document_get_node(y->doc, p_->value);
        if (!k) {
            rc = yerr(y, v, "?", "expected a string key");
        } else if (!strcmp(sec, "sources")) {
            if (!strcmp(k, "etcd"))
                rc = get_str(y, v, k, &c->etcd);
            else if (!strcmp(k, "stream"))
                rc = get_str(y, v, k, &c->stream);
            else
                rc = yerr(y, v, k, "unknown field");
        } else if (!strcmp(sec, "retention")) {
            if (!strcmp(k, "seconds"))
                rc = get_int(y, v, k, 0, (int64_t)1 << 32, &c->retain_seconds);
            else if (!strcmp(k, "revisions"))
                rc = get_int(y, v, k, 0, (int64_t)1 << 40, &c->retain_revisions);
            else
                rc = yerr(y, v, k, "unknown field");
        } else if (!strcmp(sec, "snapshots")) {
            if (!strcmp(k, "dir"))
                rc = get_str(y, v, k, &c->snapshot_dir);
            else if (!strcmp(k, "url"))
                rc = get_str(y, v, k, &c->snapshot_url);
            else if (!strcmp(k, "interval"))
                rc = get_int(y, v, k, 0, 86400 * 30, &c->snapshot_interval_s);
            else if (!strcmp(k, "keep"))
                rc = get_int(y, v, k, 1, 1000, &c->snapshot_keep);
            else
                rc = yerr(y, v, k, "unknown field");
        } else if (!strcmp(sec, "tls")) {
            if (!strcmp(k, "cert"))
                rc = get_str(y, v, k, &c->tls_cert);
            else if (!strcmp(k, "key"))
                rc = get_str(y, v, k, &c->tls_key);
            else if (!strcmp(k, "clientCA"))
                rc = get_str(y, v, k, &c->client_ca);
            else
                rc = yerr(y, v, k, "unknown field");
        } else if (!strcmp(sec, "auth")) {
            if (!strcmp(k, "tokenFile"))
                rc = get_str(y, v, k, &c->token_file);
            else if (!strcmp(k, "insecureAllowRemote"))
                rc = get_bool(y, v, k, &c->insecure_allow_remote);
            else if (!strcmp(k, "users")) {
                if (!v || v->type != YAML_SEQUENCE_NODE) {
                    rc = yerr(y, v, k, "expected a list");
                } else {
                    int i = 0;
                    for (yaml_node_item_t *it = v->data.sequence.items.start;
                         !rc && it < v->data.sequence.items.top; it++)
                        rc = do_user(y, c, yaml_document_get_node(y->doc, *it), i++);
                }
            } else
                rc = yerr(y, v, k, "unknown field");
        } else if (!strcmp(sec, "limits")) {
            if (!strcmp(k, "maxConnections"))
                rc = get_intv(y, v, k, 1, 1000000, &c->max_connections);
            else if (!strcmp(k, "maxConnectionsPerIP"))
                rc = get_intv(y, v, k, 0, 1000000, &c->max_connections_per_ip);
            else if (!strcmp(k, "maxWatchesPerClient"))
                rc = get_intv(y, v, k, 1, 1000000, &c->max_watches_per_client);
            else if (!strcmp(k, "idleTimeout"))
                rc = get_intv(y, v, k, 1, 86400, &c->idle_timeout_s);
            else if (!strcmp(k, "writeTimeout"))
                rc = get_intv(y, v, k, 1, 86400, &c->write_timeout_s);
            else if (!strcmp(k, "watchSendBuffer"))
                rc = get_intv(y, v, k, 0, 64 << 20, &c->watch_sndbuf);
            else if (!strcmp(k, "watchQueue"))
                rc = get_intv(y, v, k, 16, 1 << 20, &c->watch_queue);
            else if (!strcmp(k, "maxHeaderBytes"))
                rc = get_intv(y, v, k, 1024, 1 << 20, &c->max_header_bytes);
            else if (!strcmp(k, "maxQueryBytes"))
                rc = get_intv(y, v, k, 256, 1 << 20, &c->max_query_bytes);
            else if (!strcmp(k, "watchTimeout"))
                rc = get_int(y, v, k, 1, 86400 * 7, &c->watch_timeout_s);
            else if (!strcmp(k, "encodeCacheBytes"))
                rc = get_int(y, v, k, 0, (int64_t)1 << 40, &c->encode_cache_bytes);
            else if (!strcmp(k, "requestTimeoutMs"))
                rc = get_int(y, v, k, 1, 600000, &c->request_timeout_ms);
            else if (!strcmp(k, "threads"))
                rc = get_intv(y, v, k, 1, 256, &c->threads);
            else
                rc = yerr(y, v, k, "unknown field");
        }
    }
    strcpy(y->path, save);
    return rc;
}

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
        for (yaml_node_pair_t *p_ = root->data.mapping.pairs.start;
             !rc && p_ < root->data.mapping.pairs.top; p_++) {
            const char *k = scalar(yaml_document_get_node(&doc, p_->key));
            yaml_node_t *v = yaml_document_get_node(&doc, p_->value);
            if (!k)
                rc = yerr(&y, v, "?", "expected a string key");
            else if (!strcmp(k, "listen"))
                rc = get_str(&y, v, k, &c->listen);
            else if (!strcmp(k, "threads"))
                rc = get_intv(&y, v, k, 1, 256, &c->threads);
            else if (!strcmp(k, "resources")) {
                if (!v || v->type != YAML_SEQUENCE_NODE) {
                    rc = yerr(&y, v, k, "expected a list");
                } else {
                    int i = 0;
                    for (yaml_node_item_t *it = v->data.sequence.items.start;
                         !rc && it < v->data.sequence.items.top; it++)
                        rc = do_resource(&y, c, yaml_document_get_node(&doc, *it), i++);
                }
            } else if (!strcmp(k, "sources") || !strcmp(k, "retention") ||
                       !strcmp(k, "snapshots") || !strcmp(k, "tls") || !strcmp(k, "auth") ||
                       !strcmp(k, "limits"))
                rc = do_section(&y, c, k, v);
            else
                rc = yerr(&y, v, k, "unknown field");
        }
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
