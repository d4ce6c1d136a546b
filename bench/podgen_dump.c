/*
 * podgen_dump - print pods from podgen.h, for comparing the C generator
 * with its Go port (bench/podgen_check.sh).
 * Usage: podgen_dump SEED COUNT [VERSIONS]
 * Output per pod i: key, TAB, version 1 at rev i+1, newline, then version
 * i%7+2 at rev 1000000+i, newline; the second line covers the update path.
 * VERSIONS 1 leaves the second line out: "key TAB pod" lines, the data file
 * the binding benchmark (bench/bindings.sh) loads into C, Go and Rust alike.
 */
#include <stdio.h>
#include <stdlib.h>

#include "podgen.h"

int main(int argc, char **argv)
{
    podgen g;
    char key[PODGEN_KEY_MAX], pod[PODGEN_POD_MAX];
    uint64_t n;
    int versions = argc == 4 ? atoi(argv[3]) : 2;
    if (argc < 3 || argc > 4 || versions < 1 || versions > 2) {
        fprintf(stderr, "usage: %s SEED COUNT [VERSIONS]\n", argv[0]);
        return 2;
    }
    podgen_init(&g, strtoull(argv[1], NULL, 10));
    n = strtoull(argv[2], NULL, 10);
    for (uint64_t i = 0; i < n; i++) {
        size_t kl = podgen_key(&g, i, key, sizeof key);
        size_t pl = podgen_pod(&g, i, 1, (int64_t)i + 1, pod, sizeof pod);
        fwrite(key, 1, kl, stdout);
        putchar('\t');
        fwrite(pod, 1, pl, stdout);
        putchar('\n');
        if (versions == 1)
            continue;
        pl = podgen_pod(&g, i, i % 7 + 2, 1000000 + (int64_t)i, pod, sizeof pod);
        fwrite(pod, 1, pl, stdout);
        putchar('\n');
    }
    return 0;
}
