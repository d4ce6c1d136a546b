/*
 * index.h - secondary indexes (index.c) and their hooks in the writer,
 * compaction, reads and watch dispatch.
 *
 * An index maps a value its extractor finds in an object (a pod's
 * spec.nodeName) to postings: {key, from, to}, "key had this value at
 * revisions [from, to)", to = INT64_MAX while it still has it.  Postings of
 * one value sit in an append-only array that readers scan without locks;
 * a reader at R keeps those with from <= R < to.  Nothing here is
 * versioned but `to`, which the writer sets once, before it publishes the
 * revision that closed the posting.
 */
#ifndef WCI_INDEX_H
#define WCI_INDEX_H

#include "wcache_int.h"

#define WCI_INDEX_MAX 8

typedef struct wci_vlist wci_vlist;

/* Written whole before the array's n covers it; then only `to` changes,
 * once. */
typedef struct wci_post {
    wci_key *key;
    int64_t from;
    _Atomic int64_t to;
} wci_post;

/* Entries [0, n) are published with a release store of n. */
typedef struct wci_parr {
    uint32_t cap;
    _Atomic uint32_t n;
    wci_post p[];
} wci_parr;

struct wci_vlist {
    wci_parr *_Atomic arr;
    uint64_t hash;
    uint32_t pend;  /* appends the commit in progress reserved (writer) */
    uint32_t dirty; /* queued for pruning (writer) */
    uint32_t vlen;
    char val[];
};

/* A value's bytes as the dispatcher sees them; has = 0: no value. */
typedef struct wci_ixval {
    const char *p;
    size_t n;
    int has;
} wci_ixval;

/* One object an index read found, in key order after collection. */
typedef struct wci_ixmatch {
    const wci_key *k;
    const wci_ver *w;
    uint64_t ord; /* sort key (index.c) */
} wci_ixmatch;

struct wci_ixreg;

int wci_index_count(const wcache_cache *c);
void wci_index_fini(wcache_cache *c);

/* Phase one of a commit of n changes: begin, prep each (the extractor
 * runs here), reserve; abort undoes all of it.  Phase two: link each,
 * then end.  Only the writer, under wmu. */
int wci_index_begin(wcache_cache *c, size_t n);
int wci_index_prep(wcache_cache *c, size_t i, wci_key *k, const wci_ver *v, bool isnew);
int wci_index_reserve(wcache_cache *c);
void wci_index_abort(wcache_cache *c);
void wci_index_link(wcache_cache *c, size_t i, wci_key *k, int64_t rev);
void wci_index_end(wcache_cache *c);

/* The values the change just linked moved from and to, per index. */
void wci_index_change(const wcache_cache *c, wci_ixval *old, wci_ixval *neu);
/* 1 when v (live) has value val in index id, 0 when not, -1 on failure. */
int wci_index_match(wcache_cache *c, int id, const wci_key *k, const wci_ver *v,
                    const void *val, size_t len);

/* Drop postings closed at or below P (compaction; the writer, under wmu). */
void wci_index_compact(wcache_cache *c, int64_t P);

/* The objects with value val at the view's revision, sorted by key, into
 * *buf (grown as needed, with the cache's allocator). */
wcache_code wci_index_collect(wcache_view *v, int id, const void *val, size_t len,
                              wci_ixmatch **buf, size_t *cap, size_t *n);

#endif
