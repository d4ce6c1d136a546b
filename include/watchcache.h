/*
 * watchcache.h - the public interface of libwatchcache.
 *
 * An embeddable, revisioned in-memory cache of key/value objects fed by a
 * watch stream (etcd v3, a Kubernetes watch stream, or events pushed through
 * this API), with consistent reads at the latest or at an exact past revision.
 *
 * Conventions used by every function below (the full text is in
 * libwatchcache(3) and libwatchcache-threads(3)):
 *
 *  - Every fallible call returns a wcache_code: WCACHE_OK (0) or a positive
 *    code; wcache_strerror() names it.  Nothing prints, exits or aborts.
 *  - Keys and values are binary-safe: a pointer and a length.
 *  - Ownership words: "copies" (inputs are copied before the call returns),
 *    "borrowed" (an output that stays valid only as long as stated and must
 *    not be modified or freed), "new" (the caller owns and must release it).
 *  - Thread safety words: "any thread" (safe concurrently with every other
 *    call on the same cache), "writer" (the one thread that feeds the cache;
 *    calls marked so are serialised by the caller), "one thread at a time"
 *    (a handle may move between threads but is never used by two at once).
 *
 * ABI: the enum values, the struct layouts and the function signatures of
 * this header are stable within a major version.  Codes and parameters are
 * only ever appended.  Structs that callers fill begin with a `size` member
 * set to sizeof(struct) so that fields can be appended later.
 */
#ifndef WATCHCACHE_H
#define WATCHCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WCACHE_VERSION_MAJOR 0
#define WCACHE_VERSION_MINOR 1
#define WCACHE_VERSION_PATCH 0
#define WCACHE_VERSION_NUMBER \
    (WCACHE_VERSION_MAJOR * 10000 + WCACHE_VERSION_MINOR * 100 + WCACHE_VERSION_PATCH)
#define WCACHE_VERSION_STRING "0.1.0"

#if defined(__GNUC__) || defined(__clang__)
#define WCACHE_API __attribute__((visibility("default")))
#define WCACHE_NODISCARD __attribute__((warn_unused_result))
#else
#define WCACHE_API
#define WCACHE_NODISCARD
#endif

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */
/* ------------------------------------------------------------------------ */

/*
 * Add new codes last, never remove or renumber one: programs compiled against
 * an older header compare against these numbers.
 */
typedef enum wcache_code {
    WCACHE_OK = 0,
    WCACHE_EINVAL = 1,      /* an argument is invalid (NULL handle, bad size) */
    WCACHE_ENOMEM = 2,      /* an allocation failed; nothing was changed */
    WCACHE_ENOTFOUND = 3,   /* no such key at the read revision */
    WCACHE_ECOMPACTED = 4,  /* revision is below the compacted revision (HTTP 410) */
    WCACHE_EFUTURE = 5,     /* revision is above the cache's current revision */
    WCACHE_ETIMEDOUT = 6,   /* waited for a revision and gave up (HTTP 504) */
    WCACHE_ENOTREADY = 7,   /* not yet synced / no source to ask (fresh reads) */
    WCACHE_ESTOPPED = 8,    /* the cache or subscription was stopped */
    WCACHE_EOVERFLOW = 9,   /* a watcher's queue overflowed; it must re-list */
    WCACHE_EORDER = 10,     /* an event's revision is not above the current one */
    WCACHE_ECORRUPT = 11,   /* damaged input: snapshot, stream message */
    WCACHE_EVERSION = 12,   /* input of an unsupported format version */
    WCACHE_EZSTD = 13,      /* the zstd codec failed */
    WCACHE_EHTTP = 14,      /* an HTTP peer answered with an error status */
    WCACHE_ECURL = 15,      /* a transfer failed below HTTP (connect, TLS, reset) */
    WCACHE_ESYS = 16,       /* a system call failed; see wcache_cache_last_errno() */
    WCACHE_ERECURSIVE = 17, /* called from inside one of this handle's callbacks */
    WCACHE_EBUSY = 18,      /* resource exhausted (reader slots) or handle in use */
    WCACHE_ESTATE = 19,     /* call not allowed in the handle's current state */
    WCACHE_EBADTOKEN = 20,  /* a continue token is malformed, altered or mismatched */
    WCACHE_ETOOBIG = 21,    /* a key, value or message is over its configured limit */
    WCACHE_EEXIST = 22,     /* the key is present twice in one batch */
    WCACHE_ENOTSUP = 23,    /* a URL scheme or feature this build does not support */
    WCACHE_CODE_LAST        /* never use: one past the last code */
} wcache_code;

/*
 * @brief Describe a status code.
 * @return a static, NUL-terminated English string; "unknown error" for a
 *         value that is not a wcache_code.
 * Ownership: borrowed (static storage).  Thread safety: any thread.
 * Since: 0.1
 */
WCACHE_API const char *wcache_strerror(int code);

/* ------------------------------------------------------------------------ */
/* Version                                                                   */
/* ------------------------------------------------------------------------ */

/* Runtime version, to detect a header/library mismatch.  Any thread. 0.1 */
WCACHE_API unsigned wcache_version_number(void);
/* Runtime version as "MAJOR.MINOR.PATCH"; static storage.  Any thread. 0.1 */
WCACHE_API const char *wcache_version_string(void);

/* ------------------------------------------------------------------------ */
/* Handles                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct wcache_cache wcache_cache; /* one cache */
typedef struct wcache_batch wcache_batch; /* a set of writes sharing one revision */
typedef struct wcache_view wcache_view;   /* a read view pinned at one revision */

/* Revision argument meaning "the latest revision the cache has applied". */
#define WCACHE_REV_LATEST 0

/* ------------------------------------------------------------------------ */
/* Allocation and logging                                                    */
/* ------------------------------------------------------------------------ */

/*
 * A caller-supplied allocator, used for every allocation the cache makes.
 * alloc() returns memory aligned for any type, or NULL; free() accepts NULL.
 * Both may be called from any thread that calls into the cache.
 */
typedef struct wcache_allocator {
    uint32_t size; /* sizeof(wcache_allocator) */
    void *(*alloc)(size_t n, void *userdata);
    void (*free)(void *p, void *userdata);
    void *userdata; /* passed to both callbacks */
} wcache_allocator;

typedef enum wcache_log_level {
    WCACHE_LOG_ERROR = 0,
    WCACHE_LOG_WARN = 1,
    WCACHE_LOG_INFO = 2,
    WCACHE_LOG_DEBUG = 3
} wcache_log_level;

/*
 * Log callback.  msg is NUL-terminated and valid only during the call.
 * It runs on the thread that made the call being logged, and must not call
 * back into the same cache (such calls fail with WCACHE_ERECURSIVE; other
 * threads' calls meanwhile are not affected).
 */
typedef void (*wcache_log_fn)(int level, const char *msg, size_t msg_len, void *userdata);

/*
 * Clock callback: monotonic nanoseconds.  Used for age-based retention;
 * tests install their own to control time without sleeping.
 */
typedef int64_t (*wcache_clock_fn)(void *userdata);

/* ------------------------------------------------------------------------ */
/* Cache lifecycle and configuration                                         */
/* ------------------------------------------------------------------------ */

/* Integer parameters, set with wcache_cache_set_param() before open. */
typedef enum wcache_param {
    /* Keep at least this many revisions readable below the current one
     * (0 = no count bound).  Default 0.  Range 0 .. 2^40. */
    WCACHE_P_RETAIN_REVISIONS = 1,
    /* Keep revisions younger than this many seconds readable (0 = no age
     * bound).  Default 75, the Kubernetes watch cache's event window.
     * Range 0 .. 2^32.  A revision stays readable while either bound wants
     * it; with both at 0 nothing is compacted automatically.  The count
     * bound counts revision numbers, not events.  Automatic compaction runs
     * inside ingest calls, in steps of 1/64 of the count bound. */
    WCACHE_P_RETAIN_SECONDS = 2,
    /* 1: compact automatically after ingest when a bound is exceeded;
     * 0: only wcache_cache_compact() compacts.  Default 1. */
    WCACHE_P_AUTO_COMPACT = 3,
    /* Number of read views that may be open at once.  Default 1024,
     * range 1 .. 1048576. */
    WCACHE_P_READER_SLOTS = 4,
    /* Largest key in bytes.  Default 65536, range 1 .. 1 MiB. */
    WCACHE_P_MAX_KEY_BYTES = 5,
    /* Largest value in bytes.  Default 16 MiB, range 0 .. 1 GiB. */
    WCACHE_P_MAX_VALUE_BYTES = 6,
    WCACHE_P_LAST /* never use */
} wcache_param;

/*
 * @brief Create a cache handle in the configuration state.
 * @param[out] out   receives the new handle.
 * @param[in]  alloc allocator (copied), or NULL for malloc/free.
 * @return WCACHE_OK, WCACHE_EINVAL (out NULL or alloc->size too small),
 *         WCACHE_ENOMEM.
 * Ownership: new (*out); release with wcache_cache_close().
 * Thread safety: any thread.  Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_cache_create(wcache_cache **out,
                                                            const wcache_allocator *alloc);

/*
 * @brief Set an integer parameter.  Only before wcache_cache_open().
 * @return WCACHE_OK, WCACHE_EINVAL (unknown parameter or value out of
 *         bounds), WCACHE_ESTATE (already open).
 * Thread safety: one thread at a time, before open.  Since: 0.1
 */
WCACHE_API wcache_code wcache_cache_set_param(wcache_cache *c, wcache_param p, int64_t value);

/*
 * @brief Read an integer parameter's current value.
 * @return WCACHE_OK, WCACHE_EINVAL.  Thread safety: any thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_cache_get_param(const wcache_cache *c, wcache_param p,
                                              int64_t *value);

/*
 * @brief The inclusive bounds and default of a parameter.
 * @return WCACHE_OK, WCACHE_EINVAL.  Thread safety: any thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_param_bounds(wcache_param p, int64_t *lo, int64_t *hi,
                                           int64_t *dflt);

/*
 * @brief Install a log callback (NULL to remove) and the most verbose level
 *        passed to it.  Only before open.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESTATE.
 * Thread safety: one thread at a time, before open.  Since: 0.1
 */
WCACHE_API wcache_code wcache_cache_set_log(wcache_cache *c, wcache_log_fn fn, int max_level,
                                            void *userdata);

/*
 * @brief Install a monotonic clock (NULL restores CLOCK_MONOTONIC).  Only
 *        before open.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESTATE.
 * Thread safety: one thread at a time, before open.  Since: 0.1
 */
WCACHE_API wcache_code wcache_cache_set_clock(wcache_cache *c, wcache_clock_fn fn,
                                              void *userdata);

/*
 * @brief Give the cache a buffer for the detail text of the writer's errors
 *        (for example which key of a batch was refused).  buf (NULL to
 *        remove) must hold len bytes and outlive the cache or the next call.
 *        Written only by calls marked "writer" and by wcache_cache_open(),
 *        always NUL-terminated; left unchanged on success.
 * @return WCACHE_OK, WCACHE_EINVAL.
 * Ownership: borrowed (the caller keeps buf).  Thread safety: writer.
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_cache_set_errbuf(wcache_cache *c, char *buf, size_t len);

/*
 * @brief Finish configuration; the cache becomes readable and writable,
 *        empty, at revision 0.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESTATE (already open),
 *         WCACHE_ENOMEM.
 * Thread safety: one thread at a time.  Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_cache_open(wcache_cache *c);

/*
 * @brief Free the cache and everything it holds.  Accepts NULL.  Every view
 *        and batch of the cache must have been freed first; borrowed
 *        pointers become invalid.
 * Thread safety: one thread, with no other call on the cache running.
 * Since: 0.1
 */
WCACHE_API void wcache_cache_close(wcache_cache *c);

/*
 * @brief The errno saved by the last call of the writer that returned
 *        WCACHE_ESYS.  Thread safety: writer.  Since: 0.1
 */
WCACHE_API int wcache_cache_last_errno(const wcache_cache *c);

/* ------------------------------------------------------------------------ */
/* Revisions, compaction, statistics                                         */
/* ------------------------------------------------------------------------ */

/* The latest revision applied (0 when empty).  Any thread.  Since: 0.1 */
WCACHE_API int64_t wcache_cache_revision(const wcache_cache *c);

/* The compacted revision: reads below it fail with WCACHE_ECOMPACTED.
 * Any thread.  Since: 0.1 */
WCACHE_API int64_t wcache_cache_compacted_revision(const wcache_cache *c);

/*
 * @brief Compact the history: revisions below rev stop being readable.
 *        A rev at or below the compacted revision is a no-op.  Memory held
 *        only by compacted revisions is freed once no open view needs it.
 * @return WCACHE_OK, WCACHE_EINVAL (rev < 0), WCACHE_EFUTURE (rev above the
 *         current revision), WCACHE_ESTATE (not open).
 * Thread safety: writer.  Since: 0.1
 */
WCACHE_API wcache_code wcache_cache_compact(wcache_cache *c, int64_t rev);

