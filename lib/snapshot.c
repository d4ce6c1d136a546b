/*
 * snapshot.c - writing a cache to a wcsnap(5) stream, atomically to a file,
 * and restoring one.
 *
 * The writer reads through a view pinned at S with paged LISTs, so it never
 * blocks ingest, and it holds at most nslots blocks (the one being filled,
 * the ones being compressed, the one being written): memory is bounded by
 * the block size, not the cache size.  Blocks are numbered when they are
 * filled and written strictly in that order, whichever worker finishes
 * first.  The header needs the object count up front (a sink may not seek):
 * the cache's count, corrected by the history after the pinned revision
 * (wci_count_at), so no extra pass over the keys; the trailer is refused if
 * the records listed disagree with it.
 *
 * Restore decodes and validates the whole file into a batch before it
 * touches the cache, then hands the key-ordered batch to
 * wcache_ingest_load(), which loads sorted input in O(n).
 */
#define _POSIX_C_SOURCE 200809L
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#define LIST_PAGE 512

enum { SLOT_FREE, SLOT_QUEUED, SLOT_BUSY, SLOT_DONE };

typedef struct slot {
    unsigned char *raw, *comp;
    size_t raw_len, raw_cap, comp_len, comp_cap;
    uint32_t nrec;
    uint64_t seq;
    int state, rc;
} slot;

typedef struct writer {
    wcache_cache *c;
    wcache_view *v, *vb; /* vb: pinned at a delta's base revision */
    wci_changes *ch;     /* a delta's records */
    wci_alloc a;
    int level, workers, nslots;
    uint32_t block_bytes;
    wcache_snap_progress_fn progress;
    void *ud;
    char *eb;
    size_t el;
    wcache_snap_sink_fn sink;
    void *sink_ud;
    wci_xxh fh;
    wci_snap_hdr hdr;
    uint64_t bytes, objects, total, kv_bytes, raw_bytes, seq_next, seq_emit, file_hash;
    slot *slots, *cur;
    ZSTD_CCtx *cctx; /* the caller's own, when workers == 0 */
    pthread_t *threads;
    int nthreads, stop;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
} writer;

static void *zalloc(void *opaque, size_t n)
{
    return wci_malloc(opaque, n);
}

static void zfree(void *opaque, void *p)
{
    wci_free(opaque, p);
}

static ZSTD_CCtx *new_cctx(writer *w)
{
    ZSTD_customMem cm = {zalloc, zfree, &w->a};
    ZSTD_CCtx *z = ZSTD_createCCtx_advanced(cm);
    if (z && ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, w->level))) {
        ZSTD_freeCCtx(z);
        z = NULL;
    }
    return z;
}

static int step(writer *w, int st)
{
    if (w->progress && w->progress(st, w->bytes, w->objects, w->total, w->ud) != 0)
        return wci_snap_err(w->eb, w->el, WCACHE_ESTOPPED,
                            "stopped by the progress callback at step %d after %llu bytes", st,
                            (unsigned long long)w->bytes);
    return WCACHE_OK;
}

/* Every output byte passes here: progress/crash point, sink, file hash. */
static int emit(writer *w, const void *buf, size_t len, int hashed)
{
    int rc = step(w, WCACHE_SNAP_STEP_WRITE);
    if (rc)
        return rc;
    rc = w->sink(buf, len, w->sink_ud);
    if (rc)
        return rc > 0 && rc < WCACHE_CODE_LAST ? rc : WCACHE_ESYS;
    if (hashed)
        XXH3_64bits_update(w->fh.st, buf, len);
    w->bytes += len;
    return WCACHE_OK;
}

static int compress_slot(ZSTD_CCtx *z, const wci_alloc *a, slot *s)
{
    size_t bound = ZSTD_compressBound(s->raw_len);
    if (bound > s->comp_cap) {
        wci_free(a, s->comp);
        s->comp = wci_malloc(a, bound);
        s->comp_cap = s->comp ? bound : 0;
        if (!s->comp)
            return WCACHE_ENOMEM;
    }
    size_t r = ZSTD_compress2(z, s->comp, s->comp_cap, s->raw, s->raw_len);
    if (ZSTD_isError(r))
        return WCACHE_EZSTD;
    s->comp_len = r;
    return WCACHE_OK;
}

