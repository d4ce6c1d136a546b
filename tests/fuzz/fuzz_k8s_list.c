/*
 * fuzz_k8s_list.c - libFuzzer target for the Kubernetes LIST page reader
 * (wci_k8s_list_page in lib/source_k8s_stream.c): what a re-list and the
 * initial list of the Kubernetes source take from an API server.
 *
 * The input is the page's bytes; the first byte, when the rest parses,
 * picks the resourceVersion the page must have (0: any, as a first page).
 * Beyond "no crash, no leak, no undefined behaviour" it checks what the
 * source relies on: an accepted page has a resourceVersion >= 1, every item
 * handed over has a key beginning with the prefix and a resourceVersion in
 * 1 .. the page's, its value is a JSON object with a metadata.name, and an
 * error says why.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "source_k8s.h"

#define PREFIX "/registry/pods/"

typedef struct got {
    int64_t max_rv;
    size_t n;
} got;

static wcache_code take(const char *key, size_t klen, const char *val, size_t vlen, int64_t rv,
                        void *ud)
{
    got *g = ud;
    size_t pl = strlen(PREFIX);
    if (klen <= pl || memcmp(key, PREFIX, pl) != 0 || rv < 1)
        abort();
    json_t *o = json_loadb(val, vlen, 0, NULL);
    if (!json_is_object(o) ||
        !json_is_string(json_object_get(json_object_get(o, "metadata"), "name")))
        abort();
    json_decref(o);
    if (rv > g->max_rv)
        g->max_rv = rv;
    g->n++;
    return WCACHE_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int64_t want = data[0] % 4 == 0 ? 0 : data[0];
    json_t *page = json_loadb((const char *)data + 1, size - 1, 0, NULL);
    if (!page)
        return 0;
    got g = {0, 0};
    int64_t rev = 0;
    const char *cont = (const char *)1;
    char err[200] = "";
    wcache_code rc =
        wci_k8s_list_page(&wci_libc_alloc, (const unsigned char *)PREFIX, strlen(PREFIX), page,
                          want, &rev, &cont, take, &g, err, sizeof err);
    if (rc == WCACHE_OK) {
        if (rev < 1 || (want > 0 && rev != want) || g.max_rv > rev)
            abort();
        if (cont && (cont == (const char *)1 || cont[0] == 0))
            abort();
    } else if (rc == WCACHE_ECORRUPT) {
        if (err[0] == 0 || cont != NULL)
            abort();
    } else if (rc != WCACHE_ENOMEM) {
        abort();
    }
    json_decref(page);
    return 0;
}
