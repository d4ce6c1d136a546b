/*
 * filter.h - selectors of a request (filter.c), shared by api.c and the
 * fuzz target.
 */
#ifndef WCPROXY_FILTER_H
#define WCPROXY_FILTER_H

#include "proxy.h"

/* The library's own label selectors, so that a LIST filters exactly as a
 * watch does (the proxy links the static library). */
#include "../../lib/alloc.h"
#include "../../lib/selector.h"

#define MAX_FREQ 8
typedef struct freq {
    char field[64];
    char *val;
    int neg;
} freq;

typedef struct filt {
    wci_selector *lsel;
    freq f[MAX_FREQ];
    int nf;
    int idx_id; /* -1: none */
    const char *idx_val;
    int json_fields; /* a requirement that needs the object's JSON */
    /* key range of the request */
    char prefix[512];
    size_t prefix_len;
    const char *exact_name; /* metadata.name=X with a namespace: one key */
} filt;

void filt_free(filt *f);
/* Parse labelSelector / fieldSelector of q; on error fills msg, returns -1. */
int filt_parse(filt *f, const px_req *q, char *msg, size_t msglen);
/* Does the object match the field selectors (and, with labels, the label
 * selector)?  The key range is the caller's. */
int filt_match(const filt *f, const px_resource *r, const wcache_kv *kv, int labels);

#endif