/* Counters; size must be set to sizeof(wcache_stat) by the caller. */
typedef struct wcache_stat {
    uint32_t size;
    int64_t revision;           /* latest applied revision */
    int64_t compacted_revision; /* oldest readable revision */
    uint64_t objects;           /* live keys at the latest revision */
    uint64_t versions;          /* stored versions, all revisions, tombstones too */
    uint64_t value_bytes;       /* bytes of stored values, all versions */
    uint64_t key_bytes;         /* bytes of stored keys */
    uint64_t events;            /* puts and deletes applied since open */
    uint64_t history_events;    /* events inside the readable window */
    uint64_t views_open;        /* read views currently pinned */
    uint64_t compactions;       /* compactions run */
} wcache_stat;

/*
 * @brief Fill *st.  Counters are read without stopping the writer, so they
 *        may be mutually inconsistent by the events in flight.
 * @return WCACHE_OK, WCACHE_EINVAL (st NULL or st->size too small).
 * Thread safety: any thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_cache_stat(const wcache_cache *c, wcache_stat *st);

/* ------------------------------------------------------------------------ */
/* Ingest: the writer                                                        */
/* ------------------------------------------------------------------------ */

/*
 * @brief Apply a put of key at revision rev.  create_revision and version
 *        follow etcd: a put on an absent (or deleted) key creates it
 *        (version 1, create_revision rev); otherwise version increments.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_EORDER (rev not above the current
 *         revision), WCACHE_ETOOBIG, WCACHE_ENOMEM, WCACHE_ESTATE.
 *         On error nothing changed.
 * Ownership: copies key and value.  Thread safety: writer.  Since: 0.1
 */
WCACHE_API wcache_code wcache_ingest_put(wcache_cache *c, const void *key, size_t key_len,
                                         const void *value, size_t value_len, int64_t rev);

/*
 * @brief Apply a delete of key at revision rev.
 * @return WCACHE_OK, WCACHE_ENOTFOUND (no live key: nothing changed, the
 *         revision does not advance), WCACHE_EINVAL, WCACHE_EORDER,
 *         WCACHE_ENOMEM, WCACHE_ESTATE.  On error nothing changed.
 * Ownership: copies key.  Thread safety: writer.  Since: 0.1
 */
WCACHE_API wcache_code wcache_ingest_delete(wcache_cache *c, const void *key, size_t key_len,
                                            int64_t rev);

/*
 * @brief Advance the current revision without a change (an etcd progress
 *        notification or a Kubernetes bookmark: "every event up to rev has
 *        been delivered").  rev equal to the current revision is a no-op.
 * @return WCACHE_OK, WCACHE_EORDER (rev below current), WCACHE_ESTATE.
 * Thread safety: writer.  Since: 0.1
 */
WCACHE_API wcache_code wcache_ingest_progress(wcache_cache *c, int64_t rev);

/* What a wcache_change does. */
typedef enum wcache_change_type {
    WCACHE_CHANGE_PUT = 1,   /* put key = value */
    WCACHE_CHANGE_DELETE = 2 /* delete key (value ignored) */
} wcache_change_type;

/* One change for wcache_ingest_changes(): a put or a delete at its own
 * revision.  Pointers are the caller's; nothing is kept after the call. */
typedef struct wcache_change {
    uint32_t type; /* a wcache_change_type */
    const void *key;
    size_t key_len;
    const void *value; /* put only; may be NULL when value_len is 0 */
    size_t value_len;
    int64_t rev;
} wcache_change;

/*
 * @brief Apply n changes in order, each at its own revision, with the
 *        same effect as n calls of wcache_ingest_put() and
 *        wcache_ingest_delete(), but faster: the cache looks up the keys of
 *        the next changes while it applies the current one, so their cache
 *        misses overlap.  For a source that receives events in chunks (an
 *        etcd watch response carries many).  Each change is applied on its
 *        own: readers may see any revision in between, as with single calls.
 *        Revisions must strictly increase, the first above the current.
 * @return WCACHE_OK when all n are applied.  Otherwise the code the failing
 *         change would have got from its single call (WCACHE_EINVAL also for
 *         an unknown type): the changes before it stay applied, it and the
 *         rest are not, and *applied says how many were.
 *         WCACHE_EINVAL (c or ch NULL with n > 0), WCACHE_ESTATE as usual.
 * Ownership: copies keys and values; applied may be NULL.
 * Thread safety: writer.  Since: 0.1
 */
WCACHE_API wcache_code wcache_ingest_changes(wcache_cache *c, const wcache_change *ch, size_t n,
                                             size_t *applied);

/*
 * @brief Create an empty batch: a set of puts and deletes applied at one
 *        revision, all or nothing (an etcd transaction).
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ENOMEM.
 * Ownership: new (*out); free with wcache_batch_free() before closing c.
 * Thread safety: any thread; the batch itself one thread at a time.
 * Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_batch_create(wcache_cache *c,
                                                            wcache_batch **out);

/* Free a batch; accepts NULL.  One thread at a time.  Since: 0.1 */
WCACHE_API void wcache_batch_free(wcache_batch *b);

/* Empty a batch for reuse, keeping its memory.  Thread safety: the
 * batch's thread.  Since: 0.1 */
WCACHE_API void wcache_batch_clear(wcache_batch *b);

/* Number of operations in the batch.  Thread safety: the batch's thread.
 * Since: 0.1 */
WCACHE_API size_t wcache_batch_count(const wcache_batch *b);

/*
 * @brief Add a put / a delete to the batch.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ETOOBIG, WCACHE_ENOMEM.
 * Ownership: copies key and value.  Thread safety: the batch's thread.
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_batch_put(wcache_batch *b, const void *key, size_t key_len,
                                        const void *value, size_t value_len);
WCACHE_API wcache_code wcache_batch_delete(wcache_batch *b, const void *key, size_t key_len);

/*
 * @brief Add an object with its stored metadata, for wcache_ingest_load()
 *        (the result of an etcd range, or a snapshot) or
 *        wcache_ingest_relist().
 * @return WCACHE_OK, WCACHE_EINVAL (create_rev < 1, mod_rev < create_rev,
 *         version < 1 or >= 2^55), WCACHE_ETOOBIG, WCACHE_ENOMEM.
 * Ownership: copies key and value.  Since: 0.1
 */
WCACHE_API wcache_code wcache_batch_put_meta(wcache_batch *b, const void *key, size_t key_len,
                                             const void *value, size_t value_len,
                                             int64_t create_rev, int64_t mod_rev,
                                             int64_t version);

/*
 * @brief Apply every operation of b at revision rev, all or nothing.  The
 *        batch is left as it was (clear it to reuse it).
 * @return WCACHE_OK, WCACHE_EORDER, WCACHE_EEXIST (a key twice),
 *         WCACHE_ENOTFOUND (delete of an absent key), WCACHE_EINVAL (empty
 *         batch, or one holding put_meta entries), WCACHE_ENOMEM,
 *         WCACHE_ESTATE.  On error nothing changed; the errbuf names the key.
 * Thread safety: writer.  Since: 0.1
 */
WCACHE_API wcache_code wcache_ingest_batch(wcache_cache *c, const wcache_batch *b, int64_t rev);

/*
 * @brief Load the state of a source at revision rev into an empty cache
 *        (revision 0, nothing applied), from put_meta entries.  Afterwards
 *        the current and the compacted revision are both rev: history
 *        before rev is not known.  Sorted input is loaded in O(n);
 *        unsorted input is sorted first.  The entries are moved, not
 *        copied, so that a restore of a large cache needs no second copy.
 * @return WCACHE_OK, WCACHE_ESTATE (cache not empty), WCACHE_EINVAL (rev <
 *         1, an entry with mod_rev > rev, or put/delete entries),
 *         WCACHE_EEXIST, WCACHE_ENOMEM.  On error nothing changed and the
 *         batch is as it was.
 * Ownership: on success steals b's entries (b is left empty, reusable).
 * Thread safety: writer.  Since: 0.1
 */
WCACHE_API wcache_code wcache_ingest_load(wcache_cache *c, wcache_batch *b, int64_t rev);

/*
 * @brief Apply a re-list at revision rev: the changes that bring the cache
 *        to a source's fresh list (after its resume revision was compacted,
 *        or its stream stopped fitting the cache), all or nothing.  put_meta
 *        entries keep the metadata they carry (the source's create_revision,
 *        mod_revision and version, which reads, watch events and snapshots
 *        then report); put and delete entries are numbered as by
 *        wcache_ingest_batch().  Every change becomes visible at rev, and
 *        rev becomes the compacted revision as well: the cache does not
 *        know the states between its revision and rev, so exact reads,
 *        continue tokens and watches from below rev fail with
 *        WCACHE_ECOMPACTED (etcd compacted that history too).  Watchers
 *        already running get the changes as events at rev.  An empty batch
 *        advances to rev and compacts.
 * @return WCACHE_OK, WCACHE_EORDER (rev not above the current revision),
 *         WCACHE_EINVAL (no or a foreign batch; a put_meta entry whose
 *         mod_revision is above rev or not above the current revision, or
 *         with create_revision < 1, mod_revision < create_revision or
 *         version < 1), WCACHE_EEXIST (a key twice), WCACHE_ENOTFOUND
 *         (delete of an absent key), WCACHE_ENOMEM, WCACHE_ESTATE.  On
 *         error nothing changed; the errbuf names the key.
 * Ownership: the batch is left as it was.  Thread safety: writer.
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_ingest_relist(wcache_cache *c, const wcache_batch *b,
                                            int64_t rev);

/* ------------------------------------------------------------------------ */
/* Reads                                                                     */
/* ------------------------------------------------------------------------ */

/* One stored object as seen at a revision.  Pointers are borrowed. */
typedef struct wcache_kv {
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    int64_t create_revision; /* revision that created this incarnation */
    int64_t mod_revision;    /* revision of this version */
    int64_t version;         /* modifications since creation, 1 = created */
} wcache_kv;

/*
 * @brief Create a read view handle (not yet pinned).
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ENOMEM.
 * Ownership: new (*out); free with wcache_view_free() before closing c.
 * Thread safety: any thread.  Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_view_create(wcache_cache *c, wcache_view **out);

/*
 * @brief Pin the view at revision rev (WCACHE_REV_LATEST for the latest).
 *        A view that is already pinned is first ended.  While pinned, the
 *        revision stays readable through the view even if the cache is
 *        compacted past it; a long-pinned view therefore holds memory.
 * @return WCACHE_OK, WCACHE_ECOMPACTED (rev below the compacted revision),
 *         WCACHE_EFUTURE (rev above the current revision: returned at once),
 *         WCACHE_EBUSY (every reader slot in use), WCACHE_EINVAL (rev < 0),
 *         WCACHE_ESTATE (cache not open).
 * Thread safety: any thread; the view one thread at a time (the pin belongs
 * to the view, not the thread: a view may be ended on another thread).
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_view_begin(wcache_view *v, int64_t rev);

/* The revision the view is pinned at, or 0 when not pinned (or pinned at
 * the latest revision of a cache that never applied anything).
 * Thread safety: the view's thread.  Since: 0.1 */
WCACHE_API int64_t wcache_view_revision(const wcache_view *v);

/*
 * @brief Unpin the view.  Every pointer borrowed from it becomes invalid.
 *        Ending an unpinned view is a no-op.
 * Thread safety: the view's thread (any thread may be it).  Since: 0.1
 */
WCACHE_API void wcache_view_end(wcache_view *v);

/* End and free a view; accepts NULL.  Thread safety: the view's thread.
 * Since: 0.1 */
WCACHE_API void wcache_view_free(wcache_view *v);

/*
 * @brief Read one key at the view's revision.
 * @return WCACHE_OK, WCACHE_ENOTFOUND, WCACHE_EINVAL, WCACHE_ESTATE (view
 *         not pinned).
 * Ownership: out's pointers are borrowed until wcache_view_end().
 * Thread safety: the view's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_view_get(wcache_view *v, const void *key, size_t key_len,
                                       wcache_kv *out);

/*
 * @brief Read n keys at the view's revision: out[i] and codes[i] are what
 *        wcache_view_get() would give for keys[i] (WCACHE_OK or
 *        WCACHE_ENOTFOUND; out[i] is left as it was for the latter).
 *        Faster than n single calls: the view looks up the next keys while
 *        it reads the current one, so that their cache misses overlap.
 * @return WCACHE_OK when every key was looked up; WCACHE_EINVAL (NULL
 *         v, keys, key_lens, out or codes with n > 0, or a NULL key with a
 *         non-zero length: nothing is read), WCACHE_ESTATE (view not
 *         pinned).
 * Ownership: out's pointers are borrowed until wcache_view_end().
 * Thread safety: the view's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_view_get_many(wcache_view *v, const void *const *keys,
                                            const size_t *key_lens, size_t n, wcache_kv *out,
                                            wcache_code *codes);

/* Options of a LIST.  size = sizeof(wcache_list_opts); zero means default. */
typedef struct wcache_list_opts {
    uint32_t size;
    /* Range [start, end).  start NULL or empty: from the first key; end NULL
     * or empty: to the last key.  Ignored when prefix_len > 0. */
    const void *start;
    size_t start_len;
    const void *end;
    size_t end_len;
    /* Every key beginning with these bytes. */
    const void *prefix;
    size_t prefix_len;
    /* A token from an earlier page (wcache_list_result.token): resume right
     * after its key.  The view must be pinned at the token's revision (see
     * wcache_token_revision()) and the range must be the same. */
    const char *token;
    size_t token_len;
    /* 1: fill wcache_list_result.remaining (costs a scan of the rest). */
    int count_remaining;
} wcache_list_opts;

