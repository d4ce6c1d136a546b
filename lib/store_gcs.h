/*
 * store_gcs.h - the parsers of store_gcs.c's GCS replies, exposed for the
 * fuzz target (tests/fuzz/fuzz_gcs.c) and nothing else.
 */
#ifndef WCI_STORE_GCS_H
#define WCI_STORE_GCS_H

#include <stddef.h>
#include <stdint.h>

/* One object of a reply.  Strings are borrowed from the parsed reply. */
typedef struct wci_gcs_object {
    const char *name;
    size_t name_len;
    uint64_t bytes;
    uint64_t generation;
    int64_t mtime_ns;
    const char *etag; /* "" when absent */
    uint32_t crc32c;
    int has_crc;
} wci_gcs_object;

/* Return nonzero to stop the listing. */
typedef int (*wci_gcs_list_cb)(const wci_gcs_object *o, void *ud);

/* CRC32C of buf, continuing from crc (0 to start). */
uint32_t wci_crc32c(uint32_t crc, const void *buf, size_t len);

/* base64 of a big-endian CRC32C; an x-goog-hash value.  0, or -1. */
int wci_gcs_parse_crc(const char *s, size_t len, uint32_t *crc);
int wci_gcs_hash_crc(const char *header_value, uint32_t *crc);

/* A JSON object resource.  0 (release *hold with wci_gcs_release()) or -1. */
int wci_gcs_parse_object(const char *buf, size_t len, wci_gcs_object *out, void **hold);
void wci_gcs_release(void *hold);

/* A JSON objects list / an XML ListBucketResult: cb for each object, then
 * the next page token into next ("" on the last page).  Returns 0, 1 (cb
 * stopped it) or -1 (malformed; cb may have seen some objects). */
int wci_gcs_parse_list(const char *buf, size_t len, wci_gcs_list_cb cb, void *ud, char *next,
                       size_t next_len);
int wci_gcs_parse_xml_list(const char *buf, size_t len, wci_gcs_list_cb cb, void *ud,
                           char *next, size_t next_len);

/* "reason: message" of a JSON error body, "Code: Message" of an XML one;
 * "" when the body is not one. */
void wci_gcs_error_text(const char *buf, size_t len, char *out, size_t out_len);
void wci_gcs_xml_error_text(const char *buf, size_t len, char *out, size_t out_len);

#endif
