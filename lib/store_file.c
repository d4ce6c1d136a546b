/*
 * store_file.c - the local-directory snapshot store (file:///dir).
 *
 * Full keys are absolute paths without their leading '/' (the URL's path is
 * the store's base), so st->bucket is "".  An upload goes to a temporary file
 * beside its target (".NAME.tmp.XXXXXX", which listings skip, as
 * wcache_snapshot_prune() does) and is renamed into place after fsync, so a
 * reader never sees half an object.
 */
#define _POSIX_C_SOURCE 200809L
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct file_up {
    int fd;
    char *tmp, *path;
} file_up;

/* Keys must stay inside the directory: no empty, "." or ".." segment. */
static int key_safe(wcache_store *st, const char *key)
{
    const char *p = key;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return wci_store_err(st, WCACHE_EINVAL,
                                 "store: key '%.300s' has an empty, '.' or '..' segment", key);
        if (!e)
            return WCACHE_OK;
        p = e + 1;
    }
}

static char *path_of(wcache_store *st, const char *key)
{
    size_t n = strlen(st->bucket) + strlen(key) + 2;
    char *p = wci_malloc(&st->a, n);
    if (p)
        snprintf(p, n, "%s/%s", st->bucket, key);
    return p;
}

static int sys(wcache_store *st, const char *what, const char *path)
{
    return wci_store_err(st, WCACHE_ESYS, "store: %s %.300s: %s", what, path, strerror(errno));
}

static int fopen_(wcache_store *st)
{
    st->be = st; /* nothing of its own; non-NULL marks it open */
    return WCACHE_OK;
}

static void fclose_(wcache_store *st)
{
    st->be = NULL;
}

/* mkdir -p of the directories of path (below the store's directory too). */
static int make_parents(wcache_store *st, char *path)
{
    for (char *q = path + 1; *q; q++) {
        if (*q != '/')
            continue;
        *q = '\0';
        int r = mkdir(path, 0777);
        int e = errno;
        *q = '/';
        if (r != 0 && e != EEXIST) {
            errno = e;
            return sys(st, "mkdir", path);
        }
    }
    return WCACHE_OK;
}

static void up_free(wcache_store *st, file_up *f)
{
    if (!f)
        return;
    if (f->fd >= 0) {
        close(f->fd);
        unlink(f->tmp);
    }
    wci_free(&st->a, f->tmp);
    wci_free(&st->a, f->path);
    wci_free(&st->a, f);
}

static int fup_begin(wcache_store_upload *up)
{
    wcache_store *st = up->st;
    int rc = key_safe(st, up->key);
    if (rc != WCACHE_OK)
        return rc;
    file_up *f = wci_calloc(&st->a, 1, sizeof *f);
    if (!f)
        return WCACHE_ENOMEM;
    f->fd = -1;
    f->path = path_of(st, up->key);
    size_t tl = f->path ? strlen(f->path) + 20 : 0;
    f->tmp = f->path ? wci_malloc(&st->a, tl) : NULL;
    if (!f->tmp) {
        up_free(st, f);
        return WCACHE_ENOMEM;
    }
    const char *name = strrchr(f->path, '/') + 1;
    snprintf(f->tmp, tl, "%.*s.%s.tmp.XXXXXX", (int)(name - f->path), f->path, name);
    rc = make_parents(st, f->tmp);
    if (rc == WCACHE_OK && (f->fd = mkstemp(f->tmp)) < 0)
        rc = sys(st, "create", f->tmp);
    if (rc != WCACHE_OK) {
        up_free(st, f);
        return rc;
    }
    up->be = f;
    return WCACHE_OK;
}

