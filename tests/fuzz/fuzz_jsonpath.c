/*
 * fuzz_jsonpath.c - libFuzzer target holding lib/jsonpath.c to jansson.
 *
 * The built-in index extractor reads most objects with its own scanner and
 * promises the same answer as a full jansson parse (JSON_ALLOW_NUL, then
 * json_object_get along the path).  The first input byte picks a path, the
 * rest is the text: whenever the scanner answers instead of deferring to
 * jansson, the two must agree on whether there is a value and on its bytes.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonpath.h"

static char *const PATHS[][3] = {
    {"spec", "nodeName", NULL},
    {"metadata", "namespace", NULL},
    {"a", NULL, NULL},
    {"a", "b", "c"},
};

static size_t path_len(char *const *p)
{
    size_t n = 0;
    while (n < 3 && p[n])
        n++;
    return n;
}

/* jansson's answer: 1 with the string, or 0. */
static int reference(char *const *path, size_t np, const char *s, size_t n, const char **out,
                     size_t *olen, json_t **root)
{
    json_error_t e;
    *root = json_loadb(s, n, JSON_ALLOW_NUL, &e);
    json_t *j = *root;
    for (size_t i = 0; i < np && j; i++)
        j = json_object_get(j, path[i]);
    if (!json_is_string(j))
        return 0;
    *out = json_string_value(j);
    *olen = json_string_length(j);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char *const *path = PATHS[data[0] % (sizeof PATHS / sizeof *PATHS)];
    size_t np = path_len(path);
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    const void *got = NULL;
    size_t glen = 0;
    int rc = wci_jsonpath_scan(path, np, s, n, &got, &glen);
    if (rc == WCI_JP_JANSSON)
        return 0;
    if (rc != 0 && rc != 1)
        abort();
    if (rc == 1 && ((const char *)got < s || (const char *)got + glen > s + n))
        abort(); /* must point into the input */
    const char *want = NULL;
    size_t wlen = 0;
    json_t *root = NULL;
    int ref = reference(path, np, s, n, &want, &wlen, &root);
    if (ref != rc || (rc == 1 && (wlen != glen || memcmp(want, got, glen) != 0)))
        abort();
    json_decref(root);
    return 0;
}