typedef struct wcache_list_result {
    uint32_t size;     /* sizeof(wcache_list_result), set by the caller */
    size_t count;      /* items written */
    int more;          /* 1: more keys follow in the range */
    int64_t remaining; /* keys after this page, or -1 when not counted */
    int64_t revision;  /* the revision the page was read at */
    const char *token; /* when more: NUL-terminated continue token, borrowed
                          until the next list call on the view or its end;
                          otherwise NULL */
    size_t token_len;
} wcache_list_result;

/*
 * @brief List keys of a range in byte-wise key order at the view's
 *        revision, at most cap items (cap is the page limit, >= 1).
 *        opts NULL lists every key.  `more` is exact: it is 1 only when a
 *        further key exists in the range at this revision, so the last
 *        page never comes with a token.  `remaining` is 0 on the last page
 *        and otherwise -1 unless count_remaining asked for it.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_EBADTOKEN (corrupt token, or one
 *         for another revision or range), WCACHE_ESTATE (view not pinned),
 *         WCACHE_ENOMEM.
 * Ownership: items[] pointers are borrowed until wcache_view_end().
 * Thread safety: the view's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_view_list(wcache_view *v, const wcache_list_opts *opts,
                                        wcache_kv *items, size_t cap, wcache_list_result *res);

/*
 * @brief Count live keys of a range at the view's revision (O(range)); with
 *        a token, the keys after it.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_EBADTOKEN, WCACHE_ESTATE.
 * Thread safety: the view's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_view_count(wcache_view *v, const wcache_list_opts *opts,
                                         uint64_t *count);

/*
 * @brief Decode the revision a continue token was issued at, to pin a view
 *        there before resuming.
 * @return WCACHE_OK, WCACHE_EBADTOKEN.  Thread safety: any thread.
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_token_revision(const char *token, size_t token_len, int64_t *rev);

/* ------------------------------------------------------------------------ */
/* Watch subscriptions                                                       */
/* ------------------------------------------------------------------------ */

typedef struct wcache_watch wcache_watch; /* one subscriber */
typedef struct wcache_event wcache_event; /* one change, shared by every watcher */

typedef enum wcache_event_type {
    WCACHE_EV_ADDED = 1,      /* the object entered the watch (created, or moved in) */
    WCACHE_EV_MODIFIED = 2,   /* the object changed and stays in the watch */
    WCACHE_EV_DELETED = 3,    /* deleted, or moved out: kv is the previous object */
    WCACHE_EV_BOOKMARK = 4,   /* no change: every event up to revision was delivered */
    WCACHE_EV_INITIAL_END = 5 /* bookmark ending the initial events (k8s initial-events-end) */
} wcache_event_type;

/* Options of a watch.  size = sizeof(wcache_watch_opts); zero is default. */
typedef struct wcache_watch_opts {
    uint32_t size;
    /* Deliver every event with a revision above this one.  0: from the
     * current revision.  Below the compacted revision: WCACHE_ECOMPACTED.
     * Above the current revision: the watch waits for it. */
    int64_t start_revision;
    /* Key range, as in wcache_list_opts: prefix, or [start, end). */
    const void *start;
    size_t start_len;
    const void *end;
    size_t end_len;
    const void *prefix;
    size_t prefix_len;
    /* Kubernetes label selector on the JSON objects' metadata.labels
     * ("app=web,tier in (a,b),!canary"); NULL or empty: every object. */
    const char *label_selector;
    size_t label_selector_len;
    /* 1: first deliver the state at the current revision as ADDED events in
     * key order, then one WCACHE_EV_INITIAL_END event carrying that
     * revision (Kubernetes' sendInitialEvents).  start_revision is then only
     * a minimum: one above the current revision fails with WCACHE_EFUTURE
     * (wait for it with wcache_view_begin_fresh() first). */
    int initial_events;
    /* 1: events carry the previous object in prev. */
    int prev_value;
    /* > 0: deliver a WCACHE_EV_BOOKMARK at most this often when idle. */
    int64_t bookmark_interval_ms;
    /* Queued deliveries before the watcher counts as slow and is ended
     * with WCACHE_EOVERFLOW (it must re-list).  0: 1024.  Rounded up to a
     * power of two.  Memory follows the backlog, not this limit: 8 bytes
     * a slot, from 32 slots, doubling up to queue_size as deliveries back
     * up (a watch that cannot grow it ends with WCACHE_ENOMEM), and given
     * back at the next delivery after a round that used at most an
     * eighth of it (see wcache_watch(3)). */
    uint32_t queue_size;
    /* Watch by index value (see wcache_index(3)): when index_value is not
     * NULL, only changes whose new or previous object has this value in
     * index index_id are offered, with the key range and selector applied
     * on top; an object moving to another value is DELETED here, one
     * moving in is ADDED (Kubernetes trigger semantics).  Initial events
     * come from the index.  NULL: no index filter (index_id 0 is a valid
     * id, so the value pointer is the switch).  Since 0.1; a caller whose
     * size ends before index_id gets no index filter. */
    int index_id;
    const void *index_value;
    size_t index_value_len;
} wcache_watch_opts;

/* One delivery.  Pointers are borrowed from the event: valid until
 * wcache_event_unref(ev). */
typedef struct wcache_watch_event {
    wcache_event_type type;
    int64_t revision; /* of the change; for bookmarks the revision reached */
    wcache_kv kv;     /* the object; for DELETED the last state before it */
    wcache_kv prev;   /* previous object when asked and present, else zeros */
    wcache_event *ev; /* the reference this delivery holds */
} wcache_watch_event;

/*
 * @brief Open a watch.
 * @return WCACHE_OK, WCACHE_EINVAL (bad options or selector: the errbuf
 *         says why), WCACHE_ECOMPACTED (start_revision below the compacted
 *         revision: the Kubernetes 410 "too old resource version"),
 *         WCACHE_EFUTURE (initial_events above the current revision),
 *         WCACHE_ESTATE, WCACHE_EBUSY (initial_events and no reader slot),
 *         WCACHE_ENOMEM.  No file descriptor is made here: see
 *         wcache_watch_fd().
 * Ownership: new (*out); close with wcache_watch_close() before closing c.
 * Thread safety: any thread.  Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_watch_open(wcache_cache *c,
                                                          const wcache_watch_opts *opts,
                                                          wcache_watch **out);

/*
 * @brief Take up to cap deliveries without blocking; *n = 0 when none is
 *        ready now.  Events come in revision order, each once, with no gap.
 *        Deliveries queued before the watch ended are still handed out;
 *        then the reason it ended is returned, on every later call too.
 * @return WCACHE_OK, WCACHE_EOVERFLOW (the watcher fell behind), WCACHE_ECOMPACTED
 *         (history it still had to replay was compacted), WCACHE_ESTOPPED
 *         (wcache_watch_stop()), WCACHE_ENOMEM, WCACHE_EINVAL.
 * Ownership: new: each evs[i].ev is released with wcache_event_unref().
 * Thread safety: the watch's thread (one at a time).  Since: 0.1
 */
WCACHE_API wcache_code wcache_watch_next(wcache_watch *w, wcache_watch_event *evs, size_t cap,
                                         size_t *n);

/*
 * @brief As wcache_watch_next(), but the deliveries are lent instead of
 *        given: every evs[i].ev is NULL, nothing is to be released, and the
 *        pointers in evs[0..*n) stay valid until the next call on w of
 *        wcache_watch_next(), wcache_watch_next_borrowed(),
 *        wcache_watch_wait() or wcache_watch_close().  Until then the lent
 *        deliveries still count against the watch's queue_size.  For event
 *        loops that handle each delivery before asking for more: it saves
 *        a reference count update per delivery, which many watchers of one
 *        change would otherwise all make on the same cache line.  Calls of
 *        both kinds may be mixed on one watch.
 * @return as wcache_watch_next().
 * Ownership: borrowed (see above); copy what must outlive the next call,
 *         or use wcache_watch_next() for it.
 * Thread safety: the watch's thread (one at a time).  Since: 0.1
 */
WCACHE_API wcache_code wcache_watch_next_borrowed(wcache_watch *w, wcache_watch_event *evs,
                                                  size_t cap, size_t *n);

/*
 * @brief As wcache_watch_next(), but wait up to timeout_ms (-1: forever)
 *        for at least one delivery; *n = 0 on timeout.  WCACHE_ESTATE for
 *        a watch in a watch set (wait on the set's fd); WCACHE_ESYS when
 *        its eventfd cannot be made (see wcache_watch_fd()) or poll fails.
 * Thread safety: the watch's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_watch_wait(wcache_watch *w, wcache_watch_event *evs, size_t cap,
                                         size_t *n, int64_t timeout_ms);

/*
 * @brief A file descriptor that polls readable when wcache_watch_next()
 *        may have something to hand out.  It stays readable until next()
 *        returns *n = 0.  Not woken while the watch is in a watch set
 *        (wcache_watchset_add()).  Do not read, write or close it.  Bookmarks are made
 *        when next() finds nothing queued; a loop wanting them while idle
 *        calls next() at least every bookmark interval.  The eventfd is
 *        made by the first call (or by a wcache_watch_wait() that sleeps),
 *        not at open, so watches served through a watch set hold none; a
 *        wake-up that came before shows on it at once.
 * @return the fd, or -1 for an invalid w or when no fd could be made
 *         (errno set, e.g. EMFILE: the watch is unharmed, ask again).
 * Thread safety: any thread, but not from a log callback.  Since: 0.1
 */
WCACHE_API int wcache_watch_fd(const wcache_watch *w);

/*
 * @brief End the watch from any thread; the fd wakes.  The end falls
 *        between two changes: a live watch still hands out, in order and
 *        without a gap, every delivery of the changes applied before this
 *        call (their ingest call had returned), none of a change whose
 *        ingest began after it returned, and then WCACHE_ESTOPPED on every
 *        call.  A watch still sending initial events or replaying history
 *        ends where its copy had reached: it hands out what it had queued,
 *        never a later event without the ones before it (as a Kubernetes
 *        or etcd watch, a stopped watch may miss the tail, never the
 *        middle).
 * Thread safety: any thread, but not from a log callback; it may wait for
 *        the feed thread to finish the group of changes it is applying
 *        (never for a consumer).  Since: 0.1
 */
WCACHE_API void wcache_watch_stop(wcache_watch *w);

/* Close a watch and drop its queued deliveries; accepts NULL.  Not while
 * another thread is inside next/wait on it.  Since: 0.1 */
WCACHE_API void wcache_watch_close(wcache_watch *w);

/* Release a delivery's event; accepts NULL.  Any thread.  Since: 0.1 */
WCACHE_API void wcache_event_unref(wcache_event *ev);

/*
 * Watch sets: one pollable fd for many watches.  A consumer thread serving
 * thousands of watches sleeps on the set's fd and asks the set which
 * watches have something, instead of polling one eventfd per watch: the
 * feed thread then makes one wake-up per sleep of the consumer, not one
 * system call per watch and change.  Watches keep every semantic of their
 * own (order, no gap, ends, bookmarks); only the wake-up moves.
 */
typedef struct wcache_watchset wcache_watchset; /* watches sharing one wake-up fd */

/*
 * @brief Create an empty watch set of cache c.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESYS (eventfd), WCACHE_ENOMEM.
 * Ownership: new (*out); free with wcache_watchset_free() before closing c.
 * Thread safety: any thread.  Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_watchset_create(wcache_cache *c,
                                                               wcache_watchset **out);

/*
 * @brief Put watch w (of the same cache) in set s, with userdata handed
 *        back by wcache_watchset_next().  From now on w's own fd is not
 *        woken and wcache_watch_wait() on it fails with WCACHE_ESTATE; w is
 *        handed out once at once, as it may hold deliveries already.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_EBUSY (w is in a set already),
 *         WCACHE_ENOMEM.
 * Ownership: s does not own w: close w (which takes it out of s) or remove
 *         it before freeing s, or let wcache_watchset_free() remove it.
 * Thread safety: s's thread (see wcache_watchset_next()), while no other
 *         thread is inside next/wait on w.  Since: 0.1
 */
WCACHE_API wcache_code wcache_watchset_add(wcache_watchset *s, wcache_watch *w, void *userdata);

/*
 * @brief Take w out of s: its own fd is woken again (and polls readable
 *        once, since a wake-up may have gone to the set).
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ENOTFOUND (w is not in s).
 * Thread safety: as wcache_watchset_add().  Since: 0.1
 */
WCACHE_API wcache_code wcache_watchset_remove(wcache_watchset *s, wcache_watch *w);

