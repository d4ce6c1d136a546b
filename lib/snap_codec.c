/*
 * snap_codec.c - the wcsnap(5) byte layout and the snapshot reader.
 *
 * The reader trusts nothing it reads: every length is checked against what
 * is left of the input and against max_block_bytes before anything is
 * allocated for it, every block's checksum is checked before it is
 * decompressed, and a whole block's records are validated before the first
 * of them is handed out.  So a damaged file fails before restore loads any
 * record of it.  Errors are sticky: a handle that failed keeps failing.
 */
#define _POSIX_C_SOURCE 200809L
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#define SNAP_MAGIC 0x57534e50u /* handle check, "WSNP" */

const unsigned char wci_snap_magic[8] = {0x89, 'W', 'C', 'S', 'N', 'A', 'P', '\n'};
const unsigned char wci_snap_end_magic[8] = {'W', 'C', 'S', 'N', 'E', 'N', 'D', '\n'};

int wci_snap_err(char *buf, size_t len, int code, const char *fmt, ...)
{
    if (buf && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    return code;
}

void wci_put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

void wci_put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

uint32_t wci_get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t wci_get64(const unsigned char *p)
{
    return (uint64_t)wci_get32(p) | (uint64_t)wci_get32(p + 4) << 32;
}

int wci_xxh_init(wci_xxh *x, const wci_alloc *a)
{
    /* XXH3_state_t wants 64-byte alignment, more than an allocator owes. */
    x->mem = wci_malloc(a, sizeof(XXH3_state_t) + 64);
    if (!x->mem)
        return WCACHE_ENOMEM;
    uintptr_t p = ((uintptr_t)x->mem + 63) & ~(uintptr_t)63;
    x->st = (XXH3_state_t *)p;
    XXH3_64bits_reset(x->st);
    return WCACHE_OK;
}

void wci_xxh_free(wci_xxh *x, const wci_alloc *a)
{
    wci_free(a, x->mem);
    x->mem = NULL;
    x->st = NULL;
}

/* ------------------------------------------------------------------------ */
/* Header, frame, trailer, record                                           */
/* ------------------------------------------------------------------------ */

size_t wci_snap_hdr_len(size_t source_id_len, uint32_t minor)
{
    return WCI_SNAP_HDR_FIXED + source_id_len + (minor >= 1 ? WCI_SNAP_HDR_EXT : 0) + 8;
}

void wci_snap_hdr_encode(unsigned char *out, const wci_snap_hdr *h)
{
    size_t n = wci_snap_hdr_len(h->source_id_len, h->minor);
    memset(out, 0, n);
    memcpy(out, wci_snap_magic, 8);
    out[8] = (unsigned char)h->major;
    out[9] = (unsigned char)(h->major >> 8);
    out[10] = (unsigned char)h->minor;
    out[11] = (unsigned char)(h->minor >> 8);
    wci_put32(out + 12, h->flags);
    wci_put32(out + 16, (uint32_t)n);
    wci_put32(out + 20, h->source_id_len);
    wci_put64(out + 24, (uint64_t)h->revision);
    wci_put64(out + 32, (uint64_t)h->compacted);
    wci_put64(out + 40, h->objects);
    wci_put64(out + 48, (uint64_t)h->created_ns);
    wci_put32(out + 56, h->block_bytes);
    if (h->source_id_len)
        memcpy(out + WCI_SNAP_HDR_FIXED, h->source_id, h->source_id_len);
    if (h->minor >= 1) {
        unsigned char *x = out + WCI_SNAP_HDR_FIXED + h->source_id_len;
        wci_put64(x, (uint64_t)h->base_rev);
        wci_put64(x + 8, h->base_hash);
        wci_put64(x + 16, h->tombstones);
    }
    wci_put64(out + n - 8, XXH3_64bits(out, n - 8));
}

int wci_snap_hdr_fixed(const unsigned char *p, wci_snap_hdr *h, char *eb, size_t el)
{
    if (memcmp(p, wci_snap_magic, 8) != 0)
        return wci_snap_err(eb, el, WCACHE_ECORRUPT, "not a snapshot: wrong magic");
    h->major = (uint32_t)p[8] | (uint32_t)p[9] << 8;
    h->minor = (uint32_t)p[10] | (uint32_t)p[11] << 8;
    h->flags = wci_get32(p + 12);
    h->header_len = wci_get32(p + 16);
    h->source_id_len = wci_get32(p + 20);
    /* The version is judged before the checksum: a future major may have
     * moved the checksum, and "too new" is the more useful message. */
    if (h->major != WCACHE_SNAP_FORMAT_MAJOR)
        return wci_snap_err(eb, el, WCACHE_EVERSION,
                            "format version %u.%u: this library reads %u.x", h->major, h->minor,
                            WCACHE_SNAP_FORMAT_MAJOR);
    if (h->source_id_len > WCACHE_SNAP_MAX_SOURCE_ID ||
        h->header_len < wci_snap_hdr_len(h->source_id_len, h->minor) ||
        h->header_len > WCI_SNAP_HDR_MAX)
        return wci_snap_err(eb, el, WCACHE_ECORRUPT, "header length %u is impossible",
                            h->header_len);
    return WCACHE_OK;
}

int wci_snap_hdr_check(const unsigned char *p, wci_snap_hdr *h, char *eb, size_t el)
{
    uint32_t n = h->header_len;
    if (XXH3_64bits(p, n - 8) != wci_get64(p + n - 8))
        return wci_snap_err(eb, el, WCACHE_ECORRUPT, "header checksum mismatch");
    if (h->flags & WCI_SNAP_FLAGS_REQUIRED & ~WCI_SNAP_FLAGS_KNOWN)
        return wci_snap_err(eb, el, WCACHE_EVERSION, "header flags 0x%x need a newer reader",
                            h->flags & WCI_SNAP_FLAGS_REQUIRED & ~WCI_SNAP_FLAGS_KNOWN);
    h->revision = (int64_t)wci_get64(p + 24);
    h->compacted = (int64_t)wci_get64(p + 32);
    h->objects = wci_get64(p + 40);
    h->created_ns = (int64_t)wci_get64(p + 48);
    h->block_bytes = wci_get32(p + 56);
    h->source_id = p + WCI_SNAP_HDR_FIXED;
    if (h->revision < 0 || h->compacted < 0 || h->compacted > h->revision)
        return wci_snap_err(eb, el, WCACHE_ECORRUPT, "header revisions %lld/%lld impossible",
                            (long long)h->revision, (long long)h->compacted);
    if (h->revision == 0 && h->objects)
        return wci_snap_err(eb, el, WCACHE_ECORRUPT, "objects at revision 0");
    h->base_rev = 0;
    h->base_hash = h->tombstones = 0;
    if (h->minor >= 1) {
        const unsigned char *x = p + WCI_SNAP_HDR_FIXED + h->source_id_len;
        h->base_rev = (int64_t)wci_get64(x);
        h->base_hash = wci_get64(x + 8);
        h->tombstones = wci_get64(x + 16);
    }
    if (h->flags & WCACHE_SNAP_FLAG_DELTA) {
        if (h->minor < 1 || h->base_rev < 0 || h->base_rev > h->revision ||
            h->tombstones > h->objects)
            return wci_snap_err(eb, el, WCACHE_ECORRUPT,
                                "delta header impossible: base revision %lld, S %lld",
                                (long long)h->base_rev, (long long)h->revision);
    } else if (h->base_rev || h->base_hash || h->tombstones) {
        return wci_snap_err(eb, el, WCACHE_ECORRUPT, "a full snapshot with a base");
    }
    return WCACHE_OK;
}

void wci_snap_trailer_encode(unsigned char *out, const wci_snap_trailer *t)
{
    memset(out, 0, WCI_SNAP_TRAILER);
    wci_put32(out, WCI_SNAP_BLOCK_TRAILER);
    wci_put64(out + 8, t->blocks);
    wci_put64(out + 16, t->objects);
    wci_put64(out + 24, t->kv_bytes);
    wci_put64(out + 32, t->raw_bytes);
    wci_put64(out + 40, XXH3_64bits(out, 40));
    wci_put64(out + 48, t->file_hash);
    memcpy(out + 56, wci_snap_end_magic, 8);
}

int wci_snap_trailer_decode(const unsigned char *p, wci_snap_trailer *t, char *eb, size_t el)
{
    if (memcmp(p + 56, wci_snap_end_magic, 8) != 0 || wci_get32(p) != WCI_SNAP_BLOCK_TRAILER)
        return wci_snap_err(eb, el, WCACHE_ECORRUPT, "truncated: no trailer at the end");
    if (XXH3_64bits(p, 40) != wci_get64(p + 40) || wci_get32(p + 4) != 0)
        return wci_snap_err(eb, el, WCACHE_ECORRUPT, "trailer checksum mismatch");
    t->blocks = wci_get64(p + 8);
    t->objects = wci_get64(p + 16);
    t->kv_bytes = wci_get64(p + 24);
    t->raw_bytes = wci_get64(p + 32);
    t->file_hash = wci_get64(p + 48);
    return WCACHE_OK;
}

void wci_snap_frame_encode(unsigned char *out, uint32_t nrec, uint64_t seq, const void *payload,
                           uint32_t csize, uint32_t rsize)
{
    wci_put32(out, WCI_SNAP_BLOCK_DATA);
    wci_put32(out + 4, nrec);
    wci_put64(out + 8, seq);
    wci_put32(out + 16, csize);
    wci_put32(out + 20, rsize);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, out, 24);
    XXH3_64bits_update(&st, payload, csize);
    wci_put64(out + 24, XXH3_64bits_digest(&st));
}

