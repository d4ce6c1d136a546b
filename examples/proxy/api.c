/*
 * api.c - GET, LIST and WATCH with the Kubernetes watch cache's semantics
 * (../shared notes: k8s-watch-cache-semantics.md), served from the
 * libwatchcache caches.
 *
 * LISTs without a limit are streamed from a pinned view in chunks, so a
 * 100k-object LIST never sits whole in memory.  Watches are driven by the
 * watch fds: a connection with nothing to send is suspended in
 * libmicrohttpd and one dispatcher thread resumes it when its fd polls
 * readable or a deadline (timeout, bookmark) comes; no thread per watcher.
 */
#include "filter.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

/* ------------------------------------------------------------------------ */
/* parameters and reads                                                      */
/* ------------------------------------------------------------------------ */

static int parse_rv(const char *s, int64_t *out)
{
    if (!s || !*s) {
        *out = -1; /* unset */
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 0 || s[0] == '-' || s[0] == '+' || s[0] == ' ')
        return -1;
    *out = v;
    return 0;
}

static int is_true(const char *s)
{
    return s && (!strcmp(s, "true") || !strcmp(s, "1"));
}

static int bad(px_req *q, const char *msg)
{
    return reply_status(q->conn, 400, "BadRequest", msg, NULL, NULL, 0);
}

static int invalid(px_req *q, const char *msg)
{
    return reply_status(q->conn, 422, "Invalid", msg, NULL, NULL, 0);
}

static int64_t timeout_ms(void)
{
    return G.request_timeout_ms > 0 ? G.request_timeout_ms : 3000;
}

/* Pin v as the request asks; on failure queue the Status and return -1
 * (with *mret set to the MHD result). */
static int pin_fresh(px_req *q, wcache_view *v, int64_t min_rev, int *mret)
{
    px_resource *r = q->r;
    wcache_code rc;
    if (min_rev < 0 && !r->etcd)
        rc = wcache_view_begin(v, WCACHE_REV_LATEST); /* a stream: its latest is all we know */
    else
        rc = wcache_view_begin_fresh(v, min_rev, timeout_ms());
    if (rc == WCACHE_OK)
        return 0;
    char msg[256];
    if (rc == WCACHE_ETIMEDOUT || rc == WCACHE_EFUTURE) {
        atomic_fetch_add(&m_fresh_timeouts, 1);
        snprintf(msg, sizeof msg, "Too large resource version: %lld, current: %lld",
                 (long long)(min_rev < 0 ? 0 : min_rev),
                 (long long)wcache_cache_revision(r->cache));
        *mret = reply_status(q->conn, 504, "Timeout", msg, NULL, NULL, 1);
    } else if (rc == WCACHE_ENOTREADY) {
        *mret = reply_status(q->conn, 504, "Timeout",
                             "the source's current revision could not be read", NULL, NULL, 1);
    } else if (rc == WCACHE_EBUSY) {
        *mret =
            reply_status(q->conn, 429, "TooManyRequests", "too many open reads", NULL, NULL, 1);
    } else {
        snprintf(msg, sizeof msg, "read failed: %s", wcache_strerror(rc));
        *mret = reply_status(q->conn, 500, "InternalError", msg, NULL, NULL, 0);
    }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* GET                                                                       */
/* ------------------------------------------------------------------------ */

static void list_kind(pbuf *b, const px_resource *r)
{
    pb_fmt(b, "\"%sList\"", r->kind);
}

static int do_get(px_req *q)
{
    px_resource *r = q->r;
    int64_t rv;
    if (parse_rv(q->q_rv, &rv))
        return bad(q, "invalid resource version");
    char key[1024];
    if (r->namespaced)
        snprintf(key, sizeof key, "%s%s/%s", r->prefix, q->ns ? q->ns : "", q->name);
    else
        snprintf(key, sizeof key, "%s%s", r->prefix, q->name);
    wcache_view *v;
    if (wcache_view_create(r->cache, &v) != WCACHE_OK)
        return reply_status(q->conn, 500, "InternalError", "out of memory", NULL, NULL, 0);
    int mret = MHD_NO;
    int pinned = rv == 0 ? (wcache_view_begin(v, WCACHE_REV_LATEST) == WCACHE_OK ? 0 : -1)
                         : pin_fresh(q, v, rv, &mret);
    if (pinned < 0) {
        wcache_view_free(v);
        return rv == 0
                   ? reply_status(q->conn, 500, "InternalError", "read failed", NULL, NULL, 0)
                   : mret;
    }
    wcache_kv kv;
    wcache_code rc = wcache_view_get(v, key, strlen(key), &kv);
    pbuf b = {0};
    if (rc == WCACHE_ENOTFOUND) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s \"%s\" not found", r->name, q->name);
        wcache_view_free(v);
        return reply_status(q->conn, 404, "NotFound", msg, r->name, q->name, 0);
    }
    if (rc != WCACHE_OK) {
        wcache_view_free(v);
        return reply_status(q->conn, 500, "InternalError", wcache_strerror(rc), NULL, NULL, 0);
    }
    if (q->table) {
        pb_fmt(&b,
               "{\"kind\":\"Table\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":{"
               "\"resourceVersion\":\"%lld\"},\"columnDefinitions\":",
               (long long)kv.mod_revision);
        table_columns(&b, r);
        pb_str(&b, ",\"rows\":[");
        int inc = q->q_include && !strcmp(q->q_include, "Object") ? 2
                  : q->q_include && !strcmp(q->q_include, "None") ? 0
                                                                  : 1;
        table_row(&b, r, &kv, kv.mod_revision, inc);
        pb_str(&b, "]}");
    } else {
        enc_object(&b, r, &kv, kv.mod_revision);
    }
    wcache_view_free(v);
    return reply_buf(q->conn, 200, &b, "application/json");
}