static int emit_slot(writer *w, slot *s)
{
    unsigned char f[WCI_SNAP_FRAME];
    if (s->rc)
        return wci_snap_err(w->eb, w->el, s->rc, "compressing block %llu: %s",
                            (unsigned long long)s->seq, wcache_strerror(s->rc));
    wci_snap_frame_encode(f, s->nrec, s->seq, s->comp, (uint32_t)s->comp_len,
                          (uint32_t)s->raw_len);
    int rc = emit(w, f, sizeof f, 1);
    if (!rc)
        rc = emit(w, s->comp, s->comp_len, 1);
    w->raw_bytes += s->raw_len;
    w->seq_emit++;
    s->raw_len = 0;
    s->nrec = 0;
    /* Workers scan every slot's state under the lock. */
    if (w->workers)
        pthread_mutex_lock(&w->mu);
    s->state = SLOT_FREE;
    if (w->workers)
        pthread_mutex_unlock(&w->mu);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Compression workers                                                      */
/* ------------------------------------------------------------------------ */

static slot *next_queued(writer *w)
{
    slot *best = NULL;
    for (int i = 0; i < w->nslots; i++)
        if (w->slots[i].state == SLOT_QUEUED && (!best || w->slots[i].seq < best->seq))
            best = &w->slots[i];
    return best;
}

static void *worker_main(void *arg)
{
    writer *w = arg;
    ZSTD_CCtx *z = new_cctx(w);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        slot *s;
        while (!w->stop && (s = next_queued(w)) == NULL)
            pthread_cond_wait(&w->work, &w->mu);
        if (w->stop)
            break;
        s->state = SLOT_BUSY;
        pthread_mutex_unlock(&w->mu);
        int rc = z ? compress_slot(z, &w->a, s) : WCACHE_ENOMEM;
        pthread_mutex_lock(&w->mu);
        s->rc = rc;
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&w->done);
    }
    pthread_mutex_unlock(&w->mu);
    ZSTD_freeCCtx(z);
    return NULL;
}

static int start_workers(writer *w)
{
    if (pthread_mutex_init(&w->mu, NULL) != 0)
        return WCACHE_ESYS;
    pthread_cond_init(&w->work, NULL);
    pthread_cond_init(&w->done, NULL);
    w->threads = wci_calloc(&w->a, (size_t)w->workers, sizeof *w->threads);
    if (!w->threads)
        return WCACHE_ENOMEM;
    for (; w->nthreads < w->workers; w->nthreads++)
        if (pthread_create(&w->threads[w->nthreads], NULL, worker_main, w) != 0)
            return wci_snap_err(w->eb, w->el, WCACHE_ESYS, "pthread_create failed");
    return WCACHE_OK;
}

static void stop_workers(writer *w)
{
    if (!w->threads)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->work);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    wci_free(&w->a, w->threads);
    w->threads = NULL;
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->done);
    pthread_mutex_destroy(&w->mu);
}

