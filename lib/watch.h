/*
 * watch.h - structures private to watch.c (and its white-box tests).
 */
#ifndef WCI_WATCH_H
#define WCI_WATCH_H

#include "wcache_int.h"

struct wci_selector;

/* A queue slot: the event's address with the type this watcher sees in
 * the low 3 bits (events are allocated aligned for any type).  8 bytes,
 * not 16: a cache line carries 8 deliveries from the writer's core to a
 * consumer's. */
typedef uintptr_t wci_qslot;
#define WCI_QSLOT_TYPE 7u

typedef struct wci_cand {
    wcache_watch *w;
    uint32_t type;
} wci_cand;

/* Watchers sharing one key prefix. */
typedef struct wci_bucket {
    struct wci_bucket *next;
    uint64_t hash;
    wcache_watch **w;
    size_t n, cap;
    size_t plen;
    char prefix[];
} wci_bucket;

typedef struct wci_len {
    size_t len;
    size_t users; /* buckets of this length */
} wci_len;

typedef struct wci_wreg {
    wci_bucket **tab; /* chained hash of prefixes */
    size_t mask;
    /* Counting filter over the prefix hashes (bits 32..): dispatch probes
     * every registered prefix length of a key, and most lengths have no
     * bucket for it; one bit of a small array says so without walking a
     * chain to a bucket that is a cache miss.  Counters stuck at 255 are
     * never decremented (a false "maybe", not a lost watcher). */
    uint8_t *pfilt;
    uint64_t *pfbits; /* pfilt[i] != 0 */
    size_t pfmask;
    size_t nbuckets;
    wci_len *lens;    /* distinct prefix lengths, ascending */
    size_t nlens, caplens;
    /* watchers by index value (index.c): chained like tab, keyed by the
     * value with the index id mixed into the hash */
    wci_bucket **ixtab;
    size_t ixmask;
    size_t nixwatch;
    wcache_watch **ranged; /* [start, end) watchers */
    size_t nranged, capranged;
    wci_cand *cand;   /* dispatch scratch */
    size_t ncand, capcand;
    size_t nwatch;
} wci_wreg;

struct wcache_watch {
    uint32_t magic;
    wcache_cache *c;
    /* filter */
    char *prefix, *start, *end;
    size_t plen, slen, elen;
    struct wci_selector *sel;
    int has_ix, ix_id; /* by index value: ixval[0..ixlen) in index ix_id */
    char *ixval;
    size_t ixlen;
    int prev_value;
    int plain;         /* no selector, no index: the type depends on the change only */
    int64_t start_rev; /* deliver revisions above this */
    /* phase; changed under wmu */
    int phase;
    uint64_t cursor;   /* REPLAY: next ring position */
    wcache_view *iview; /* INITIAL: pinned at start_rev */
    wci_iter iit;
    struct wci_ixmatch *im; /* INITIAL by index value: the matches, sorted */
    size_t imn, impos, imcap;
    /* queue: producer holds wmu, consumer is the watch's thread.  The
     * consumer's index and the producer's fields sit on different cache
     * lines, so a push and a pop do not bounce one line between cores. */
    wci_qslot *q;
    uint32_t qcap;
    /* The writer's last look at qhead (dispatch, under wmu): the queue has
     * at least qcap - (qtail - qhead_seen) free slots, so the consumer's
     * line is read only when that runs out. */
    uint64_t qhead_seen;
    char pad0[64];
    _Atomic uint64_t qhead;
    char pad1[64 - sizeof(uint64_t)]; /* padding, not _Alignas: allocators
                                         promise 16-byte alignment only */
    _Atomic uint64_t qtail;
    _Atomic int end_code;
    _Atomic int armed;
    int efd;
    int registered;
    /* bookmarks (consumer only) */
    int64_t bm_ns, next_bm, last_rev;
};

#define WCI_WATCH_MAGIC 0x77637774u

#endif