size_t wci_snap_rec_encode(unsigned char *raw, const wcache_kv *kv)
{
    wci_put32(raw, (uint32_t)kv->key_len);
    wci_put32(raw + 4, (uint32_t)kv->value_len);
    wci_put64(raw + 8, (uint64_t)kv->create_revision);
    wci_put64(raw + 16, (uint64_t)kv->mod_revision);
    wci_put64(raw + 24, (uint64_t)kv->version);
    memcpy(raw + WCI_SNAP_REC, kv->key, kv->key_len);
    if (kv->value_len)
        memcpy(raw + WCI_SNAP_REC + kv->key_len, kv->value, kv->value_len);
    return WCI_SNAP_REC + kv->key_len + kv->value_len;
}

/* ------------------------------------------------------------------------ */
/* Reader                                                                   */
/* ------------------------------------------------------------------------ */

struct wcache_snapshot {
    uint32_t magic;
    wci_alloc a;
    int fd; /* -1 for a memory snapshot or a stream */
    const unsigned char *mem;
    wcache_snap_source_fn rd; /* a stream: no size, no read-ahead of the trailer */
    void *rd_ud;
    int rd_rc;          /* the code the callback failed with, else 0 */
    uint64_t size, pos; /* input size (a stream: UINT64_MAX) and read position */
    uint32_t max_block;
    char *eb;
    size_t el;
    int err; /* sticky error, or WCACHE_ENOTFOUND when done */
    unsigned char *hdr_bytes;
    wci_snap_hdr hdr;
    wci_snap_trailer tr;
    wci_xxh fh; /* hash of every byte read so far */
    ZSTD_DCtx *dctx;
    unsigned char *cbuf, *rbuf, *last_key;
    size_t ccap, rcap, last_cap, last_len;
    size_t rpos, rend;
    uint32_t rec_left;
    uint64_t blocks, objects, kv_bytes, raw_bytes, tombstones;
    int have_last;
};

