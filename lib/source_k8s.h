/*
 * source_k8s.h - the Kubernetes watch stream, parsed and applied to a
 * cache, and the built-in synthetic stream (private to lib/; no transport
 * in here, so that the parser can be tested and fuzzed on its own).
 *
 * The stream is one JSON object per line,
 *   {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}
 * in chunks that do not line up with lines.  wci_kw_feed() takes the bytes
 * as they come, cuts them into lines, parses each with jansson and applies
 * it: one line is one event, applied whole or not at all.
 */
#ifndef WCI_SOURCE_K8S_H
#define WCI_SOURCE_K8S_H

#include "wcache_int.h"

#include <jansson.h>

/* What the stream asks of its transport after a feed. */
enum {
    WCI_KW_GO = 0,        /* keep reading */
    WCI_KW_RECONNECT = 1, /* a malformed or oversized line, an ERROR event
                             other than 410: end this stream; a new one
                             resumes from applied (a file cannot) */
    WCI_KW_RELIST = 2,    /* ERROR 410, or events that do not fit the
                             cache: re-list, then resume from the list */
    WCI_KW_FATAL = 3      /* the cache refused for good */
};

typedef struct wci_kw {
    wcache_cache *c;
    const wci_alloc *al;
    size_t max_line;             /* longest line, newline excluded */
    const unsigned char *prefix; /* borrowed from the source */
    size_t prefix_len;
    char *buf; /* bytes of the line being received */
    size_t len, cap;
    char *key; /* scratch: the key, then the value */
    size_t kcap;
    char *val;
    size_t vcap;
    int64_t applied; /* the cache's revision, as this stream left it */
    int64_t floor;   /* events at or below it are already in the cache */
    int state;       /* WCI_KW_*: GO until the stream must end */
    int code;        /* the wcache_code of why it ended */
    int gone;        /* RELIST because of an ERROR 410 */
    /* counters (the transport publishes them) */
    uint64_t lines, events, bookmarks, skipped;
    char err[240]; /* why the stream ended, for the log */
} wci_kw;

int wci_kw_init(wci_kw *w, wcache_cache *c, size_t max_line, const void *prefix,
                size_t prefix_len); /* 0, -1 ENOMEM */
void wci_kw_fini(wci_kw *w);
/* Begin a new stream: forget any partial line; floor = applied = the
 * cache's revision. */
void wci_kw_reset(wci_kw *w);
/* Go on with the same bytes after a re-list: keep the partial line, take
 * the cache's (new) revision as the floor. */
void wci_kw_resume(wci_kw *w);
/* Take n more bytes; *used (may be NULL) gets how many were consumed
 * (all, unless the state changed: then up to the end of the line that
 * changed it).  Returns w->state. */
int wci_kw_feed(wci_kw *w, const char *p, size_t n, size_t *used);
/* The input ended: a last line without its newline is still parsed.
 * Returns w->state. */
int wci_kw_end(wci_kw *w);

/*
 * The key of a Kubernetes object: prefix + "namespace/name", or prefix +
 * "name" without a namespace, into a buffer grown as needed.  Returns the
 * length, -1 for an object without a usable name (missing, empty, ".",
 * "..", or holding '/'), -2 out of memory.  *rv gets
 * metadata.resourceVersion (0 when absent; -1 when malformed).
 */
long wci_k8s_key(const wci_alloc *al, const unsigned char *prefix, size_t prefix_len,
                 const json_t *obj, char **buf, size_t *cap, int64_t *rv);
/* The value stored for obj: compact JSON into a buffer grown as needed.
 * Returns the length, or -1 (out of memory, or not serialisable). */
long wci_k8s_value(const wci_alloc *al, const json_t *obj, char **buf, size_t *cap);

/*
 * One LIST page (a parsed Kubernetes List: metadata.resourceVersion, an
 * optional metadata.continue, items): checks the page (its
 * resourceVersion must be want_rev when want_rev > 0, the one of the
 * list's first page) and hands every item to fn as its key, its value
 * (compact JSON; an item of a typed list gets its kind, "Pod" for a
 * "PodList", and the list's apiVersion back) and its resourceVersion,
 * 1 .. *rev.  *cont is the continue token (borrowed from page), or NULL.
 * Returns WCACHE_OK, WCACHE_ECORRUPT (err says why; items before the bad
 * one were handed over), WCACHE_ENOMEM, or what fn returned.
 */
typedef wcache_code (*wci_k8s_item_fn)(const char *key, size_t klen, const char *val,
                                       size_t vlen, int64_t rv, void *ud);
wcache_code wci_k8s_list_page(const wci_alloc *al, const unsigned char *prefix,
                              size_t prefix_len, const json_t *page, int64_t want_rev,
                              int64_t *rev, const char **cont, wci_k8s_item_fn fn, void *ud,
                              char *err, size_t errlen);

/* ---- the synthetic stream (source_k8s_gen.c) ---- */

typedef struct wci_kgen wci_kgen;

/* A generator of the stream for (seed, resources), from the beginning;
 * NULL when out of memory. */
wci_kgen *wci_kgen_new(const wci_alloc *al, uint64_t seed, int resources);
void wci_kgen_free(wci_kgen *g);
/* The next line with a revision above after (BOOKMARKs included), newline
 * included; *line is borrowed until the next call.  Returns 1, 0 at the
 * end of the stream.  *rev gets the line's resourceVersion. */
int wci_kgen_next(wci_kgen *g, int64_t after, const char **line, size_t *len, int64_t *rev);
/* The last resourceVersion of the whole stream (its final BOOKMARK). */
int64_t wci_kgen_last_rev(const wci_kgen *g);

#endif
