/*
 * fuzz_proxy_filter.c - libFuzzer target for wcache-proxy's request
 * selectors (examples/proxy/filter.c): labelSelector and fieldSelector
 * from a URL, then matched against a pod and against the input itself as
 * an object.  Properties: no crash, overrun or leak; a parsed request's
 * key range lies under the resource's prefix; an exact name pins one key.
 */
#include "../../examples/proxy/filter.c"

#include <stdint.h>

px_config G;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static px_resource pods = {.name = "pods",
                               .namespaced = 1,
                               .prefix = "/registry/pods/",
                               .idx = {{.path = "spec.nodeName", .id = 0}},
                               .nidx = 1};
    static px_resource nss = {.name = "namespaces", .prefix = "/registry/namespaces/"};
    px_resource *r = data[0] & 1 ? &pods : &nss;
    /* the rest: labels NUL fields (strings, as libmicrohttpd hands them) */
    char *buf = malloc(size + 1);
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = 0;
    size_t ll = strlen(buf);
    const char *fields = ll + 1 < size ? buf + ll + 1 : "";
    px_req q = {
        .r = r, .ns = data[0] & 2 ? "team-a" : NULL, .q_labels = buf, .q_fields = fields};
    filt f;
    char msg[512];
    if (filt_parse(&f, &q, msg, sizeof msg) == 0) {
        if (strncmp(f.prefix, r->prefix, strlen(r->prefix)) != 0)
            __builtin_trap();
        static const char pod[] = "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\","
                                  "\"namespace\":\"team-a\",\"labels\":"
                                  "{\"app\":\"web\",\"tier\":\"1\"}},\"spec\":{\"nodeName\":"
                                  "\"n1\",\"hostNetwork\":true},"
                                  "\"status\":{\"phase\":\"Running\"}}";
        wcache_kv kv = {.key = "/registry/pods/team-a/p",
                        .key_len = 23,
                        .value = pod,
                        .value_len = sizeof pod - 1};
        (void)filt_match(&f, r, &kv, 1);
        wcache_kv raw = {
            .key = "/registry/pods/x", .key_len = 16, .value = data, .value_len = size};
        (void)filt_match(&f, r, &raw, 1);
    } else {
        filt_free(&f);
        if (!msg[0])
            __builtin_trap(); /* an error always says why */
    }
    filt_free(&f);
    free(buf);
    return 0;
}
