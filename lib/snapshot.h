/*
 * snapshot.h - private interface between the snapshot files of lib/.
 *
 * snap_codec.c owns the wcsnap(5) byte layout (header, block frames,
 * records, trailer) and the reader; snapshot.c the writer and restore;
 * snap_file.c the file descriptors: atomic writes, positioned reads, prune.
 * Every multi-byte field is little-endian whatever the host.
 */
#ifndef WCI_SNAPSHOT_H
#define WCI_SNAPSHOT_H

#include <stdint.h>
#include <stddef.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "alloc.h"
#include "watchcache.h"

#define WCI_SNAP_HDR_FIXED 64 /* header bytes before the source identity */
#define WCI_SNAP_HDR_MAX (1u << 20)
#define WCI_SNAP_FRAME 32 /* block frame header */
#define WCI_SNAP_TRAILER 64
#define WCI_SNAP_REC 32 /* record header before key and value */
#define WCI_SNAP_BLOCK_DATA 1u
#define WCI_SNAP_BLOCK_TRAILER 2u
#define WCI_SNAP_BLOCK_SKIPPABLE 0x80000000u /* minor versions may add these */
#define WCI_SNAP_FLAGS_REQUIRED 0x0000ffffu  /* unknown ones: EVERSION */
#define WCI_SNAP_FLAGS_KNOWN WCACHE_SNAP_FLAG_DELTA
#define WCI_SNAP_HDR_EXT 24 /* 1.1: base revision, base file hash, tombstones */
#define WCI_SNAP_DEFAULT_MAX_BLOCK (64u << 20)
#define WCI_SNAP_DEFAULT_BLOCK (1u << 20)

extern const unsigned char wci_snap_magic[8];
extern const unsigned char wci_snap_end_magic[8];

/* The decoded header: what wcache_snapshot_info reports from it. */
typedef struct wci_snap_hdr {
    uint32_t major, minor, flags, header_len, block_bytes;
    int64_t revision, compacted, created_ns;
    uint64_t objects;
    int64_t base_rev;               /* delta: the base's revision; else 0 */
    uint64_t base_hash;             /* delta: the base's whole-file checksum; else 0 */
    uint64_t tombstones;            /* delta: records that delete a key */
    const unsigned char *source_id; /* points into the encoded header */
    uint32_t source_id_len;
} wci_snap_hdr;

typedef struct wci_snap_trailer {
    uint64_t blocks, objects, kv_bytes, raw_bytes, file_hash;
} wci_snap_trailer;

/* Error detail: formats into buf (may be NULL) and returns code. */
int wci_snap_err(char *buf, size_t len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

void wci_put32(unsigned char *p, uint32_t v);
void wci_put64(unsigned char *p, uint64_t v);
uint32_t wci_get32(const unsigned char *p);
uint64_t wci_get64(const unsigned char *p);

/* Encode a header into out (wci_snap_hdr_len(id_len, minor) bytes). */
size_t wci_snap_hdr_len(size_t source_id_len, uint32_t minor);
void wci_snap_hdr_encode(unsigned char *out, const wci_snap_hdr *h);
/* Decode the fixed part; the caller then reads header_len bytes in all. */
int wci_snap_hdr_fixed(const unsigned char *p, wci_snap_hdr *h, char *eb, size_t el);
int wci_snap_hdr_check(const unsigned char *p, wci_snap_hdr *h, char *eb, size_t el);

void wci_snap_trailer_encode(unsigned char *out, const wci_snap_trailer *t);
int wci_snap_trailer_decode(const unsigned char *p, wci_snap_trailer *t, char *eb, size_t el);

/* Frame header of a block of nrec records, checksum over frame + payload. */
void wci_snap_frame_encode(unsigned char *out, uint32_t nrec, uint64_t seq, const void *payload,
                           uint32_t csize, uint32_t rsize);

/* Append one record to raw (which has room: WCI_SNAP_REC + klen + vlen).
 * A tombstone (delta only) is a record with version 0: no value, create
 * revision 0, mod revision the deletion's. */
size_t wci_snap_rec_encode(unsigned char *raw, const wcache_kv *kv);

/* Decode the (already validated) record at p; returns its size. */
size_t wci_snap_rec_decode(const unsigned char *p, wcache_kv *kv);

/* A whole validated block of records, for a consumer on another thread.
 * Not to be mixed with wcache_snapshot_next() on the same handle. */
typedef struct wci_snap_block {
    unsigned char *raw;
    size_t len;
    uint32_t nrec;
} wci_snap_block;
/* WCACHE_OK with *b filled (free it with wci_snap_block_free), the
 * reader's WCACHE_ENOTFOUND at a sound end, or its error. */
int wci_snap_next_block(wcache_snapshot *s, wci_snap_block *b);
void wci_snap_block_free(wcache_snapshot *s, wci_snap_block *b);

/* A reader of a stream: reads and checks the header now; the trailer is
 * checked when the blocks reach it, then the end of the stream. */
int wci_snap_open_stream(wcache_snapshot **out, wcache_snap_source_fn rd, void *ud,
                         const wcache_snapshot_read_opts *o);
/* The code a stream's read callback failed with, 0 if it never did. */
int wci_snap_source_rc(const wcache_snapshot *s);

/* A 64-byte aligned XXH3 state inside memory from a wci_alloc. */
typedef struct wci_xxh {
    void *mem;
    XXH3_state_t *st;
} wci_xxh;
int wci_xxh_init(wci_xxh *x, const wci_alloc *a);
void wci_xxh_free(wci_xxh *x, const wci_alloc *a);

/* Copy what fits of src into dst, whose size field says how much fits
 * (callers compiled against an older, shorter struct). */
void wci_snap_info_copy(wcache_snapshot_info *dst, const wcache_snapshot_info *src);
/* The size of wcache_snapshot_info / _write_opts before 1.1 added fields. */
#define WCI_SNAP_INFO_V0 offsetof(wcache_snapshot_info, base_revision)
#define WCI_SNAP_WOPTS_V0 offsetof(wcache_snapshot_write_opts, base)

/* snap_delta.c: the keys changed between two pinned views, in key order. */
typedef struct wci_changes wci_changes;
int wci_changes_collect(wcache_view *from, wcache_view *to, wci_changes **out);
size_t wci_changes_count(const wci_changes *ch);
uint64_t wci_changes_tombstones(const wci_changes *ch);
/* Entry i as a record: a put, or a tombstone (version 0). */
void wci_changes_get(const wci_changes *ch, size_t i, wcache_kv *kv);
void wci_changes_free(wci_changes *ch);
/* The live keys at v's revision, in O(changes since it). */
int wci_count_at(wcache_view *v, uint64_t *out);
/* The cache's own allocator, for the writer's buffers. */
wci_alloc wci_cache_alloc(wcache_cache *c);

/* snapshot.c: the stream writer; *bytes gets the count written even on error. */
int wci_snap_write_core(wcache_cache *c, wcache_snap_sink_fn sink, void *sink_userdata,
                        const wcache_snapshot_write_opts *o, wcache_snapshot_info *info,
                        uint64_t *bytes);

/* 1 when o (NULL allowed) is a valid set of write options. */
int wci_snap_opts_ok(const wcache_snapshot_write_opts *o);

/* snap_file.c */
int wci_write_all(int fd, const void *buf, size_t len);
int wci_pread_all(int fd, void *buf, size_t len, uint64_t off);
int wci_read_all(int fd, void *buf, size_t len, size_t *got);

#endif