/*
 * @brief A file descriptor that polls readable when wcache_watchset_next()
 *        may hand out a watch.  It stays readable until next() sets *w to
 *        NULL.  Do not read, write or close it.
 * Thread safety: any thread.  Since: 0.1
 */
WCACHE_API int wcache_watchset_fd(const wcache_watchset *s);

/*
 * @brief Hand out the next watch of s that has become ready (deliveries or
 *        its end), in the order they became ready, with its userdata
 *        (userdata may be NULL); *w = NULL when none is, and the fd is then
 *        re-armed.  Never blocks.  A watch is handed out once per wake-up,
 *        like an edge-triggered epoll: it is handed out again only after a
 *        wcache_watch_next() or wcache_watch_next_borrowed() on it returned
 *        *n = 0 (or its end) and something new came, so take from it until
 *        then, or remember it.  A spurious hand-out (nothing to take) is
 *        possible.
 * @return WCACHE_OK, WCACHE_EINVAL.
 * Ownership: *w and *userdata are borrowed.
 * Thread safety: one thread at a time per set (s's thread); next on the
 *         watches it hands out may be called from any one thread at a
 *         time.  Since: 0.1
 */
WCACHE_API wcache_code wcache_watchset_next(wcache_watchset *s, wcache_watch **w,
                                            void **userdata);

/*
 * @brief Free s, removing the watches still in it (as
 *        wcache_watchset_remove()); accepts NULL.
 * Thread safety: s's thread, as wcache_watchset_add().  Since: 0.1
 */
WCACHE_API void wcache_watchset_free(wcache_watchset *s);

/* ------------------------------------------------------------------------ */
/* Consistent reads                                                          */
/* ------------------------------------------------------------------------ */

/*
 * Asks the source feeding the cache for its current revision (etcd: the
 * header revision of a count-only range).  Returns 0 and sets *rev, or a
 * nonzero value on failure.  Runs on the reader's thread, concurrently with
 * anything; must not call into the cache.
 */
typedef int (*wcache_current_rev_fn)(int64_t *rev, void *userdata);
/*
 * Asks the source to send a progress notification soon (etcd
 * RequestProgress), so that a quiet source still advances the cache's
 * revision through wcache_ingest_progress().  Called about every 100 ms
 * while a read waits.  Same thread rules as above.
 */
typedef void (*wcache_progress_fn)(void *userdata);

/*
 * @brief Install the source callbacks for consistent reads (either may be
 *        NULL).  Only before open.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESTATE.  Since: 0.1
 */
WCACHE_API wcache_code wcache_cache_set_source(wcache_cache *c, wcache_current_rev_fn current,
                                               wcache_progress_fn progress, void *userdata);

/*
 * @brief Pin v at a revision not older than min_rev (KEP-2340): wait until
 *        the cache has applied min_rev, then pin the latest revision.
 *        min_rev < 0 means "the source's current revision", asked through
 *        the wcache_current_rev_fn: a read as fresh as a quorum read of the
 *        source, served from memory.  timeout_ms <= 0: 3000 (Kubernetes').
 * @return WCACHE_OK, WCACHE_ETIMEDOUT (the cache did not get there in
 *         time: Kubernetes answers 504 and may fall back to the source),
 *         WCACHE_ENOTREADY (no current-revision callback, or it failed),
 *         and wcache_view_begin()'s errors.
 * Thread safety: any thread; the view one thread at a time.  Since: 0.1
 */
WCACHE_API wcache_code wcache_view_begin_fresh(wcache_view *v, int64_t min_rev,
                                               int64_t timeout_ms);

/* Counters of fresh reads; size = sizeof(wcache_wait_stat). */
typedef struct wcache_wait_stat {
    uint32_t size;
    uint64_t reads;       /* wcache_view_begin_fresh() calls */
    uint64_t waits;       /* ... that had to wait */
    uint64_t timeouts;    /* ... that timed out */
    uint64_t wait_ns;     /* total time spent waiting */
    uint64_t max_wait_ns; /* longest wait */
    uint64_t watchers;    /* open watches */
    uint64_t deliveries;  /* deliveries queued to watchers */
    uint64_t overflows;   /* watchers ended for falling behind */
} wcache_wait_stat;

/* Fill *st.  Any thread.  Since: 0.1 */
WCACHE_API wcache_code wcache_cache_wait_stat(const wcache_cache *c, wcache_wait_stat *st);

/* ------------------------------------------------------------------------ */
/* Secondary indexes                                                         */
/* ------------------------------------------------------------------------ */

/*
 * An index maps each object to at most one value that an extractor finds
 * in it (a pod's spec.nodeName, an object's metadata.namespace), so that
 * the objects with one value can be listed and watched at a cost that
 * follows the number of matches, not the size of the cache: the Kubernetes
 * watch cache's indexers and trigger functions.  Indexes are registered
 * before wcache_cache_open(); the full text is in wcache_index(3).
 */

/* Most indexes a cache can have. */
#define WCACHE_INDEX_MAX 8

/*
 * Index extractor.  Given an object (key and value bytes), set *out and
 * *out_len to its index value and return 1, or return 0 when the object has
 * no value in this index (it is then not listed under any value).  *out
 * may point into the key or value bytes, or into memory of the extractor's
 * that stays valid until its next call.  Return -1 when it cannot tell
 * (out of memory): the ingest then fails with WCACHE_ENOMEM and changes
 * nothing; a watch that needed the value ends with WCACHE_ENOMEM.
 * Called by the writer while it applies a change and by threads consuming
 * watches by index value while they catch up on history, never two calls
 * at once for one cache (they run under the cache's writer lock): keep it
 * short, and do not call into the cache from it.
 */
typedef int (*wcache_index_fn)(const void *key, size_t key_len, const void *value,
                               size_t value_len, const void **out, size_t *out_len,
                               void *userdata);

/*
 * @brief Register an index named name (any bytes, unique in the cache)
 *        whose value fn extracts.  Only before open.
 * @param[out] id  receives the index's id, 0 for the first index, then
 *                 1, 2 ...: what the list, count and watch calls take.
 * @return WCACHE_OK, WCACHE_EINVAL (NULL argument or empty name),
 *         WCACHE_EEXIST (the name is taken), WCACHE_EBUSY (the cache has
 *         WCACHE_INDEX_MAX indexes already), WCACHE_ESTATE (open),
 *         WCACHE_ENOMEM.
 * Ownership: copies name; userdata is passed to fn and never freed.
 * Thread safety: one thread at a time, before open.  Since: 0.1
 */
WCACHE_API wcache_code wcache_cache_add_index(wcache_cache *c, const char *name,
                                              size_t name_len, wcache_index_fn fn,
                                              void *userdata, int *id);

/*
 * @brief Register an index on a string field of JSON objects, named by a
 *        dotted path of object members ("spec.nodeName",
 *        "metadata.namespace").  An object that is not JSON, or whose
 *        field is missing or not a string, has no value.  Only before open.
 * @return as wcache_cache_add_index(); WCACHE_EINVAL also for an empty path
 *         or one with an empty component.
 * Ownership: copies name and path.  Thread safety: one thread at a time,
 * before open.  Since: 0.1
 */
WCACHE_API wcache_code wcache_cache_add_index_json(wcache_cache *c, const char *name,
                                                   size_t name_len, const char *path,
                                                   size_t path_len, int *id);

/*
 * @brief List the objects whose value in index id at the view's revision
 *        is value, in byte-wise key order, at most cap of them (cap >= 1),
 *        with the paging rules of wcache_view_list(): opts (NULL: none) may
 *        narrow the keys to a prefix or range and carry a continue token,
 *        which is bound to the index and the value as well as to the
 *        revision and range.  Costs O(m log m) for m postings of the value
 *        in the readable window, whatever the cache's size.
 * @return WCACHE_OK, WCACHE_EINVAL (also an id that is not an index),
 *         WCACHE_EBADTOKEN (corrupt token, or one of another revision,
 *         range, index or value), WCACHE_ESTATE (view not pinned),
 *         WCACHE_ENOMEM.
 * Ownership: items[] pointers are borrowed until wcache_view_end(); the
 * token until the next list call on the view or its end.
 * Thread safety: the view's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_view_list_index(wcache_view *v, int id, const void *value,
                                              size_t value_len, const wcache_list_opts *opts,
                                              wcache_kv *items, size_t cap,
                                              wcache_list_result *res);

/*
 * @brief Count the objects whose value in index id is value at the view's
 *        revision, in O(postings of the value).
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESTATE (view not pinned).
 * Thread safety: the view's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_view_count_index(wcache_view *v, int id, const void *value,
                                               size_t value_len, uint64_t *count);

/* Counters of one index; size = sizeof(wcache_index_stat). */
typedef struct wcache_index_stat {
    uint32_t size;
    uint64_t values;   /* distinct values with postings in the window */
    uint64_t postings; /* postings held: current ones and closed ones that
                          a readable revision may still need */
    uint64_t current;  /* postings of the latest revision (indexed objects) */
} wcache_index_stat;

/*
 * @brief Fill *st.  Counters are read without stopping the writer.
 * @return WCACHE_OK, WCACHE_EINVAL (bad id, st NULL or st->size too small).
 * Thread safety: any thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_cache_index_stat(const wcache_cache *c, int id,
                                               wcache_index_stat *st);

/* ------------------------------------------------------------------------ */
/* Sources                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * The etcd source feeds a cache from an etcd v3 cluster with libcurl: a
 * paginated range at one revision (over gRPC, or the JSON gateway when
 * gRPC is not there) loaded into the cache, then a watch through the JSON
 * gateway (jansson) from that revision + 1 (prev_kv,
 * progress_notify), on a thread of its own.  The events of one etcd
 * revision are applied as one batch; progress notifications advance the
 * cache through a guard against etcd-io/etcd#15220.  After a disconnect it
 * reconnects, with backoff and to the next endpoint, from the last applied
 * revision + 1; when that revision was compacted it re-lists and applies
 * the difference as one batch (vanished keys become deletes).  It installs
 * itself as the cache's source for consistent reads (a count-only range).
 * The full text is in wcache_source(3).
 *
 * Order of calls: wcache_cache_create, parameters, wcache_etcd_create,
 * wcache_cache_open, (optionally wcache_snapshot_restore: the source then
 * resumes from the snapshot's revision), wcache_etcd_start ...
 * wcache_etcd_stop, wcache_etcd_free, wcache_cache_close.
 */

typedef struct wcache_etcd wcache_etcd; /* one etcd source */

/* Options of an etcd source.  size = sizeof(wcache_etcd_opts); zero means
 * default for every other field. */
typedef struct wcache_etcd_opts {
    uint32_t size;
    /* Comma-separated member URLs, "http://127.0.0.1:2379,https://h:2379"
     * (required); the source fails over between them. */
    const char *endpoints;
    /* The watched keys: every key beginning with prefix, or when prefix_len
     * is 0 the range [start, end) (start empty: from the first key; end
     * empty: to the last key).  Binary-safe. */
    const void *prefix;
    size_t prefix_len;
    const void *start;
    size_t start_len;
    const void *end;
    size_t end_len;
    /* TLS: CA bundle, client certificate and key (PEM files; NULL: the
     * system's CAs, no client certificate).  insecure = 1 turns peer and
     * host verification off (verification is on by default). */
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    int insecure;
    /* etcd auth token (from /v3/auth/authenticate), sent as the
     * Authorization header of every request; NULL: none. */
    const char *auth_token;
    int64_t connect_timeout_ms; /* per connection attempt; 0: 5000 */
    int64_t request_timeout_ms; /* per range request; 0: 30000 */
    int64_t backoff_min_ms;     /* first reconnect delay; 0: 100 */
    int64_t backoff_max_ms;     /* longest reconnect delay; 0: 5000 */
    uint32_t page_limit;        /* keys per range page; 0: 50000; a page over
                                   max_message_bytes is asked again at half */
    /* Longest watch message or range response in bytes: a longer one is an
     * error that ends the stream (then a reconnect).  0: 256 MiB. */
    uint64_t max_message_bytes;
    /* Following etcd's compaction, so that reads below etcd's
     * compaction revision fail with WCACHE_ECOMPACTED even while the cache
     * still holds them (wcache_source(3) says which way applies):
     * compact_key is a key whose value is the revision etcd is compacted to,
     * written before each compaction -- "compact_rev_key" for the etcd of a
     * Kubernetes API server; read before each watch and watched on the same
     * stream.  Binary-safe; compact_key_len 0: none. */
    const void *compact_key;
    size_t compact_key_len;
    /* For an etcd compacted by hand: every compact_probe_ms the source asks
     * etcd whether revisions the cache still serves were compacted (a
     * count-only range of one key at the cache's compacted revision; when
     * refused, a watch from there says exactly where).  0: every 60000 ms;
     * negative: never. */
    int64_t compact_probe_ms;
} wcache_etcd_opts;