/* ------------------------------------------------------------------------ */
/* LIST                                                                      */
/* ------------------------------------------------------------------------ */

#define PAGE 256

typedef struct lstream {
    px_resource *r;
    wcache_view *v;
    filt f;
    char *token; /* where the next page starts; NULL: at the range's start */
    size_t token_len;
    int exhausted;
    int table, include;
    int64_t rv;
    int phase; /* 0 header, 1 items, 2 done */
    size_t emitted;
    pbuf ob;
    wcache_kv items[PAGE];
} lstream;

static void ls_free(lstream *ls)
{
    if (!ls)
        return;
    wcache_view_free(ls->v);
    filt_free(&ls->f);
    free(ls->token);
    pb_free(&ls->ob);
    free(ls);
}

/* Append up to want matching items; the last page read ends exactly at the
 * last item appended, so the library's token is the continue token. */
static int ls_produce(lstream *ls, pbuf *out, size_t want, int *err)
{
    *err = WCACHE_OK;
    while (want > 0 && !ls->exhausted) {
        size_t cap = want < PAGE ? want : PAGE;
        wcache_list_opts o = {.size = sizeof o};
        char ek[520];
        if (ls->f.exact_name) {
            /* [key, key + NUL): exactly that key */
            int n = snprintf(ek, sizeof ek - 1, "%s%s", ls->f.prefix, ls->f.exact_name);
            if (n < 0 || n >= (int)sizeof ek - 1)
                n = (int)sizeof ek - 2;
            ek[n] = 0;
            o.start = ek;
            o.start_len = (size_t)n;
            o.end = ek;
            o.end_len = (size_t)n + 1;
            wcache_list_result res = {.size = sizeof res};
            o.token = ls->token;
            o.token_len = ls->token_len;
            wcache_code rc = wcache_view_list(ls->v, &o, ls->items, cap, &res);
            if (rc != WCACHE_OK) {
                *err = rc;
                return -1;
            }
            for (size_t i = 0; i < res.count; i++)
                if (filt_match(&ls->f, ls->r, &ls->items[i], 1)) {
                    if (ls->emitted++)
                        pb_add(out, ",", 1);
                    if (ls->table)
                        table_row(out, ls->r, &ls->items[i], ls->items[i].mod_revision,
                                  ls->include);
                    else
                        enc_object(out, ls->r, &ls->items[i], ls->items[i].mod_revision);
                    want--;
                }
            ls->exhausted = 1;
            break;
        }
        o.prefix = ls->f.prefix;
        o.prefix_len = ls->f.prefix_len;
        o.token = ls->token;
        o.token_len = ls->token_len;
        wcache_list_result res = {.size = sizeof res};
        wcache_code rc =
            ls->f.idx_id >= 0
                ? wcache_view_list_index(ls->v, ls->f.idx_id, ls->f.idx_val,
                                         strlen(ls->f.idx_val), &o, ls->items, cap, &res)
                : wcache_view_list(ls->v, &o, ls->items, cap, &res);
        if (rc != WCACHE_OK) {
            *err = rc;
            return -1;
        }
        for (size_t i = 0; i < res.count; i++) {
            if (!filt_match(&ls->f, ls->r, &ls->items[i], 1))
                continue;
            if (ls->emitted++)
                pb_add(out, ",", 1);
            if (ls->table)
                table_row(out, ls->r, &ls->items[i], ls->items[i].mod_revision, ls->include);
            else
                enc_object(out, ls->r, &ls->items[i], ls->items[i].mod_revision);
            want--;
        }
        atomic_fetch_add(&m_list_items, res.count);
        free(ls->token);
        ls->token = NULL;
        ls->token_len = 0;
        if (res.more && res.token) {
            ls->token = strndup(res.token, res.token_len);
            ls->token_len = res.token_len;
        } else {
            ls->exhausted = 1;
        }
    }
    return 0;
}