static void *zalloc(void *opaque, size_t n)
{
    return wci_malloc(opaque, n);
}

static void zfree(void *opaque, void *p)
{
    wci_free(opaque, p);
}

static int fail(wcache_snapshot *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(wcache_snapshot *s, int code, const char *fmt, ...)
{
    if (s->eb && s->el) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->eb, s->el, fmt, ap);
        va_end(ap);
    }
    s->err = code;
    return code;
}

/* The read callback failed with rc.  Kept as it is for the restore to
 * return; the sticky error is never WCACHE_ENOTFOUND, which means "a sound
 * end" to the reader's callers. */
static int source_failed(wcache_snapshot *s, int rc, uint64_t off)
{
    s->rd_rc = rc > 0 && rc < WCACHE_CODE_LAST ? rc : WCACHE_ESYS;
    return fail(s, s->rd_rc == WCACHE_ENOTFOUND ? WCACHE_ECORRUPT : s->rd_rc,
                "reading the stream at offset %llu: %s", (unsigned long long)off,
                wcache_strerror(s->rd_rc));
}

int wci_snap_source_rc(const wcache_snapshot *s)
{
    return s->rd_rc;
}

/* Exactly n bytes from the stream's callback, however it cuts them. */
static int stream_read(wcache_snapshot *s, unsigned char *buf, size_t n, const char *what)
{
    for (size_t have = 0; have < n;) {
        size_t got = 0;
        int rc = s->rd(buf + have, n - have, &got, s->rd_ud);
        if (rc != WCACHE_OK)
            return source_failed(s, rc, s->pos + have);
        if (got > n - have)
            return fail(s, WCACHE_EINVAL, "the read callback gave %zu bytes for room for %zu",
                        got, n - have);
        if (got == 0)
            return fail(s, WCACHE_ECORRUPT,
                        "truncated: the stream ends in the %s at offset %llu", what,
                        (unsigned long long)(s->pos + have));
        have += got;
    }
    return WCACHE_OK;
}

