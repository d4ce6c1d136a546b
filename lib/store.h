/*
 * store.h - private interface between the snapshot store front end
 * (store.c: URLs, keys, layout, restore, retention) and its backends
 * (store_file.c, store_s3.c, store_gcs.c).
 *
 * A backend sees full object keys (the store's base already joined) and
 * implements the vtable below; everything that is the same for every
 * backend (key layout, newest/retain, download to a verified file,
 * retries' backoff, error text) lives in store.c so that a new backend is
 * only its protocol.
 */
#ifndef WCI_STORE_H
#define WCI_STORE_H

#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

#include "alloc.h"
#include "watchcache.h"

#define WCI_STORE_MAGIC 0x77637374u /* "wcst" */
#define WCI_STORE_ETAG_MAX 128

/* What a backend reports of one object. */
typedef struct wci_store_obj {
    uint64_t bytes;
    int64_t mtime_ns;
    char etag[WCI_STORE_ETAG_MAX]; /* without quotes; "" unknown */
} wci_store_obj;

/* Listing callback of a backend: key is the full key (NUL-terminated).
 * Returns 0 to go on. */
typedef int (*wci_store_list_cb)(const char *key, size_t key_len, const wci_store_obj *o,
                                 void *ud);

typedef struct wci_store_halt wci_store_halt; /* below */

typedef struct wci_store_ops {
    const char *scheme; /* "file", "s3", "gs" */
    /* Set up st->be from st->bucket, st->base and st->o; may read the
     * environment and credential files. */
    int (*open)(wcache_store *st);
    void (*close)(wcache_store *st);
    /* Uploads: up->key is the full key; up->be is the backend's. */
    int (*up_begin)(wcache_store_upload *up);
    int (*up_write)(wcache_store_upload *up, const void *buf, size_t len);
    int (*up_commit)(wcache_store_upload *up, wci_store_obj *o);
    void (*up_abort)(wcache_store_upload *up);
    /* Whole object to sink in order; resumes internally on a break.  halt
     * (NULL: none) stops it, backoff waits included: WCACHE_ESTOPPED. */
    int (*get)(wcache_store *st, const char *key, wcache_snap_sink_fn sink, void *ud,
               wci_store_halt *halt, wci_store_obj *o);
    /* Every object whose full key begins with prefix, in byte order. */
    int (*list)(wcache_store *st, const char *prefix, wci_store_list_cb cb, void *ud);
    int (*del)(wcache_store *st, const char *key); /* missing: WCACHE_OK */
} wci_store_ops;

extern const wci_store_ops wci_store_file_ops;
extern const wci_store_ops wci_store_s3_ops;
extern const wci_store_ops wci_store_gcs_ops;
/* A new backend adds its ops to the scheme table in store.c; a scheme
 * missing there is WCACHE_ENOTSUP. */

/* Option strings copied at open (every const char * of wcache_store_opts). */
struct wcache_store {
    uint32_t magic;
    wci_alloc a;
    const wci_store_ops *ops;
    wcache_store_opts o; /* copy; its strings point into strs */
    char *strs;          /* one block holding the copied strings */
    char *url;           /* as given (holds no credentials: a URL never does) */
    char *bucket;        /* s3/gs: the bucket; file: the directory */
    char *base;          /* key prefix without leading or trailing '/'; may be "" */
    void *be;            /* backend state */
    char *eb;            /* = o.errbuf */
    size_t el;
    char last_key[1024]; /* obj->key of the last upload or get */
    char last_etag[WCI_STORE_ETAG_MAX];
    /* Serialises the errbuf and the log callback: the part threads of a
     * multipart upload report through them too. */
    pthread_mutex_t emu;
};

struct wcache_store_upload {
    wcache_store *st;
    char *key; /* full key */
    void *be;
    int err;        /* sticky error of a write */
    uint64_t bytes; /* written so far */
    uint64_t total; /* expected size for progress; 0: unknown */
};

/* Error detail into the store's errbuf (and its log at DEBUG); returns
 * code.  Never pass a credential to it. */
int wci_store_err(wcache_store *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void wci_store_log(wcache_store *st, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Progress callback, if any: nonzero means stop. */
int wci_store_progress(wcache_store *st, uint64_t done, uint64_t total);

/* Retry policy from the options. */
int wci_store_max_retries(const wcache_store *st);

/*
 * The stop of a transfer that runs on a thread of the store's (a
 * restore's download, a multipart upload's parts) while another thread
 * waits to join it.  Raising it ends a backoff wait at once and aborts a
 * request in flight at curl's next progress call (about once a second
 * when nothing moves), so the joiner never sits out a backoff_max_ms wait
 * nor a server that answers slowly.
 */
struct wci_store_halt {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC, for the backoff's deadline */
    _Atomic int raised;
};

int wci_store_halt_init(wci_store_halt *h); /* WCACHE_OK or WCACHE_ESYS */
void wci_store_halt_destroy(wci_store_halt *h);
void wci_store_halt_raise(wci_store_halt *h); /* any thread */
int wci_store_halted(wci_store_halt *h);      /* NULL: never */
/* Makes a curl easy handle's transfer abort (CURLE_ABORTED_BY_CALLBACK)
 * once h is raised; h NULL: nothing. */
void wci_store_halt_curl(void *curl, wci_store_halt *h);

/* Wait before retry number attempt (1-based): full jitter over an
 * exponentially growing cap.  after_ms > 0 (a Retry-After) is a floor.
 * WCACHE_OK after the wait; WCACHE_ESTOPPED as soon as halt (NULL: none)
 * is raised, before or during it. */
int wci_store_backoff(const wcache_store *st, wci_store_halt *halt, int attempt,
                      int64_t after_ms);
/* 1 when an HTTP status is worth retrying (5xx, 429, 408). */
int wci_store_status_retryable(long status);

/* A copy of s (may be NULL: "") with the store's allocator. */
char *wci_store_strdup(wcache_store *st, const char *s);

/* Is the full key a snapshot layout name?  Then its revision, else 0. */
int64_t wci_store_key_revision(const char *key, size_t len);

#endif
