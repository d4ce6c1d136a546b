/*
 * fuzz_snapshot.c - libFuzzer target for the snapshot reader.
 *
 * Any input must give WCACHE_OK or a clear error from open, next or verify,
 * never a crash, a leak, or an allocation past max_block_bytes (kept small
 * here so that a "bomb" shows up as a refusal, not as rss).  What the
 * reader promises about the records it hands out is checked as well.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <watchcache.h>

static void check_records(const uint8_t *data, size_t size, const wcache_snapshot_read_opts *o)
{
    wcache_snapshot *s;
    if (wcache_snapshot_open_mem(&s, data, size, o) != WCACHE_OK)
        return;
    wcache_snapshot_info in = {.size = sizeof in};
    if (wcache_snapshot_get_info(s, &in) != WCACHE_OK)
        abort();
    wcache_kv kv;
    uint64_t n = 0;
    int rc;
    while ((rc = wcache_snapshot_next(s, &kv)) == WCACHE_OK) {
        if (kv.mod_revision > in.revision || kv.create_revision < 1 || kv.version < 1)
            abort(); /* the reader promised to check these */
        n++;
    }
    if (rc == WCACHE_ENOTFOUND && n != in.objects)
        abort();
    if ((int)wcache_snapshot_next(s, &kv) != rc)
        abort(); /* errors and the end are sticky */
    wcache_snapshot_close(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char eb[256];
    wcache_snapshot_read_opts o = {.size = sizeof o};
    o.max_block_bytes = 1u << 20;
    o.errbuf = eb;
    o.errbuf_len = sizeof eb;
    check_records(data, size, &o);
    return 0;
}
