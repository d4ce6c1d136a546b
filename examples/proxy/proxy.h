/*
 * proxy.h - wcache-proxy(1): a read-only Kubernetes-style API server that
 * serves every read from libwatchcache caches fed by etcd.  Shared types of
 * its files: main.c (start, sources, snapshots, signals), config.c (YAML
 * and flags), http.c (libmicrohttpd, routing, auth, limits, metrics),
 * api.c (GET, LIST, WATCH), json.c (splicing, the encoded-object cache,
 * Tables, Status bodies).
 */
#ifndef WCPROXY_H
#define WCPROXY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <watchcache.h>

#define PX_MAX_RESOURCES 32
#define PX_MAX_INDEXES 4
#define PX_MAX_USERS 64
#define PX_MAX_LIST 32

/* A growable byte buffer with a read offset (what was already sent). */
typedef struct pbuf {
    char *p;
    size_t len, off, cap;
} pbuf;

void pb_need(pbuf *b, size_t more); /* exits on out of memory */
void pb_add(pbuf *b, const void *s, size_t n);
void pb_str(pbuf *b, const char *s);
void pb_fmt(pbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pb_jstr(pbuf *b, const char *s, size_t n); /* a JSON string, quoted */
void pb_free(pbuf *b);
/* Move up to max unsent bytes to dst; drops what was sent. */
size_t pb_take(pbuf *b, char *dst, size_t max);
static inline size_t pb_pending(const pbuf *b)
{
    return b->len - b->off;
}

typedef struct px_index {
    char path[128]; /* JSON path, also the field selector name */
    int id;
} px_index;

/* One served resource: one cache fed by one source over one key prefix. */
typedef struct px_resource {
    char name[64];     /* plural, the URL segment: "pods" */
    char singular[64]; /* "pod" */
    char kind[64];     /* "Pod" */
    char short_names[4][16];
    int nshort;
    int namespaced;
    char prefix[256]; /* etcd key prefix, "/registry/pods/" */
    px_index idx[PX_MAX_INDEXES];
    int nidx;
    wcache_cache *cache;
    wcache_etcd *etcd;
    void *k8s; /* a watch-stream source, when one is configured */
    atomic_int ready;
    atomic_llong ready_change_ms; /* last change of ready, for Retry-After */
    int64_t snap_last_rev, snap_last_ms;
    int64_t store_last_rev, store_last_ms;
} px_resource;

typedef struct px_user {
    char name[128];
    char resources[PX_MAX_LIST][64];
    int nres; /* 0: every resource */
    char namespaces[PX_MAX_LIST][64];
    int nns; /* 0: every namespace */
} px_user;

typedef struct px_token {
    char *token;
    char *user;
} px_token;

typedef struct px_config {
    /* file it came from, for messages */
    char *file;
    char *listen;
    char *etcd;
    char *stream;
    char *streams[PX_MAX_RESOURCES]; /* --stream, repeatable */
    int nstreams;
    int synthetic; /* no source given: the built-in synthetic stream */
    uint64_t seed;
    char *snapshot_dir;
    char *snapshot_url;
    char *tls_cert, *tls_key, *client_ca;
    char *token_file;
    int insecure_allow_remote; /* listen elsewhere without TLS + auth */
    int64_t retain_seconds;    /* -1: library default */
    int64_t retain_revisions;
    int64_t snapshot_interval_s; /* 0: only on SIGTERM */
    int64_t snapshot_keep;
    int threads;
    int max_connections;
    int max_connections_per_ip;
    int max_watches_per_client;
    int idle_timeout_s;
    int write_timeout_s; /* a watch that cannot be written to this long is cut */
    int watch_sndbuf;    /* SO_SNDBUF of watch connections; 0: the kernel's */
    int watch_queue;     /* events queued per watcher before it is ended */
    int max_header_bytes;
    int max_query_bytes;
    int64_t watch_timeout_s; /* server's watch lifetime when none asked; 0: 1800 */
    int64_t encode_cache_bytes;
    int64_t request_timeout_ms; /* freshness waits; 0: 3000 */
    px_resource res[PX_MAX_RESOURCES];
    int nres;
    px_user users[PX_MAX_USERS];
    int nusers;
    px_token *tokens;
    int ntokens;
} px_config;

extern px_config G;
extern atomic_int px_stopping;

/* config.c */
#include <stdio.h>
extern FILE *cfg_err; /* where the readers' messages go; NULL: stderr */
void cfg_defaults(px_config *c);
/* Parse the YAML file; on error prints "FILE:LINE: FIELD: why" and returns -1. */
int cfg_load_yaml(px_config *c, const char *path);
/* Add the built-in resources (pods, configmaps, namespaces) when none. */
void cfg_default_resources(px_config *c);
int cfg_load_tokens(px_config *c);
px_resource *cfg_find_resource(const char *name);

/* json.c */
/* Append the object with metadata.resourceVersion set to rv. */
void enc_object(pbuf *out, const px_resource *r, const wcache_kv *kv, int64_t rv);
void enc_cache_init(int64_t max_bytes);
void enc_cache_stats(uint64_t *hits, uint64_t *misses, uint64_t *bytes);
/* Splice metadata.resourceVersion into a JSON object; -1 when it is not one. */
int json_splice_rv(pbuf *out, const char *j, size_t n, int64_t rv);
void status_body(pbuf *b, int code, const char *reason, const char *msg, const char *kind,
                 const char *name);
/* Table column definitions of a resource, and one row. */
void table_columns(pbuf *b, const px_resource *r);
/* include: 0 None, 1 Metadata, 2 Object */
void table_row(pbuf *b, const px_resource *r, const wcache_kv *kv, int64_t rv, int include);
int64_t now_ms(void);
int64_t realtime_s(void);

/* One API request, as http.c routed it to api.c. */
struct MHD_Connection;
typedef struct px_req {
    struct MHD_Connection *conn;
    px_resource *r;
    const char *ns;   /* NULL: every namespace (or cluster-scoped) */
    const char *name; /* NULL: a collection */
    const char *q_rv, *q_rvm, *q_limit, *q_continue, *q_labels, *q_fields, *q_watch, *q_timeout,
        *q_bookmarks, *q_sie, *q_include;
    int table;           /* Accept asked for as=Table */
    const px_user *user; /* NULL: no allow-list */
    char client[300];    /* identity or address, for per-client limits */
} px_req;

/* api.c: queue the answer; returns an MHD_Result. */
int api_serve(px_req *q);
int api_init(void);
void api_shutdown(void); /* ends every watch, waits for them to go */
void api_stats(uint64_t *watchers, uint64_t *suspended);

/* http.c: queue a Status (retry_after 0: none) or a body. */
int reply_status(struct MHD_Connection *c, int code, const char *reason, const char *msg,
                 const char *kind, const char *name, int retry_after);
int reply_buf(struct MHD_Connection *c, int code, pbuf *b, const char *ctype);
int allowed_ns(const px_user *u, const char *ns);

/* metrics, counted where they happen */
extern atomic_ullong m_watch_events, m_watch_overflows, m_watch_opened, m_list_items,
    m_fresh_waits, m_fresh_timeouts;

/* http.c */
int http_start(void);
void http_stop(void);
void metrics_list_done(void);

/* main.c */
void px_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int px_resource_ready(px_resource *r);

#endif