/* Counters of an etcd source; size = sizeof(wcache_etcd_stats). */
typedef struct wcache_etcd_stats {
    uint32_t size;
    int synced;                /* 1 once listed and a watch is confirmed */
    int running;               /* 1 between start and the thread's end */
    int last_error;            /* wcache_code of the latest failure, 0: none */
    int64_t revision;          /* latest revision applied from etcd */
    int64_t list_revision;     /* revision of the latest (re)list */
    int64_t compact_revision;  /* latest compact_revision etcd reported */
    uint64_t lists;            /* initial lists and re-lists completed */
    uint64_t relists;          /* re-lists after compaction or divergence */
    uint64_t connects;         /* watch streams opened */
    uint64_t reconnects;       /* watch streams that ended and were retried */
    uint64_t errors;           /* failed requests, malformed or oversized messages */
    uint64_t messages;         /* watch messages parsed */
    uint64_t bytes;            /* response bytes received */
    uint64_t events;           /* watch events applied */
    uint64_t progress_applied; /* progress notifications applied */
    uint64_t progress_ignored; /* ... ignored by the #15220 guard */
    uint64_t probes;           /* compaction probes sent */
    /* Since 0.1, after probes: wcache_etcd_current_revision() calls (every
     * consistent read; each counted once it has its place in line for a
     * range), and the ranges sent for them (concurrent calls share one). */
    uint64_t revision_reads;
    uint64_t revision_probes;
} wcache_etcd_stats;

/* A socket an etcd source driven by the embedder's loop waits on
 * (wcache_etcd_fds()); events: WCACHE_ETCD_IN and/or WCACHE_ETCD_OUT, as
 * poll()'s POLLIN / POLLOUT. */
typedef struct wcache_etcd_fd {
    int fd;
    int events;
} wcache_etcd_fd;

enum { WCACHE_ETCD_IN = 1, WCACHE_ETCD_OUT = 2 };

/*
 * @brief Create an etcd source for c and install it as c's source for
 *        consistent reads (wcache_cache_set_source()), so c must not be
 *        open yet.  Nothing is sent to etcd before wcache_etcd_start().
 *        Calls curl_global_init() (reference-counted by libcurl; thread
 *        safe with a libcurl that reports CURL_VERSION_THREADSAFE).
 * @return WCACHE_OK, WCACHE_EINVAL (NULL, opts->size too small, no or bad
 *         endpoint, an option out of range), WCACHE_ESTATE (c open),
 *         WCACHE_ECURL (libcurl failed to initialise), WCACHE_ENOMEM.
 * Ownership: new (*out), release with wcache_etcd_free(); copies every
 * option.  Thread safety: one thread at a time, before wcache_cache_open.
 * Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_etcd_create(wcache_etcd **out, wcache_cache *c,
                                                           const wcache_etcd_opts *opts);

/*
 * @brief Start the source's thread: list (or resume from the cache's
 *        revision when it is not 0), then watch, until stopped.  Failures
 *        are retried inside, with backoff; they show in wcache_etcd_stat()
 *        and the cache's log.  That thread is then the cache's writer.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESTATE (already running, or the
 *         cache is not open), WCACHE_ESYS (pthread_create).
 * Thread safety: one thread at a time per source.  Since: 0.1
 */
WCACHE_API wcache_code wcache_etcd_start(wcache_etcd *src);

/*
 * @brief Start the source without a thread: the embedder's event loop
 *        drives it.  The loop waits on the sockets and the timeout that
 *        wcache_etcd_fds() gives, and calls wcache_etcd_perform() when one
 *        is ready or the timeout ran out; the source then does what it
 *        would on its own thread (list, watch, reconnect with backoff) and
 *        never blocks.  The loop's thread is the cache's writer.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESTATE (already started, or the
 *         cache is not open).
 * Thread safety: the loop's thread; wcache_etcd_fds, wcache_etcd_perform
 * and wcache_etcd_stop on that thread only.  Since: 0.1
 */
WCACHE_API wcache_code wcache_etcd_start_loop(wcache_etcd *src);

/*
 * @brief The sockets a loop-driven source waits on, and how long the loop
 *        may wait at most before calling wcache_etcd_perform() anyway.
 *        The set changes after every wcache_etcd_perform(): ask again each
 *        round.
 * @param fds         cap entries to fill (NULL when cap is 0)
 * @param[out] count  the number of sockets (also when cap is too small)
 * @param[out] timeout_ms  0 or more milliseconds
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESTATE (not started with
 *         wcache_etcd_start_loop), WCACHE_ETOOBIG (cap < *count: nothing
 *         filled).
 * Thread safety: the loop's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_etcd_fds(wcache_etcd *src, wcache_etcd_fd *fds, size_t cap,
                                       size_t *count, int64_t *timeout_ms);

/*
 * @brief Do what is ready for a loop-driven source: read and apply what
 *        arrived, start, finish and retry transfers.  Returns at once.
 * @return WCACHE_OK (what failed inside is retried later and shows in
 *         wcache_etcd_stat() and the log), WCACHE_EINVAL, WCACHE_ESTATE
 *         (not started with wcache_etcd_start_loop).
 * Thread safety: the loop's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_etcd_perform(wcache_etcd *src);

/*
 * @brief Stop the thread and wait for it: the open transfer is abandoned
 *        at once, what was applied stays.  A stopped source may be started
 *        again (it resumes from the cache's revision).  No-op when not
 *        running.  A loop-driven source stops at once (call it on the
 *        loop's thread); its sockets are then no longer to be polled.
 * @return WCACHE_OK, WCACHE_EINVAL.
 * Thread safety: one thread at a time per source, not from a cache
 * callback.  Since: 0.1
 */
WCACHE_API wcache_code wcache_etcd_stop(wcache_etcd *src);

/*
 * @brief Stop and free the source; accepts NULL.  The cache keeps pointing
 *        at it for consistent reads, so free it only when no
 *        wcache_view_begin_fresh() can run any more, then close the cache.
 * Thread safety: one thread, no other call on the source running.
 * Since: 0.1
 */
WCACHE_API void wcache_etcd_free(wcache_etcd *src);

/*
 * @brief Fill *st.  Counters are read without stopping the thread.
 * @return WCACHE_OK, WCACHE_EINVAL (NULL, or st->size too small).
 * Thread safety: any thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_etcd_stat(const wcache_etcd *src, wcache_etcd_stats *st);

/*
 * @brief Ask etcd for its current revision with a linearizable count-only
 *        range of one key, the first of the source's range (what consistent
 *        reads use), trying each endpoint once.  Concurrent calls share:
 *        a call takes the answer of the first range sent after it began
 *        (one in flight at a time), so its revision is at least etcd's
 *        when the call began.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ECURL, WCACHE_EHTTP,
 *         WCACHE_ECORRUPT (an answer that does not parse), WCACHE_ENOMEM.
 * Thread safety: any thread, concurrently with everything.  Since: 0.1
 */
WCACHE_API wcache_code wcache_etcd_current_revision(wcache_etcd *src, int64_t *rev);

/* What wcache_etcd_range() read.  size = sizeof(wcache_etcd_range_info),
 * set by the caller. */
typedef struct wcache_etcd_range_info {
    uint32_t size;
    int64_t revision;        /* the revision read: the one asked for, or
                                etcd's current one when 0 was asked */
    int64_t header_revision; /* etcd's current revision at the first page */
    uint64_t cluster_id;     /* the cluster's id from etcd's answer, 0: none */
    uint64_t count;          /* keys read (count only: keys in the range) */
} wcache_etcd_range_info;

/* One key of a range, borrowed for the call.  Return 0 to go on, anything
 * else to stop the range (it then returns WCACHE_ESTOPPED). */
typedef int (*wcache_etcd_kv_fn)(const wcache_kv *kv, void *userdata);

/*
 * @brief Read the source's key range once, at revision rev (0: etcd's
 *        current revision), page by page (page_limit keys a request), in
 *        byte-wise key order, calling fn for every key; fn NULL asks only
 *        for the count and the header (a count-only range).  Independent
 *        of the source's thread and of the cache: a check of a snapshot
 *        against etcd, or a list at an exact revision.  Another endpoint
 *        is tried only while no key was delivered.
 * @return WCACHE_OK (*info filled), WCACHE_EINVAL (NULL, rev < 0,
 *         info->size too small), WCACHE_ECOMPACTED (rev is compacted at
 *         etcd), WCACHE_EFUTURE (rev is above etcd's revision),
 *         WCACHE_ESTOPPED (fn stopped it), WCACHE_ECURL, WCACHE_EHTTP,
 *         WCACHE_ECORRUPT (an answer that does not parse), WCACHE_ETOOBIG
 *         (a page over max_message_bytes), WCACHE_ENOMEM.
 * Ownership: the kv passed to fn is borrowed for the call.
 * Thread safety: any thread, concurrently with the source's thread; fn
 * runs on the calling thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_etcd_range(wcache_etcd *src, int64_t rev, wcache_etcd_kv_fn fn,
                                         void *userdata, wcache_etcd_range_info *info);

/*
 * @brief The source identity a snapshot of this source carries
 *        (wcache_snapshot_write_opts.source_id, and what a restore
 *        expects): "etcd:" the cluster id in 16 hex digits, ":", the
 *        range's key and range_end as etcd's base64 joined by ":".  Asks
 *        etcd for its cluster id (a count-only range).
 * @param[out] buf  cap bytes; receives *len bytes, not NUL-terminated.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ETOOBIG (cap too small, or an
 *         identity over WCACHE_SNAP_MAX_SOURCE_ID), and the errors of
 *         wcache_etcd_range().
 * Thread safety: any thread, concurrently with the source's thread.
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_etcd_source_id(wcache_etcd *src, void *buf, size_t cap,
                                             size_t *len);

/* ------------------------------------------------------------------------ */
/* Kubernetes watch-stream source                                            */
/* ------------------------------------------------------------------------ */

/*
 * The Kubernetes source feeds a cache from a Kubernetes watch stream: one
 * JSON object per line, {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR",
 * "object":{...}}, on a thread of its own.  An object's
 * metadata.resourceVersion is the revision; its key is the configured
 * prefix + "namespace/name" (prefix + "name" for cluster-scoped objects);
 * its value is the object as compact JSON.  BOOKMARK advances the cache's
 * revision (wcache_ingest_progress).  An ERROR of code 410 (the watch start
 * is too old) re-lists through the list URL, reconciles (keys that vanished
 * become deletes) and resumes from the list's resourceVersion.  The stream
 * comes from a file descriptor, a file, an HTTP(S) URL (a proxy in front of
 * an API server; bearer token, TLS verified by default) or the built-in
 * synthetic stream of pods and configmaps (seeded, for demos and tests).
 * The full text is in wcache_k8s(3).
 *
 * Order of calls: wcache_cache_create, parameters, wcache_k8s_create,
 * wcache_cache_open, (optionally wcache_snapshot_restore: the source then
 * resumes from the snapshot's revision), wcache_k8s_start ...
 * wcache_k8s_stop, wcache_k8s_free, wcache_cache_close.
 */

typedef struct wcache_k8s wcache_k8s; /* one Kubernetes watch-stream source */

/* Where the watch stream comes from. */
typedef enum wcache_k8s_input {
    WCACHE_K8S_INPUT_FD = 1,       /* read fd (not closed) until end of file */
    WCACHE_K8S_INPUT_FILE = 2,     /* read the file at path, to its end */
    WCACHE_K8S_INPUT_URL = 3,      /* GET url, reconnect from the last revision */
    WCACHE_K8S_INPUT_SYNTHETIC = 4 /* the built-in seeded stream */
} wcache_k8s_input;

/* Resources of the synthetic stream (either or both). */
typedef enum wcache_k8s_resource {
    WCACHE_K8S_PODS = 1,
    WCACHE_K8S_CONFIGMAPS = 2
} wcache_k8s_resource;

/* Options of a Kubernetes source.  size = sizeof(wcache_k8s_opts); zero
 * means default for every other field. */
typedef struct wcache_k8s_opts {
    uint32_t size;
    /* The source's identity (required, 1 .. 1024 bytes): what snapshots of
     * the cache are tagged with (wcache_k8s_source_id()). */
    const char *name;
    int input;        /* a wcache_k8s_input (required) */
    int fd;           /* WCACHE_K8S_INPUT_FD: the descriptor */
    const char *path; /* WCACHE_K8S_INPUT_FILE: the file */
    /* WCACHE_K8S_INPUT_URL: the watch URL, http:// or https://
     * ("https://h:6443/api/v1/pods?watch=true"); the source appends
     * resourceVersion=R and allowWatchBookmarks=true. */
    const char *url;
    /* The LIST URL of the same resource ("https://h:6443/api/v1/pods"),
     * for the initial list of an empty cache (URL input), the re-list
     * after an ERROR 410 (any input) and the current revision of
     * consistent reads.  Required with WCACHE_K8S_INPUT_URL; otherwise
     * NULL: none (an ERROR 410 then ends the input). */
    const char *list_url;
    /* Prepended to "namespace/name" to make a key ("/registry/pods/").
     * Binary-safe; may be empty. */
    const void *prefix;
    size_t prefix_len;
    /* HTTP(S): "Authorization: Bearer <bearer_token>" on every request
     * (NULL: none); CA bundle (PEM; NULL: the system's).  insecure = 1
     * turns peer and host verification off (it is on by default). */
    const char *bearer_token;
    const char *ca_file;
    int insecure;
    int64_t connect_timeout_ms; /* per connection attempt; 0: 5000 */
    int64_t request_timeout_ms; /* per LIST page; 0: 60000 */
    int64_t backoff_min_ms;     /* first reconnect delay; 0: 100 */
    int64_t backoff_max_ms;     /* longest reconnect delay; 0: 5000 */
    uint32_t page_limit;        /* objects per LIST page (limit=); 0: 10000 */
    /* Longest line of the stream: a longer one is an error (see
     * wcache_k8s(3)).  0: 16 MiB. */
    uint64_t max_line_bytes;
    uint64_t max_list_bytes; /* longest LIST page; 0: 1 GiB */
    /* WCACHE_K8S_INPUT_SYNTHETIC: the seed (0 is a seed like any other)
     * and the resources (wcache_k8s_resource bits; 0: both). */
    uint64_t seed;
    int resources;
} wcache_k8s_opts;

