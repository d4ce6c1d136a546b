/*
 * fuzz_snapshot.c - libFuzzer target for the snapshot reader.
 *
 * Any input must give WCACHE_OK or a clear error from open, next or verify,
 * never a crash, a leak, or an allocation past max_block_bytes (kept small
 * here so that a "bomb" shows up as a refusal, not as rss).  What the
 * reader promises about the records it hands out is checked as well.
 *
 * Every input is read twice: as it is, and with its checksums recomputed.
 * Random bytes almost never carry valid XXH3 sums, so without the second
 * pass the fuzzer would stop at the checksum checks and never reach the
 * decompression, record and count checks behind them.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <watchcache.h>

static void read_all(const uint8_t *data, size_t size)
{
    char eb[256];
    wcache_snapshot_read_opts o = {.size = sizeof o};
    o.max_block_bytes = 1u << 20;
    o.errbuf = eb;
    o.errbuf_len = sizeof eb;
    wcache_snapshot *s;
    if (wcache_snapshot_open_mem(&s, data, size, &o) != WCACHE_OK)
        return;
    wcache_snapshot_info in = {.size = sizeof in};
    if (wcache_snapshot_get_info(s, &in) != WCACHE_OK)
        abort();
    wcache_kv kv;
    uint64_t n = 0;
    int rc;
    while ((rc = wcache_snapshot_next(s, &kv)) == WCACHE_OK) {
        if (kv.mod_revision > in.revision || kv.create_revision < 1 || kv.version < 1 ||
            kv.key_len == 0)
            abort(); /* the reader promised to check these */
        n++;
    }
    if (rc == WCACHE_ENOTFOUND && n != in.objects)
        abort();
    if ((int)wcache_snapshot_next(s, &kv) != rc)
        abort(); /* errors and the end are sticky */
    wcache_snapshot_close(s);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Recompute the header, block, trailer and whole-file checksums in place,
 * wherever the layout of wcsnap(5) can be followed. */
static void fix_sums(uint8_t *p, size_t size)
{
    if (size < 64 + 64)
        return;
    size_t end = size - 64, hl = get32(p + 16);
    if (hl < 72 || hl > end)
        return;
    put64(p + hl - 8, XXH3_64bits(p, hl - 8));
    for (size_t pos = hl; pos + 32 <= end;) {
        size_t cs = get32(p + pos + 16);
        if (cs > end - pos - 32)
            break;
        XXH3_state_t st;
        XXH3_64bits_reset(&st);
        XXH3_64bits_update(&st, p + pos, 24);
        XXH3_64bits_update(&st, p + pos + 32, cs);
        put64(p + pos + 24, XXH3_64bits_digest(&st));
        pos += 32 + cs;
    }
    put64(p + end + 40, XXH3_64bits(p + end, 40));
    put64(p + end + 48, XXH3_64bits(p, size - 16));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    read_all(data, size);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    fix_sums(copy, size);
    read_all(copy, size);
    free(copy);
    return 0;
}
