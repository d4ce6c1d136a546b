/*
 * etcd_stream.h - the etcd v3 JSON gateway's watch stream, parsed and
 * applied to a cache (private to lib/; no transport in here, so that the
 * parser can be tested and fuzzed on its own).
 *
 * The gateway sends one JSON object per line ("{"result":{...}}\n"); the
 * transport's chunks do not line up with them.  wci_ew_feed() takes the
 * bytes as they come, cuts them into messages, parses each with jansson
 * and applies it: the events of one etcd revision as one wcache batch,
 * progress notifications through the guard described in etcd_stream.c.
 */
#ifndef WCI_ETCD_STREAM_H
#define WCI_ETCD_STREAM_H

#include "wcache_int.h"

#include <jansson.h>

/* What the stream asks of its transport after a feed. */
enum {
    WCI_EW_GO = 0,        /* keep reading */
    WCI_EW_RECONNECT = 1, /* end this stream, open a new one from applied + 1 */
    WCI_EW_COMPACTED = 2, /* the start revision was compacted: re-list */
    WCI_EW_DIVERGED = 3,  /* the events do not fit the cache: re-list */
    WCI_EW_FATAL = 4      /* the cache refused for good (closed, out of memory) */
};

/* The watch id the source gives the compaction key's watch (the range's
 * own watch is the stream's first, id 0). */
#define WCI_EW_CKEY_ID 1

typedef struct wci_ew {
    wcache_cache *c;
    size_t max_msg; /* longest message, newline excluded */
    char *buf;      /* bytes of the message being received */
    size_t len, cap;
    unsigned char *scratch; /* decoded key / value */
    size_t scap;
    wcache_batch *batch;
    int64_t applied;     /* the cache's revision, as this stream left it */
    int64_t floor;       /* the stream was opened from floor + 1 */
    int64_t pending;     /* progress revision not yet confirmed, 0: none */
    int created;         /* the server confirmed the watch */
    int state;           /* WCI_EW_*: GO until the stream must end */
    int64_t compact_rev; /* from a cancel for compaction */
    /* The watch of Kubernetes' compaction key on the same stream (id
     * WCI_EW_CKEY_ID), when ckey_watch is set: the highest revision its
     * values named, 0: none seen.  The source applies it. */
    int ckey_watch;
    int64_t ckey_rev;
    /* Counters, read by other threads (wcache_etcd_stat).  Each one moves
     * before the cache does, so that whoever sees the new revision sees
     * the counter too. */
    _Atomic uint64_t messages, events, revisions, progress_applied, progress_ignored, dups;
    char err[200]; /* why the stream ended, for the log */
} wci_ew;

int wci_ew_init(wci_ew *w, wcache_cache *c, size_t max_msg); /* 0, -1 ENOMEM */
void wci_ew_fini(wci_ew *w);
/* Begin a new stream: forget partial input and any unconfirmed progress. */
void wci_ew_reset(wci_ew *w);
/* Take n more bytes; returns w->state. */
int wci_ew_feed(wci_ew *w, const char *p, size_t n);
/* The transport ended: a last message without its newline (what a member
 * sends as it shuts down) is still parsed.  Returns w->state. */
int wci_ew_end(wci_ew *w);

/* The revision a compaction key's value names: decimal digits, as
 * Kubernetes writes it.  Returns it, or -1 when the value is not one. */
int64_t wci_ckey_value(const unsigned char *v, size_t n);

/*
 * A page of a range read over gRPC (POST /etcdserverpb.KV/Range): the
 * body, a gRPC frame (flag 0, big-endian length) around a protobuf
 * RangeResponse.  kvs point into the body (nothing is copied); the array
 * grows with al.  Fields this parser does not know are skipped as protobuf
 * allows; a truncated or malformed message is refused.
 */
typedef struct wci_pb_page {
    int64_t revision; /* header.revision */
    uint64_t cluster_id;
    int more;
    wcache_kv *kvs;
    size_t n, cap;
} wci_pb_page;

/* Parse body[0..n) into pg (pg->kvs kept and reused).  0, or -1 for a
 * malformed message, -2 out of memory. */
int wci_pb_range(const wci_alloc *al, const unsigned char *body, size_t n, wci_pb_page *pg);
/* The gRPC frame of a RangeRequest {key, range_end, limit, revision} in
 * out (>= 64 + kl + el bytes); returns its length. */
size_t wci_pb_range_request(unsigned char *out, const unsigned char *key, size_t kl,
                            const unsigned char *end, size_t el, int64_t limit, int64_t rev);

/* Shared with the range code in source_etcd.c. */
/* Decode standard base64 (padding required) into out (>= n / 4 * 3 bytes).
 * Returns the decoded length or -1 for malformed input. */
long wci_b64_decode(const char *s, size_t n, unsigned char *out);
/* Encode into out (>= 4 * ((n + 2) / 3) + 1 bytes), NUL-terminated. */
size_t wci_b64_encode(const void *p, size_t n, char *out);
/* An int64 field of etcd's JSON: a string of digits or a JSON integer;
 * absent is 0.  Returns 0, or -1 when present but malformed. */
int wci_json_i64(const json_t *obj, const char *name, int64_t *out);
/* A base64 field, decoded into a buffer grown as needed; absent is empty.
 * Returns the length or -1 (malformed, or out of memory). */
long wci_json_b64(const wci_alloc *al, const json_t *obj, const char *name, unsigned char **buf,
                  size_t *cap);

#endif