/* Counters of a Kubernetes source; size = sizeof(wcache_k8s_stats). */
typedef struct wcache_k8s_stats {
    uint32_t size;
    int synced;              /* 1 once the stream (or a list) applied something */
    int running;             /* 1 between start and the thread's end */
    int ended;               /* 1: the input ended (end of file or of the
                                synthetic stream, or an error that a file
                                cannot recover from); see last_error */
    int last_error;          /* wcache_code of the latest failure, 0: none */
    int64_t revision;        /* the cache's revision */
    int64_t list_revision;   /* resourceVersion of the latest (re)list */
    uint64_t lists;          /* lists and re-lists completed */
    uint64_t relists;        /* re-lists after ERROR 410 or a diverged stream */
    uint64_t connects;       /* watch streams opened (URL input) */
    uint64_t reconnects;     /* watch streams that ended and were reopened */
    uint64_t errors;         /* failed requests, malformed or oversized lines */
    uint64_t lines;          /* lines parsed */
    uint64_t bytes;          /* bytes read: stream and lists */
    uint64_t events;         /* ADDED, MODIFIED and DELETED applied */
    uint64_t bookmarks;      /* BOOKMARKs that advanced the cache */
    uint64_t skipped;        /* events at or below the resume revision */
    uint64_t relist_changes; /* puts and deletes made by re-lists */
} wcache_k8s_stats;

/*
 * @brief Create a Kubernetes source for c and install it as c's source for
 *        consistent reads (wcache_cache_set_source()), so c must not be
 *        open yet.  Nothing is read before wcache_k8s_start().  Calls
 *        curl_global_init() (reference-counted by libcurl).
 * @return WCACHE_OK, WCACHE_EINVAL (NULL, opts->size too small, no name or
 *         input, a URL that is not http(s), an option out of range),
 *         WCACHE_ESTATE (c open), WCACHE_ECURL (libcurl failed to
 *         initialise), WCACHE_ENOMEM.
 * Ownership: new (*out), release with wcache_k8s_free(); copies every
 * option (the fd stays the caller's: it is not closed).  Thread safety:
 * one thread at a time, before wcache_cache_open.  Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_k8s_create(wcache_k8s **out, wcache_cache *c,
                                                          const wcache_k8s_opts *opts);

/*
 * @brief Start the source's thread: (URL input, empty cache, list URL set)
 *        list, then read the stream from the cache's revision, until the
 *        input ends or the source is stopped.  That thread is then the
 *        cache's writer.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESTATE (already running, or the
 *         cache is not open), WCACHE_ESYS (pthread_create).
 * Thread safety: one thread at a time per source.  Since: 0.1
 */
WCACHE_API wcache_code wcache_k8s_start(wcache_k8s *src);

/*
 * @brief Stop the thread and wait for it: a read or transfer in progress
 *        is abandoned at once; what was applied stays.  A stopped source
 *        may be started again (a file is then read again from its start,
 *        skipping what the cache has).  No-op when not running.
 * @return WCACHE_OK, WCACHE_EINVAL.
 * Thread safety: one thread at a time per source, not from a cache
 * callback.  Since: 0.1
 */
WCACHE_API wcache_code wcache_k8s_stop(wcache_k8s *src);

/*
 * @brief Stop and free the source; accepts NULL.  The cache keeps pointing
 *        at it for consistent reads, so free it only when no
 *        wcache_view_begin_fresh() can run any more, then close the cache.
 * Thread safety: one thread, no other call on the source running.
 * Since: 0.1
 */
WCACHE_API void wcache_k8s_free(wcache_k8s *src);

/*
 * @brief Fill *st.  Counters are read without stopping the thread.
 * @return WCACHE_OK, WCACHE_EINVAL (NULL, or st->size too small).
 * Thread safety: any thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_k8s_stat(const wcache_k8s *src, wcache_k8s_stats *st);

/*
 * @brief The source's current revision, for consistent reads: with a list
 *        URL the resourceVersion of a LIST with limit=1 (a quorum read of
 *        the API server); otherwise, once a file, descriptor or the
 *        synthetic stream has ended, the last revision it held.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ENOTREADY (no list URL and the
 *         input has not ended), WCACHE_ECURL, WCACHE_EHTTP, WCACHE_ECORRUPT
 *         (an answer that does not parse), WCACHE_ENOMEM.
 * Thread safety: any thread, concurrently with everything.  Since: 0.1
 */
WCACHE_API wcache_code wcache_k8s_current_revision(wcache_k8s *src, int64_t *rev);

/*
 * @brief The source's identity (its configured name), what snapshots of
 *        the cache are written with and checked against on restore.
 * @return the name, NUL-terminated; *len (when not NULL) its length.
 *         NULL for an invalid handle.
 * Ownership: borrowed until wcache_k8s_free().  Thread safety: any thread.
 * Since: 0.1
 */
WCACHE_API const char *wcache_k8s_source_id(const wcache_k8s *src, size_t *len);

/*
 * @brief Write the built-in synthetic watch stream to fd: the lines a
 *        watch from resourceVersion after_rev would get (after_rev 0: all),
 *        the same bytes for the same seed and resources on every platform.
 * @param[out] last_rev  NULL, or the stream's last resourceVersion.
 * @return WCACHE_OK, WCACHE_EINVAL (after_rev < 0, bad resources),
 *         WCACHE_ESYS (write failed; see errno), WCACHE_ENOMEM.
 * Thread safety: any thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_k8s_synthetic_write(int fd, uint64_t seed, int resources,
                                                  int64_t after_rev, int64_t *last_rev);

/* ------------------------------------------------------------------------ */
/* Snapshots                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * A snapshot is the state of a cache at one revision S, in a file of the
 * wcsnap(5) format: a header, blocks of key-ordered records each compressed
 * with zstd and checksummed on its own, and a trailer with counts and a
 * checksum of the whole file.  Writing reads through a view pinned at S, so
 * ingest and reads go on meanwhile; restoring verifies the whole file before
 * it changes the cache.  The full text is in wcache_snapshot(3).
 */

typedef struct wcache_snapshot wcache_snapshot; /* a snapshot open for reading */

/* The format version this library writes; it reads every 1.x file. */
#define WCACHE_SNAP_FORMAT_MAJOR 1
#define WCACHE_SNAP_FORMAT_MINOR 1
/* Header flag of an incremental snapshot (a delta, format 1.1): it holds
 * the changes since a base snapshot, puts and tombstones. */
#define WCACHE_SNAP_FLAG_DELTA 0x1u
/* Longest source identity, in bytes. */
#define WCACHE_SNAP_MAX_SOURCE_ID 4096

/* Points of a write reported to the progress callback, in this order. */
typedef enum wcache_snap_step {
    WCACHE_SNAP_STEP_BEGIN = 1,    /* view pinned; temporary file created */
    WCACHE_SNAP_STEP_WRITE = 2,    /* before each write of output bytes */
    WCACHE_SNAP_STEP_SYNC = 3,     /* before the file's fsync */
    WCACHE_SNAP_STEP_RENAME = 4,   /* before the rename to the final name */
    WCACHE_SNAP_STEP_SYNC_DIR = 5, /* before the directory's fsync */
    WCACHE_SNAP_STEP_DONE = 6      /* written; the return value is ignored */
} wcache_snap_step;

/*
 * Progress callback of a write.  bytes: output bytes written so far;
 * objects / objects_total: records encoded so far / in the snapshot.
 * Return 0 to go on; anything else stops the write at that point as a crash
 * would (the temporary file is removed; a stop at SYNC_DIR leaves the new,
 * complete snapshot in place) and the write returns WCACHE_ESTOPPED.
 * Runs on the thread that called the write; must not use the snapshot
 * functions on the same cache.
 */
typedef int (*wcache_snap_progress_fn)(int step, uint64_t bytes, uint64_t objects,
                                       uint64_t objects_total, void *userdata);

/*
 * Output callback of wcache_snapshot_write_to(): take len bytes (the file,
 * in order).  Return WCACHE_OK, or the code the write then fails with.
 */
typedef int (*wcache_snap_sink_fn)(const void *buf, size_t len, void *userdata);

/* Options of a write.  size = sizeof(wcache_snapshot_write_opts); zero
 * means default for every other field. */
typedef struct wcache_snapshot_write_opts {
    uint32_t size;
    int64_t revision;                 /* revision S to write; WCACHE_REV_LATEST: latest */
    int level;                        /* zstd level, 1 .. 19; 0: 1 */
    int workers;                      /* compression threads beside the caller, 0 .. 64;
                                         0: compress on the calling thread */
    uint32_t block_bytes;             /* target uncompressed bytes of a block,
                                         4 KiB .. 64 MiB; 0: 1 MiB */
    const void *source_id;            /* identity of the source (etcd cluster id and key
                                         range, or a stream's name); binary-safe */
    size_t source_id_len;             /* 0 .. WCACHE_SNAP_MAX_SOURCE_ID */
    int64_t compacted_revision;       /* the source's compaction revision when known,
                                         0 .. S; 0: unknown */
    int64_t created_unix_ns;          /* creation time; 0: now (set it for
                                         reproducible files) */
    wcache_snap_progress_fn progress; /* NULL: none */
    void *userdata;                   /* passed to progress */
    char *errbuf;                     /* NULL, or errbuf_len bytes for the detail text of */
    size_t errbuf_len;                /* an error, always NUL-terminated */
    /* NULL: a full snapshot.  Else write a delta (WCACHE_SNAP_FLAG_DELTA)
     * holding the changes from base's revision B to S, which names base by
     * B and its whole-file checksum: the cache must still hold revision B
     * (else WCACHE_ECOMPACTED), B <= S, and the source identity is base's
     * (source_id, when set, must equal it).  base is only read (its header
     * and trailer) and may be closed after the call.  Since 0.1, format
     * 1.1; a caller whose size ends before this field writes full ones. */
    const wcache_snapshot *base;
} wcache_snapshot_write_opts;

/* Options of a read or restore.  size = sizeof(wcache_snapshot_read_opts);
 * zero means default. */
typedef struct wcache_snapshot_read_opts {
    uint32_t size;
    /* Refuse a block that decompresses to more bytes (WCACHE_ETOOBIG), the
     * guard against decompression bombs.  0: 64 MiB; at most 2 GiB - 1. */
    uint32_t max_block_bytes;
    /* Restore only: refuse a snapshot of another source (WCACHE_EINVAL).
     * NULL: any source. */
    const void *expect_source_id;
    size_t expect_source_id_len;
    const wcache_allocator *alloc; /* NULL: malloc/free */
    char *errbuf;                  /* as in wcache_snapshot_write_opts */
    size_t errbuf_len;
} wcache_snapshot_read_opts;

/* What a snapshot holds.  size = sizeof(wcache_snapshot_info), set by the
 * caller.  Counts from the trailer are 0 until they are known. */
typedef struct wcache_snapshot_info {
    uint32_t size;
    uint32_t format_major; /* format version of the file */
    uint32_t format_minor;
    uint32_t flags;             /* header flags: WCACHE_SNAP_FLAG_DELTA */
    int64_t revision;           /* S: the revision of the state held */
    int64_t compacted_revision; /* the source's compaction revision, 0: unknown */
    uint64_t objects;           /* records */
    int64_t created_unix_ns;    /* when it was written */
    const void *source_id;      /* borrowed: valid while the snapshot is open
                                   (a write: the opts' pointer; a restore:
                                   NULL) */
    size_t source_id_len;
    uint64_t blocks;     /* compressed blocks */
    uint64_t kv_bytes;   /* bytes of keys and values */
    uint64_t raw_bytes;  /* uncompressed bytes of all blocks */
    uint64_t file_bytes; /* size of the file */
    /* Format 1.1 (a caller whose size ends before them gets the fields
     * above only): */
    int64_t base_revision;   /* a delta's base revision B, else 0 */
    uint64_t base_file_hash; /* a delta's base's whole-file checksum */
    uint64_t tombstones;     /* a delta's records that delete a key */
    uint64_t file_hash;      /* this file's whole-file checksum (the
                                trailer's), what a delta on it names */
} wcache_snapshot_info;

