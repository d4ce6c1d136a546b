/*
 * fuzz_selector.c - libFuzzer target for label selectors and label
 * extraction (lib/selector.c).
 *
 * The input is read three ways: all of it as a selector, all of it as a
 * JSON object, and, split at the first newline, as a selector followed by
 * the object it is matched against (the seeds use that form, so that the
 * fuzzer reaches matching with real labels).  Beyond "no crash, no leak,
 * no undefined behaviour", the promises of selector.h are checked: errors
 * name a position inside the input, labels come out sorted and findable.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "selector.h"

static void check_labels(const wci_labels *l)
{
    if ((l->n == 0) != (l->owner == NULL))
        abort();
    for (size_t i = 0; i < l->n; i++) {
        const wci_label *a = &l->l[i];
        if (a->k[a->kl] != 0 || a->v[a->vl] != 0)
            abort();
        if (wci_labels_find(l, a->k, a->kl) != a)
            abort(); /* sorted, and keys unique */
    }
}

static wci_selector *parse(const uint8_t *s, size_t n)
{
    wci_selector *sel = NULL;
    char err[128];
    memset(err, 'Z', sizeof err);
    wcache_code rc =
        wci_selector_parse(&wci_libc_alloc, (const char *)s, n, &sel, err, sizeof err);
    if (rc == WCACHE_OK)
        return sel;
    if (rc != WCACHE_EINVAL || sel != NULL || !memchr(err, 0, sizeof err))
        abort();
    const char *pos = "label selector: position ";
    if (strncmp(err, pos, strlen(pos)) != 0)
        abort();
    if (strtoull(err + strlen(pos), NULL, 10) > n)
        abort();
    return NULL;
}

static void run(const uint8_t *s, size_t sn, const uint8_t *j, size_t jn)
{
    wci_selector *sel = parse(s, sn);
    wci_labels l;
    if (wci_labels_from_json(&wci_libc_alloc, j, jn, &l) != 0) {
        wci_selector_free(&wci_libc_alloc, sel); /* out of memory: nothing to check */
        return;
    }
    check_labels(&l);
    if (sel) {
        int m = wci_selector_match(sel, &l);
        if (wci_selector_empty(sel) && !m)
            abort();
        if (m != wci_selector_match(sel, &l))
            abort();
        const char *v;
        size_t vl;
        /* An exact requirement on a label it does not match excludes it. */
        for (size_t i = 0; i < l.n && m; i++)
            if (wci_selector_exact(sel, l.l[i].k, l.l[i].kl, &v, &vl) &&
                (vl != l.l[i].vl || memcmp(v, l.l[i].v, vl) != 0))
                abort();
    }
    wci_labels_free(&wci_libc_alloc, &l);
    wci_selector_free(&wci_libc_alloc, sel);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    run(data, size, data, size);
    if (nl)
        run(data, (size_t)(nl - data), nl + 1, size - (size_t)(nl - data) - 1);
    return 0;
}
