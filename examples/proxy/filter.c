/*
 * filter.c - the label and field selectors of LIST and WATCH requests and
 * the key range they narrow to (metadata.namespace / metadata.name pin
 * keys; an indexed field is served from its index).
 */
#include "filter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* ------------------------------------------------------------------------ */
/* filters                                                                   */
/* ------------------------------------------------------------------------ */

void filt_free(filt *f)
{
    wci_selector_free(&wci_libc_alloc, f->lsel);
    for (int i = 0; i < f->nf; i++)
        free(f->f[i].val);
    memset(f, 0, sizeof *f);
}

static const char *pod_fields[] = {"metadata.name",
                                   "metadata.namespace",
                                   "spec.nodeName",
                                   "spec.restartPolicy",
                                   "spec.schedulerName",
                                   "spec.serviceAccountName",
                                   "spec.hostNetwork",
                                   "status.phase",
                                   "status.podIP",
                                   "status.nominatedNodeName",
                                   NULL};

static int field_supported(const px_resource *r, const char *f)
{
    if (!strcmp(f, "metadata.name") || !strcmp(f, "metadata.namespace"))
        return 1;
    if (!strcmp(r->name, "pods"))
        for (int i = 0; pod_fields[i]; i++)
            if (!strcmp(pod_fields[i], f))
                return 1;
    for (int i = 0; i < r->nidx; i++)
        if (!strcmp(r->idx[i].path, f))
            return 1;
    return 0;
}

/* Parse labelSelector / fieldSelector; on error fills msg, returns -1. */
int filt_parse(filt *f, const px_req *q, char *msg, size_t msglen)
{
    memset(f, 0, sizeof *f);
    f->idx_id = -1;
    if (q->q_labels && *q->q_labels) {
        char err[256];
        if (wci_selector_parse(&wci_libc_alloc, q->q_labels, strlen(q->q_labels), &f->lsel, err,
                               sizeof err) != WCACHE_OK) {
            snprintf(msg, msglen, "unable to parse requirement: %s", err);
            return -1;
        }
    }
    const char *s = q->q_fields;
    while (s && *s) {
        const char *e = strchr(s, ',');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        const char *op = NULL;
        int neg = 0;
        size_t ol = 0;
        for (size_t i = 0; i < l; i++) {
            if (s[i] == '!' && i + 1 < l && s[i + 1] == '=') {
                op = s + i, neg = 1, ol = 2;
                break;
            }
            if (s[i] == '=') {
                op = s + i, ol = (i + 1 < l && s[i + 1] == '=') ? 2 : 1;
                break;
            }
        }
        if (!op || op == s || f->nf >= MAX_FREQ) {
            snprintf(msg, msglen, "invalid field selector: '%.*s'", (int)l, s);
            return -1;
        }
        freq *r = &f->f[f->nf];
        size_t fl = (size_t)(op - s);
        while (fl > 0 && s[fl - 1] == ' ')
            fl--;
        if (fl >= sizeof r->field) {
            snprintf(msg, msglen, "field label not supported: %.*s", (int)fl, s);
            return -1;
        }
        memcpy(r->field, s, fl);
        r->field[fl] = 0;
        const char *v = op + ol;
        size_t vl = (size_t)(s + l - v);
        r->val = strndup(v, vl);
        r->neg = neg;
        f->nf++;
        if (!field_supported(q->r, r->field)) {
            snprintf(msg, msglen, "field label not supported: %s", r->field);
            return -1;
        }
        s = e ? e + 1 : NULL;
    }
    /* key range */
    const px_resource *r = q->r;
    const char *ns = q->ns;
    for (int i = 0; i < f->nf; i++) {
        if (!f->f[i].neg && !strcmp(f->f[i].field, "metadata.namespace") && r->namespaced) {
            if (ns && strcmp(ns, f->f[i].val) != 0)
                ns = ""; /* mismatch: matches nothing (a prefix no key has) */
            else
                ns = f->f[i].val;
        }
    }
    if (ns && !*ns)
        snprintf(f->prefix, sizeof f->prefix, "%s\x01/", r->prefix);
    else if (ns && r->namespaced)
        snprintf(f->prefix, sizeof f->prefix, "%s%s/", r->prefix, ns);
    else
        snprintf(f->prefix, sizeof f->prefix, "%s", r->prefix);
    f->prefix_len = strlen(f->prefix);
    for (int i = 0; i < f->nf; i++) {
        const freq *x = &f->f[i];
        if (x->neg)
            continue;
        if (!strcmp(x->field, "metadata.name") && (ns || !r->namespaced))
            f->exact_name = x->val;
        if (!strcmp(x->field, "metadata.name") || !strcmp(x->field, "metadata.namespace"))
            continue;
        for (int k = 0; k < r->nidx; k++)
            if (f->idx_id < 0 && !strcmp(r->idx[k].path, x->field)) {
                f->idx_id = r->idx[k].id;
                f->idx_val = x->val;
            }
    }
    for (int i = 0; i < f->nf; i++)
        if (strcmp(f->f[i].field, "metadata.name") &&
            strcmp(f->f[i].field, "metadata.namespace"))
            f->json_fields = 1;
    return 0;
}