/*
 * @brief Write the state of c at one revision to path, atomically: a
 *        temporary file in the same directory, fsync, rename over path,
 *        fsync of the directory.  A failure or crash at any point leaves a
 *        previous file at path intact; a leftover temporary file is named
 *        ".NAME.tmp.XXXXXX" and never taken for a snapshot.  Memory stays
 *        bounded by (workers + 2) blocks whatever the cache size.
 * @param[out] info  NULL, or filled with what was written.
 * @return WCACHE_OK, WCACHE_EINVAL (bad option), WCACHE_ECOMPACTED,
 *         WCACHE_EFUTURE, WCACHE_EBUSY (no reader slot), WCACHE_ESTATE
 *         (cache not open), WCACHE_ESYS (the errbuf names the call and the
 *         errno), WCACHE_EZSTD, WCACHE_ESTOPPED (the progress callback
 *         stopped it), WCACHE_ENOMEM.
 * Ownership: copies nothing it keeps.  Thread safety: any thread (a reader
 * of c; ingest goes on).  Since: 0.1
 */
WCACHE_API wcache_code wcache_snapshot_write(wcache_cache *c, const char *path,
                                             const wcache_snapshot_write_opts *opts,
                                             wcache_snapshot_info *info);

/*
 * @brief Write the snapshot as a stream of bytes to sink (an upload, a
 *        pipe), with the same options and bounded memory.  The
 *        progress steps are BEGIN, WRITE and DONE.
 * @return as wcache_snapshot_write(), or the code sink returned.
 * Thread safety: any thread; sink runs on the calling thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_snapshot_write_to(wcache_cache *c, wcache_snap_sink_fn sink,
                                                void *sink_userdata,
                                                const wcache_snapshot_write_opts *opts,
                                                wcache_snapshot_info *info);

/*
 * @brief Keep the newest keep snapshots in dir whose names begin with
 *        name_prefix (NULL: any) and end in ".wcsnap", and remove the older
 *        ones (newest: highest revision, then latest creation time).  Files
 *        whose header does not read are left alone, as are temporary files.
 *        A snapshot that a kept delta is based on (by revision and
 *        checksum), directly or through other deltas, is kept too.
 * @param[out] removed  NULL, or the number of files removed.
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESYS, WCACHE_ENOMEM.
 * Thread safety: any thread; not concurrently with itself on the same dir.
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_snapshot_prune(const char *dir, const char *name_prefix,
                                             size_t keep, size_t *removed);

/*
 * @brief Open a snapshot file for reading; reads and checks its header and
 *        trailer (magic, version, checksums of both, sizes).
 * @return WCACHE_OK, WCACHE_EINVAL, WCACHE_ESYS, WCACHE_ECORRUPT (damaged,
 *         truncated, not a snapshot), WCACHE_EVERSION (a format this
 *         library cannot read), WCACHE_ENOMEM.  The errbuf says why.
 * Ownership: new (*out); release with wcache_snapshot_close().
 * Thread safety: any thread; the handle one thread at a time.  Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_snapshot_open(
    wcache_snapshot **out, const char *path, const wcache_snapshot_read_opts *opts);

/*
 * @brief Open a snapshot held in memory (buf must outlive the handle).
 * @return as wcache_snapshot_open(), without WCACHE_ESYS.
 * Ownership: new (*out); borrows buf.  Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_snapshot_open_mem(
    wcache_snapshot **out, const void *buf, size_t len, const wcache_snapshot_read_opts *opts);

/*
 * @brief Fill *info from the header and trailer.
 * @return WCACHE_OK, WCACHE_EINVAL (NULL, or info->size too small).
 * Ownership: info->source_id is borrowed until wcache_snapshot_close().
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_snapshot_get_info(const wcache_snapshot *s,
                                                wcache_snapshot_info *info);

/*
 * @brief Read the next record, in byte-wise key order.  In a delta a
 *        record with version 0 is a tombstone: the key was deleted at
 *        mod_revision (value empty, create_revision 0).  Each block's
 *        checksum, size bound and records are checked before the first of
 *        its records is returned; the file checksum and the trailer's
 *        counts are checked before the end is reported.
 * @return WCACHE_OK (*out filled), WCACHE_ENOTFOUND (the end: every record
 *         was read and the whole file is sound), WCACHE_ECORRUPT,
 *         WCACHE_ETOOBIG (a block over max_block_bytes), WCACHE_EZSTD,
 *         WCACHE_ESYS, WCACHE_ENOMEM.  After an error every later call
 *         returns the same code.
 * Ownership: out's pointers are borrowed until the next call or close.
 * Thread safety: the handle's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_snapshot_next(wcache_snapshot *s, wcache_kv *out);

/*
 * @brief Read the rest of the snapshot and check every checksum and
 *        invariant (keys strictly ascending, 1 <= create_revision <=
 *        mod_revision <= S, version >= 1, counts).
 * @return WCACHE_OK (sound), or an error of wcache_snapshot_next().
 * Thread safety: the handle's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_snapshot_verify(wcache_snapshot *s);

/* Close a snapshot handle; accepts NULL.  Since: 0.1 */
WCACHE_API void wcache_snapshot_close(wcache_snapshot *s);

/*
 * @brief Restore the snapshot at path into c, which must be open and empty
 *        (revision 0): verify all of it, then load it in bulk.  Afterwards
 *        c's current and compacted revision are S and the source resumes
 *        from S + 1.  On any error c is unchanged.
 * @param[out] info  NULL, or what the snapshot held.
 * @return WCACHE_OK, the errors of wcache_snapshot_open() and
 *         wcache_snapshot_next(), WCACHE_EINVAL (a source identity other
 *         than opts->expect_source_id, or a delta: restore it with its
 *         base through wcache_snapshot_restore_chain()), WCACHE_ESTATE (c
 *         not open or not empty).
 * Thread safety: writer.  Since: 0.1
 */
WCACHE_API wcache_code wcache_snapshot_restore(wcache_cache *c, const char *path,
                                               const wcache_snapshot_read_opts *opts,
                                               wcache_snapshot_info *info);

/*
 * @brief Restore a chain: paths[0] a full snapshot, each later one a delta
 *        whose base is the file before it (its base revision and
 *        whole-file checksum match that file's).  Every link and every
 *        file is verified before c changes; then the full snapshot is
 *        loaded with the deltas' puts and tombstones applied, at the last
 *        file's revision S.  Each delta's records are held in memory
 *        during the restore.  n == 1 is wcache_snapshot_restore().
 * @param[out] info  NULL, or what the last file held.
 * @return as wcache_snapshot_restore(); WCACHE_EINVAL also for a broken
 *         chain (a first file that is a delta, a later one that is not, a
 *         base revision or checksum that is not the previous file's, or
 *         another source identity), with the errbuf naming the file.
 * Thread safety: writer.  Since: 0.1
 */
WCACHE_API wcache_code wcache_snapshot_restore_chain(wcache_cache *c, const char *const *paths,
                                                     size_t n,
                                                     const wcache_snapshot_read_opts *opts,
                                                     wcache_snapshot_info *info);

/*
 * Input callback of wcache_snapshot_restore_from(): copy up to cap bytes
 * of the snapshot (the next ones, in order) to buf and set *got to how
 * many (1 .. cap), blocking until some are there; *got = 0 means the end
 * of the stream.  Return WCACHE_OK, or the code the restore then fails
 * with (a download that broke for good, say).
 */
typedef int (*wcache_snap_source_fn)(void *buf, size_t cap, size_t *got, void *userdata);

/*
 * @brief Restore a full snapshot read as a stream of bytes from read (a
 *        download, a pipe, a socket) into c, open and empty, with every
 *        guarantee of wcache_snapshot_restore(): each block is checked
 *        (checksum, size bound, records) as it arrives, and c changes only
 *        after the trailer, the whole-file checksum and the end of the
 *        stream (read gave *got = 0: no stray bytes) have been verified.
 *        A source identity other than opts->expect_source_id is refused
 *        as soon as the header is read.  Memory: a few blocks in flight
 *        beside the cache being built, never the whole stream.
 * @param[out] info  NULL, or what the snapshot held (file_bytes: the
 *        stream's length).
 * @return as wcache_snapshot_restore() (WCACHE_ECORRUPT for a stream that
 *         ends early), the code read returned, WCACHE_EINVAL (read set
 *         *got above cap).  On any error c is unchanged.
 * Ownership: borrows read and userdata for the call only; read is never
 *        called after the function returns.
 * Thread safety: writer of c.  read is called first on the calling
 *        thread, then on a reader thread of the restore's own, one call at
 *        a time, never two at once; it must not use c.  Since: 0.1
 */
WCACHE_API wcache_code wcache_snapshot_restore_from(wcache_cache *c, wcache_snap_source_fn read,
                                                    void *userdata,
                                                    const wcache_snapshot_read_opts *opts,
                                                    wcache_snapshot_info *info);

/* When wcache_snapshot_tick() writes.  size = sizeof(wcache_snapshot_policy);
 * zero means default. */
typedef struct wcache_snapshot_policy {
    uint32_t size;
    const char *dir;                         /* directory of the snapshots (required) */
    const char *name_prefix;                 /* files are PREFIX<S>.wcsnap, S in 20 digits;
                                                NULL: "snap-" */
    size_t keep;                             /* snapshots kept by prefix; 0: 3 */
    int64_t interval_ms;                     /* write when this long has passed since the
                                                last write; 0: no time trigger */
    int64_t every_revisions;                 /* write when the revision has moved this far
                                                since the last write; 0: no such trigger */
    const wcache_snapshot_write_opts *write; /* NULL: defaults; its revision
                                                is ignored (latest) */
} wcache_snapshot_policy;

/* What the caller keeps between ticks; start with zeros (and size). */
typedef struct wcache_snapshot_state {
    uint32_t size;
    int64_t last_revision; /* S of the last snapshot written, 0: none */
    int64_t last_ms;       /* now_ms of that write */
} wcache_snapshot_state;

/*
 * @brief Write a snapshot of c when the policy says it is due, then keep
 *        only the newest policy->keep.  Due: the revision has moved since
 *        the last write, and interval_ms has passed or every_revisions
 *        have been applied since it.  Call it from the embedder's own
 *        timer or feed loop; it never waits.
 * @param[in] now_ms   the caller's clock, in milliseconds (monotonic).
 * @param[out] written NULL, or 1 when a snapshot was written, else 0.
 * @return WCACHE_OK (written or not due), the errors of
 *         wcache_snapshot_write() and wcache_snapshot_prune(), WCACHE_EINVAL.
 *         On error *st is unchanged, so the next tick tries again.
 * Thread safety: any thread; one thread at a time per state.  Since: 0.1
 */
WCACHE_API wcache_code wcache_snapshot_tick(wcache_cache *c,
                                            const wcache_snapshot_policy *policy,
                                            wcache_snapshot_state *st, int64_t now_ms,
                                            int *written);

/* ------------------------------------------------------------------------ */
/* Snapshot stores: a local directory, S3, GCS                               */
/* ------------------------------------------------------------------------ */

/*
 * A store holds snapshots as named objects: a local directory (file://),
 * an S3-compatible bucket (s3://) or a Google Cloud Storage bucket (gs://).
 * A store is opened from a URL whose path is the store's base: every key
 * given to the functions below is relative to it ("" names the base itself,
 * as `wcache push SNAP s3://b/one.wcsnap` does).  Snapshots of a source are
 * laid out as BASE/<source identity>/<revision, 20 digits>.wcsnap so that
 * the newest sorts last; wcache_store_snapshot_key() builds such a key.
 * Uploads stream from the snapshot writer (a bounded buffer of parts, never
 * the whole file); downloads stream with ranged GETs that resume after a
 * broken transfer; transient failures (5xx, 429, timeouts, resets) are
 * retried with exponential backoff and jitter; 4xx answers are not, and
 * come back as WCACHE_EHTTP with the bucket, key and status in the errbuf.
 * Credentials never appear in a log message or an errbuf.  The full text is
 * in wcache_store(3).
 */

typedef struct wcache_store wcache_store;               /* an open store */
typedef struct wcache_store_upload wcache_store_upload; /* an upload in progress */

/* Addressing of S3 requests. */
typedef enum wcache_store_style {
    WCACHE_STORE_STYLE_AUTO = 0,   /* path style when an endpoint is set,
                                      virtual-hosted on AWS */
    WCACHE_STORE_STYLE_PATH = 1,   /* https://ENDPOINT/BUCKET/KEY */
    WCACHE_STORE_STYLE_VIRTUAL = 2 /* https://BUCKET.ENDPOINT/KEY */
} wcache_store_style;

/*
 * Progress of a transfer: done bytes of total (0: not known yet).  Runs on
 * the thread that called the store function (wcache_store_restore(): its
 * download thread); return 0 to go on, anything else stops the transfer
 * (WCACHE_ESTOPPED; an upload is aborted).
 */
typedef int (*wcache_store_progress_fn)(uint64_t done, uint64_t total, void *userdata);

/* Options of a store.  size = sizeof(wcache_store_opts); zero or NULL
 * means the default for every other field.  Strings are copied at open. */