static int fup_write(wcache_store_upload *up, const void *buf, size_t len)
{
    file_up *f = up->be;
    const char *p = buf;
    while (len) {
        ssize_t n = write(f->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return sys(up->st, "write", f->tmp);
        p += n;
        len -= (size_t)n;
    }
    return WCACHE_OK;
}

static int fup_commit(wcache_store_upload *up, wci_store_obj *o)
{
    wcache_store *st = up->st;
    file_up *f = up->be;
    struct stat sb;
    int rc = WCACHE_OK;
    if (fsync(f->fd) != 0)
        rc = sys(st, "fsync", f->tmp);
    else if (fstat(f->fd, &sb) != 0)
        rc = sys(st, "stat", f->tmp);
    if (rc == WCACHE_OK) {
        o->bytes = (uint64_t)sb.st_size;
        o->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
        if (rename(f->tmp, f->path) != 0)
            rc = sys(st, "rename to", f->path);
    }
    if (rc == WCACHE_OK) {
        close(f->fd);
        f->fd = -1;
        char *sl = strrchr(f->path, '/');
        *sl = '\0';
        int dfd = open(sl == f->path ? "/" : f->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || (fsync(dfd) != 0 && errno != EINVAL))
            rc = sys(st, "fsync directory", f->path);
        if (dfd >= 0)
            close(dfd);
    }
    up_free(st, f);
    up->be = NULL;
    return rc;
}

static void fup_abort(wcache_store_upload *up)
{
    up_free(up->st, up->be);
    up->be = NULL;
}

static int fget(wcache_store *st, const char *key, wcache_snap_sink_fn sink, void *ud,
                wci_store_halt *halt, wci_store_obj *o)
{
    (void)halt; /* no retries here, and the sink's stop ends the reads */
    int rc = key_safe(st, key);
    if (rc != WCACHE_OK)
        return rc;
    char *path = path_of(st, key);
    if (!path)
        return WCACHE_ENOMEM;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0) {
        rc = errno == ENOENT
                 ? wci_store_err(st, WCACHE_ENOTFOUND, "store: %.300s: no such object", path)
                 : sys(st, "open", path);
    } else if (fstat(fd, &sb) != 0) {
        rc = sys(st, "stat", path);
    } else {
        o->bytes = (uint64_t)sb.st_size;
        o->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    }
    size_t cap = 1u << 20;
    unsigned char *buf = rc == WCACHE_OK ? wci_malloc(&st->a, cap) : NULL;
    if (rc == WCACHE_OK && !buf)
        rc = WCACHE_ENOMEM;
    uint64_t done = 0;
    while (rc == WCACHE_OK) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = sys(st, "read", path);
        if (n <= 0)
            break;
        rc = sink(buf, (size_t)n, ud);
        done += (uint64_t)n;
        if (rc == WCACHE_OK && wci_store_progress(st, done, o->bytes))
            rc = wci_store_err(st, WCACHE_ESTOPPED, "store: download stopped by progress");
    }
    if (rc == WCACHE_OK && done != o->bytes)
        rc =
            wci_store_err(st, WCACHE_ECORRUPT, "store: %.300s changed while it was read", path);
    if (fd >= 0)
        close(fd);
    wci_free(&st->a, buf);
    wci_free(&st->a, path);
    return rc;
}

/* ---- listing: a sorted recursive walk ---- */

typedef struct ent {
    char *key;
    wci_store_obj o;
} ent;

typedef struct walk {
    wcache_store *st;
    const char *prefix;
    size_t plen;
    ent *v;
    size_t n, cap;
    int rc;
} walk;

static int is_temp(const char *name)
{
    return name[0] == '.' && strstr(name, ".tmp.") != NULL;
}

static int add(walk *w, const char *key, const struct stat *sb)
{
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 64;
        ent *nv = wci_calloc(&w->st->a, nc, sizeof *nv);
        if (!nv)
            return WCACHE_ENOMEM;
        if (w->n)
            memcpy(nv, w->v, w->n * sizeof *nv);
        wci_free(&w->st->a, w->v);
        w->v = nv;
        w->cap = nc;
    }
    ent *e = &w->v[w->n];
    memset(e, 0, sizeof *e);
    e->key = wci_store_strdup(w->st, key);
    if (!e->key)
        return WCACHE_ENOMEM;
    e->o.bytes = (uint64_t)sb->st_size;
    e->o.mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
    w->n++;
    return WCACHE_OK;
}