static void ls_header(lstream *ls, pbuf *b, const char *cont)
{
    if (ls->table) {
        pb_fmt(b,
               "{\"kind\":\"Table\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":{"
               "\"resourceVersion\":\"%lld\"",
               (long long)ls->rv);
    } else {
        pb_str(b, "{\"kind\":");
        list_kind(b, ls->r);
        pb_fmt(b, ",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"%lld\"",
               (long long)ls->rv);
    }
    if (cont) {
        pb_str(b, ",\"continue\":");
        pb_jstr(b, cont, strlen(cont));
    }
    pb_str(b, "}");
    if (ls->table) {
        pb_str(b, ",\"columnDefinitions\":");
        table_columns(b, ls->r);
        pb_str(b, ",\"rows\":[");
    } else {
        pb_str(b, ",\"items\":[");
    }
}

static ssize_t list_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    lstream *ls = cls;
    while (pb_pending(&ls->ob) < max && ls->phase < 2) {
        if (ls->phase == 0) {
            ls_header(ls, &ls->ob, NULL);
            ls->phase = 1;
            continue;
        }
        int err;
        if (ls_produce(ls, &ls->ob, PAGE, &err) < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (ls->exhausted) {
            pb_str(&ls->ob, "]}");
            ls->phase = 2;
        }
    }
    if (pb_pending(&ls->ob) == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    return (ssize_t)pb_take(&ls->ob, buf, max);
}

static void list_free_cb(void *cls)
{
    ls_free(cls);
}

/* Queue a chunked 200 whose body cb produces; on failure free cls. */
static int queue_stream(struct MHD_Connection *c, size_t block, MHD_ContentReaderCallback cb,
                        void *cls, MHD_ContentReaderFreeCallback freecb,
                        const char *cache_control)
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, block, cb, cls, freecb);
    if (!resp) {
        freecb(cls);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (cache_control)
        MHD_add_response_header(resp, "Cache-Control", cache_control);
    int ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static const char continue_expired[] =
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list.";

static int do_list(px_req *q)
{
    px_resource *r = q->r;
    int64_t rv, limit = 0;
    if (parse_rv(q->q_rv, &rv))
        return bad(q, "invalid resource version");
    if (q->q_limit && *q->q_limit) {
        char *end;
        errno = 0;
        limit = strtoll(q->q_limit, &end, 10);
        if (errno || *end || limit < 0)
            return bad(q, "invalid limit");
    }
    const char *rvm = q->q_rvm && *q->q_rvm ? q->q_rvm : NULL;
    const char *cont = q->q_continue && *q->q_continue ? q->q_continue : NULL;
    if (rvm && strcmp(rvm, "Exact") && strcmp(rvm, "NotOlderThan"))
        return invalid(q, "resourceVersionMatch: Unsupported value: must be Exact or "
                          "NotOlderThan");
    if (rvm && rv < 0)
        return invalid(q, "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden "
                          "unless resourceVersion is provided");
    if (rvm && cont)
        return invalid(q, "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden "
                          "when continue is provided");
    if (rvm && !strcmp(rvm, "Exact") && rv == 0)
        return invalid(q, "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is "
                          "forbidden for resourceVersion \"0\"");
    if (q->q_sie && *q->q_sie)
        return invalid(q,
                       "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list");
    if (cont && rv > 0)
        return bad(q, "specifying resource version is not allowed when using continue");

    lstream *ls = calloc(1, sizeof *ls);
    if (!ls)
        return reply_status(q->conn, 500, "InternalError", "out of memory", NULL, NULL, 0);
    ls->r = r;
    ls->table = q->table;
    ls->include = q->q_include && !strcmp(q->q_include, "Object") ? 2
                  : q->q_include && !strcmp(q->q_include, "None") ? 0
                                                                  : 1;
    char msg[512];
    if (filt_parse(&ls->f, q, msg, sizeof msg)) {
        char full[800];
        snprintf(full, sizeof full,
                 "Unable to find \"/v1, Resource=%s\" that match label selector \"%s\", field "
                 "selector \"%s\": %s",
                 r->name, q->q_labels ? q->q_labels : "", q->q_fields ? q->q_fields : "", msg);
        ls_free(ls);
        return bad(q, full);
    }
    if (wcache_view_create(r->cache, &ls->v) != WCACHE_OK) {
        ls_free(ls);
        return reply_status(q->conn, 500, "InternalError", "out of memory", NULL, NULL, 0);
    }
    int mret = MHD_NO;
    wcache_code rc;
    if (cont) {
        int64_t trev;
        if (wcache_token_revision(cont, strlen(cont), &trev) != WCACHE_OK) {
            ls_free(ls);
            return bad(q, "invalid continue token");
        }
        rc = wcache_view_begin(ls->v, trev);
        if (rc == WCACHE_ECOMPACTED) {
            ls_free(ls);
            return reply_status(q->conn, 410, "Expired", continue_expired, NULL, NULL, 0);
        }
        if (rc != WCACHE_OK) {
            ls_free(ls);
            return bad(q, "invalid continue token");
        }
        ls->token = strdup(cont);
        ls->token_len = strlen(cont);
    } else if (rv == 0) {
        limit = 0; /* "Any": the whole list, no continue (L2) */
        rc = wcache_view_begin(ls->v, WCACHE_REV_LATEST);
        if (rc != WCACHE_OK) {
            ls_free(ls);
            return reply_status(q->conn, rc == WCACHE_EBUSY ? 429 : 500,
                                rc == WCACHE_EBUSY ? "TooManyRequests" : "InternalError",
                                wcache_strerror(rc), NULL, NULL, rc == WCACHE_EBUSY ? 1 : 0);
        }
    } else if (rv > 0 && ((rvm && !strcmp(rvm, "Exact")) || (!rvm && limit > 0))) {
        /* exact (L5, and L6: RV + limit without a match rule) */
        if (rv > wcache_cache_revision(r->cache)) {
            if (pin_fresh(q, ls->v, rv, &mret)) {
                ls_free(ls);
                return mret;
            }
        }
        rc = wcache_view_begin(ls->v, rv);
        if (rc == WCACHE_ECOMPACTED) {
            ls_free(ls);
            return reply_status(q->conn, 410, "Expired",
                                "The resourceVersion for the provided list is too old.", NULL,
                                NULL, 0);
        }
        if (rc != WCACHE_OK) {
            ls_free(ls);
            return reply_status(q->conn, 500, "InternalError", wcache_strerror(rc), NULL, NULL,
                                0);
        }
    } else {
        /* consistent (rv unset) or NotOlderThan rv */
        atomic_fetch_add(&m_fresh_waits, 1);
        if (pin_fresh(q, ls->v, rv, &mret)) {
            ls_free(ls);
            return mret;
        }
    }
    ls->rv = wcache_view_revision(ls->v);
    if (rv > 0 && rvm && !strcmp(rvm, "Exact"))
        ls->rv = rv;

    if (limit > 0) {
        /* one page, built whole: its continue token goes in front */
        pbuf items = {0};
        int err;
        if (ls_produce(ls, &items, (size_t)limit, &err) < 0) {
            pb_free(&items);
            ls_free(ls);
            if (err == WCACHE_EBADTOKEN)
                return bad(q, "invalid continue token");
            return reply_status(q->conn, 500, "InternalError", wcache_strerror(err), NULL, NULL,
                                0);
        }
        pbuf b = {0};
        ls_header(ls, &b, ls->exhausted ? NULL : ls->token);
        pb_add(&b, items.p, items.len);
        pb_str(&b, "]}");
        pb_free(&items);
        ls_free(ls);
        return reply_buf(q->conn, 200, &b, "application/json");
    }
    /* no limit (or a continue without one): the rest, streamed */
    return queue_stream(q->conn, 64 * 1024, list_cb, ls, list_free_cb, NULL);
}

/* ------------------------------------------------------------------------ */
/* WATCH                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct wstream {
    struct MHD_Connection *conn;
    px_resource *r;
    wcache_watch *w;
    int fd;
    filt f;
    int manual; /* selector transitions computed here (fields beyond the key) */
    int table, include, bookmarks, sie;
    int cols_sent;
    int ending;
    int suspended; /* under reg.mu */
    int slot;
    uint32_t gen;
    int64_t deadline_ms;
    int64_t wake_ms;
    pbuf ob;
    char client[300];
} wstream;

static struct {
    pthread_mutex_t mu;
    int ep;
    wstream **slots;
    int nslots, count, suspended;
    uint32_t gen;
    pthread_t th;
    int running;
    /* watches per client */
    struct {
        char id[300];
        int n;
    } * clients;
    int nclients;
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER, .ep = -1};

void api_stats(uint64_t *watchers, uint64_t *suspended)
{
    pthread_mutex_lock(&reg.mu);
    *watchers = (uint64_t)reg.count;
    *suspended = (uint64_t)reg.suspended;
    pthread_mutex_unlock(&reg.mu);
}

/* under reg.mu */
static int client_add(const char *id, int delta)
{
    for (int i = 0; i < reg.nclients; i++)
        if (!strcmp(reg.clients[i].id, id)) {
            if (delta > 0 && reg.clients[i].n >= G.max_watches_per_client)
                return -1;
            reg.clients[i].n += delta;
            if (reg.clients[i].n == 0)
                reg.clients[i] = reg.clients[--reg.nclients];
            return 0;
        }
    if (delta < 0)
        return 0;
    void *nc = realloc(reg.clients, (size_t)(reg.nclients + 1) * sizeof *reg.clients);
    if (!nc)
        return -1;
    reg.clients = nc;
    snprintf(reg.clients[reg.nclients].id, sizeof reg.clients[0].id, "%s", id);
    reg.clients[reg.nclients].n = 1;
    reg.nclients++;
    return 0;
}

static void ws_obj(wstream *ws, pbuf *b, const wcache_kv *kv, int64_t rv)
{
    if (!ws->table) {
        enc_object(b, ws->r, kv, rv);
        return;
    }
    pb_fmt(b,
           "{\"kind\":\"Table\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":{"
           "\"resourceVersion\":\"%lld\"}",
           (long long)rv);
    if (!ws->cols_sent) {
        pb_str(b, ",\"columnDefinitions\":");
        table_columns(b, ws->r);
        ws->cols_sent = 1;
    }
    pb_str(b, ",\"rows\":[");
    table_row(b, ws->r, kv, rv, ws->include);
    pb_str(b, "]}");
}

static void ws_event(wstream *ws, const char *type, const wcache_kv *kv, int64_t rv)
{
    pb_fmt(&ws->ob, "{\"type\":\"%s\",\"object\":", type);
    ws_obj(ws, &ws->ob, kv, rv);
    pb_str(&ws->ob, "}\n");
    atomic_fetch_add(&m_watch_events, 1);
}

static int ws_key_ok(wstream *ws, const wcache_kv *kv)
{
    if (kv->key_len < ws->f.prefix_len || memcmp(kv->key, ws->f.prefix, ws->f.prefix_len) != 0)
        return 0;
    return 1;
}

static void ws_format(wstream *ws, const wcache_watch_event *e)
{
    switch (e->type) {
    case WCACHE_EV_BOOKMARK:
    case WCACHE_EV_INITIAL_END:
        if (!ws->bookmarks || (e->type == WCACHE_EV_INITIAL_END && ws->sie != 1))
            return;
        pb_fmt(&ws->ob,
               "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"%s\",\"apiVersion\":\"v1\","
               "\"metadata\":{\"resourceVersion\":\"%lld\"%s}}}\n",
               ws->r->kind, (long long)e->revision,
               e->type == WCACHE_EV_INITIAL_END
                   ? ",\"annotations\":{\"k8s.io/initial-events-end\":\"true\"}"
                   : "");
        return;
    case WCACHE_EV_ADDED:
    case WCACHE_EV_MODIFIED:
    case WCACHE_EV_DELETED: break;
    }
    const wcache_kv *kv = &e->kv;
    if (!ws_key_ok(ws, kv))
        return;
    if (!ws->manual) {
        if (!filt_match(&ws->f, ws->r, kv, 0))
            return;
        if (e->type == WCACHE_EV_DELETED)
            ws_event(ws, "DELETED", kv, e->revision);
        else
            ws_event(ws, e->type == WCACHE_EV_ADDED ? "ADDED" : "MODIFIED", kv,
                     kv->mod_revision);
        return;
    }
    /* cur = the new object matches; old = the previous one did */
    int cur = e->type != WCACHE_EV_DELETED && filt_match(&ws->f, ws->r, kv, 1);
    const wcache_kv *prev = e->type == WCACHE_EV_DELETED ? kv : &e->prev;
    int old = prev->value && filt_match(&ws->f, ws->r, prev, 1);
    if (cur && !old)
        ws_event(ws, "ADDED", kv, kv->mod_revision);
    else if (cur && old)
        ws_event(ws, "MODIFIED", kv, kv->mod_revision);
    else if (!cur && old)
        ws_event(ws, "DELETED", prev, e->revision); /* the previous object at the new RV */
}

static ssize_t watch_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    wstream *ws = cls;
    if (pb_pending(&ws->ob))
        return (ssize_t)pb_take(&ws->ob, buf, max);
    if (ws->ending)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (atomic_load(&px_stopping) || now_ms() >= ws->deadline_ms)
        return MHD_CONTENT_READER_END_OF_STREAM;
    wcache_watch_event evs[64];
    for (;;) {
        size_t n = 0;
        wcache_code rc = wcache_watch_next(ws->w, evs, 64, &n);
        for (size_t i = 0; i < n; i++) {
            ws_format(ws, &evs[i]);
            wcache_event_unref(evs[i].ev);
        }
        if (rc != WCACHE_OK) {
            if (rc == WCACHE_ECOMPACTED) {
                pbuf st = {0};
                status_body(&st, 410, "Expired", "too old resource version", NULL, NULL);
                pb_str(&ws->ob, "{\"type\":\"ERROR\",\"object\":");
                pb_add(&ws->ob, st.p, st.len);
                pb_str(&ws->ob, "}\n");
                pb_free(&st);
            } else if (rc == WCACHE_EOVERFLOW) {
                atomic_fetch_add(&m_watch_overflows, 1);
            }
            ws->ending = 1;
            break;
        }
        if (n == 0 || pb_pending(&ws->ob) >= max)
            break;
    }
    if (pb_pending(&ws->ob))
        return (ssize_t)pb_take(&ws->ob, buf, max);
    if (ws->ending)
        return MHD_CONTENT_READER_END_OF_STREAM;
    /* nothing to send: park the connection until the fd or a deadline */
    pthread_mutex_lock(&reg.mu);
    ws->suspended = 1;
    reg.suspended++;
    int64_t t = now_ms();
    ws->wake_ms = ws->deadline_ms;
    if (ws->bookmarks && t + 60000 < ws->wake_ms)
        ws->wake_ms = t + 60000;
    MHD_suspend_connection(ws->conn);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT,
                             .data.u64 = (uint64_t)ws->slot | ((uint64_t)ws->gen << 32)};
    epoll_ctl(reg.ep, EPOLL_CTL_MOD, ws->fd, &ev);
    pthread_mutex_unlock(&reg.mu);
    return 0;
}