/* Read exactly n bytes at the read position into buf, hashing them. */
static int in_read_raw(wcache_snapshot *s, void *buf, size_t n, const char *what, int hash)
{
    if (n > s->size - s->pos)
        return fail(s, WCACHE_ECORRUPT, "truncated: %s at offset %llu runs past the end", what,
                    (unsigned long long)s->pos);
    if (n == 0)
        return WCACHE_OK; /* buf may be an empty buffer's NULL */
    if (s->rd) {
        int rc = stream_read(s, buf, n, what);
        if (rc)
            return rc;
    } else if (s->fd < 0) {
        memcpy(buf, s->mem + s->pos, n);
    } else if (wci_pread_all(s->fd, buf, n, s->pos) != 0) {
        return fail(s, errno ? WCACHE_ESYS : WCACHE_ECORRUPT, "read at offset %llu: %s",
                    (unsigned long long)s->pos, errno ? strerror(errno) : "file shrank");
    }
    if (hash)
        XXH3_64bits_update(s->fh.st, buf, n);
    s->pos += n;
    return WCACHE_OK;
}

static int in_read(wcache_snapshot *s, void *buf, size_t n, const char *what)
{
    return in_read_raw(s, buf, n, what, 1);
}

static int grow(wcache_snapshot *s, unsigned char **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return WCACHE_OK;
    wci_free(&s->a, *buf);
    *buf = wci_malloc(&s->a, n);
    *cap = *buf ? n : 0;
    return *buf ? WCACHE_OK : fail(s, WCACHE_ENOMEM, "out of memory for %zu bytes", n);
}

static int read_header(wcache_snapshot *s)
{
    unsigned char fixed[WCI_SNAP_HDR_FIXED];
    if (s->size < WCI_SNAP_HDR_FIXED)
        return fail(s, WCACHE_ECORRUPT, "truncated: %llu bytes is too short for a header",
                    (unsigned long long)s->size);
    int rc = in_read(s, fixed, sizeof fixed, "header");
    if (!rc)
        rc = wci_snap_hdr_fixed(fixed, &s->hdr, s->eb, s->el);
    if (rc)
        return s->err = rc;
    size_t n = s->hdr.header_len;
    s->hdr_bytes = wci_malloc(&s->a, n);
    if (!s->hdr_bytes)
        return fail(s, WCACHE_ENOMEM, "out of memory");
    memcpy(s->hdr_bytes, fixed, sizeof fixed);
    rc = in_read(s, s->hdr_bytes + sizeof fixed, n - sizeof fixed, "header");
    if (!rc)
        rc = wci_snap_hdr_check(s->hdr_bytes, &s->hdr, s->eb, s->el);
    return rc ? (s->err = rc) : WCACHE_OK;
}

/* The trailer is read ahead (not hashed now) so that inspect is cheap. */
static int read_trailer(wcache_snapshot *s)
{
    unsigned char t[WCI_SNAP_TRAILER];
    uint64_t hdr = s->hdr.header_len;
    if (s->size < hdr + WCI_SNAP_TRAILER)
        return fail(s, WCACHE_ECORRUPT, "truncated: no room for a trailer");
    uint64_t off = s->size - WCI_SNAP_TRAILER;
    if (s->fd < 0)
        memcpy(t, s->mem + off, sizeof t);
    else if (wci_pread_all(s->fd, t, sizeof t, off) != 0)
        return fail(s, WCACHE_ESYS, "read trailer: %s", strerror(errno));
    int rc = wci_snap_trailer_decode(t, &s->tr, s->eb, s->el);
    if (rc)
        return s->err = rc;
    if (s->tr.objects != s->hdr.objects)
        return fail(s, WCACHE_ECORRUPT,
                    "count mismatch: header says %llu objects, trailer %llu",
                    (unsigned long long)s->hdr.objects, (unsigned long long)s->tr.objects);
    return WCACHE_OK;
}

static int reader_new(wcache_snapshot **out, const wcache_snapshot_read_opts *o)
{
    const wcache_allocator *ua = NULL;
    uint32_t max_block = WCI_SNAP_DEFAULT_MAX_BLOCK;
    if (!out)
        return WCACHE_EINVAL;
    *out = NULL;
    if (o) {
        if (o->size < sizeof(wcache_snapshot_read_opts) || o->max_block_bytes >= (1u << 31))
            return wci_snap_err(o->errbuf, o->errbuf_len, WCACHE_EINVAL,
                                "bad wcache_snapshot_read_opts");
        ua = o->alloc;
        if (o->max_block_bytes)
            max_block = o->max_block_bytes;
    }
    wci_alloc a = wci_libc_alloc;
    if (ua) {
        if (ua->size < sizeof *ua || !ua->alloc || !ua->free)
            return WCACHE_EINVAL;
        a = (wci_alloc){ua->alloc, ua->free, ua->userdata};
    }
    wcache_snapshot *s = wci_calloc(&a, 1, sizeof *s);
    if (!s)
        return WCACHE_ENOMEM;
    s->a = a;
    s->magic = SNAP_MAGIC;
    s->fd = -1;
    s->max_block = max_block;
    if (o) {
        s->eb = o->errbuf;
        s->el = o->errbuf_len;
    }
    ZSTD_customMem cm = {zalloc, zfree, &s->a};
    s->dctx = ZSTD_createDCtx_advanced(cm);
    if (!s->dctx || wci_xxh_init(&s->fh, &s->a) != WCACHE_OK) {
        wcache_snapshot_close(s);
        return WCACHE_ENOMEM;
    }
    *out = s;
    return WCACHE_OK;
}