/* namespace and name from a key under the resource prefix */
static void key_parts(const px_resource *r, const wcache_kv *kv, const char **ns, size_t *nsl,
                      const char **nm, size_t *nml)
{
    size_t pl = strlen(r->prefix);
    const char *k = (const char *)kv->key + pl;
    size_t kl = kv->key_len >= pl ? kv->key_len - pl : 0;
    if (r->namespaced) {
        const char *sl = memchr(k, '/', kl);
        if (sl) {
            *ns = k, *nsl = (size_t)(sl - k);
            *nm = sl + 1, *nml = kl - *nsl - 1;
            return;
        }
    }
    *ns = "", *nsl = 0;
    *nm = k, *nml = kl;
}

static int streq(const char *a, size_t al, const char *b)
{
    return strlen(b) == al && memcmp(a, b, al) == 0;
}

/* A field of a decoded object as text ("" when missing). */
static void field_text(json_t *o, const char *path, char *out, size_t cap)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = o;
    for (char *save, *seg = strtok_r(buf, ".", &save); seg && cur;
         seg = strtok_r(NULL, ".", &save))
        cur = json_object_get(cur, seg);
    out[0] = 0;
    if (json_is_string(cur))
        snprintf(out, cap, "%s", json_string_value(cur));
    else if (json_is_boolean(cur))
        snprintf(out, cap, "%s", json_is_true(cur) ? "true" : "false");
    else if (json_is_integer(cur))
        snprintf(out, cap, "%lld", (long long)json_integer_value(cur));
}

/* Does the object match the request's label and field selectors (the key
 * range is the caller's)? */
int filt_match(const filt *f, const px_resource *r, const wcache_kv *kv, int labels)
{
    const char *ns, *nm;
    size_t nsl, nml;
    key_parts(r, kv, &ns, &nsl, &nm, &nml);
    for (int i = 0; i < f->nf; i++) {
        const freq *x = &f->f[i];
        int eq;
        if (!strcmp(x->field, "metadata.name"))
            eq = streq(nm, nml, x->val);
        else if (!strcmp(x->field, "metadata.namespace"))
            eq = streq(ns, nsl, x->val);
        else
            continue;
        if (eq == x->neg)
            return 0;
    }
    if (f->json_fields) {
        json_t *o = json_loadb(kv->value, kv->value_len, 0, NULL);
        int ok = 1;
        for (int i = 0; ok && i < f->nf; i++) {
            const freq *x = &f->f[i];
            if (!strcmp(x->field, "metadata.name") || !strcmp(x->field, "metadata.namespace"))
                continue;
            char v[512];
            field_text(o, x->field, v, sizeof v);
            if ((strcmp(v, x->val) == 0) == x->neg)
                ok = 0;
        }
        json_decref(o);
        if (!ok)
            return 0;
    }
    if (labels && f->lsel && !wci_selector_empty(f->lsel)) {
        wci_labels l = {0};
        if (wci_labels_from_json(&wci_libc_alloc, kv->value, kv->value_len, &l) != 0)
            return 0;
        int m = wci_selector_match(f->lsel, &l);
        wci_labels_free(&wci_libc_alloc, &l);
        if (!m)
            return 0;
    }
    return 1;
}