/* under reg.mu */
static void ws_resume(wstream *ws)
{
    if (!ws->suspended)
        return;
    ws->suspended = 0;
    reg.suspended--;
    MHD_resume_connection(ws->conn);
}

static void watch_free_cb(void *cls)
{
    wstream *ws = cls;
    pthread_mutex_lock(&reg.mu);
    if (ws->suspended) { /* a connection closed while parked */
        ws->suspended = 0;
        reg.suspended--;
    }
    reg.slots[ws->slot] = NULL;
    reg.count--;
    client_add(ws->client, -1);
    epoll_ctl(reg.ep, EPOLL_CTL_DEL, ws->fd, NULL);
    pthread_mutex_unlock(&reg.mu);
    wcache_watch_close(ws->w);
    filt_free(&ws->f);
    pb_free(&ws->ob);
    free(ws);
}

static void *dispatcher(void *arg)
{
    (void)arg;
    struct epoll_event evs[256];
    int64_t last_scan = 0;
    for (;;) {
        int n = epoll_wait(reg.ep, evs, 256, 200);
        pthread_mutex_lock(&reg.mu);
        if (!reg.running) {
            pthread_mutex_unlock(&reg.mu);
            break;
        }
        for (int i = 0; i < n; i++) {
            uint32_t slot = (uint32_t)evs[i].data.u64, gen = (uint32_t)(evs[i].data.u64 >> 32);
            if ((int)slot < reg.nslots && reg.slots[slot] && reg.slots[slot]->gen == gen)
                ws_resume(reg.slots[slot]);
        }
        int64_t t = now_ms();
        if (t - last_scan >= 200 || atomic_load(&px_stopping)) {
            last_scan = t;
            int stop = atomic_load(&px_stopping);
            for (int i = 0; i < reg.nslots; i++) {
                wstream *ws = reg.slots[i];
                if (ws && ws->suspended && (stop || t >= ws->wake_ms))
                    ws_resume(ws);
            }
        }
        pthread_mutex_unlock(&reg.mu);
    }
    return NULL;
}