static int reader_start(wcache_snapshot **out, wcache_snapshot *s)
{
    int rc = read_header(s);
    if (!rc)
        rc = read_trailer(s);
    if (rc) {
        wcache_snapshot_close(s);
        return rc;
    }
    *out = s;
    return WCACHE_OK;
}

wcache_code wcache_snapshot_open_mem(wcache_snapshot **out, const void *buf, size_t len,
                                     const wcache_snapshot_read_opts *o)
{
    wcache_snapshot *s;
    if (!out)
        return WCACHE_EINVAL;
    *out = NULL;
    if (!buf && len)
        return WCACHE_EINVAL;
    int rc = reader_new(&s, o);
    if (rc)
        return rc;
    *out = NULL;
    s->mem = buf;
    s->size = len;
    return reader_start(out, s);
}

int wci_snap_open_stream(wcache_snapshot **out, wcache_snap_source_fn rd, void *ud,
                         const wcache_snapshot_read_opts *o)
{
    wcache_snapshot *s;
    int rc = reader_new(&s, o);
    if (rc)
        return rc;
    *out = NULL;
    s->rd = rd;
    s->rd_ud = ud;
    s->size = UINT64_MAX;
    /* A stream's trailer is checked when the blocks get there. */
    rc = read_header(s);
    if (rc) {
        rc = s->rd_rc ? s->rd_rc : rc;
        wcache_snapshot_close(s);
        return rc;
    }
    *out = s;
    return WCACHE_OK;
}

wcache_code wcache_snapshot_open(wcache_snapshot **out, const char *path,
                                 const wcache_snapshot_read_opts *o)
{
    wcache_snapshot *s;
    if (!out)
        return WCACHE_EINVAL;
    *out = NULL;
    if (!path)
        return WCACHE_EINVAL;
    int rc = reader_new(&s, o);
    if (rc)
        return rc;
    *out = NULL;
    struct stat st;
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0 || fstat(s->fd, &st) != 0) {
        rc = fail(s, WCACHE_ESYS, "open %s: %s", path, strerror(errno));
        wcache_snapshot_close(s);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = fail(s, WCACHE_EINVAL, "%s: not a regular file", path);
        wcache_snapshot_close(s);
        return rc;
    }
    s->size = (uint64_t)st.st_size;
    return reader_start(out, s);
}

void wcache_snapshot_close(wcache_snapshot *s)
{
    if (!s || s->magic != SNAP_MAGIC)
        return;
    wci_alloc a = s->a;
    if (s->fd >= 0)
        close(s->fd);
    ZSTD_freeDCtx(s->dctx);
    wci_xxh_free(&s->fh, &a);
    wci_free(&a, s->hdr_bytes);
    wci_free(&a, s->cbuf);
    wci_free(&a, s->rbuf);
    wci_free(&a, s->last_key);
    s->magic = 0;
    wci_free(&a, s);
}

void wci_snap_info_copy(wcache_snapshot_info *dst, const wcache_snapshot_info *src)
{
    uint32_t size = dst->size;
    memcpy(dst, src, size < sizeof *src ? size : sizeof *src);
    dst->size = size;
}

wcache_code wcache_snapshot_get_info(const wcache_snapshot *s, wcache_snapshot_info *info)
{
    if (!s || s->magic != SNAP_MAGIC || !info || info->size < WCI_SNAP_INFO_V0)
        return WCACHE_EINVAL;
    wcache_snapshot_info in = {.size = sizeof in};
    in.format_major = s->hdr.major;
    in.format_minor = s->hdr.minor;
    in.flags = s->hdr.flags;
    in.revision = s->hdr.revision;
    in.compacted_revision = s->hdr.compacted;
    in.objects = s->hdr.objects;
    in.created_unix_ns = s->hdr.created_ns;
    in.source_id = s->hdr.source_id;
    in.source_id_len = s->hdr.source_id_len;
    in.blocks = s->tr.blocks;
    in.kv_bytes = s->tr.kv_bytes;
    in.raw_bytes = s->tr.raw_bytes;
    in.file_bytes = s->rd ? (s->err == WCACHE_ENOTFOUND ? s->pos : 0) : s->size;
    in.base_revision = s->hdr.base_rev;
    in.base_file_hash = s->hdr.base_hash;
    in.tombstones = s->hdr.tombstones;
    in.file_hash = s->tr.file_hash;
    wci_snap_info_copy(info, &in);
    return WCACHE_OK;
}

