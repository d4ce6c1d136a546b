/*
 * store_s3.h - what store_s3.c (requests) and store_s3_xml.c (replies)
 * share; the XML reader is also the fuzz target's entry point.
 */
#ifndef WCI_STORE_S3_H
#define WCI_STORE_S3_H

#include "store.h"

/* One <Contents> of a ListObjectsV2 page. */
typedef struct wci_s3_entry {
    const char *key;
    int64_t bytes;
    int64_t mtime_ns;
    char etag[WCI_STORE_ETAG_MAX];
} wci_s3_entry;

typedef int (*wci_s3_list_fn)(const wci_s3_entry *e, void *ud);

/* Whatever one reply holds. */
typedef struct wci_s3_reply {
    char root[48];     /* local name of the root element */
    char code[64];     /* Error */
    char message[256]; /* Error */
    char upload_id[1024];
    char etag[WCI_STORE_ETAG_MAX]; /* CompleteMultipartUploadResult */
    int truncated;                 /* ListBucketResult */
    char next_token[1024];
    int64_t key_count; /* -1: absent */
    size_t entries;
} wci_s3_reply;

/* Parse one reply; list entries go to fn (may be NULL) as they are read.
 * WCACHE_OK, WCACHE_ECORRUPT (not well-formed, a DOCTYPE, too deep, a
 * <Contents> without Key or Size), WCACHE_ESTOPPED (fn returned nonzero),
 * WCACHE_ENOMEM. */
int wci_s3_parse(const void *buf, size_t len, wci_s3_reply *r, wci_s3_list_fn fn, void *ud);

/* ISO 8601 UTC ("2026-11-27T23:43:01.123Z") to ns; 0 if malformed. */
int64_t wci_s3_parse_time(const char *s);

#endif
