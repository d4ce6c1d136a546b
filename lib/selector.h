/*
 * selector.h - Kubernetes label selectors and the labels they are matched
 * against (never installed).
 *
 * The grammar, the validation and the matching rules are those of
 * apimachinery's labels.Parse and Requirement.Matches, so that a watcher
 * sees exactly what the API server would send it.  A selector is parsed
 * once, is immutable afterwards and may be shared by any number of threads.
 * Labels are extracted from an object's JSON once per event, not per
 * watcher, and are then matched by every watcher's selector.
 */
#ifndef WCI_SELECTOR_H
#define WCI_SELECTOR_H

#include "alloc.h"
#include "watchcache.h"

#include <stddef.h>

typedef struct wci_selector wci_selector;

typedef struct wci_label {
    const char *k; /* NUL-terminated for convenience; kl is authoritative */
    size_t kl;
    const char *v; /* likewise */
    size_t vl;
} wci_label;

/* Sorted by key, byte-wise (a shorter key sorts before its extensions); l
 * and the strings point into owner, which wci_labels_free releases. */
typedef struct wci_labels {
    wci_label *l;
    size_t n;
    void *owner;
} wci_labels;

/* Inputs larger than this are not parsed (they give an empty label set):
 * the JSON tree lives in jansson's malloc, outside the embedder's
 * allocator.  Kubernetes objects are far smaller (etcd refuses requests
 * over 1.5 MiB by default). */
#define WCI_LABELS_JSON_MAX ((size_t)64 << 20)
/* Nesting deeper than this is not parsed either (empty label set):
 * jansson recurses once per level, about 100 bytes of stack each, and
 * this runs on the embedder's threads, whose stacks may be small. */
#define WCI_LABELS_MAX_DEPTH 512

/*
 * Parse a label selector: comma-separated requirements k=v, k==v, k!=v,
 * k in (a,b), k notin (a,b), k (exists), !k (does not exist), and, as
 * apimachinery also accepts, k>n and k<n on integers.  Whitespace is
 * tolerated between tokens; an empty or all-blank string selects
 * everything.  Keys are qualified names with an optional DNS-subdomain
 * prefix, values at most 63 bytes of [A-Za-z0-9._-] that begin and end
 * alphanumeric, or empty.  A NUL byte is an error (apimachinery would stop
 * reading there and ignore the rest).
 * On error: WCACHE_EINVAL, and err (if errlen > 0) receives a NUL-terminated
 * message naming the byte offset, from 0, of the offending token.
 * WCACHE_ENOMEM when the one allocation fails.  *out is NULL on error.
 */
wcache_code wci_selector_parse(const wci_alloc *al, const char *s, size_t len,
                               wci_selector **out, char *err, size_t errlen);
void wci_selector_free(const wci_alloc *al, wci_selector *sel); /* NULL is fine */
/* 1 when the selector matches everything (no requirement, or sel NULL). */
int wci_selector_empty(const wci_selector *sel);
/* Number of requirements, after parsing (duplicates are kept, as upstream). */
size_t wci_selector_count(const wci_selector *sel);
/* apimachinery's RequiresExactMatch: 1 and the value when some requirement
 * is key=v, key==v or key in (v) with a single value, so the caller may use
 * an index on that label; 0 otherwise. */
int wci_selector_exact(const wci_selector *sel, const char *key, size_t kl, const char **v,
                       size_t *vl);

/*
 * metadata.labels of a JSON object (a Kubernetes object's stored bytes),
 * copied into one block from al.  Input that is not a JSON object, or has
 * no metadata.labels object, gives an empty set; members whose value is
 * not a string are skipped.  A duplicate member keeps its last value, as
 * Go's encoding/json does.  Where jansson is stricter than Go (invalid
 * UTF-8, a \u0000 inside a member name, nesting deeper than
 * WCI_LABELS_MAX_DEPTH) the object is unreadable and has no labels.
 * Returns 0, or -1 when an allocation failed (ours or jansson's), with
 * *out empty.
 */
int wci_labels_from_json(const wci_alloc *al, const void *json, size_t len, wci_labels *out);
void wci_labels_free(const wci_alloc *al, wci_labels *l); /* leaves *l empty */
/* The label with this key, or NULL.  l may be NULL (no labels). */
const wci_label *wci_labels_find(const wci_labels *l, const char *key, size_t kl);

/* 1 when every requirement holds for l (NULL: no labels), else 0.  As in
 * Kubernetes, != and notin hold when the key is absent; >, < need the
 * label to parse as a decimal int64. */
int wci_selector_match(const wci_selector *sel, const wci_labels *l);

#endif