int api_init(void)
{
    reg.ep = epoll_create1(EPOLL_CLOEXEC);
    if (reg.ep < 0)
        return -1;
    reg.nslots = G.max_connections + 16;
    reg.slots = calloc((size_t)reg.nslots, sizeof *reg.slots);
    if (!reg.slots)
        return -1;
    reg.running = 1;
    if (pthread_create(&reg.th, NULL, dispatcher, NULL) != 0)
        return -1;
    return 0;
}

void api_shutdown(void)
{
    /* px_stopping is set: the dispatcher resumes every parked watch, whose
     * callback then ends its stream; wait (bounded) until they are gone. */
    pthread_mutex_lock(&reg.mu);
    for (int i = 0; i < reg.nslots; i++)
        if (reg.slots[i])
            wcache_watch_stop(reg.slots[i]->w);
    pthread_mutex_unlock(&reg.mu);
    for (int64_t end = now_ms() + 3000; now_ms() < end;) {
        pthread_mutex_lock(&reg.mu);
        int left = reg.suspended;
        for (int i = 0; i < reg.nslots; i++)
            if (reg.slots[i])
                ws_resume(reg.slots[i]);
        pthread_mutex_unlock(&reg.mu);
        if (left == 0)
            break;
        usleep(20000);
    }
}

