/*
 * snap_file.c - file descriptors for snapshots: whole reads and writes that
 * survive EINTR and short counts, and wcache_snapshot_prune().
 *
 * The atomic write itself lives in snapshot.c beside the writer, because its
 * crash points are steps of the write.
 */
#define _POSIX_C_SOURCE 200809L
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int wci_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int wci_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    errno = 0;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1; /* n == 0: the file shrank under us; errno stays 0 */
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Atomic write to a local file                                             */
/* ------------------------------------------------------------------------ */

typedef struct file_out {
    int fd;
    char *tmp, *dir;
    const char *path;
    char *eb;
    size_t el;
    wcache_snap_progress_fn progress;
    void *ud;
    uint64_t bytes, objects;
    uint64_t written, kicked; /* bytes written; bytes handed to writeback */
} file_out;

static int sys_err(file_out *f, const char *what, const char *name)
{
    return wci_snap_err(f->eb, f->el, WCACHE_ESYS, "%s %s: %s", what, name, strerror(errno));
}

/*
 * The final fsync of a large snapshot used to find all of it still dirty
 * and wait for the disk with both cores idle (~10% of a 1 GB write's wall
 * time).  So every WRITEBACK_STEP bytes the file's new pages are handed to
 * writeback without waiting for it (Linux sync_file_range: asynchronous,
 * no durability promise); the fsync at the end still makes the whole file
 * durable and still reports every error, so nothing is promised earlier
 * and a failure here is left to it.
 */
#define WRITEBACK_STEP (8u << 20)

static void start_writeback(file_out *f)
{
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
    if (f->written - f->kicked < WRITEBACK_STEP)
        return;
    (void)sync_file_range(f->fd, (off_t)f->kicked, (off_t)(f->written - f->kicked),
                          SYNC_FILE_RANGE_WRITE);
    f->kicked = f->written;
#else
    (void)f;
#endif
}

static int file_sink(const void *buf, size_t len, void *ud)
{
    file_out *f = ud;
    if (wci_write_all(f->fd, buf, len))
        return sys_err(f, "write", f->tmp);
    f->written += len;
    start_writeback(f);
    return WCACHE_OK;
}

/* ".NAME.tmp.XXXXXX" beside path: same file system, so rename is atomic;
 * the leading dot and the suffix keep it from ever matching "*.wcsnap". */
static int make_temp(file_out *f)
{
    const char *slash = strrchr(f->path, '/');
    size_t dl = slash ? (size_t)(slash - f->path) : 0;
    const char *base = slash ? slash + 1 : f->path;
    if (!*base)
        return wci_snap_err(f->eb, f->el, WCACHE_EINVAL, "%s: no file name", f->path);
    f->dir = wci_memdup(&wci_libc_alloc, slash ? f->path : ".", slash ? (dl ? dl : 1) : 1);
    size_t tl = dl + strlen(base) + 16;
    f->tmp = wci_malloc(&wci_libc_alloc, tl);
    if (!f->dir || !f->tmp)
        return WCACHE_ENOMEM;
    snprintf(f->tmp, tl, "%.*s%s.%s.tmp.XXXXXX", (int)dl, f->path, slash ? "/" : "", base);
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0) {
        int rc = sys_err(f, "create", f->tmp);
        wci_free(&wci_libc_alloc, f->tmp);
        f->tmp = NULL; /* nothing was created */
        return rc;
    }
    return WCACHE_OK;
}

static int step_ok(file_out *f, int st)
{
    if (f->progress && f->progress(st, f->bytes, f->objects, f->objects, f->ud) != 0)
        return wci_snap_err(f->eb, f->el, WCACHE_ESTOPPED,
                            "stopped by the progress callback at step %d", st);
    return WCACHE_OK;
}

static int sync_dir(file_out *f)
{
    int rc = step_ok(f, WCACHE_SNAP_STEP_SYNC_DIR);
    if (rc)
        return rc;
    int dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return sys_err(f, "open directory", f->dir);
    rc = fsync(dfd) != 0 ? sys_err(f, "fsync directory", f->dir) : WCACHE_OK;
    close(dfd);
    return rc;
}

/* Make the complete temp file durable, then give it the final name. */
static int commit(file_out *f)
{
    int rc = step_ok(f, WCACHE_SNAP_STEP_SYNC);
    if (!rc && fsync(f->fd) != 0)
        rc = sys_err(f, "fsync", f->tmp);
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0 && !rc)
        rc = sys_err(f, "close", f->tmp);
    if (!rc)
        rc = step_ok(f, WCACHE_SNAP_STEP_RENAME);
    if (!rc && rename(f->tmp, f->path) != 0)
        rc = sys_err(f, "rename to", f->path);
    if (rc)
        return rc;
    wci_free(&wci_libc_alloc, f->tmp);
    f->tmp = NULL; /* renamed: nothing left to clean up */
    return sync_dir(f);
}

