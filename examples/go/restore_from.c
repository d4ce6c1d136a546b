/*
 * restore_from.c - the C side of Cache.SnapshotRestore and
 * SnapshotRestoreFrom: their options, and the read callback that calls
 * back into Go.  It lives in a .c file because a Go file with //export may
 * only declare C functions in its preamble.
 */
#include <string.h>

#include "_cgo_export.h"

static int wcgo_read(void *buf, size_t cap, size_t *got, void *userdata)
{
    return wcgoStreamRead(buf, cap, got, (uintptr_t)userdata);
}

/* Default options with the caller's errbuf, and an empty info. */
static wcache_snapshot_read_opts restore_opts(wcache_snapshot_info *info, char *errbuf,
                                              size_t errbuf_len)
{
    wcache_snapshot_read_opts o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.errbuf = errbuf;
    o.errbuf_len = errbuf_len;
    memset(info, 0, sizeof *info);
    info->size = sizeof *info;
    return o;
}

wcache_code wcgo_snapshot_restore(wcache_cache *c, const char *path,
                                  wcache_snapshot_info *info, char *errbuf, size_t errbuf_len)
{
    wcache_snapshot_read_opts o = restore_opts(info, errbuf, errbuf_len);
    return wcache_snapshot_restore(c, path, &o, info);
}

wcache_code wcgo_snapshot_restore_from(wcache_cache *c, uintptr_t handle,
                                       wcache_snapshot_info *info, char *errbuf,
                                       size_t errbuf_len)
{
    wcache_snapshot_read_opts o = restore_opts(info, errbuf, errbuf_len);
    return wcache_snapshot_restore_from(c, wcgo_read, (void *)handle, &o, info);
}
