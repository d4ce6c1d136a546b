/*
 * fuzz_s3_xml.c - libFuzzer target for the S3 XML replies
 * (lib/store_s3_xml.c): Error, InitiateMultipartUploadResult,
 * CompleteMultipartUploadResult and ListObjectsV2's ListBucketResult, all
 * read by one expat-based parser.
 *
 * Beyond "no crash, no leak, no undefined behaviour", the parser's
 * promises are checked: every string field is NUL-terminated inside its
 * array, each listed entry has a NUL-terminated key and a size >= 0, the
 * entry count matches the callbacks, and a listing stopped by its callback
 * reports WCACHE_ESTOPPED.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_s3.h"

typedef struct seen {
    size_t n;
    size_t stop_at;
} seen;

static int on_entry(const wci_s3_entry *e, void *ud)
{
    seen *s = ud;
    if (!e->key || e->bytes < 0 || memchr(e->etag, 0, sizeof e->etag) == NULL)
        abort();
    (void)strlen(e->key);
    s->n++;
    return s->stop_at && s->n == s->stop_at;
}

static void check_terminated(const wci_s3_reply *r)
{
    if (!memchr(r->root, 0, sizeof r->root) || !memchr(r->code, 0, sizeof r->code) ||
        !memchr(r->message, 0, sizeof r->message) ||
        !memchr(r->upload_id, 0, sizeof r->upload_id) || !memchr(r->etag, 0, sizeof r->etag) ||
        !memchr(r->next_token, 0, sizeof r->next_token))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wci_s3_reply r;
    seen s = {0, 0};
    int rc = wci_s3_parse(data, size, &r, on_entry, &s);
    check_terminated(&r);
    if (rc == WCACHE_OK && r.entries != s.n)
        abort();
    if (rc != WCACHE_OK && rc != WCACHE_ECORRUPT && rc != WCACHE_ENOMEM)
        abort();
    /* Again, stopping at the first entry. */
    seen t = {0, 1};
    rc = wci_s3_parse(data, size, &r, on_entry, &t);
    check_terminated(&r);
    if (t.n > 1 || (t.n == 1 && rc != WCACHE_ESTOPPED && rc != WCACHE_ECORRUPT))
        abort();
    /* Without a callback too, as the error path reads replies. */
    (void)wci_s3_parse(data, size, &r, NULL, NULL);
    check_terminated(&r);
    /* The timestamp reader on the raw bytes, NUL-terminated. */
    char ts[64];
    size_t n = size < sizeof ts - 1 ? size : sizeof ts - 1;
    memcpy(ts, data, n);
    ts[n] = 0;
    (void)wci_s3_parse_time(ts);
    return 0;
}