wcache_code wcache_snapshot_write(wcache_cache *c, const char *path,
                                  const wcache_snapshot_write_opts *o,
                                  wcache_snapshot_info *info)
{
    file_out f = {.fd = -1, .path = path};
    wcache_snapshot_info li = {.size = sizeof li};
    if (!c || !path)
        return WCACHE_EINVAL;
    if (!wci_snap_opts_ok(o))
        return o && o->size >= WCI_SNAP_WOPTS_V0
                   ? wci_snap_err(o->errbuf, o->errbuf_len, WCACHE_EINVAL,
                                  "bad wcache_snapshot_write_opts")
                   : WCACHE_EINVAL;
    if (o) {
        f.eb = o->errbuf;
        f.el = o->errbuf_len;
        f.progress = o->progress;
        f.ud = o->userdata;
    }
    int rc = make_temp(&f);
    if (!rc)
        rc = wci_snap_write_core(c, file_sink, &f, o, &li, &f.bytes);
    f.objects = li.objects;
    if (!rc)
        rc = commit(&f);
    if (f.fd >= 0)
        close(f.fd);
    if (f.tmp)
        unlink(f.tmp);
    if (!rc) {
        step_ok(&f, WCACHE_SNAP_STEP_DONE);
        if (info && info->size >= WCI_SNAP_INFO_V0)
            wci_snap_info_copy(info, &li);
    }
    wci_free(&wci_libc_alloc, f.tmp);
    wci_free(&wci_libc_alloc, f.dir);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Prune                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct snap_ent {
    char *name;
    int64_t rev, created, base_rev;
    uint64_t file_hash, base_hash; /* base_hash: a delta's base, else 0 */
    int delta, keep;
} snap_ent;

static int is_candidate(const char *name, const char *prefix)
{
    size_t n = strlen(name), sfx = strlen(".wcsnap");
    if (name[0] == '.' || n <= sfx || strcmp(name + n - sfx, ".wcsnap") != 0)
        return 0;
    return !prefix || strncmp(name, prefix, strlen(prefix)) == 0;
}

/* Newest first. */
static int ent_cmp(const void *a, const void *b)
{
    const snap_ent *x = a, *y = b;
    if (x->rev != y->rev)
        return x->rev < y->rev ? 1 : -1;
    if (x->created != y->created)
        return x->created < y->created ? 1 : -1;
    return strcmp(x->name, y->name);
}

static int read_ent(int dfd, const char *name, snap_ent *e)
{
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    unsigned char hdr[WCI_SNAP_HDR_FIXED], x[WCI_SNAP_HDR_EXT], t[WCI_SNAP_TRAILER];
    int ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
             wci_pread_all(fd, hdr, sizeof hdr, 0) == 0;
    wci_snap_hdr h;
    /* Only the fixed header, a delta's base fields and the trailer are
     * read: sorting and chains need no more, and a damaged body is no
     * reason to keep an old file. */
    if (ok && wci_snap_hdr_fixed(hdr, &h, NULL, 0) != WCACHE_OK)
        ok = 0;
    memset(e, 0, sizeof *e);
    if (ok) {
        e->rev = (int64_t)wci_get64(hdr + 24);
        e->created = (int64_t)wci_get64(hdr + 48);
        e->delta = (h.flags & WCACHE_SNAP_FLAG_DELTA) && h.minor >= 1;
        if (e->delta &&
            wci_pread_all(fd, x, sizeof x, WCI_SNAP_HDR_FIXED + h.source_id_len) == 0) {
            e->base_rev = (int64_t)wci_get64(x);
            e->base_hash = wci_get64(x + 8);
        }
        if (st.st_size >= (off_t)sizeof t &&
            wci_pread_all(fd, t, sizeof t, (uint64_t)st.st_size - sizeof t) == 0 &&
            memcmp(t + 56, wci_snap_end_magic, 8) == 0)
            e->file_hash = wci_get64(t + 48);
    }
    close(fd);
    return ok ? 0 : -1;
}

/* Keep the base of every kept delta, and its base, and so on. */
static void keep_bases(snap_ent *v, size_t n)
{
    for (int more = 1; more;) {
        more = 0;
        for (size_t i = 0; i < n; i++) {
            if (!v[i].keep || !v[i].delta)
                continue;
            for (size_t j = 0; j < n; j++)
                if (!v[j].keep && v[j].rev == v[i].base_rev && v[j].file_hash &&
                    v[j].file_hash == v[i].base_hash) {
                    v[j].keep = more = 1;
                    break;
                }
        }
    }
}

static int add_ent(snap_ent **v, size_t *n, size_t *cap, const char *name, snap_ent *e)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        snap_ent *nv = wci_calloc(&wci_libc_alloc, nc, sizeof *nv);
        if (!nv)
            return WCACHE_ENOMEM;
        if (*n)
            memcpy(nv, *v, *n * sizeof *nv);
        wci_free(&wci_libc_alloc, *v);
        *v = nv;
        *cap = nc;
    }
    e->name = wci_memdup(&wci_libc_alloc, name, strlen(name));
    if (!e->name)
        return WCACHE_ENOMEM;
    (*v)[(*n)++] = *e;
    return WCACHE_OK;
}