static int key_cmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

/* Check one record at rbuf[pos..end) against the invariants of wcsnap(5). */
static int check_rec(wcache_snapshot *s, size_t pos, size_t end, wcache_kv *kv)
{
    if (end - pos < WCI_SNAP_REC)
        return fail(s, WCACHE_ECORRUPT, "block %llu: record header cut short",
                    (unsigned long long)s->blocks);
    const unsigned char *p = s->rbuf + pos;
    uint64_t kl = wci_get32(p), vl = wci_get32(p + 4);
    if (kl == 0 || kl + vl > end - pos - WCI_SNAP_REC)
        return fail(s, WCACHE_ECORRUPT, "block %llu: record length out of bounds",
                    (unsigned long long)s->blocks);
    kv->key = p + WCI_SNAP_REC;
    kv->key_len = kl;
    kv->value = p + WCI_SNAP_REC + kl;
    kv->value_len = vl;
    kv->create_revision = (int64_t)wci_get64(p + 8);
    kv->mod_revision = (int64_t)wci_get64(p + 16);
    kv->version = (int64_t)wci_get64(p + 24);
    int delta = (s->hdr.flags & WCACHE_SNAP_FLAG_DELTA) != 0;
    int tomb = delta && kv->version == 0 && kv->create_revision == 0 && vl == 0;
    if ((!tomb && (kv->create_revision < 1 || kv->mod_revision < kv->create_revision ||
                   kv->version < 1)) ||
        kv->mod_revision > s->hdr.revision || (delta && kv->mod_revision <= s->hdr.base_rev))
        return fail(s, WCACHE_ECORRUPT, "block %llu: record revisions %lld/%lld/%lld invalid",
                    (unsigned long long)s->blocks, (long long)kv->create_revision,
                    (long long)kv->mod_revision, (long long)kv->version);
    s->tombstones += tomb;
    return WCACHE_OK;
}

static int save_last_key(wcache_snapshot *s, const wcache_kv *kv)
{
    int rc = grow(s, &s->last_key, &s->last_cap, kv->key_len);
    if (rc)
        return rc;
    memcpy(s->last_key, kv->key, kv->key_len);
    s->last_len = kv->key_len;
    s->have_last = 1;
    return WCACHE_OK;
}

/* Validate every record of the decoded block before handing any out. */
static int check_block(wcache_snapshot *s, uint32_t nrec, size_t rsize)
{
    size_t pos = 0;
    wcache_kv kv, prev = {0};
    for (uint32_t i = 0; i < nrec; i++) {
        int rc = check_rec(s, pos, rsize, &kv);
        if (rc)
            return rc;
        const void *pk = i ? prev.key : s->last_key;
        size_t pl = i ? prev.key_len : s->last_len;
        if ((i || s->have_last) && key_cmp(pk, pl, kv.key, kv.key_len) >= 0)
            return fail(s, WCACHE_ECORRUPT, "block %llu: keys out of order",
                        (unsigned long long)s->blocks);
        s->kv_bytes += kv.key_len + kv.value_len;
        pos += WCI_SNAP_REC + kv.key_len + kv.value_len;
        prev = kv;
    }
    if (pos != rsize)
        return fail(s, WCACHE_ECORRUPT, "block %llu: %zu stray bytes after the records",
                    (unsigned long long)s->blocks, rsize - pos);
    return nrec ? save_last_key(s, &prev) : WCACHE_OK;
}

static int decompress(wcache_snapshot *s, uint32_t csize, uint32_t rsize)
{
    unsigned long long fcs = ZSTD_getFrameContentSize(s->cbuf, csize);
    if (fcs != rsize || ZSTD_findFrameCompressedSize(s->cbuf, csize) != csize)
        return fail(s, WCACHE_EZSTD, "block %llu: zstd frame does not match its frame header",
                    (unsigned long long)s->blocks);
    size_t r = ZSTD_decompressDCtx(s->dctx, s->rbuf, rsize, s->cbuf, csize);
    if (ZSTD_isError(r))
        return fail(s, WCACHE_EZSTD, "block %llu: %s", (unsigned long long)s->blocks,
                    ZSTD_getErrorName(r));
    if (r != rsize)
        return fail(s, WCACHE_ECORRUPT, "block %llu: decompressed to %zu bytes, not %u",
                    (unsigned long long)s->blocks, r, rsize);
    return WCACHE_OK;
}