static int wait_emit(writer *w, slot *s)
{
    pthread_mutex_lock(&w->mu);
    while (s->state != SLOT_DONE)
        pthread_cond_wait(&w->done, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return emit_slot(w, s);
}

/* Hand the filled slot on, then make the next one current. */
static int submit(writer *w)
{
    slot *s = w->cur;
    if (s->nrec == 0)
        return WCACHE_OK;
    s->seq = w->seq_next++;
    if (!w->workers) {
        s->rc = compress_slot(w->cctx, &w->a, s);
        return emit_slot(w, s);
    }
    pthread_mutex_lock(&w->mu);
    s->state = SLOT_QUEUED;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
    w->cur = &w->slots[w->seq_next % (uint64_t)w->nslots];
    pthread_mutex_lock(&w->mu);
    int busy = w->cur->state != SLOT_FREE;
    pthread_mutex_unlock(&w->mu);
    /* Slots are reused in block order, so the one reused is the oldest. */
    return busy ? wait_emit(w, w->cur) : WCACHE_OK;
}

static int drain(writer *w)
{
    int rc = submit(w);
    while (!rc && w->seq_emit < w->seq_next)
        rc = wait_emit(w, &w->slots[w->seq_emit % (uint64_t)w->nslots]);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Records                                                                  */
/* ------------------------------------------------------------------------ */

static int reserve(writer *w, slot *s, size_t need)
{
    if (need <= s->raw_cap)
        return WCACHE_OK;
    size_t cap = need > w->block_bytes ? need : w->block_bytes;
    unsigned char *p = wci_malloc(&w->a, cap);
    if (!p)
        return WCACHE_ENOMEM;
    if (s->raw_len)
        memcpy(p, s->raw, s->raw_len);
    wci_free(&w->a, s->raw);
    s->raw = p;
    s->raw_cap = cap;
    return WCACHE_OK;
}

static int add_record(writer *w, const wcache_kv *kv)
{
    /* A block's size is a 32-bit field and a record may fill a block alone. */
    if (kv->key_len + kv->value_len > (size_t)UINT32_MAX - WCI_SNAP_REC)
        return wci_snap_err(w->eb, w->el, WCACHE_ETOOBIG, "object too large for format 1");
    size_t rec = WCI_SNAP_REC + kv->key_len + kv->value_len;
    int rc = WCACHE_OK;
    if (w->cur->raw_len && w->cur->raw_len + rec > w->block_bytes)
        rc = submit(w);
    if (!rc)
        rc = reserve(w, w->cur, w->cur->raw_len + rec);
    if (rc)
        return rc;
    w->cur->raw_len += wci_snap_rec_encode(w->cur->raw + w->cur->raw_len, kv);
    w->cur->nrec++;
    w->objects++;
    w->kv_bytes += kv->key_len + kv->value_len;
    return WCACHE_OK;
}

static int copy_token(writer *w, char **tok, size_t *cap, const wcache_list_result *r)
{
    if (r->token_len + 1 > *cap) {
        wci_free(&w->a, *tok);
        *cap = r->token_len + 64;
        *tok = wci_malloc(&w->a, *cap);
        if (!*tok)
            return WCACHE_ENOMEM;
    }
    memcpy(*tok, r->token, r->token_len);
    (*tok)[r->token_len] = 0;
    return WCACHE_OK;
}

static int list_all(writer *w, wcache_kv *items)
{
    wcache_list_opts lo = {.size = sizeof lo};
    wcache_list_result res = {.size = sizeof res};
    char *tok = NULL;
    size_t tcap = 0;
    int rc;
    for (;;) {
        rc = wcache_view_list(w->v, &lo, items, LIST_PAGE, &res);
        for (size_t i = 0; !rc && i < res.count; i++)
            rc = add_record(w, &items[i]);
        if (rc || !res.more)
            break;
        /* The result's token is borrowed only until the next list call. */
        rc = copy_token(w, &tok, &tcap, &res);
        if (rc)
            break;
        lo.token = tok;
        lo.token_len = res.token_len;
    }
    wci_free(&w->a, tok);
    if (rc)
        wci_snap_err(w->eb, w->el, rc, "listing the view at %lld: %s",
                     (long long)w->hdr.revision, wcache_strerror(rc));
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The stream: header, blocks, trailer                                      */
/* ------------------------------------------------------------------------ */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* o as a whole struct: the fields a shorter (older) caller's struct does
 * not have are zero. */
static wcache_snapshot_write_opts full_opts(const wcache_snapshot_write_opts *o)
{
    wcache_snapshot_write_opts f = {.size = sizeof f};
    if (o && o->size >= WCI_SNAP_WOPTS_V0) {
        memcpy(&f, o, o->size < sizeof f ? o->size : sizeof f);
        f.size = sizeof f;
    }
    return f;
}

int wci_snap_opts_ok(const wcache_snapshot_write_opts *o)
{
    return !o ||
           (o->size >= WCI_SNAP_WOPTS_V0 && o->level >= 0 && o->level <= 19 &&
            o->workers >= 0 && o->workers <= 64 &&
            (!o->block_bytes || (o->block_bytes >= 4096 && o->block_bytes <= (64u << 20))) &&
            o->source_id_len <= WCACHE_SNAP_MAX_SOURCE_ID &&
            (o->source_id || !o->source_id_len) && o->revision >= 0 &&
            o->compacted_revision >= 0);
}

static int check_opts(writer *w, const wcache_snapshot_write_opts *o)
{
    w->level = 1;
    w->a = wci_cache_alloc(w->c);
    w->block_bytes = WCI_SNAP_DEFAULT_BLOCK;
    if (!o)
        return WCACHE_OK;
    w->eb = o->errbuf;
    w->el = o->errbuf_len;
    if (!wci_snap_opts_ok(o))
        return wci_snap_err(w->eb, w->el, WCACHE_EINVAL, "bad wcache_snapshot_write_opts");
    w->level = o->level ? o->level : 1;
    w->workers = o->workers;
    if (o->block_bytes)
        w->block_bytes = o->block_bytes;
    w->progress = o->progress;
    w->ud = o->userdata;
    return WCACHE_OK;
}

/* A delta: the base's facts in the header, its revision pinned too. */
static int pin_base(writer *w, const wcache_snapshot_write_opts *o)
{
    wcache_snapshot_info bi = {.size = sizeof bi};
    int rc = wcache_snapshot_get_info(o->base, &bi);
    if (rc)
        return wci_snap_err(w->eb, w->el, rc, "base: not an open snapshot");
    if (bi.revision > w->hdr.revision)
        return wci_snap_err(w->eb, w->el, WCACHE_EINVAL,
                            "base revision %lld is above the delta's %lld",
                            (long long)bi.revision, (long long)w->hdr.revision);
    if (o->source_id_len && (o->source_id_len != bi.source_id_len ||
                             memcmp(o->source_id, bi.source_id, bi.source_id_len) != 0))
        return wci_snap_err(w->eb, w->el, WCACHE_EINVAL,
                            "source_id differs from the base's source identity");
    rc = wcache_view_create(w->c, &w->vb);
    if (!rc)
        rc = wcache_view_begin(w->vb, bi.revision);
    if (rc == WCACHE_ECOMPACTED)
        return wci_snap_err(w->eb, w->el, rc,
                            "the cache no longer holds the base revision %lld (compacted at "
                            "%lld): write a full snapshot",
                            (long long)bi.revision,
                            (long long)wcache_cache_compacted_revision(w->c));
    if (!rc)
        rc = wci_changes_collect(w->vb, w->v, &w->ch);
    if (rc)
        return wci_snap_err(w->eb, w->el, rc, "pinning the base revision %lld: %s",
                            (long long)bi.revision, wcache_strerror(rc));
    w->hdr.flags |= WCACHE_SNAP_FLAG_DELTA;
    w->hdr.base_rev = bi.revision;
    w->hdr.base_hash = bi.file_hash;
    w->hdr.tombstones = wci_changes_tombstones(w->ch);
    w->hdr.source_id = bi.source_id;
    w->hdr.source_id_len = (uint32_t)bi.source_id_len;
    w->hdr.objects = w->total = wci_changes_count(w->ch);
    return WCACHE_OK;
}

static int pin(writer *w, const wcache_snapshot_write_opts *o)
{
    int rc = wcache_view_create(w->c, &w->v);
    if (!rc)
        rc = wcache_view_begin(w->v, o->revision);
    wcache_list_opts all = {.size = sizeof all};
    if (!rc && !o->base && wci_count_at(w->v, &w->total) != WCACHE_OK)
        rc = wcache_view_count(w->v, &all, &w->total); /* no memory for the shortcut */
    if (rc)
        return wci_snap_err(w->eb, w->el, rc, "pinning a view: %s", wcache_strerror(rc));
    w->hdr = (wci_snap_hdr){.major = WCACHE_SNAP_FORMAT_MAJOR,
                            .minor = WCACHE_SNAP_FORMAT_MINOR,
                            .revision = wcache_view_revision(w->v),
                            .objects = w->total,
                            .block_bytes = w->block_bytes,
                            .created_ns = now_ns()};
    w->hdr.compacted = o->compacted_revision;
    w->hdr.source_id = o->source_id;
    w->hdr.source_id_len = (uint32_t)o->source_id_len;
    if (o->created_unix_ns)
        w->hdr.created_ns = o->created_unix_ns;
    if (w->hdr.compacted > w->hdr.revision)
        return wci_snap_err(w->eb, w->el, WCACHE_EINVAL, "compacted_revision above S");
    return o->base ? pin_base(w, o) : WCACHE_OK;
}

/* A delta's records, from the changes gathered at pin time. */
static int changes_all(writer *w)
{
    wcache_kv kv;
    int rc = WCACHE_OK;
    for (size_t i = 0; !rc && i < wci_changes_count(w->ch); i++) {
        wci_changes_get(w->ch, i, &kv);
        rc = add_record(w, &kv);
    }
    return rc;
}

static int setup(writer *w)
{
    w->nslots = w->workers ? w->workers + 2 : 1;
    w->slots = wci_calloc(&w->a, (size_t)w->nslots, sizeof *w->slots);
    if (!w->slots || wci_xxh_init(&w->fh, &w->a) != WCACHE_OK)
        return WCACHE_ENOMEM;
    w->cur = &w->slots[0];
    if (w->workers)
        return start_workers(w);
    w->cctx = new_cctx(w);
    return w->cctx ? WCACHE_OK : WCACHE_ENOMEM;
}

static void teardown(writer *w)
{
    stop_workers(w);
    ZSTD_freeCCtx(w->cctx);
    for (int i = 0; w->slots && i < w->nslots; i++) {
        wci_free(&w->a, w->slots[i].raw);
        wci_free(&w->a, w->slots[i].comp);
    }
    wci_free(&w->a, w->slots);
    wci_xxh_free(&w->fh, &w->a);
    wci_changes_free(w->ch);
    wcache_view_free(w->vb);
    wcache_view_free(w->v);
}

static int emit_header(writer *w)
{
    size_t n = wci_snap_hdr_len(w->hdr.source_id_len, w->hdr.minor);
    unsigned char *h = wci_malloc(&w->a, n);
    if (!h)
        return WCACHE_ENOMEM;
    wci_snap_hdr_encode(h, &w->hdr);
    int rc = emit(w, h, n, 1);
    wci_free(&w->a, h);
    return rc;
}

static int emit_trailer(writer *w)
{
    unsigned char t[WCI_SNAP_TRAILER];
    wci_snap_trailer tr = {w->seq_emit, w->objects, w->kv_bytes, w->raw_bytes, 0};
    if (w->objects != w->total)
        return wci_snap_err(w->eb, w->el, WCACHE_ECORRUPT,
                            "view listed %llu objects but counted %llu",
                            (unsigned long long)w->objects, (unsigned long long)w->total);
    wci_snap_trailer_encode(t, &tr);
    XXH3_64bits_update(w->fh.st, t, 48);
    w->file_hash = XXH3_64bits_digest(w->fh.st);
    wci_put64(t + 48, w->file_hash);
    return emit(w, t, sizeof t, 0);
}

static void fill_info(const writer *w, wcache_snapshot_info *info)
{
    if (!info || info->size < WCI_SNAP_INFO_V0)
        return;
    wcache_snapshot_info in = {.size = sizeof in,
                               .format_major = w->hdr.major,
                               .format_minor = w->hdr.minor,
                               .flags = w->hdr.flags,
                               .revision = w->hdr.revision,
                               .compacted_revision = w->hdr.compacted,
                               .objects = w->objects,
                               .created_unix_ns = w->hdr.created_ns,
                               .source_id = w->hdr.source_id,
                               .source_id_len = w->hdr.source_id_len,
                               .blocks = w->seq_emit,
                               .kv_bytes = w->kv_bytes,
                               .raw_bytes = w->raw_bytes,
                               .file_bytes = w->bytes,
                               .base_revision = w->hdr.base_rev,
                               .base_file_hash = w->hdr.base_hash,
                               .tombstones = w->hdr.tombstones,
                               .file_hash = w->file_hash};
    wci_snap_info_copy(info, &in);
}

static int write_stream(writer *w, const wcache_snapshot_write_opts *o)
{
    wcache_snapshot_write_opts f = full_opts(o);
    o = &f;
    wcache_kv *items = wci_calloc(&w->a, LIST_PAGE, sizeof *items);
    int rc = items ? WCACHE_OK : WCACHE_ENOMEM;
    if (!rc)
        rc = pin(w, o);
    if (!rc)
        rc = setup(w);
    if (!rc)
        rc = step(w, WCACHE_SNAP_STEP_BEGIN);
    if (!rc)
        rc = emit_header(w);
    if (!rc)
        rc = w->ch ? changes_all(w) : list_all(w, items);
    if (!rc)
        rc = drain(w);
    if (!rc)
        rc = emit_trailer(w);
    wci_free(&w->a, items);
    if (rc == WCACHE_ENOMEM)
        wci_snap_err(w->eb, w->el, rc, "out of memory");
    return rc;
}

int wci_snap_write_core(wcache_cache *c, wcache_snap_sink_fn sink, void *sink_userdata,
                        const wcache_snapshot_write_opts *o, wcache_snapshot_info *info,
                        uint64_t *bytes)
{
    /* The public API does not hand out the cache's allocator; the
     * writer's few bounded buffers come from libc. */
    writer w = {.c = c, .a = wci_libc_alloc, .sink = sink, .sink_ud = sink_userdata};
    int rc = check_opts(&w, o);
    if (!rc)
        rc = write_stream(&w, o);
    if (!rc)
        fill_info(&w, info);
    *bytes = w.bytes;
    teardown(&w);
    return rc;
}

wcache_code wcache_snapshot_write_to(wcache_cache *c, wcache_snap_sink_fn sink,
                                     void *sink_userdata, const wcache_snapshot_write_opts *o,
                                     wcache_snapshot_info *info)
{
    uint64_t bytes = 0;
    wcache_snapshot_info li = {.size = sizeof li};
    if (!c || !sink)
        return WCACHE_EINVAL;
    int rc = wci_snap_write_core(c, sink, sink_userdata, o, &li, &bytes);
    if (rc)
        return rc;
    if (o && o->progress)
        o->progress(WCACHE_SNAP_STEP_DONE, bytes, li.objects, li.objects, o->userdata);
    if (info && info->size >= WCI_SNAP_INFO_V0)
        wci_snap_info_copy(info, &li);
    return WCACHE_OK;
}

/* ------------------------------------------------------------------------ */
/* Restore                                                                  */
/* ------------------------------------------------------------------------ */

static int check_source(const wcache_snapshot_info *in, const wcache_snapshot_read_opts *o)
{
    if (!o || !o->expect_source_id)
        return WCACHE_OK;
    if (in->source_id_len == o->expect_source_id_len &&
        memcmp(in->source_id, o->expect_source_id, in->source_id_len) == 0)
        return WCACHE_OK;
    return wci_snap_err(o->errbuf, o->errbuf_len, WCACHE_EINVAL,
                        "snapshot of source \"%.*s\", not the expected \"%.*s\"",
                        (int)(in->source_id_len > 200 ? 200 : in->source_id_len),
                        (const char *)in->source_id,
                        (int)(o->expect_source_id_len > 200 ? 200 : o->expect_source_id_len),
                        (const char *)o->expect_source_id);
}

/*
 * Restore runs in two stages so that the two cores overlap: a reader thread
 * reads, checks and decompresses blocks (wci_snap_next_block) into a short
 * queue, and the calling thread copies their records into the batch.  The
 * queue holds at most QDEPTH blocks, so memory stays bounded beside the
 * batch itself.
 */
#define QDEPTH 4

typedef struct blockq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wcache_snapshot *s;
    wci_snap_block q[QDEPTH];
    int head, count, done, stop, rc;
} blockq;

static void *reader_main(void *arg)
{
    blockq *q = arg;
    for (;;) {
        wci_snap_block b = {0};
        int rc = wci_snap_next_block(q->s, &b);
        pthread_mutex_lock(&q->mu);
        while (!rc && q->count == QDEPTH && !q->stop)
            pthread_cond_wait(&q->cv, &q->mu);
        if (rc || q->stop) {
            q->done = 1;
            q->rc = rc == WCACHE_ENOTFOUND ? WCACHE_OK : rc;
            pthread_cond_broadcast(&q->cv);
            pthread_mutex_unlock(&q->mu);
            wci_snap_block_free(q->s, &b);
            return NULL;
        }
        q->q[(q->head + q->count++) % QDEPTH] = b;
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
    }
}

/* The next decoded block, or 0 when the reader is done. */
static int pop_block(blockq *q, wci_snap_block *b)
{
    pthread_mutex_lock(&q->mu);
    while (q->count == 0 && !q->done)
        pthread_cond_wait(&q->cv, &q->mu);
    int got = q->count > 0;
    if (got) {
        *b = q->q[q->head];
        q->head = (q->head + 1) % QDEPTH;
        q->count--;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return got;
}

/*
 * A chain's deltas, merged into one key-ordered overlay on the full
 * snapshot: for each key the newest record of any delta, a put or a
 * tombstone (version 0).  Records point into the deltas' decoded blocks,
 * which the overlay keeps.
 */
typedef struct overlay {
    wci_alloc a;
    wcache_kv *v;
    size_t n, i; /* i: the next record to merge */
    unsigned char **bufs;
    size_t nbufs, bufcap;
} overlay;

static void overlay_free(overlay *ov)
{
    for (size_t i = 0; i < ov->nbufs; i++)
        wci_free(&ov->a, ov->bufs[i]);
    wci_free(&ov->a, ov->bufs);
    wci_free(&ov->a, ov->v);
}

static int kv_cmp(const wcache_kv *x, const wcache_kv *y)
{
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

static int keep_buf(overlay *ov, unsigned char *p)
{
    if (ov->nbufs == ov->bufcap &&
        !wci_array_grow(&ov->a, &ov->bufs, &ov->bufcap, ov->nbufs, sizeof *ov->bufs, 16))
        return WCACHE_ENOMEM;
    ov->bufs[ov->nbufs++] = p;
    return WCACHE_OK;
}

/* Read the delta s whole and merge it over the overlay (s wins). */
static int overlay_add(overlay *ov, wcache_snapshot *s, uint64_t records)
{
    wcache_kv *d = wci_calloc(&ov->a, records ? records : 1, sizeof *d);
    size_t nd = 0;
    int rc = d ? WCACHE_OK : WCACHE_ENOMEM;
    wci_snap_block blk;
    while (!rc && (rc = wci_snap_next_block(s, &blk)) == WCACHE_OK) {
        size_t pos = 0;
        for (uint32_t i = 0; i < blk.nrec && nd < records; i++)
            pos += wci_snap_rec_decode(blk.raw + pos, &d[nd++]);
        rc = keep_buf(ov, blk.raw);
        if (rc)
            wci_snap_block_free(s, &blk);
    }
    if (rc == WCACHE_ENOTFOUND)
        rc = WCACHE_OK; /* the reader checked the counts against the header */
    wcache_kv *m = rc ? NULL : wci_calloc(&ov->a, ov->n + nd + 1, sizeof *m);
    if (!rc && !m)
        rc = WCACHE_ENOMEM;
    if (rc) {
        wci_free(&ov->a, d);
        return rc;
    }
    size_t i = 0, j = 0, k = 0;
    while (i < ov->n || j < nd) {
        int c = i == ov->n ? 1 : j == nd ? -1 : kv_cmp(&ov->v[i], &d[j]);
        m[k++] = c < 0 ? ov->v[i] : d[j];
        i += c <= 0;
        j += c >= 0;
    }
    wci_free(&ov->a, ov->v);
    wci_free(&ov->a, d);
    ov->v = m;
    ov->n = k;
    return WCACHE_OK;
}

static int put_kv(wcache_batch *b, const wcache_kv *kv)
{
    return wcache_batch_put_meta(b, kv->key, kv->key_len, kv->value, kv->value_len,
                                 kv->create_revision, kv->mod_revision, kv->version);
}

/* Overlay records before kv (all of them when kv is NULL) into b; the
 * tombstones among them delete keys the base did not have: nothing. */
static int overlay_upto(wcache_batch *b, overlay *ov, const wcache_kv *kv)
{
    for (; ov && ov->i < ov->n && (!kv || kv_cmp(&ov->v[ov->i], kv) < 0); ov->i++)
        if (ov->v[ov->i].version) {
            int rc = put_kv(b, &ov->v[ov->i]);
            if (rc)
                return rc;
        }
    return WCACHE_OK;
}

static int add_block(wcache_batch *b, const wci_snap_block *blk, overlay *ov)
{
    size_t pos = 0;
    wcache_kv kv;
    for (uint32_t i = 0; i < blk->nrec; i++) {
        pos += wci_snap_rec_decode(blk->raw + pos, &kv);
        int rc = overlay_upto(b, ov, &kv);
        if (rc)
            return rc;
        const wcache_kv *use = &kv;
        if (ov && ov->i < ov->n && kv_cmp(&ov->v[ov->i], &kv) == 0)
            use = ov->v[ov->i++].version ? &ov->v[ov->i - 1] : NULL;
        if (use && (rc = put_kv(b, use)) != WCACHE_OK)
            return rc;
    }
    return WCACHE_OK;
}

static void stop_reader(blockq *q, pthread_t th)
{
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(th, NULL);
    for (; q->count; q->count--, q->head = (q->head + 1) % QDEPTH)
        wci_snap_block_free(q->s, &q->q[q->head]);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
}

/* Decode and verify every record into b, with the overlay's changes;
 * nothing touches the cache. */
static int read_all(wcache_snapshot *s, wcache_batch *b, overlay *ov, char *eb, size_t el)
{
    blockq q = {.s = s};
    pthread_t th;
    if (pthread_mutex_init(&q.mu, NULL) != 0 || pthread_cond_init(&q.cv, NULL) != 0 ||
        pthread_create(&th, NULL, reader_main, &q) != 0)
        return wci_snap_err(eb, el, WCACHE_ESYS, "cannot start the reader thread");
    wci_snap_block blk;
    int rc = WCACHE_OK;
    while (!rc && pop_block(&q, &blk)) {
        rc = add_block(b, &blk, ov);
        wci_snap_block_free(s, &blk);
    }
    stop_reader(&q, th);
    if (!rc && !q.rc)
        rc = overlay_upto(b, ov, NULL);
    /* Worded only now: the reader thread may have been writing the errbuf. */
    if (rc)
        return wci_snap_err(eb, el, rc, "adding records to the batch: %s", wcache_strerror(rc));
    return q.rc;
}

static int load(wcache_cache *c, wcache_batch *b, int64_t rev)
{
    if (rev == 0)
        return WCACHE_OK; /* a snapshot of a cache that never saw an event */
    int rc = wcache_ingest_load(c, b, rev);
    if (rc == WCACHE_EINVAL && wcache_batch_count(b) == 0) {
        /* An empty state at rev > 0 (everything deleted). */
        rc = wcache_ingest_progress(c, rev);
        if (!rc)
            rc = wcache_cache_compact(c, rev);
    }
    return rc;
}

/* Fill the batch and load it; the cache is touched only by the load. */
static int restore_from(wcache_cache *c, wcache_snapshot *s, overlay *ov, int64_t rev, char *eb,
                        size_t el)
{
    wcache_batch *b = NULL;
    int rc = wcache_batch_create(c, &b);
    if (!rc)
        rc = read_all(s, b, ov, eb, el);
    if (!rc) {
        rc = load(c, b, rev);
        if (rc)
            wci_snap_err(eb, el, rc, "loading %zu objects at revision %lld: %s",
                         wcache_batch_count(b), (long long)rev, wcache_strerror(rc));
    }
    wcache_batch_free(b);
    return rc;
}

static int is_delta(const wcache_snapshot_info *in)
{
    return (in->flags & WCACHE_SNAP_FLAG_DELTA) != 0;
}

/* Each file of the chain is the base of the next. */
static int check_links(const wcache_snapshot_info *in, const char *const *paths, size_t n,
                       char *eb, size_t el)
{
    if (is_delta(&in[0]))
        return wci_snap_err(eb, el, WCACHE_EINVAL,
                            "%s is a delta on revision %lld: restore it after its base "
                            "(a chain begins with a full snapshot)",
                            paths[0], (long long)in[0].base_revision);
    for (size_t i = 1; i < n; i++) {
        const wcache_snapshot_info *d = &in[i], *b = &in[i - 1];
        if (!is_delta(d))
            return wci_snap_err(eb, el, WCACHE_EINVAL,
                                "%s is a full snapshot, not a delta on %s", paths[i],
                                paths[i - 1]);
        if (d->base_revision != b->revision || d->base_file_hash != b->file_hash)
            return wci_snap_err(
                eb, el, WCACHE_EINVAL,
                "broken chain: %s is a delta on revision %lld with checksum %016llx, but %s "
                "is revision %lld with checksum %016llx (a base missing, out of order, or "
                "rewritten)",
                paths[i], (long long)d->base_revision, (unsigned long long)d->base_file_hash,
                paths[i - 1], (long long)b->revision, (unsigned long long)b->file_hash);
        if (d->source_id_len != in[0].source_id_len ||
            memcmp(d->source_id, in[0].source_id, d->source_id_len) != 0)
            return wci_snap_err(eb, el, WCACHE_EINVAL, "%s is of another source than %s",
                                paths[i], paths[0]);
    }
    return WCACHE_OK;
}

typedef struct chain {
    wci_alloc a;
    size_t n;
    wcache_snapshot **s;
    wcache_snapshot_info *in;
} chain;

static void chain_close(chain *ch)
{
    for (size_t i = 0; ch->s && i < ch->n; i++)
        wcache_snapshot_close(ch->s[i]);
    wci_free(&ch->a, ch->s);
    wci_free(&ch->a, ch->in);
}

/* Open every file and read its header and trailer. */
static int chain_open(chain *ch, const char *const *paths, const wcache_snapshot_read_opts *o,
                      char *eb, size_t el)
{
    ch->s = wci_calloc(&ch->a, ch->n, sizeof *ch->s);
    ch->in = wci_calloc(&ch->a, ch->n, sizeof *ch->in);
    if (!ch->s || !ch->in)
        return WCACHE_ENOMEM;
    for (size_t i = 0; i < ch->n; i++) {
        ch->in[i].size = sizeof ch->in[i];
        int rc = paths[i] ? wcache_snapshot_open(&ch->s[i], paths[i], o) : WCACHE_EINVAL;
        if (!rc)
            rc = wcache_snapshot_get_info(ch->s[i], &ch->in[i]);
        if (rc && eb && el && ch->n > 1 && paths[i]) {
            char why[256];
            snprintf(why, sizeof why, "%s", eb);
            wci_snap_err(eb, el, rc, "%s: %s", paths[i], why);
        }
        if (rc)
            return rc;
    }
    return WCACHE_OK;
}

/* What the last handle held, once the restore has read it all (a stream
 * knows its trailer's counts only then). */
static void restore_info(wcache_snapshot *last, wcache_snapshot_info *info)
{
    wcache_snapshot_info in = {.size = sizeof in};
    if (!info || info->size < WCI_SNAP_INFO_V0 || wcache_snapshot_get_info(last, &in))
        return;
    in.source_id = NULL; /* it points into the handle, closed on return */
    in.source_id_len = 0;
    wci_snap_info_copy(info, &in);
}

/* The restore of opened files or streams: their links and source, every
 * delta read and verified whole, then the full snapshot, then the load. */
static int restore_opened(wcache_cache *c, chain *ch, const char *const *names,
                          const wcache_snapshot_read_opts *o, char *eb, size_t el)
{
    overlay ov = {.a = ch->a};
    int rc = check_links(ch->in, names, ch->n, eb, el);
    if (!rc)
        rc = check_source(&ch->in[0], o);
    for (size_t i = 1; !rc && i < ch->n; i++)
        rc = overlay_add(&ov, ch->s[i], ch->in[i].objects);
    if (!rc)
        rc = restore_from(c, ch->s[0], ch->n > 1 ? &ov : NULL, ch->in[ch->n - 1].revision, eb,
                          el);
    overlay_free(&ov);
    return rc;
}

static char *restore_errbuf(const wcache_snapshot_read_opts *o, size_t *el)
{
    char *eb = o && o->size >= sizeof *o ? o->errbuf : NULL;
    *el = eb ? o->errbuf_len : 0;
    if (eb && *el)
        eb[0] = 0;
    return eb;
}

wcache_code wcache_snapshot_restore_chain(wcache_cache *c, const char *const *paths, size_t n,
                                          const wcache_snapshot_read_opts *o,
                                          wcache_snapshot_info *info)
{
    size_t el;
    char *eb = restore_errbuf(o, &el);
    if (!c || !paths || n == 0 || n > (1u << 20))
        return WCACHE_EINVAL;
    if (wcache_cache_revision(c) != 0)
        return wci_snap_err(eb, el, WCACHE_ESTATE, "restore needs an empty cache");
    chain ch = {.a = wci_cache_alloc(c), .n = n};
    int rc = chain_open(&ch, paths, o, eb, el);
    if (!rc)
        rc = restore_opened(c, &ch, paths, o, eb, el);
    if (!rc)
        restore_info(ch.s[n - 1], info);
    chain_close(&ch);
    return rc;
}

wcache_code wcache_snapshot_restore(wcache_cache *c, const char *path,
                                    const wcache_snapshot_read_opts *o,
                                    wcache_snapshot_info *info)
{
    if (!c || !path)
        return WCACHE_EINVAL;
    return wcache_snapshot_restore_chain(c, &path, 1, o, info);
}

/*
 * A stream goes through the same steps as a file: the reader checks each
 * block as it arrives and the trailer, whole-file checksum and end of
 * stream before it reports the end, and restore_from() loads only then.
 * What a stream cannot give is the trailer up front, which only inspect
 * needs.
 */
wcache_code wcache_snapshot_restore_from(wcache_cache *c, wcache_snap_source_fn read,
                                         void *userdata, const wcache_snapshot_read_opts *o,
                                         wcache_snapshot_info *info)
{
    size_t el;
    char *eb = restore_errbuf(o, &el);
    if (!c || !read)
        return WCACHE_EINVAL;
    if (wcache_cache_revision(c) != 0)
        return wci_snap_err(eb, el, WCACHE_ESTATE, "restore needs an empty cache");
    wcache_snapshot *s = NULL;
    wcache_snapshot_info in = {.size = sizeof in};
    chain ch = {.a = wci_cache_alloc(c), .n = 1, .s = &s, .in = &in};
    static const char *const name[1] = {"the stream"};
    int rc = wci_snap_open_stream(&s, read, userdata, o);
    if (!rc)
        rc = wcache_snapshot_get_info(s, &in);
    if (!rc)
        rc = restore_opened(c, &ch, name, o, eb, el);
    /* The callback's own code, not what the reader made of it. */
    if (rc && s && wci_snap_source_rc(s))
        rc = wci_snap_source_rc(s);
    if (!rc)
        restore_info(s, info);
    wcache_snapshot_close(s);
    return rc;
}