static int scan_dir(DIR *d, const char *prefix, snap_ent **v, size_t *n)
{
    size_t cap = 0;
    struct dirent *de;
    int rc = WCACHE_OK;
    while (!rc && (de = readdir(d)) != NULL) {
        snap_ent e;
        if (is_candidate(de->d_name, prefix) && read_ent(dirfd(d), de->d_name, &e) == 0)
            rc = add_ent(v, n, &cap, de->d_name, &e);
    }
    return rc;
}

wcache_code wcache_snapshot_prune(const char *dir, const char *name_prefix, size_t keep,
                                  size_t *removed)
{
    if (!dir)
        return WCACHE_EINVAL;
    if (removed)
        *removed = 0;
    DIR *d = opendir(dir);
    if (!d)
        return WCACHE_ESYS;
    snap_ent *v = NULL;
    size_t n = 0;
    int rc = scan_dir(d, name_prefix, &v, &n);
    if (!rc && n > keep) {
        qsort(v, n, sizeof *v, ent_cmp);
        for (size_t i = 0; i < keep; i++)
            v[i].keep = 1;
        keep_bases(v, n);
        for (size_t i = keep; i < n && !rc; i++) {
            if (v[i].keep)
                continue;
            if (unlinkat(dirfd(d), v[i].name, 0) != 0 && errno != ENOENT)
                rc = WCACHE_ESYS;
            else if (removed)
                (*removed)++;
        }
        if (!rc && fsync(dirfd(d)) != 0)
            rc = WCACHE_ESYS;
    }
    for (size_t i = 0; i < n; i++)
        wci_free(&wci_libc_alloc, v[i].name);
    wci_free(&wci_libc_alloc, v);
    closedir(d);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Periodic writes                                                          */
/* ------------------------------------------------------------------------ */

static int due(const wcache_snapshot_policy *p, const wcache_snapshot_state *st, int64_t rev,
               int64_t now_ms)
{
    if (rev <= st->last_revision)
        return 0; /* nothing new: another file would hold the same state */
    if (p->every_revisions && rev - st->last_revision >= p->every_revisions)
        return 1;
    return p->interval_ms && now_ms - st->last_ms >= p->interval_ms;
}

wcache_code wcache_snapshot_tick(wcache_cache *c, const wcache_snapshot_policy *p,
                                 wcache_snapshot_state *st, int64_t now_ms, int *written)
{
    if (written)
        *written = 0;
    if (!c || !p || p->size < sizeof *p || !p->dir || !st || st->size < sizeof *st ||
        (p->write && !wci_snap_opts_ok(p->write)))
        return WCACHE_EINVAL;
    int64_t rev = wcache_cache_revision(c);
    if (!due(p, st, rev, now_ms))
        return WCACHE_OK;
    const char *prefix = p->name_prefix ? p->name_prefix : "snap-";
    wcache_snapshot_write_opts o = {.size = sizeof o};
    if (p->write)
        memcpy(&o, p->write, p->write->size < sizeof o ? p->write->size : sizeof o);
    o.size = sizeof o;
    if (o.base)
        return WCACHE_EINVAL; /* the policy writes full snapshots only */
    o.revision = rev;         /* the file is named after it: pin exactly it */
    size_t n = strlen(p->dir) + strlen(prefix) + 40;
    char *path = wci_malloc(&wci_libc_alloc, n);
    if (!path)
        return WCACHE_ENOMEM;
    snprintf(path, n, "%s/%s%020lld.wcsnap", p->dir, prefix, (long long)rev);
    int rc = wcache_snapshot_write(c, path, &o, NULL);
    wci_free(&wci_libc_alloc, path);
    if (!rc)
        rc = wcache_snapshot_prune(p->dir, prefix, p->keep ? p->keep : 3, NULL);
    if (rc)
        return rc;
    st->last_revision = rev;
    st->last_ms = now_ms;
    if (written)
        *written = 1;
    return WCACHE_OK;
}