typedef struct wcache_store_opts {
    uint32_t size;
    /* S3 (and GCS's XML API): endpoint URL such as http://127.0.0.1:9000;
     * NULL: $AWS_ENDPOINT_URL, else AWS's regional endpoint (GCS:
     * https://storage.googleapis.com or $STORAGE_EMULATOR_HOST). */
    const char *endpoint;
    const char *region; /* NULL: $AWS_REGION, $AWS_DEFAULT_REGION,
                           the profile's region, "us-east-1" */
    wcache_store_style style;
    /* Credentials; NULL: $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY /
     * $AWS_SESSION_TOKEN, else the shared credentials file. */
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token;
    const char *credentials_file; /* NULL: $AWS_SHARED_CREDENTIALS_FILE,
                                     else ~/.aws/credentials */
    const char *profile;          /* NULL: $AWS_PROFILE, else "default" */
    /* GCS: a file holding an OAuth2 bearer token (JSON API); NULL:
     * $GOOGLE_OAUTH_ACCESS_TOKEN.  Or HMAC keys for the XML API. */
    const char *gcs_token_file;
    const char *gcs_hmac_access_id;
    const char *gcs_hmac_secret;
    /* TLS: verification is always on unless tls_insecure is 1. */
    const char *ca_file; /* NULL: the system's CA bundle */
    const char *ca_path;
    int tls_insecure;
    /* Retries of one request: max_retries (0: 5; -1: none), the first
     * backoff (0: 100 ms) doubling up to backoff_max_ms (0: 10 s), each
     * with full jitter.  timeout_ms: a transfer with no progress for this
     * long fails and is retried (0: 30 s); connect_timeout_ms (0: 10 s). */
    int max_retries;
    int64_t backoff_ms;
    int64_t backoff_max_ms;
    int64_t timeout_ms;
    int64_t connect_timeout_ms;
    /* Uploads: objects larger than part_bytes go up in parts of part_bytes
     * (0: 8 MiB; at least 5 MiB unless allow_small_parts, for test
     * servers that permit it), up to parallel_parts at once (0: 4, at most
     * 64).  The part size grows as needed to stay within 10,000 parts. */
    uint64_t part_bytes;
    int parallel_parts;
    int allow_small_parts;
    /* Unused: wcache_store_restore() streams instead of writing a
     * temporary file here.  Kept for source and ABI compatibility. */
    const char *tmp_dir;
    wcache_store_progress_fn progress; /* NULL: none */
    void *progress_userdata;
    wcache_log_fn log; /* NULL: no logging; may run on a part's
                          transfer thread (serialised) */
    void *log_userdata;
    const wcache_allocator *alloc; /* NULL: malloc/free */
    char *errbuf;                  /* NULL, or errbuf_len bytes for the detail text of */
    size_t errbuf_len;             /* an error, always NUL-terminated */
} wcache_store_opts;

/* One object of a listing.  Borrowed: valid during the callback only. */
typedef struct wcache_store_object {
    uint32_t size;   /* sizeof(wcache_store_object) */
    const char *key; /* relative to the store's base, NUL-terminated */
    size_t key_len;
    uint64_t bytes;        /* object size */
    int64_t mtime_unix_ns; /* last modified; 0: unknown */
    const char *etag;      /* "" when unknown */
    int64_t revision;      /* a snapshot key's revision, else 0 */
} wcache_store_object;

/* Listing callback: return 0 to go on, anything else stops the listing
 * (which then returns WCACHE_ESTOPPED). */
typedef int (*wcache_store_list_fn)(const wcache_store_object *obj, void *userdata);

/*
 * @brief Open a store from url: "file:///dir", "s3://bucket/prefix",
 *        "gs://bucket/prefix".  No request is made yet.
 * @return WCACHE_OK, WCACHE_EINVAL (malformed URL or option; the errbuf
 *         says which), WCACHE_ENOTSUP (a scheme this build cannot serve),
 *         WCACHE_ESYS (a credentials or token file that cannot be read),
 *         WCACHE_ENOMEM.
 * Ownership: new (*out), release with wcache_store_close(); copies url and
 * the option strings.  Thread safety: any thread; the handle one thread at
 * a time (transfers use threads of their own inside a call).  Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_store_open(wcache_store **out, const char *url,
                                                          const wcache_store_opts *opts);

/* Close a store; accepts NULL.  No upload of it may be in progress. 0.1 */
WCACHE_API void wcache_store_close(wcache_store *st);

/*
 * @brief Begin an upload of the object key (relative to the base).  Bytes
 *        written are buffered up to parallel_parts parts and sent while the
 *        writer goes on; nothing is visible under key before
 *        wcache_store_upload_commit() succeeds.
 * @return WCACHE_OK, WCACHE_EINVAL (bad key), WCACHE_ESYS (file store: the
 *         temporary file), WCACHE_ENOMEM.  Several uploads of one store may
 *         be open at once (used from the store's one thread).
 * Ownership: new (*out): commit or abort it, either releases it.
 * Thread safety: the store's thread.  Since: 0.1
 */
WCACHE_API WCACHE_NODISCARD wcache_code wcache_store_upload_begin(wcache_store *st,
                                                                  const char *key,
                                                                  wcache_store_upload **out);

/*
 * @brief Append len bytes to an upload.  Its signature is a
 *        wcache_snap_sink_fn, so wcache_snapshot_write_to(c,
 *        wcache_store_upload_sink, up, ...) streams a snapshot into a store.
 * @return a wcache_code (as int, the sink type): WCACHE_OK, or the error
 *         of a part that failed after its retries
 *         (every later call returns it too).
 * Thread safety: the upload's thread.  Since: 0.1
 */
WCACHE_API int wcache_store_upload_sink(const void *buf, size_t len, void *upload);

/*
 * @brief Finish an upload: send the last part, complete it, then check
 *        the stored object's size and checksum against what was sent.  On
 *        any failure the upload is aborted (no parts remain) and no object
 *        is left under key by it.
 * @param[out] obj  NULL, or the object written (bytes, etag; its strings
 *        stay valid until the next call on the store).
 * @return WCACHE_OK, WCACHE_EHTTP, WCACHE_ECURL, WCACHE_ECORRUPT (the
 *         stored size or checksum differs), WCACHE_ESTOPPED, WCACHE_ESYS,
 *         WCACHE_ENOMEM.
 * Ownership: releases up in every case.  Since: 0.1
 */
WCACHE_API wcache_code wcache_store_upload_commit(wcache_store_upload *up,
                                                  wcache_store_object *obj);

/* Abort an upload (its parts are deleted); releases up; accepts NULL. 0.1 */
WCACHE_API void wcache_store_upload_abort(wcache_store_upload *up);

/*
 * @brief Upload the local file path as key (streamed, in parts).
 * @return as wcache_store_upload_commit(), WCACHE_ESYS (path unreadable).
 * Thread safety: the store's thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_store_put_file(wcache_store *st, const char *key,
                                             const char *path, wcache_store_object *obj);

/*
 * @brief Write a snapshot of c straight into the store (no local file):
 *        the revision is wopts->revision or, when that is
 *        WCACHE_REV_LATEST, c's current revision; key NULL means the
 *        layout key of wopts->source_id at that revision (see
 *        wcache_store_snapshot_key()).  Then, when keep > 0, only the newest
 *        keep snapshots of that source are kept (wcache_store_retain()).
 * @param[out] info  NULL, or what was written.
 * @return the errors of wcache_snapshot_write_to() and
 *         wcache_store_upload_commit().
 * Thread safety: the store's thread; c as a reader (ingest goes on).
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_store_put_snapshot(wcache_store *st, const char *key,
                                                 wcache_cache *c,
                                                 const wcache_snapshot_write_opts *wopts,
                                                 size_t keep, wcache_snapshot_info *info);

/*
 * @brief Download key, streamed to sink in order (ranged GETs; a broken
 *        transfer resumes where it stopped, from the same object version).
 *        The byte count is checked against the object's size, and its MD5
 *        against a single-part ETag.
 * @param[out] obj  NULL, or the object read.
 * @return WCACHE_OK, WCACHE_ENOTFOUND (no such object), WCACHE_EHTTP,
 *         WCACHE_ECURL, WCACHE_ECORRUPT (size or checksum mismatch: the
 *         sink has seen bytes that must not be trusted), the code sink
 *         returned, WCACHE_ENOMEM.
 * Thread safety: the store's thread; sink runs on it.  Since: 0.1
 */
WCACHE_API wcache_code wcache_store_get(wcache_store *st, const char *key,
                                        wcache_snap_sink_fn sink, void *sink_userdata,
                                        wcache_store_object *obj);

/*
 * @brief Download key to the local file path, atomically (temporary file,
 *        fsync, rename); the file is verified as a snapshot
 *        (wcache_snapshot_verify()) before it replaces path, unless
 *        verify_snapshot is 0.
 * @return as wcache_store_get(), the errors of wcache_snapshot_open() and
 *         wcache_snapshot_verify(), WCACHE_ESYS.  path is untouched on error.
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_store_get_file(wcache_store *st, const char *key,
                                             const char *path, int verify_snapshot,
                                             wcache_store_object *obj);

/*
 * @brief Restore c from the snapshot key (NULL: the newest snapshot of
 *        ropts->expect_source_id, which is then required) as it downloads:
 *        a thread of the store runs the download (ranged GETs, resumed
 *        after a broken transfer and pinned to one object version) into a
 *        bounded pipe that the calling thread restores from with
 *        wcache_snapshot_restore_from(): no temporary file, no whole-object
 *        buffer.  c changes only after the download passed its size and
 *        checksum checks and the snapshot its trailer and whole-file
 *        checksum; on any error c is unchanged, and the detail is in both
 *        ropts->errbuf and the store's errbuf.
 * @return the errors of wcache_store_get(), wcache_store_newest() and
 *         wcache_snapshot_restore_from() (WCACHE_ECORRUPT also for an
 *         object replaced during the download).
 * Thread safety: the store's thread; writer of c.  The progress callback
 *        runs on the download thread.  Since: 0.1
 */
WCACHE_API wcache_code wcache_store_restore(wcache_store *st, const char *key, wcache_cache *c,
                                            const wcache_snapshot_read_opts *ropts,
                                            wcache_snapshot_info *info);

/*
 * @brief List the objects whose keys begin with prefix (relative to the
 *        base; NULL or "": all), in byte-wise key order, page by page.
 * @return WCACHE_OK, WCACHE_ESTOPPED (fn stopped it), WCACHE_EHTTP,
 *         WCACHE_ECURL, WCACHE_ECORRUPT (a reply that does not parse),
 *         WCACHE_ESYS, WCACHE_ENOMEM.
 * Thread safety: the store's thread; fn runs on it.  Since: 0.1
 */
WCACHE_API wcache_code wcache_store_list(wcache_store *st, const char *prefix,
                                         wcache_store_list_fn fn, void *userdata);

/*
 * @brief Delete key.  Deleting a missing object is not an error.
 * @return WCACHE_OK, WCACHE_EHTTP, WCACHE_ECURL, WCACHE_ESYS, WCACHE_ENOMEM.
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_store_delete(wcache_store *st, const char *key);

/*
 * @brief Build the layout key of a snapshot: "<id>/<revision, 20
 *        digits>.wcsnap", where <id> is source_id with every byte outside
 *        [A-Za-z0-9._-] written as ~XX (two upper-case hex digits), so any
 *        binary identity gives a safe, readable name.
 * @param[out] out  out_len bytes; the key, NUL-terminated.
 * @return WCACHE_OK, WCACHE_EINVAL (empty or too long source_id, revision
 *         < 1), WCACHE_ETOOBIG (out_len too small; 3 * source_id_len + 29
 *         always suffices).
 * Thread safety: any thread (no handle).  Since: 0.1
 */
WCACHE_API wcache_code wcache_store_snapshot_key(const void *source_id, size_t source_id_len,
                                                 int64_t revision, char *out, size_t out_len);

/*
 * @brief Find the newest snapshot of a source: the highest revision under
 *        its layout directory.
 * @param[out] key  key_len bytes for its key (relative to the base).
 * @param[out] revision  NULL, or its revision.
 * @return WCACHE_OK, WCACHE_ENOTFOUND (none), WCACHE_ETOOBIG (key_len too
 *         small), the errors of wcache_store_list().
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_store_newest(wcache_store *st, const void *source_id,
                                           size_t source_id_len, char *key, size_t key_len,
                                           int64_t *revision);

/*
 * @brief Keep the newest keep snapshots of a source (keep >= 1) and delete
 *        the older ones.  Objects under the source's directory whose names
 *        are not layout names are left alone.
 * @param[out] removed  NULL, or how many were deleted.
 * @return WCACHE_OK, WCACHE_EINVAL, the errors of wcache_store_list() and
 *         wcache_store_delete().
 * Since: 0.1
 */
WCACHE_API wcache_code wcache_store_retain(wcache_store *st, const void *source_id,
                                           size_t source_id_len, size_t keep, size_t *removed);

#ifdef __cplusplus
}
#endif

#endif /* WATCHCACHE_H */
