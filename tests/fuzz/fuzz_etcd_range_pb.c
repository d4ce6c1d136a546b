/*
 * fuzz_etcd_range_pb.c - libFuzzer target for the gRPC range answer parser
 * (wci_pb_range in lib/etcd_stream.c): the body of an answer to POST
 * /etcdserverpb.KV/Range, a gRPC frame around a protobuf RangeResponse.
 *
 * Beyond "no crash, no leak, no undefined behaviour": every key and value
 * the parser hands out lies inside the input (they are used in place), an
 * answer it accepts is exactly one uncompressed frame, and the request
 * encoded for the last key is a frame of the right length.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_stream.h"

static int inside(const void *p, size_t n, const uint8_t *data, size_t size)
{
    const uint8_t *q = p;
    return n == 0 || (q >= data && q + n <= data + size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wci_pb_page pg = {0};
    int r = wci_pb_range(&wci_libc_alloc, data, size, &pg);
    if (r == 0) {
        if (size < 5 || data[0] != 0)
            abort();
        for (size_t i = 0; i < pg.n; i++) {
            const wcache_kv *kv = &pg.kvs[i];
            if (!inside(kv->key, kv->key_len, data, size) ||
                !inside(kv->value, kv->value_len, data, size))
                abort();
        }
        if (pg.n > 0 && pg.kvs[pg.n - 1].key_len < 4096) {
            const wcache_kv *kv = &pg.kvs[pg.n - 1];
            static unsigned char out[64 + 4096];
            size_t n = wci_pb_range_request(out, kv->key, kv->key_len,
                                            (const unsigned char *)"", 0, 7, pg.revision);
            uint32_t len = (uint32_t)out[1] << 24 | (uint32_t)out[2] << 16 |
                           (uint32_t)out[3] << 8 | out[4];
            if (out[0] != 0 || (size_t)len + 5 != n || n > sizeof out)
                abort();
        }
    } else if (r != -1 && r != -2) {
        abort();
    }
    wci_free(&wci_libc_alloc, pg.kvs);
    return 0;
}
