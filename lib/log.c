/*
 * log.c - the library's only voice: the embedder's log callback and the
 * optional error-detail buffer.  Nothing here writes to stdout or stderr.
 */
#include "wcache_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

_Thread_local const wcache_cache *wci_cb_cache;

static void vlog(wcache_cache *c, int level, const char *fmt, va_list ap)
{
    if (!c->log_fn || level > c->log_level)
        return;
    char msg[512];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    const wcache_cache *outer = wci_cb_cache;
    wci_cb_cache = c;
    c->log_fn(level, msg, len, c->log_ud);
    wci_cb_cache = outer;
}

void wci_log(wcache_cache *c, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(c, level, fmt, ap);
    va_end(ap);
}

wcache_code wci_err(wcache_cache *c, wcache_code code, const char *fmt, ...)
{
    va_list ap;
    if (c->errbuf && c->errlen) {
        va_start(ap, fmt);
        vsnprintf(c->errbuf, c->errlen, fmt, ap);
        va_end(ap);
    }
    va_start(ap, fmt);
    vlog(c, WCACHE_LOG_DEBUG, fmt, ap);
    va_end(ap);
    return code;
}

int64_t wci_now(wcache_cache *c)
{
    if (c->clock_fn)
        return c->clock_fn(c->clock_ud);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
