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
 *
 * An input that holds two files (the first ends at its end magic) is also
 * restored as a chain, base then delta, with the delta's base revision and
 * checksum patched to name the base, so that the link checks and the merge
 * of tombstones and puts over the base are reached (the files are handed
 * over as memfds).  The cache must be left empty by any refusal.
 *
 * Every input is also restored as a stream (wcache_snapshot_restore_from),
 * cut into chunks of sizes drawn from the input itself, and from a memfd
 * with wcache_snapshot_restore: the two must agree on whether the bytes
 * are a sound snapshot, and a refusal must leave the cache empty.
 */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
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
    int rc, delta = (in.flags & WCACHE_SNAP_FLAG_DELTA) != 0;
    while ((rc = wcache_snapshot_next(s, &kv)) == WCACHE_OK) {
        int tomb = delta && kv.version == 0;
        if (kv.mod_revision > in.revision || kv.key_len == 0 ||
            (tomb ? kv.create_revision != 0 || kv.value_len != 0
                  : kv.create_revision < 1 || kv.version < 1) ||
            (delta && kv.mod_revision <= in.base_revision))
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

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* A memfd holding n bytes, named by *path. */
static int memfile(const uint8_t *p, size_t n, char *path, size_t pl)
{
    int fd = memfd_create("fuzz-snap", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (n && write(fd, p, n) != (ssize_t)n) {
        close(fd);
        return -1;
    }
    snprintf(path, pl, "/proc/self/fd/%d", fd);
    return fd;
}

/* Base = p[0..cut), delta = p[cut..size): make the delta name the base,
 * then restore the chain. */
static void chain(uint8_t *p, size_t cut, size_t size)
{
    uint8_t *b = p, *d = p + cut;
    size_t bn = cut, dn = size - cut;
    fix_sums(b, bn);
    if (bn >= 128 && dn >= 128 + 24) {
        size_t x = 64 + get32(d + 20); /* the 1.1 fields after the source id */
        if (d[10] >= 1 && x + 24 + 8 <= get32(d + 16) && get32(d + 16) <= dn - 64) {
            put64(d + x, get64(b + 24));          /* B: the base's revision */
            put64(d + x + 8, get64(b + bn - 16)); /* its whole-file checksum */
        }
    }
    fix_sums(d, dn);
    char pb[64], pd[64];
    int fb = memfile(b, bn, pb, sizeof pb), fd = memfile(d, dn, pd, sizeof pd);
    wcache_cache *c = NULL;
    if (fb >= 0 && fd >= 0 && wcache_cache_create(&c, NULL) == WCACHE_OK &&
        wcache_cache_open(c) == WCACHE_OK) {
        char eb[256];
        wcache_snapshot_read_opts o = {.size = sizeof o};
        o.max_block_bytes = 1u << 20;
        o.errbuf = eb;
        o.errbuf_len = sizeof eb;
        const char *v[2] = {pb, pd};
        if (wcache_snapshot_restore_chain(c, v, 2, &o, NULL) != WCACHE_OK &&
            wcache_cache_revision(c) != 0)
            abort(); /* a refused chain must leave the cache as it was */
    }
    wcache_cache_close(c);
    if (fb >= 0)
        close(fb);
    if (fd >= 0)
        close(fd);
}

typedef struct chunks {
    const uint8_t *p;
    size_t n, pos;
    unsigned calls;
} chunks;

/* Chunks of 1 .. 64 bytes or all that fits, by the input's own bytes. */
static int chunk_read(void *buf, size_t cap, size_t *got, void *ud)
{
    chunks *c = ud;
    size_t k = c->n ? c->p[(c->calls++ * 31u) % c->n] : 1;
    k = k >= 0xc0 ? cap : (k & 63) + 1;
    if (k > cap)
        k = cap;
    if (k > c->n - c->pos)
        k = c->n - c->pos;
    memcpy(buf, c->p + c->pos, k);
    c->pos += k;
    *got = k;
    return WCACHE_OK;
}

static wcache_cache *fresh(void)
{
    wcache_cache *c = NULL;
    if (wcache_cache_create(&c, NULL) != WCACHE_OK || wcache_cache_open(c) != WCACHE_OK) {
        wcache_cache_close(c);
        return NULL;
    }
    return c;
}

static void stream(const uint8_t *p, size_t size)
{
    char eb[256], path[64];
    wcache_snapshot_read_opts o = {.size = sizeof o};
    o.max_block_bytes = 1u << 20;
    o.errbuf = eb;
    o.errbuf_len = sizeof eb;
    wcache_cache *a = fresh(), *b = fresh();
    int fd = memfile(p, size, path, sizeof path);
    if (a && b && fd >= 0) {
        chunks ch = {p, size, 0, 0};
        int rs = wcache_snapshot_restore_from(a, chunk_read, &ch, &o, NULL);
        int rf = wcache_snapshot_restore(b, path, &o, NULL);
        if ((rs == WCACHE_OK) != (rf == WCACHE_OK))
            abort(); /* the stream and the file restore disagree */
        if (rs != WCACHE_OK && wcache_cache_revision(a) != 0)
            abort();
        if (rs == WCACHE_OK && wcache_cache_revision(a) != wcache_cache_revision(b))
            abort();
    }
    if (fd >= 0)
        close(fd);
    wcache_cache_close(a);
    wcache_cache_close(b);
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
    stream(copy, size);
    /* Two files: the first ends with the end magic. */
    static const uint8_t end_magic[8] = {'W', 'C', 'S', 'N', 'E', 'N', 'D', '\n'};
    for (size_t i = 128; i + 8 <= size && i + 8 < size; i++)
        if (memcmp(data + i, end_magic, 8) == 0 && data[0] == 0x89) {
            memcpy(copy, data, size);
            chain(copy, i + 8, size);
            break;
        }
    free(copy);
    return 0;
}