/* Walk the directory of rel ("" is the store's directory). */
static int walk_dir(walk *w, const char *rel, int depth)
{
    if (depth > 64)
        return WCACHE_OK;
    size_t pl = strlen(w->st->bucket) + strlen(rel) + 2;
    char *dpath = wci_malloc(&w->st->a, pl);
    if (!dpath)
        return WCACHE_ENOMEM;
    snprintf(dpath, pl, "%s/%s", w->st->bucket, rel);
    DIR *d = opendir(dpath);
    if (!d) {
        int rc = errno == ENOENT || errno == ENOTDIR ? WCACHE_OK : sys(w->st, "opendir", dpath);
        wci_free(&w->st->a, dpath);
        return rc;
    }
    int rc = WCACHE_OK;
    struct dirent *de;
    while (rc == WCACHE_OK && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || is_temp(de->d_name))
            continue;
        size_t kl = strlen(rel) + strlen(de->d_name) + 2;
        char *key = wci_malloc(&w->st->a, kl);
        if (!key) {
            rc = WCACHE_ENOMEM;
            break;
        }
        snprintf(key, kl, "%s%s", rel, de->d_name);
        size_t n = strlen(key);
        /* Descend only where the prefix may still match. */
        size_t cmp = n < w->plen ? n : w->plen;
        struct stat sb;
        if (strncmp(key, w->prefix, cmp) == 0 && fstatat(dirfd(d), de->d_name, &sb, 0) == 0) {
            if (S_ISDIR(sb.st_mode)) {
                key[n] = '/';
                key[n + 1] = '\0';
                rc = walk_dir(w, key, depth + 1);
            } else if (S_ISREG(sb.st_mode) && n >= w->plen) {
                rc = add(w, key, &sb);
            }
        }
        wci_free(&w->st->a, key);
    }
    closedir(d);
    wci_free(&w->st->a, dpath);
    return rc;
}

static int ent_cmp(const void *a, const void *b)
{
    return strcmp(((const ent *)a)->key, ((const ent *)b)->key);
}

static int flist(wcache_store *st, const char *prefix, wci_store_list_cb cb, void *ud)
{
    walk w = {st, prefix, strlen(prefix), NULL, 0, 0, WCACHE_OK};
    const char *sl = strrchr(prefix, '/');
    char *top = wci_memdup(&st->a, prefix, sl ? (size_t)(sl - prefix + 1) : 0);
    int rc = top ? walk_dir(&w, top, 0) : WCACHE_ENOMEM;
    wci_free(&st->a, top);
    if (rc == WCACHE_OK && w.n)
        qsort(w.v, w.n, sizeof *w.v, ent_cmp);
    for (size_t i = 0; rc == WCACHE_OK && i < w.n; i++)
        if (cb(w.v[i].key, strlen(w.v[i].key), &w.v[i].o, ud))
            break;
    for (size_t i = 0; i < w.n; i++)
        wci_free(&st->a, w.v[i].key);
    wci_free(&st->a, w.v);
    return rc;
}

static int fdel(wcache_store *st, const char *key)
{
    int rc = key_safe(st, key);
    if (rc != WCACHE_OK)
        return rc;
    char *path = path_of(st, key);
    if (!path)
        return WCACHE_ENOMEM;
    if (unlink(path) != 0 && errno != ENOENT)
        rc = sys(st, "unlink", path);
    wci_free(&st->a, path);
    return rc;
}

const wci_store_ops wci_store_file_ops = {
    "file", fopen_, fclose_, fup_begin, fup_write, fup_commit, fup_abort, fget, flist, fdel,
};
