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

/*
 * A watcher's slots.  The array starts small and doubles, up to the
 * watch's queue_size, only when the producer finds it full: a watcher
 * pays for the backlog it has had, not for the one it is allowed (10,000
 * watchers of queue_size 65536 would otherwise hold 5 GB of empty slots;
 * one reading a fan has no array at all).  The producer moves the slots
 * to the new array and publishes it; the consumer may still be reading
 * the old one, so the old one hangs off the new (old) until the consumer
 * next looks at the queue and frees it.
 */
typedef struct wci_qarr {
    struct wci_qarr *old; /* replaced by this one, not yet freed */
    uint32_t cap;         /* a power of two */
    wci_qslot s[];
} wci_qarr;

typedef struct wci_cand {
    wcache_watch *w;
    uint32_t type;
} wci_cand;

/*
 * A fan: the changes of one prefix bucket, written once for all the plain
 * watchers attached to it, each reading at its own position.  A change to
 * a prefix 100 watchers follow costs the writer one slot, not 100 queue
 * pushes to 100 cache lines its consumers keep taking back.
 *
 * Positions count from 0; slots live in segments of WCI_SEG_SLOTS, linked
 * oldest to newest.  The fan holds one reference per slot; a consumer
 * takes one for each delivery it gives away (wcache_watch_next()) and none
 * for what it lends (wcache_watch_next_borrowed(): its position moves at
 * its next call).  The writer (under wmu) frees a segment, and drops the
 * references it holds, once every attached watcher's position is past it,
 * and ends a watcher whose backlog reaches its
 * queue_size (WCACHE_EOVERFLOW), as with a queue: then, when it can take
 * the watcher's rmu (never waiting for it), it moves the backlog into the
 * watcher's own queue and detaches it.
 */
#define WCI_SEG_SLOTS 512

typedef struct wci_seg {
    _Atomic(struct wci_seg *) next;
    uint64_t base; /* position of s[0] */
    wci_qslot s[WCI_SEG_SLOTS];
} wci_seg;

typedef struct wci_fan {
    _Atomic uint64_t tail;   /* positions published */
    _Atomic uint32_t narmed; /* attached watchers with armed set (never too low) */
    _Atomic int rescan;      /* a watcher was stopped: detach it at the next push */
    char pad[64];
    /* the writer's, under wmu */
    uint64_t wtail;
    uint64_t scan_at; /* before this position nobody can overflow */
    wci_seg *head, *last, *spare;
    wcache_watch **w; /* attached */
    size_t n, cap;
} wci_fan;