void api_stop_dispatcher(void);
void api_stop_dispatcher(void)
{
    pthread_mutex_lock(&reg.mu);
    reg.running = 0;
    pthread_mutex_unlock(&reg.mu);
    pthread_join(reg.th, NULL);
}

static int watch_error_reply(px_req *q, int code, const char *reason, const char *msg)
{
    /* 200 and one ERROR event, then the end: what the API server does */
    pbuf b = {0}, st = {0};
    status_body(&st, code, reason, msg, NULL, NULL);
    pb_str(&b, "{\"type\":\"ERROR\",\"object\":");
    pb_add(&b, st.p, st.len);
    pb_str(&b, "}\n");
    pb_free(&st);
    return reply_buf(q->conn, 200, &b, "application/json");
}

static int do_watch(px_req *q)
{
    px_resource *r = q->r;
    int64_t rv;
    if (parse_rv(q->q_rv, &rv))
        return bad(q, "invalid resource version");
    int sie = q->q_sie && *q->q_sie ? (is_true(q->q_sie) ? 1 : 0) : -1;
    const char *rvm = q->q_rvm && *q->q_rvm ? q->q_rvm : NULL;
    if (sie >= 0 && (!rvm || strcmp(rvm, "NotOlderThan")))
        return invalid(q, "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
                          "resourceVersionMatch to NotOlderThan");
    if (rvm && sie < 0)
        return invalid(q,
                       "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for "
                       "watch unless sendInitialEvents is provided");
    if (rvm && strcmp(rvm, "NotOlderThan"))
        return invalid(q, "resourceVersionMatch: Unsupported value");
    int64_t tmo_s = 0;
    if (q->q_timeout && *q->q_timeout) {
        char *end;
        errno = 0;
        tmo_s = strtoll(q->q_timeout, &end, 10);
        if (errno || *end || tmo_s < 0)
            return bad(q, "invalid timeoutSeconds");
    }
    wstream *ws = calloc(1, sizeof *ws);
    if (!ws)
        return MHD_NO;
    char msg[512];
    if (filt_parse(&ws->f, q, msg, sizeof msg)) {
        filt_free(&ws->f);
        free(ws);
        return bad(q, msg);
    }
    ws->r = r;
    ws->conn = q->conn;
    ws->table = q->table;
    ws->include = q->q_include && !strcmp(q->q_include, "Object") ? 2
                  : q->q_include && !strcmp(q->q_include, "None") ? 0
                                                                  : 1;
    ws->bookmarks = is_true(q->q_bookmarks);
    ws->sie = sie;
    ws->manual = ws->f.json_fields && !(ws->f.idx_id >= 0 && ws->f.nf == 1);
    snprintf(ws->client, sizeof ws->client, "%s", q->client);

    wcache_watch_opts o = {.size = sizeof o};
    char key[600];
    if (ws->f.exact_name) {
        int n = snprintf(key, sizeof key - 1, "%s%s", ws->f.prefix, ws->f.exact_name);
        key[n] = 0;
        o.start = key;
        o.start_len = (size_t)n;
        o.end = key;
        o.end_len = (size_t)n + 1; /* key + NUL */
    } else {
        o.prefix = ws->f.prefix;
        o.prefix_len = ws->f.prefix_len;
    }
    if (!ws->manual) {
        if (q->q_labels && *q->q_labels) {
            o.label_selector = q->q_labels;
            o.label_selector_len = strlen(q->q_labels);
        }
        if (ws->f.idx_id >= 0) {
            o.index_id = ws->f.idx_id;
            o.index_value = ws->f.idx_val;
            o.index_value_len = strlen(ws->f.idx_val);
        }
    } else {
        o.prev_value = 1;
    }
    if (ws->bookmarks)
        o.bookmark_interval_ms = 60000;
    o.queue_size = (uint32_t)G.watch_queue;
    /* where the stream starts (notes 5.2) */
    int mret = MHD_NO;
    if (sie == 1 || (sie == 0 && rv < 0)) {
        wcache_view *v;
        if (wcache_view_create(r->cache, &v) != WCACHE_OK) {
            filt_free(&ws->f);
            free(ws);
            return MHD_NO;
        }
        if (pin_fresh(q, v, rv > 0 ? rv : rv == 0 ? 0 : -1, &mret)) {
            wcache_view_free(v);
            filt_free(&ws->f);
            free(ws);
            return mret;
        }
        o.start_revision = wcache_view_revision(v);
        wcache_view_free(v);
        o.initial_events = sie == 1;
    } else if (rv <= 0) {
        o.initial_events = sie != 0; /* legacy: the current state first */
        o.start_revision = 0;
    } else {
        o.start_revision = rv;
    }
    int64_t limit_s = tmo_s > 0 ? tmo_s
                      : G.watch_timeout_s > 0
                          ? G.watch_timeout_s
                          : 1800 + (int64_t)(rand() % 1800); /* the API server's default */
    ws->deadline_ms = now_ms() + limit_s * 1000;

    pthread_mutex_lock(&reg.mu);
    int slot = -1;
    for (int i = 0; i < reg.nslots; i++)
        if (!reg.slots[i]) {
            slot = i;
            break;
        }
    int over = slot < 0 || client_add(ws->client, +1) != 0;
    if (!over) {
        reg.slots[slot] = ws;
        ws->slot = slot;
        ws->gen = ++reg.gen;
        reg.count++;
    }
    pthread_mutex_unlock(&reg.mu);
    if (over) {
        filt_free(&ws->f);
        free(ws);
        return reply_status(q->conn, 429, "TooManyRequests", "too many watches for this client",
                            NULL, NULL, 1);
    }
    wcache_code rc = wcache_watch_open(r->cache, &o, &ws->w);
    /* the watch makes its eventfd now: out of fds is a failed open */
    if (rc == WCACHE_OK && (ws->fd = wcache_watch_fd(ws->w)) < 0) {
        wcache_watch_close(ws->w);
        rc = WCACHE_ESYS;
    }
    if (rc != WCACHE_OK) {
        pthread_mutex_lock(&reg.mu);
        reg.slots[slot] = NULL;
        reg.count--;
        client_add(ws->client, -1);
        pthread_mutex_unlock(&reg.mu);
        filt_free(&ws->f);
        free(ws);
        if (rc == WCACHE_ECOMPACTED) {
            snprintf(msg, sizeof msg, "too old resource version: %lld (%lld)", (long long)rv,
                     (long long)wcache_cache_compacted_revision(r->cache));
            return watch_error_reply(q, 410, "Expired", msg);
        }
        if (rc == WCACHE_EINVAL)
            return bad(q, "invalid watch parameters");
        return reply_status(q->conn, 500, "InternalError", wcache_strerror(rc), NULL, NULL, 0);
    }
    struct epoll_event ev = {.events = 0,
                             .data.u64 = (uint64_t)slot | ((uint64_t)ws->gen << 32)};
    pthread_mutex_lock(&reg.mu);
    epoll_ctl(reg.ep, EPOLL_CTL_ADD, ws->fd, &ev);
    pthread_mutex_unlock(&reg.mu);
    atomic_fetch_add(&m_watch_opened, 1);
    MHD_set_connection_option(q->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned)G.write_timeout_s);
    /* a bounded kernel buffer per watcher: a client that stops reading is
     * found out (and cut off by the write timeout) after this much, not
     * after the megabytes a socket may otherwise autotune to */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(q->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci && G.watch_sndbuf > 0)
        setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUF, &G.watch_sndbuf,
                   sizeof G.watch_sndbuf);
    /* a small block: each event leaves as soon as it is formatted */
    return queue_stream(q->conn, 16 * 1024, watch_cb, ws, watch_free_cb, "no-cache, private");
}

int api_serve(px_req *q)
{
    if (q->name && !is_true(q->q_watch))
        return do_get(q);
    if (q->name) { /* watch of one object: the name as a field selector */
        return bad(q, "watch of a named object: use fieldSelector=metadata.name=NAME");
    }
    if (is_true(q->q_watch))
        return do_watch(q);
    return do_list(q);
}