static int frame_sizes(wcache_snapshot *s, const unsigned char *f, uint32_t *cs, uint32_t *rs)
{
    *cs = wci_get32(f + 16);
    *rs = wci_get32(f + 20);
    if (wci_get64(f + 8) != s->blocks)
        return fail(s, WCACHE_ECORRUPT, "block %llu: sequence number %llu",
                    (unsigned long long)s->blocks, (unsigned long long)wci_get64(f + 8));
    if (*rs > s->max_block)
        return fail(s, WCACHE_ETOOBIG,
                    "block %llu: %u bytes uncompressed, over the %u limit "
                    "(max_block_bytes)",
                    (unsigned long long)s->blocks, *rs, s->max_block);
    if (*cs > ZSTD_compressBound(*rs) || *cs > s->size - s->pos)
        return fail(s, WCACHE_ECORRUPT, "block %llu: compressed size %u impossible",
                    (unsigned long long)s->blocks, *cs);
    return WCACHE_OK;
}

static int read_block(wcache_snapshot *s, const unsigned char *f)
{
    uint32_t csize, rsize, nrec = wci_get32(f + 4);
    int rc = frame_sizes(s, f, &csize, &rsize);
    if (!rc)
        rc = grow(s, &s->cbuf, &s->ccap, csize);
    if (!rc)
        rc = in_read(s, s->cbuf, csize, "block");
    if (rc)
        return rc;
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, f, 24);
    XXH3_64bits_update(&st, s->cbuf, csize);
    if (XXH3_64bits_digest(&st) != wci_get64(f + 24))
        return fail(s, WCACHE_ECORRUPT, "block %llu at offset %llu: checksum mismatch",
                    (unsigned long long)s->blocks,
                    (unsigned long long)(s->pos - csize - WCI_SNAP_FRAME));
    if (nrec > s->hdr.objects - s->objects)
        return fail(s, WCACHE_ECORRUPT,
                    "count mismatch: block %llu holds more records than "
                    "the header's %llu",
                    (unsigned long long)s->blocks, (unsigned long long)s->hdr.objects);
    if (nrec > rsize / WCI_SNAP_REC)
        return fail(s, WCACHE_ECORRUPT, "block %llu: %u records cannot fit",
                    (unsigned long long)s->blocks, nrec);
    rc = grow(s, &s->rbuf, &s->rcap, rsize);
    if (!rc)
        rc = decompress(s, csize, rsize);
    if (!rc)
        rc = check_block(s, nrec, rsize);
    if (rc)
        return rc;
    s->rpos = 0;
    s->rend = rsize;
    s->rec_left = nrec;
    s->raw_bytes += rsize;
    s->blocks++;
    return WCACHE_OK;
}

/* The stream must end right after the trailer: a byte more is damage (or
 * two objects run together), as stray bytes after a file's trailer are. */
static int stream_end(wcache_snapshot *s)
{
    unsigned char x;
    size_t got = 0;
    int rc = s->rd(&x, 1, &got, s->rd_ud);
    if (rc != WCACHE_OK)
        return source_failed(s, rc, s->pos);
    if (got)
        return fail(s, WCACHE_ECORRUPT, "stray bytes after the trailer at offset %llu",
                    (unsigned long long)s->pos);
    return WCACHE_OK;
}

static int finish(wcache_snapshot *s, const unsigned char *f)
{
    unsigned char t[WCI_SNAP_TRAILER];
    wci_snap_trailer tr;
    memcpy(t, f, WCI_SNAP_FRAME);
    /* The file hash covers every byte before the trailer's hash field. */
    int rc = in_read(s, t + WCI_SNAP_FRAME, 16, "trailer");
    uint64_t h = XXH3_64bits_digest(s->fh.st);
    if (!rc)
        rc = in_read_raw(s, t + 48, 16, "trailer", 0);
    if (!rc)
        rc = wci_snap_trailer_decode(t, &tr, s->eb, s->el);
    if (rc)
        return s->err = rc;
    if (s->rd)
        rc = stream_end(s);
    if (rc)
        return rc;
    if (s->pos != s->size && !s->rd)
        return fail(s, WCACHE_ECORRUPT, "%llu stray bytes after the trailer",
                    (unsigned long long)(s->size - s->pos));
    if (h != tr.file_hash)
        return fail(s, WCACHE_ECORRUPT, "whole-file checksum mismatch");
    if (s->blocks != tr.blocks || s->objects != tr.objects || s->kv_bytes != tr.kv_bytes ||
        s->raw_bytes != tr.raw_bytes || tr.objects != s->hdr.objects ||
        s->tombstones != s->hdr.tombstones)
        return fail(s, WCACHE_ECORRUPT,
                    "count mismatch: read %llu blocks/%llu objects/%llu tombstones, "
                    "trailer says %llu/%llu, header %llu objects/%llu tombstones",
                    (unsigned long long)s->blocks, (unsigned long long)s->objects,
                    (unsigned long long)s->tombstones, (unsigned long long)tr.blocks,
                    (unsigned long long)tr.objects, (unsigned long long)s->hdr.objects,
                    (unsigned long long)s->hdr.tombstones);
    s->tr = tr; /* a stream learns its trailer only now */
    s->err = WCACHE_ENOTFOUND;
    return WCACHE_ENOTFOUND;
}