/* Watchers sharing one key prefix. */
typedef struct wci_bucket {
    struct wci_bucket *next;
    uint64_t hash;
    wcache_watch **w; /* not attached to the fan */
    size_t n, cap;
    size_t nfan_ok; /* watchers (attached or not) that may use a fan */
    wci_fan *fan;   /* made when a second such watcher comes */
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
    wci_len *lens; /* distinct prefix lengths, ascending */
    size_t nlens, caplens;
    /* watchers by index value (index.c): chained like tab, keyed by the
     * value with the index id mixed into the hash */
    wci_bucket **ixtab;
    size_t ixmask;
    size_t nixwatch;
    wcache_watch **ranged; /* [start, end) watchers */
    size_t nranged, capranged;
    wci_cand *cand; /* dispatch scratch */
    size_t ncand, capcand;
    wci_fan **fcand; /* ... fans a change goes to */
    size_t nfcand, capfcand;
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
    int plain;          /* no selector, no index: the type depends on the change only */
    int fan_ok;         /* plain, in a prefix bucket, queue big enough to share a fan */
    wci_bucket *bucket; /* its prefix bucket, if any */
    /* Attached to the bucket's fan: fan and rseg change under wmu and rmu;
     * the consumer holds rmu while it reads the fan. */
    wci_fan *fan;
    wci_seg *rseg;
    pthread_mutex_t rmu;
    int rmu_ok;
    _Atomic uint64_t rpos; /* next position to read (the consumer's) */
    _Atomic uint64_t rcut; /* ended: nothing from this position on */
    /* Lent by wcache_watch_next_borrowed(), given back at the next call:
     * lent_own slots of its own queue from qhead; fan positions up to
     * lent_pos (under rmu); hold: references the writer took for lent fan
     * events when it detached the watcher (under rmu). */
    size_t lent_own;
    int lent_fan;  /* under rmu: the writer reads it when it detaches */
    int lent_mine; /* the consumer's own copy: settle() locks rmu only then */
    uint64_t lent_pos;
    wci_seg *lent_seg;
    wcache_event **hold;
    size_t nhold;
    int64_t start_rev; /* deliver revisions above this */
    /* phase; changed under wmu */
    int phase;
    uint64_t cursor;    /* REPLAY: next ring position */
    wcache_view *iview; /* INITIAL: pinned at start_rev */
    wci_iter iit;
    struct wci_ixmatch *im; /* INITIAL by index value: the matches, sorted */
    size_t imn, impos, imcap;
    /* queue: producer holds wmu, consumer is the watch's thread.  The
     * consumer's index and the producer's fields sit on different cache
     * lines, so a push and a pop do not bounce one line between cores. */
    _Atomic(wci_qarr *) q; /* NULL until the first push */
    uint32_t qcap;         /* queue_size: the most slots it may grow to */
    uint32_t qpcap;        /* the producer's: q's cap, 0 without q */
    /* The producer's last look at qhead: the array has at least
     * qpcap - (qtail - qhead_seen) free slots, so the consumer's line is
     * read only when that runs out. */
    uint64_t qhead_seen;
    /* Set by the consumer when it drained an array far larger than its
     * backlog has lately been: the producer's next push moves the queue
     * to a small one (queue_room_n()).  On the producer's line, which
     * reads it at every push; the consumer writes it once per burst. */
    _Atomic bool qshrink;
    char pad0[63];
    _Atomic uint64_t qhead;
    /* The consumer's: the largest backlog it found since it last drained
     * the queue. */
    uint64_t qhw;
    char pad1[64 - 2 * sizeof(uint64_t)]; /* padding, not _Alignas: allocators
                                             promise 16-byte alignment only */
    _Atomic uint64_t qtail;
    _Atomic int end_code;
    _Atomic int armed;
    _Atomic int efd; /* -1 until first asked for (watch_efd()) */
    int registered;
    /* bookmarks (consumer only) */
    int64_t bm_ns, next_bm, last_rev;
    int end_out; /* consumer only: the end code a call has returned */
    /* Member of a watch set: its wake-ups go to the set's ready list
     * instead of efd.  set changes under wmu and rmu; every wake-up holds
     * one of them or runs on the watch's own thread. */
    struct wcache_watchset *set;
    size_t set_idx; /* in set->m */
    void *set_ud;
    _Atomic int sready;         /* on the set's ready list (or its batch) */
    struct wcache_watch *rnext; /* link of that list, written by its pusher */
};

/*
 * A watch set: one eventfd for many watches.  Wake-ups push the watch on a
 * lock-free list (the writer and stop() may push at once; sready makes it
 * one entry); the consumer takes the whole list in one exchange, and the
 * fd is written only when the consumer armed it, found the list empty and
 * sleeps: one write per sleep instead of one per watch and change.
 */
struct wcache_watchset {
    uint32_t magic;
    wcache_cache *c;
    int efd;
    _Atomic(struct wcache_watch *) ready; /* pushed, newest first */
    _Atomic int armed;
    char pad[64];
    /* the consumer's */
    struct wcache_watch *batch; /* taken from ready, oldest first */
    struct wcache_watch **m;    /* members */
    size_t n, cap;
};

#define WCI_WATCH_MAGIC 0x77637774u
#define WCI_WSET_MAGIC 0x77637773u

#endif
