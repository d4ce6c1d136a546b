/*
 * error.c - wcache_strerror().
 *
 * The switch has no default label on purpose: -Wswitch (in -Wall) then
 * flags any code added to the enum without a string here.
 */
#include "watchcache.h"

const char *wcache_strerror(int code)
{
    switch ((wcache_code)code) {
    case WCACHE_OK: return "success";
    case WCACHE_EINVAL: return "invalid argument";
    case WCACHE_ENOMEM: return "out of memory";
    case WCACHE_ENOTFOUND: return "key not found";
    case WCACHE_ECOMPACTED: return "revision compacted";
    case WCACHE_EFUTURE: return "future revision";
    case WCACHE_ETIMEDOUT: return "timed out waiting for revision";
    case WCACHE_ENOTREADY: return "cache not ready";
    case WCACHE_ESTOPPED: return "stopped";
    case WCACHE_EOVERFLOW: return "watcher queue overflowed";
    case WCACHE_EORDER: return "revision not above current revision";
    case WCACHE_ECORRUPT: return "corrupt input";
    case WCACHE_EVERSION: return "unsupported format version";
    case WCACHE_EZSTD: return "zstd error";
    case WCACHE_EHTTP: return "HTTP error status";
    case WCACHE_ECURL: return "transfer failed";
    case WCACHE_ESYS: return "system call failed";
    case WCACHE_ERECURSIVE: return "called from inside a callback";
    case WCACHE_EBUSY: return "resource busy or exhausted";
    case WCACHE_ESTATE: return "call not allowed in this state";
    case WCACHE_EBADTOKEN: return "invalid continue token";
    case WCACHE_ETOOBIG: return "key or value too large";
    case WCACHE_EEXIST: return "key repeated in batch";
    case WCACHE_ENOTSUP: return "not supported";
    case WCACHE_CODE_LAST: break;
    }
    return "unknown error";
}
