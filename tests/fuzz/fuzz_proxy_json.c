/*
 * fuzz_proxy_json.c - libFuzzer target for wcache-proxy's handling of the
 * bytes it reads from etcd: the resourceVersion splice (a scanner of its
 * own, examples/proxy/json.c) and the Table row built from them.
 *
 * Properties: neither crashes nor reads past the input; whenever jansson
 * accepts the input as a JSON object, the splice succeeds and its output
 * is a JSON object equal to the input with metadata.resourceVersion set
 * (metadata added when it was missing or not an object is not claimed:
 * such inputs only must not crash).
 */
#include "../../examples/proxy/json.c"

#include <stdint.h>

/* json.c's neighbours that it calls */
int64_t now_ms(void);

static int same_but_rv(json_t *in, json_t *out)
{
    json_t *m_in = json_object_get(in, "metadata");
    json_t *m_out = json_object_get(out, "metadata");
    if (!json_is_object(m_out))
        return 0;
    json_t *want = json_string("42");
    int rv_ok = json_equal(json_object_get(m_out, "resourceVersion"), want);
    json_decref(want);
    if (!rv_ok)
        return 0;
    json_t *a = json_deep_copy(in), *b = json_deep_copy(out);
    if (json_is_object(m_in)) {
        json_object_del(json_object_get(a, "metadata"), "resourceVersion");
        json_object_del(json_object_get(b, "metadata"), "resourceVersion");
    }
    int eq = !json_is_object(m_in) || json_equal(a, b);
    json_decref(a);
    json_decref(b);
    return eq;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pbuf out = {0};
    int rc = json_splice_rv(&out, (const char *)data, size, 42);
    json_error_t e;
    /* the proxy's input comes from etcd through the API server: no NULs */
    json_t *in = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &e);
    if (in && json_is_object(in) && json_object_get(in, "metadata")) {
        if (rc != 0)
            __builtin_trap();
        json_t *o = json_loadb(out.p, out.len, 0, &e);
        if (!o || !same_but_rv(in, o))
            __builtin_trap();
        json_decref(o);
    }
    json_decref(in);
    pb_free(&out);
    /* a Table row from any bytes */
    static px_resource pods = {.name = "pods", .prefix = "/registry/pods/"};
    wcache_kv kv = {.key = "/registry/pods/ns/x",
                    .key_len = 19,
                    .value = data,
                    .value_len = size,
                    .mod_revision = 7};
    pbuf row = {0};
    table_row(&row, &pods, &kv, 7, 1);
    pb_free(&row);
    return 0;
}