/* Skip a block of a type a later minor version added, after its checksum. */
static int skip_block(wcache_snapshot *s, const unsigned char *f)
{
    uint32_t csize = wci_get32(f + 16);
    if (csize > s->max_block || csize > s->size - s->pos)
        return fail(s, WCACHE_ECORRUPT, "skippable block of %u bytes impossible", csize);
    int rc = grow(s, &s->cbuf, &s->ccap, csize);
    if (!rc)
        rc = in_read(s, s->cbuf, csize, "block");
    if (rc)
        return rc;
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, f, 24);
    XXH3_64bits_update(&st, s->cbuf, csize);
    if (XXH3_64bits_digest(&st) != wci_get64(f + 24))
        return fail(s, WCACHE_ECORRUPT, "skippable block: checksum mismatch");
    return WCACHE_OK;
}

/* Move to the next block holding records, or to the end. */
static int advance(wcache_snapshot *s)
{
    while (s->rec_left == 0) {
        unsigned char f[WCI_SNAP_FRAME];
        int rc = in_read(s, f, sizeof f, "block frame");
        if (rc)
            return rc;
        uint32_t type = wci_get32(f);
        if (type == WCI_SNAP_BLOCK_TRAILER)
            return finish(s, f);
        if (type & WCI_SNAP_BLOCK_SKIPPABLE)
            rc = skip_block(s, f);
        else if (type == WCI_SNAP_BLOCK_DATA)
            rc = read_block(s, f);
        else
            rc = fail(
                s, s->hdr.minor > WCACHE_SNAP_FORMAT_MINOR ? WCACHE_EVERSION : WCACHE_ECORRUPT,
                "unknown block type 0x%x at offset %llu", type,
                (unsigned long long)(s->pos - WCI_SNAP_FRAME));
        if (rc)
            return rc;
    }
    return WCACHE_OK;
}

wcache_code wcache_snapshot_next(wcache_snapshot *s, wcache_kv *out)
{
    if (!s || s->magic != SNAP_MAGIC || !out)
        return WCACHE_EINVAL;
    if (s->err)
        return s->err;
    int rc = advance(s);
    if (rc)
        return rc;
    /* check_block() has proven this record sound already. */
    s->rpos += wci_snap_rec_decode(s->rbuf + s->rpos, out);
    s->rec_left--;
    s->objects++;
    return WCACHE_OK;
}

size_t wci_snap_rec_decode(const unsigned char *p, wcache_kv *kv)
{
    kv->key_len = wci_get32(p);
    kv->value_len = wci_get32(p + 4);
    kv->create_revision = (int64_t)wci_get64(p + 8);
    kv->mod_revision = (int64_t)wci_get64(p + 16);
    kv->version = (int64_t)wci_get64(p + 24);
    kv->key = p + WCI_SNAP_REC;
    kv->value = p + WCI_SNAP_REC + kv->key_len;
    return WCI_SNAP_REC + kv->key_len + kv->value_len;
}

int wci_snap_next_block(wcache_snapshot *s, wci_snap_block *b)
{
    if (s->err)
        return s->err;
    int rc = advance(s);
    if (rc)
        return rc;
    /* The caller takes the buffer; the next block gets a fresh one. */
    b->raw = s->rbuf;
    b->len = s->rend;
    b->nrec = s->rec_left;
    s->rbuf = NULL;
    s->rcap = 0;
    s->objects += s->rec_left;
    s->rec_left = 0;
    return WCACHE_OK;
}

void wci_snap_block_free(wcache_snapshot *s, wci_snap_block *b)
{
    wci_free(&s->a, b->raw);
    b->raw = NULL;
}

wcache_code wcache_snapshot_verify(wcache_snapshot *s)
{
    if (!s || s->magic != SNAP_MAGIC)
        return WCACHE_EINVAL;
    wcache_kv kv;
    int rc;
    while ((rc = wcache_snapshot_next(s, &kv)) == WCACHE_OK)
        ;
    return rc == WCACHE_ENOTFOUND ? WCACHE_OK : rc;
}
