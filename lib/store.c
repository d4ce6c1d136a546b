/*
 * store.c - snapshot stores: URLs, options, keys and the snapshot layout,
 * and what every backend shares (newest, retention, download to a verified
 * file, restore, backoff, error text).  The protocols are in store_file.c,
 * store_s3.c and store_gcs.c behind the wci_store_ops vtable.
 */
#define _POSIX_C_SOURCE 200809L
#include "store.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A scheme missing from this table is WCACHE_ENOTSUP. */
static const struct {
    const char *prefix;
    const wci_store_ops *ops;
} schemes[] = {
    {"file://", &wci_store_file_ops},
    {"s3://", &wci_store_s3_ops},
    {"gs://", &wci_store_gcs_ops},
};

#define SNAP_SUFFIX ".wcsnap"
#define REV_DIGITS 20

/* ------------------------------------------------------------------------ */
/* Shared helpers for the backends                                          */
/* ------------------------------------------------------------------------ */

static void vlog_msg(wcache_store *st, int level, const char *fmt, va_list ap)
{
    if (!st->o.log)
        return;
    char msg[768];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    st->o.log(level, msg, len, st->o.log_userdata);
}

void wci_store_log(wcache_store *st, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&st->emu);
    vlog_msg(st, level, fmt, ap);
    pthread_mutex_unlock(&st->emu);
    va_end(ap);
}

int wci_store_err(wcache_store *st, int code, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&st->emu);
    if (st->eb && st->el) {
        va_start(ap, fmt);
        vsnprintf(st->eb, st->el, fmt, ap);
        va_end(ap);
    }
    va_start(ap, fmt);
    vlog_msg(st, WCACHE_LOG_DEBUG, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&st->emu);
    return code;
}

int wci_store_progress(wcache_store *st, uint64_t done, uint64_t total)
{
    return st->o.progress ? st->o.progress(done, total, st->o.progress_userdata) : 0;
}

int wci_store_max_retries(const wcache_store *st)
{
    if (st->o.max_retries < 0)
        return 0;
    return st->o.max_retries ? st->o.max_retries : 5;
}

int wci_store_halt_init(wci_store_halt *h)
{
    atomic_init(&h->raised, 0);
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return WCACHE_ESYS;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int bad = pthread_cond_init(&h->cv, &ca) != 0;
    pthread_condattr_destroy(&ca);
    if (bad)
        return WCACHE_ESYS;
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        pthread_cond_destroy(&h->cv);
        return WCACHE_ESYS;
    }
    return WCACHE_OK;
}

void wci_store_halt_destroy(wci_store_halt *h)
{
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
}

void wci_store_halt_raise(wci_store_halt *h)
{
    pthread_mutex_lock(&h->mu);
    atomic_store(&h->raised, 1);
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

int wci_store_halted(wci_store_halt *h)
{
    return h && atomic_load_explicit(&h->raised, memory_order_acquire);
}

static int halt_xferinfo(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    return wci_store_halted(ud);
}

void wci_store_halt_curl(void *curl, wci_store_halt *h)
{
    if (!h)
        return;
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, halt_xferinfo);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
}

int wci_store_backoff(const wcache_store *st, wci_store_halt *halt, int attempt,
                      int64_t after_ms)
{
    int64_t base = st->o.backoff_ms > 0 ? st->o.backoff_ms : 100;
    int64_t cap = st->o.backoff_max_ms > 0 ? st->o.backoff_max_ms : 10000;
    int64_t lim = base;
    for (int i = 1; i < attempt && lim < cap; i++)
        lim *= 2;
    if (lim > cap)
        lim = cap;
    /* Full jitter (a uniform wait in [0, lim]) spreads the retries of many
     * proxies that failed together; a thread-local state keeps parallel
     * part uploads from sharing one random stream. */
    static _Thread_local unsigned seed;
    if (!seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (unsigned)ts.tv_nsec ^ (unsigned)(uintptr_t)&seed;
    }
    int64_t ms = (int64_t)(rand_r(&seed) % (unsigned)(lim + 1));
    if (after_ms > ms)
        ms = after_ms < cap ? after_ms : cap;
    if (!halt) {
        /* Nobody can stop this transfer from outside: its caller's own
         * thread runs it. */
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        return WCACHE_OK;
    }
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += (time_t)(ms / 1000);
    end.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&halt->mu);
    while (!atomic_load(&halt->raised) &&
           pthread_cond_timedwait(&halt->cv, &halt->mu, &end) != ETIMEDOUT) {
    }
    int raised = atomic_load(&halt->raised);
    pthread_mutex_unlock(&halt->mu);
    return raised ? WCACHE_ESTOPPED : WCACHE_OK;
}

int wci_store_status_retryable(long status)
{
    return status >= 500 || status == 429 || status == 408;
}

char *wci_store_strdup(wcache_store *st, const char *s)
{
    if (!s)
        s = "";
    return wci_memdup(&st->a, s, strlen(s));
}

/* ------------------------------------------------------------------------ */
/* Open and close                                                           */
/* ------------------------------------------------------------------------ */

static size_t slen(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

static const char *scopy(char **p, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    memcpy(*p, s, n);
    const char *r = *p;
    *p += n;
    return r;
}

/* clang-format 14 does not settle on a layout of this list (each run
 * rewraps it): one field a line, kept as written. */
/* clang-format off */
#define STORE_STRINGS(X)  \
    X(endpoint)           \
    X(region)             \
    X(access_key_id)      \
    X(secret_access_key)  \
    X(session_token)      \
    X(credentials_file)   \
    X(profile)            \
    X(gcs_token_file)     \
    X(gcs_hmac_access_id) \
    X(gcs_hmac_secret)    \
    X(ca_file)            \
    X(ca_path)            \
    X(tmp_dir)
/* clang-format on */

static int copy_opts(wcache_store *st, const wcache_store_opts *in)
{
    wcache_store_opts o;
    memset(&o, 0, sizeof o);
    if (in)
        memcpy(&o, in, in->size < sizeof o ? in->size : sizeof o);
    o.size = sizeof o;
    size_t total = 1;
#define X(f) total += slen(o.f);
    STORE_STRINGS(X)
#undef X
    st->strs = wci_malloc(&st->a, total);
    if (!st->strs)
        return WCACHE_ENOMEM;
    char *p = st->strs;
#define X(f) o.f = scopy(&p, o.f);
    STORE_STRINGS(X)
#undef X
    st->o = o;
    return WCACHE_OK;
}

static int opts_ok(wcache_store *st, const wcache_store_opts *o)
{
    if (!o)
        return WCACHE_OK;
    if (o->size < offsetof(wcache_store_opts, errbuf_len) + sizeof o->errbuf_len)
        return WCACHE_EINVAL; /* nowhere to say why: the errbuf is past size */
    if (o->style < WCACHE_STORE_STYLE_AUTO || o->style > WCACHE_STORE_STYLE_VIRTUAL)
        return wci_store_err(st, WCACHE_EINVAL, "store: unknown addressing style %d",
                             (int)o->style);
    if (o->parallel_parts < 0 || o->parallel_parts > 64)
        return wci_store_err(st, WCACHE_EINVAL, "store: parallel_parts %d not in 0..64",
                             o->parallel_parts);
    if (o->part_bytes && o->part_bytes < (5u << 20) && !o->allow_small_parts)
        return wci_store_err(st, WCACHE_EINVAL,
                             "store: part_bytes %llu is below S3's 5 MiB minimum",
                             (unsigned long long)o->part_bytes);
    if (o->part_bytes > (5ull << 30))
        return wci_store_err(st, WCACHE_EINVAL, "store: part_bytes above S3's 5 GiB maximum");
    if (o->max_retries < -1 || o->max_retries > 100 || o->backoff_ms < 0 ||
        o->backoff_max_ms < 0 || o->timeout_ms < 0 || o->connect_timeout_ms < 0)
        return wci_store_err(st, WCACHE_EINVAL, "store: negative or excessive retry option");
    return WCACHE_OK;
}

/* Split "bucket/some/prefix/" into bucket and a base without the slashes
 * at its ends.  file:// keeps the whole path as its "bucket". */
static int parse_url(wcache_store *st, const char *rest, int is_file)
{
    for (const char *q = rest; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f)
            return wci_store_err(st, WCACHE_EINVAL, "store: control character in URL");
    if (is_file) {
        /* file:///abs/dir or file://localhost/abs/dir */
        if (strncmp(rest, "localhost/", 10) == 0)
            rest += 9;
        if (rest[0] != '/')
            return wci_store_err(st, WCACHE_EINVAL,
                                 "store: file URL must be file:///absolute/path");
        /* The file system is the "bucket" and the path its key prefix, so
         * that file:///dir/one.wcsnap names one object as s3:// URLs do. */
        while (*rest == '/')
            rest++;
        size_t n = strlen(rest);
        while (n && rest[n - 1] == '/')
            n--;
        st->bucket = wci_store_strdup(st, "");
        st->base = wci_memdup(&st->a, rest, n);
        return st->bucket && st->base ? WCACHE_OK : WCACHE_ENOMEM;
    }
    const char *slash = strchr(rest, '/');
    size_t bl = slash ? (size_t)(slash - rest) : strlen(rest);
    if (bl == 0 || bl > 255)
        return wci_store_err(st, WCACHE_EINVAL, "store: URL has no bucket name");
    for (size_t i = 0; i < bl; i++) {
        char ch = rest[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_'))
            return wci_store_err(st, WCACHE_EINVAL, "store: bad character in bucket name");
    }
    st->bucket = wci_memdup(&st->a, rest, bl);
    const char *b = slash ? slash : rest + bl;
    while (*b == '/')
        b++;
    size_t n = strlen(b);
    while (n && b[n - 1] == '/')
        n--;
    st->base = wci_memdup(&st->a, b, n);
    return st->bucket && st->base ? WCACHE_OK : WCACHE_ENOMEM;
}

wcache_code wcache_store_open(wcache_store **out, const char *url,
                              const wcache_store_opts *opts)
{
    if (!out)
        return WCACHE_EINVAL;
    *out = NULL;
    const wci_alloc *la = &wci_libc_alloc;
    wci_alloc a = *la;
    if (opts && opts->size >= sizeof *opts && opts->alloc) {
        if (opts->alloc->size < sizeof *opts->alloc || !opts->alloc->alloc ||
            !opts->alloc->free)
            return WCACHE_EINVAL;
        a = (wci_alloc){opts->alloc->alloc, opts->alloc->free, opts->alloc->userdata};
    }
    wcache_store *st = wci_calloc(&a, 1, sizeof *st);
    if (!st)
        return WCACHE_ENOMEM;
    st->magic = WCI_STORE_MAGIC;
    st->a = a;
    pthread_mutex_init(&st->emu, NULL);
    if (opts && opts->size >= offsetof(wcache_store_opts, errbuf_len) + sizeof(size_t)) {
        st->eb = opts->errbuf;
        st->el = opts->errbuf_len;
        if (st->eb && st->el)
            st->eb[0] = '\0';
    }
    int rc = url ? opts_ok(st, opts) : WCACHE_EINVAL;
    if (rc == WCACHE_OK)
        rc = copy_opts(st, opts);
    if (rc == WCACHE_OK) {
        st->url = wci_store_strdup(st, url);
        rc = st->url ? WCACHE_OK : WCACHE_ENOMEM;
    }
    if (rc == WCACHE_OK) {
        rc = wci_store_err(st, WCACHE_ENOTSUP,
                           "store: unsupported URL scheme in '%.200s' (file://, s3:// and "
                           "gs:// are supported)",
                           url);
        for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
            size_t pl = strlen(schemes[i].prefix);
            if (strncmp(url, schemes[i].prefix, pl) == 0) {
                st->ops = schemes[i].ops;
                if (st->eb && st->el)
                    st->eb[0] = '\0';
                rc = parse_url(st, url + pl, st->ops == &wci_store_file_ops);
                break;
            }
        }
    }
    if (rc == WCACHE_OK)
        rc = st->ops->open(st);
    if (rc != WCACHE_OK) {
        if (rc != WCACHE_OK && st->be && st->ops)
            st->ops->close(st);
        st->be = NULL;
        st->ops = NULL;
        wcache_store_close(st);
        return rc;
    }
    *out = st;
    return WCACHE_OK;
}

void wcache_store_close(wcache_store *st)
{
    if (!st || st->magic != WCI_STORE_MAGIC)
        return;
    if (st->ops && st->be)
        st->ops->close(st);
    st->magic = 0;
    pthread_mutex_destroy(&st->emu);
    wci_alloc a = st->a;
    wci_free(&a, st->strs);
    wci_free(&a, st->url);
    wci_free(&a, st->bucket);
    wci_free(&a, st->base);
    wci_free(&a, st);
}

static int live(const wcache_store *st)
{
    return st && st->magic == WCI_STORE_MAGIC && st->ops;
}

/* ------------------------------------------------------------------------ */
/* Keys                                                                     */
/* ------------------------------------------------------------------------ */

static int key_ok(wcache_store *st, const char *key)
{
    if (!key)
        return WCACHE_OK;
    if (key[0] == '/')
        return wci_store_err(st, WCACHE_EINVAL, "store: key '%.200s' begins with '/'", key);
    for (const char *q = key; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f)
            return wci_store_err(st, WCACHE_EINVAL, "store: control character in key");
    if (strlen(key) > 900)
        return wci_store_err(st, WCACHE_EINVAL, "store: key longer than 900 bytes");
    return WCACHE_OK;
}

/* base + "/" + key (either may be empty); new. */
static char *full_key(wcache_store *st, const char *key)
{
    if (!key)
        key = "";
    size_t bl = strlen(st->base), kl = strlen(key);
    char *f = wci_malloc(&st->a, bl + kl + 2);
    if (!f)
        return NULL;
    memcpy(f, st->base, bl);
    size_t n = bl;
    if (bl && kl)
        f[n++] = '/';
    memcpy(f + n, key, kl);
    f[n + kl] = '\0';
    return f;
}

/* The key relative to the base, for what a backend listed. */
static const char *rel_key(const wcache_store *st, const char *full)
{
    size_t bl = strlen(st->base);
    if (bl && strncmp(full, st->base, bl) == 0) {
        full += bl;
        if (*full == '/')
            full++;
    }
    return full;
}

static int is_plain(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

/* ~XX-escaped source identity; *n gets its length.  out may be NULL. */
static size_t escape_id(const unsigned char *id, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        /* "." and ".." alone would be path steps on a file store. */
        int plain = is_plain(id[i]) && !(id[i] == '.' && len <= 2);
        if (plain) {
            if (out)
                out[n] = (char)id[i];
            n++;
        } else {
            if (out) {
                out[n] = '~';
                out[n + 1] = hex[id[i] >> 4];
                out[n + 2] = hex[id[i] & 15];
            }
            n += 3;
        }
    }
    return n;
}

wcache_code wcache_store_snapshot_key(const void *source_id, size_t source_id_len,
                                      int64_t revision, char *out, size_t out_len)
{
    if (!source_id || !source_id_len || source_id_len > WCACHE_SNAP_MAX_SOURCE_ID ||
        revision < 1 || (!out && out_len))
        return WCACHE_EINVAL;
    size_t n = escape_id(source_id, source_id_len, NULL);
    size_t need = n + 1 + REV_DIGITS + strlen(SNAP_SUFFIX) + 1;
    if (out_len < need)
        return WCACHE_ETOOBIG;
    escape_id(source_id, source_id_len, out);
    snprintf(out + n, out_len - n, "/%0*lld%s", REV_DIGITS, (long long)revision, SNAP_SUFFIX);
    return WCACHE_OK;
}

int64_t wci_store_key_revision(const char *key, size_t len)
{
    size_t sl = strlen(SNAP_SUFFIX);
    if (len < REV_DIGITS + sl || memcmp(key + len - sl, SNAP_SUFFIX, sl) != 0)
        return 0;
    const char *d = key + len - sl - REV_DIGITS;
    if (d > key && d[-1] != '/')
        return 0;
    int64_t r = 0;
    for (int i = 0; i < REV_DIGITS; i++) {
        if (d[i] < '0' || d[i] > '9')
            return 0;
        if (r > (INT64_MAX - 9) / 10)
            return 0;
        r = r * 10 + (d[i] - '0');
    }
    return r;
}

static void fill_obj(wcache_store *st, const char *full, const wci_store_obj *o,
                     wcache_store_object *obj)
{
    if (!obj)
        return;
    snprintf(st->last_key, sizeof st->last_key, "%s", rel_key(st, full));
    snprintf(st->last_etag, sizeof st->last_etag, "%s", o->etag);
    uint32_t size = obj->size;
    memset(obj, 0, sizeof *obj);
    obj->size = size;
    obj->key = st->last_key;
    obj->key_len = strlen(st->last_key);
    obj->bytes = o->bytes;
    obj->mtime_unix_ns = o->mtime_ns;
    obj->etag = st->last_etag;
    obj->revision = wci_store_key_revision(st->last_key, obj->key_len);
}

static int obj_ok(const wcache_store_object *obj)
{
    return !obj || obj->size >= sizeof *obj;
}

/* ------------------------------------------------------------------------ */
/* Uploads                                                                  */
/* ------------------------------------------------------------------------ */

wcache_code wcache_store_upload_begin(wcache_store *st, const char *key,
                                      wcache_store_upload **out)
{
    if (!out)
        return WCACHE_EINVAL;
    *out = NULL;
    if (!live(st))
        return WCACHE_EINVAL;
    int rc = key_ok(st, key);
    if (rc != WCACHE_OK)
        return rc;
    wcache_store_upload *up = wci_calloc(&st->a, 1, sizeof *up);
    if (!up)
        return WCACHE_ENOMEM;
    up->st = st;
    up->key = full_key(st, key);
    if (!up->key) {
        wci_free(&st->a, up);
        return WCACHE_ENOMEM;
    }
    if (!up->key[0]) {
        wci_free(&st->a, up->key);
        wci_free(&st->a, up);
        return wci_store_err(st, WCACHE_EINVAL, "store: upload needs an object key");
    }
    rc = st->ops->up_begin(up);
    if (rc != WCACHE_OK) {
        wci_free(&st->a, up->key);
        wci_free(&st->a, up);
        return rc;
    }
    *out = up;
    return WCACHE_OK;
}

int wcache_store_upload_sink(const void *buf, size_t len, void *upload)
{
    wcache_store_upload *up = upload;
    if (!up || (!buf && len))
        return WCACHE_EINVAL;
    if (up->err)
        return up->err;
    if (!len)
        return WCACHE_OK;
    int rc = up->st->ops->up_write(up, buf, len);
    if (rc == WCACHE_OK) {
        up->bytes += len;
        if (wci_store_progress(up->st, up->bytes, up->total))
            rc = wci_store_err(up->st, WCACHE_ESTOPPED, "store: upload stopped by progress");
    }
    up->err = rc;
    return rc;
}

static void upload_free(wcache_store_upload *up)
{
    wci_free(&up->st->a, up->key);
    wci_free(&up->st->a, up);
}

wcache_code wcache_store_upload_commit(wcache_store_upload *up, wcache_store_object *obj)
{
    if (!up)
        return WCACHE_EINVAL;
    wcache_store *st = up->st;
    if (!obj_ok(obj)) {
        wcache_store_upload_abort(up);
        return WCACHE_EINVAL;
    }
    if (up->err) {
        int rc = up->err;
        wcache_store_upload_abort(up);
        return rc;
    }
    wci_store_obj o;
    memset(&o, 0, sizeof o);
    int rc = st->ops->up_commit(up, &o);
    if (rc == WCACHE_OK && o.bytes != up->bytes)
        rc = wci_store_err(st, WCACHE_ECORRUPT,
                           "store: %s: stored object has %llu bytes, %llu were sent", up->key,
                           (unsigned long long)o.bytes, (unsigned long long)up->bytes);
    if (rc == WCACHE_OK)
        fill_obj(st, up->key, &o, obj);
    upload_free(up); /* up_commit cleaned up after itself, failure or not */
    return rc;
}

void wcache_store_upload_abort(wcache_store_upload *up)
{
    if (!up)
        return;
    up->st->ops->up_abort(up);
    upload_free(up);
}

wcache_code wcache_store_put_file(wcache_store *st, const char *key, const char *path,
                                  wcache_store_object *obj)
{
    if (!live(st) || !path || !obj_ok(obj))
        return WCACHE_EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return wci_store_err(st, WCACHE_ESYS, "store: open %.300s: %s", path, strerror(errno));
    struct stat sb;
    wcache_store_upload *up;
    int rc = wcache_store_upload_begin(st, key, &up);
    if (rc != WCACHE_OK) {
        close(fd);
        return rc;
    }
    up->total = fstat(fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    size_t cap = 1u << 20;
    unsigned char *buf = wci_malloc(&st->a, cap);
    if (!buf)
        rc = WCACHE_ENOMEM;
    while (rc == WCACHE_OK) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc =
                wci_store_err(st, WCACHE_ESYS, "store: read %.300s: %s", path, strerror(errno));
        if (n <= 0)
            break;
        rc = wcache_store_upload_sink(buf, (size_t)n, up);
    }
    wci_free(&st->a, buf);
    close(fd);
    if (rc != WCACHE_OK) {
        wcache_store_upload_abort(up);
        return rc;
    }
    return wcache_store_upload_commit(up, obj);
}

wcache_code wcache_store_put_snapshot(wcache_store *st, const char *key, wcache_cache *c,
                                      const wcache_snapshot_write_opts *wopts, size_t keep,
                                      wcache_snapshot_info *info)
{
    if (!live(st) || !c)
        return WCACHE_EINVAL;
    wcache_snapshot_write_opts w;
    memset(&w, 0, sizeof w);
    if (wopts)
        memcpy(&w, wopts, wopts->size < sizeof w ? wopts->size : sizeof w);
    w.size = sizeof w;
    /* The key names the revision, so pin it before the upload begins. */
    if (w.revision == WCACHE_REV_LATEST)
        w.revision = wcache_cache_revision(c);
    if (w.revision < 1)
        return wci_store_err(st, WCACHE_ESTATE, "store: the cache has no revision to write");
    char lk[3 * WCACHE_SNAP_MAX_SOURCE_ID + 32];
    if (!key) {
        if (!w.source_id || !w.source_id_len)
            return wci_store_err(st, WCACHE_EINVAL,
                                 "store: a layout key needs the snapshot's source_id");
        int rc =
            wcache_store_snapshot_key(w.source_id, w.source_id_len, w.revision, lk, sizeof lk);
        if (rc != WCACHE_OK)
            return rc;
        key = lk;
    }
    wcache_store_upload *up;
    int rc = wcache_store_upload_begin(st, key, &up);
    if (rc != WCACHE_OK)
        return rc;
    rc = wcache_snapshot_write_to(c, wcache_store_upload_sink, up, &w, info);
    if (rc != WCACHE_OK) {
        wcache_store_upload_abort(up);
        return rc;
    }
    rc = wcache_store_upload_commit(up, NULL);
    if (rc == WCACHE_OK && keep && w.source_id && w.source_id_len)
        rc = wcache_store_retain(st, w.source_id, w.source_id_len, keep, NULL);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Downloads                                                                */
/* ------------------------------------------------------------------------ */

wcache_code wcache_store_get(wcache_store *st, const char *key, wcache_snap_sink_fn sink,
                             void *sink_userdata, wcache_store_object *obj)
{
    if (!live(st) || !sink || !obj_ok(obj))
        return WCACHE_EINVAL;
    int rc = key_ok(st, key);
    if (rc != WCACHE_OK)
        return rc;
    char *full = full_key(st, key);
    if (!full)
        return WCACHE_ENOMEM;
    wci_store_obj o;
    memset(&o, 0, sizeof o);
    rc = full[0] ? st->ops->get(st, full, sink, sink_userdata, NULL, &o)
                 : wci_store_err(st, WCACHE_EINVAL, "store: download needs an object key");
    if (rc == WCACHE_OK)
        fill_obj(st, full, &o, obj);
    wci_free(&st->a, full);
    return rc;
}

typedef struct file_sink {
    int fd;
    wcache_store *st;
    const char *tmp;
} file_sink;

static int to_file(const void *buf, size_t len, void *ud)
{
    file_sink *f = ud;
    const char *p = buf;
    while (len) {
        ssize_t n = write(f->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return wci_store_err(f->st, WCACHE_ESYS, "store: write %.300s: %s", f->tmp,
                                 strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return WCACHE_OK;
}

static int verify_file(wcache_store *st, const char *path)
{
    wcache_snapshot *s = NULL;
    wcache_snapshot_read_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.size = sizeof ro;
    ro.errbuf = st->eb;
    ro.errbuf_len = st->el;
    int rc = wcache_snapshot_open(&s, path, &ro);
    if (rc == WCACHE_OK)
        rc = wcache_snapshot_verify(s);
    wcache_snapshot_close(s);
    return rc;
}

/* The directory part of path ("." when it has none); new. */
static char *dir_of(wcache_store *st, const char *path)
{
    const char *sl = strrchr(path, '/');
    if (!sl)
        return wci_store_strdup(st, ".");
    return wci_memdup(&st->a, path, sl == path ? 1 : (size_t)(sl - path));
}

static int sync_dir(wcache_store *st, const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return wci_store_err(st, WCACHE_ESYS, "store: open %.300s: %s", dir, strerror(errno));
    int r = fsync(dfd);
    int e = errno;
    close(dfd);
    if (r != 0 && e != EINVAL)
        return wci_store_err(st, WCACHE_ESYS, "store: fsync %.300s: %s", dir, strerror(e));
    return WCACHE_OK;
}

/* Download key into a new temporary file beside path; *tmp_out (new) names
 * it on success, and nothing is left behind on failure. */
static int get_temp(wcache_store *st, const char *key, const char *path, char **tmp_out,
                    wcache_store_object *obj)
{
    *tmp_out = NULL;
    char *dir = dir_of(st, path);
    if (!dir)
        return WCACHE_ENOMEM;
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t tl = strlen(dir) + strlen(name) + 20;
    char *tmp = wci_malloc(&st->a, tl);
    wci_free(&st->a, dir);
    if (!tmp)
        return WCACHE_ENOMEM;
    const char *sl = strrchr(path, '/');
    snprintf(tmp, tl, "%.*s.%s.tmp.XXXXXX", sl ? (int)(sl - path + 1) : 0, path, name);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int rc =
            wci_store_err(st, WCACHE_ESYS, "store: create %.300s: %s", tmp, strerror(errno));
        wci_free(&st->a, tmp);
        return rc;
    }
    file_sink fs = {fd, st, tmp};
    int rc = wcache_store_get(st, key, to_file, &fs, obj);
    if (rc == WCACHE_OK && fsync(fd) != 0)
        rc = wci_store_err(st, WCACHE_ESYS, "store: fsync %.300s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == WCACHE_OK)
        rc = wci_store_err(st, WCACHE_ESYS, "store: close %.300s: %s", tmp, strerror(errno));
    if (rc != WCACHE_OK) {
        unlink(tmp);
        wci_free(&st->a, tmp);
        return rc;
    }
    *tmp_out = tmp;
    return WCACHE_OK;
}

wcache_code wcache_store_get_file(wcache_store *st, const char *key, const char *path,
                                  int verify_snapshot, wcache_store_object *obj)
{
    if (!live(st) || !path || !path[0] || !obj_ok(obj))
        return WCACHE_EINVAL;
    char *tmp;
    int rc = get_temp(st, key, path, &tmp, obj);
    if (rc != WCACHE_OK)
        return rc;
    if (verify_snapshot)
        rc = verify_file(st, tmp);
    if (rc == WCACHE_OK && rename(tmp, path) != 0)
        rc = wci_store_err(st, WCACHE_ESYS, "store: rename to %.300s: %s", path,
                           strerror(errno));
    if (rc != WCACHE_OK) {
        unlink(tmp);
    } else {
        char *dir = dir_of(st, path);
        rc = dir ? sync_dir(st, dir) : WCACHE_ENOMEM;
        wci_free(&st->a, dir);
    }
    wci_free(&st->a, tmp);
    return rc;
}

/*
 * Restore streams the download into the restorer: a thread of the store's
 * runs the backend's get (ranged GETs that resume where a transfer broke,
 * pinned to the object's ETag or generation) into a bounded pipe, and the
 * calling thread restores from the pipe (wcache_snapshot_restore_from),
 * so downloading, checking and decompressing blocks and building the index
 * overlap, and no temporary file or whole-object buffer is needed.  The
 * restorer reads the end of the stream only once the get has returned
 * WCACHE_OK (its size and MD5/CRC32C checks passed), so the cache changes
 * only after both the transfer and the snapshot have verified.
 */
#define PIPE_BYTES (1u << 20)

typedef struct spipe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned char *buf; /* a ring of PIPE_BYTES */
    size_t head, len;
    size_t want;  /* the restore waits for this many bytes (0: not waiting) */
    int done, rc; /* the get returned rc */
    int rc_read;  /* the restore was handed rc: the download failed first */
    int closed;   /* the restore stopped reading: the get must stop */
    /* Raised with closed: the get may be in a retry's backoff, or waiting
     * on a server, where no sink call would tell it. */
    wci_store_halt halt;
    wcache_store *st;
    const char *key;
} spipe;

/* The get's sink, on the download thread: wait for room, never for long
 * (curl hands over at most 16 KiB at a time). */
static int pipe_sink(const void *p, size_t n, void *ud)
{
    spipe *q = ud;
    const unsigned char *b = p;
    pthread_mutex_lock(&q->mu);
    while (n && !q->closed) {
        if (q->len == PIPE_BYTES) {
            pthread_cond_wait(&q->cv, &q->mu);
            continue;
        }
        size_t tail = (q->head + q->len) % PIPE_BYTES;
        size_t k = PIPE_BYTES - tail; /* contiguous room, up to the ring's end */
        if (k > PIPE_BYTES - q->len)
            k = PIPE_BYTES - q->len;
        if (k > n)
            k = n;
        memcpy(q->buf + tail, b, k);
        q->len += k;
        b += k;
        n -= k;
        /* Wake the restore when what it waits for is there, not for every
         * 16 KiB: it reads a block at a time. */
        if (q->want && q->len >= q->want) {
            q->want = 0;
            pthread_cond_broadcast(&q->cv);
        }
    }
    int closed = q->closed;
    pthread_mutex_unlock(&q->mu);
    return closed ? WCACHE_ESTOPPED : WCACHE_OK;
}

/* The restore's read callback: bytes as they come, then the get's code
 * (WCACHE_OK: the end of the stream). */
static int pipe_read(void *buf, size_t cap, size_t *got, void *ud)
{
    spipe *q = ud;
    size_t want = cap < PIPE_BYTES / 2 ? cap : PIPE_BYTES / 2;
    pthread_mutex_lock(&q->mu);
    while (q->len < want && !q->done) {
        q->want = want;
        pthread_cond_wait(&q->cv, &q->mu);
    }
    q->want = 0;
    size_t k = q->len < cap ? q->len : cap;
    if (k > PIPE_BYTES - q->head)
        k = PIPE_BYTES - q->head;
    if (k) {
        memcpy(buf, q->buf + q->head, k);
        q->head = (q->head + k) % PIPE_BYTES;
        q->len -= k;
        pthread_cond_broadcast(&q->cv);
    }
    int rc = k ? WCACHE_OK : q->rc;
    if (rc)
        q->rc_read = 1;
    pthread_mutex_unlock(&q->mu);
    *got = k;
    return rc;
}

static void *download_main(void *arg)
{
    spipe *q = arg;
    wci_store_obj o;
    memset(&o, 0, sizeof o);
    int rc = q->st->ops->get(q->st, q->key, pipe_sink, q, &q->halt, &o);
    pthread_mutex_lock(&q->mu);
    q->done = 1;
    q->rc = rc;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* The detail of the error that caused rc, in both errbufs. */
static void restore_err(wcache_store *st, const char *why, const wcache_snapshot_read_opts *ro)
{
    char *reb = ro && ro->size >= sizeof *ro ? ro->errbuf : NULL;
    size_t rel = reb ? ro->errbuf_len : 0;
    if (reb && rel && reb != why)
        snprintf(reb, rel, "%s", why);
    pthread_mutex_lock(&st->emu);
    if (st->eb && st->el && st->eb != why)
        snprintf(st->eb, st->el, "%s", why);
    pthread_mutex_unlock(&st->emu);
}

static int restore_stream(wcache_store *st, const char *full, wcache_cache *c,
                          const wcache_snapshot_read_opts *ropts, wcache_snapshot_info *info)
{
    /* The restore words its errors into a buffer of its own while the
     * download thread may word one into the store's: the caller may have
     * given both the same buffer. */
    char reb[512] = "";
    wcache_snapshot_read_opts ro;
    memset(&ro, 0, sizeof ro);
    if (ropts)
        ro = *ropts;
    ro.size = sizeof ro;
    ro.errbuf = reb;
    ro.errbuf_len = sizeof reb;
    spipe q;
    memset(&q, 0, sizeof q);
    q.st = st;
    q.key = full;
    q.buf = wci_malloc(&st->a, PIPE_BYTES);
    if (!q.buf)
        return WCACHE_ENOMEM;
    if (wci_store_halt_init(&q.halt) != WCACHE_OK) {
        wci_free(&st->a, q.buf);
        return wci_store_err(st, WCACHE_ESYS, "store: cannot set up the download's stop");
    }
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.cv, NULL);
    pthread_t th;
    int rc;
    if (pthread_create(&th, NULL, download_main, &q) != 0) {
        rc = wci_store_err(st, WCACHE_ESYS, "store: cannot start the download thread");
    } else {
        rc = wcache_snapshot_restore_from(c, pipe_read, &q, &ro, info);
        pthread_mutex_lock(&q.mu);
        q.closed = 1; /* a restore that failed early stops the download */
        pthread_cond_broadcast(&q.cv);
        pthread_mutex_unlock(&q.mu);
        wci_store_halt_raise(&q.halt);
        pthread_join(th, NULL);
        if (rc != WCACHE_OK && q.rc_read) {
            rc = q.rc; /* the download's own error, worded in the store's errbuf */
            pthread_mutex_lock(&st->emu);
            snprintf(reb, sizeof reb, "%s", st->eb && st->el ? st->eb : wcache_strerror(rc));
            pthread_mutex_unlock(&st->emu);
        }
        if (rc != WCACHE_OK)
            restore_err(st, reb, ropts);
    }
    pthread_cond_destroy(&q.cv);
    pthread_mutex_destroy(&q.mu);
    wci_store_halt_destroy(&q.halt);
    wci_free(&st->a, q.buf);
    return rc;
}

wcache_code wcache_store_restore(wcache_store *st, const char *key, wcache_cache *c,
                                 const wcache_snapshot_read_opts *ropts,
                                 wcache_snapshot_info *info)
{
    if (!live(st) || !c || (ropts && ropts->size < sizeof *ropts))
        return WCACHE_EINVAL;
    char nk[3 * WCACHE_SNAP_MAX_SOURCE_ID + 32];
    if (!key) {
        if (!ropts || !ropts->expect_source_id || !ropts->expect_source_id_len)
            return wci_store_err(st, WCACHE_EINVAL,
                                 "store: restore without a key needs expect_source_id");
        int rc = wcache_store_newest(st, ropts->expect_source_id, ropts->expect_source_id_len,
                                     nk, sizeof nk, NULL);
        if (rc != WCACHE_OK)
            return rc;
        key = nk;
    }
    int rc = key_ok(st, key);
    if (rc != WCACHE_OK)
        return rc;
    if (wcache_cache_revision(c) != 0) /* before a download is started for nothing */
        return wci_store_err(st, WCACHE_ESTATE, "store: restore needs an empty cache");
    char *full = full_key(st, key);
    if (!full)
        return WCACHE_ENOMEM;
    rc = full[0] ? restore_stream(st, full, c, ropts, info)
                 : wci_store_err(st, WCACHE_EINVAL, "store: restore needs an object key");
    wci_free(&st->a, full);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Listing, deletion, the layout                                            */
/* ------------------------------------------------------------------------ */

typedef struct list_ctx {
    wcache_store *st;
    wcache_store_list_fn fn;
    void *ud;
    int stopped;
} list_ctx;

static int list_one(const char *key, size_t key_len, const wci_store_obj *o, void *ud)
{
    list_ctx *l = ud;
    const char *rk = rel_key(l->st, key);
    wcache_store_object obj;
    memset(&obj, 0, sizeof obj);
    obj.size = sizeof obj;
    obj.key = rk;
    obj.key_len = key_len - (size_t)(rk - key);
    obj.bytes = o->bytes;
    obj.mtime_unix_ns = o->mtime_ns;
    obj.etag = o->etag;
    obj.revision = wci_store_key_revision(rk, obj.key_len);
    if (l->fn(&obj, l->ud)) {
        l->stopped = 1;
        return 1;
    }
    return 0;
}

wcache_code wcache_store_list(wcache_store *st, const char *prefix, wcache_store_list_fn fn,
                              void *userdata)
{
    if (!live(st) || !fn)
        return WCACHE_EINVAL;
    int rc = key_ok(st, prefix);
    if (rc != WCACHE_OK)
        return rc;
    char *full;
    if (prefix && prefix[0]) {
        full = full_key(st, prefix);
    } else {
        /* Everything under the base directory, not siblings that share
         * its first letters. */
        size_t bl = strlen(st->base);
        full = wci_malloc(&st->a, bl + 2);
        if (full)
            snprintf(full, bl + 2, "%s%s", st->base, bl ? "/" : "");
    }
    if (!full)
        return WCACHE_ENOMEM;
    list_ctx l = {st, fn, userdata, 0};
    rc = st->ops->list(st, full, list_one, &l);
    wci_free(&st->a, full);
    if (rc == WCACHE_OK && l.stopped)
        rc = WCACHE_ESTOPPED;
    return rc;
}

wcache_code wcache_store_delete(wcache_store *st, const char *key)
{
    if (!live(st))
        return WCACHE_EINVAL;
    int rc = key_ok(st, key);
    if (rc != WCACHE_OK)
        return rc;
    char *full = full_key(st, key);
    if (!full)
        return WCACHE_ENOMEM;
    rc = full[0] ? st->ops->del(st, full)
                 : wci_store_err(st, WCACHE_EINVAL, "store: delete needs an object key");
    wci_free(&st->a, full);
    return rc;
}

/* The revisions of one source's snapshots, from a listing. */
typedef struct revs {
    wcache_store *st;
    int64_t *v;
    size_t n, cap;
    int oom;
} revs;

static int collect_rev(const wcache_store_object *o, void *ud)
{
    revs *r = ud;
    const char *sl = strchr(o->key, '/');
    /* Only names right under the source's directory. */
    if (!o->revision || !sl || strchr(sl + 1, '/'))
        return 0;
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 64;
        int64_t *nv = wci_calloc(&r->st->a, nc, sizeof *nv);
        if (!nv) {
            r->oom = 1;
            return 1;
        }
        if (r->n)
            memcpy(nv, r->v, r->n * sizeof *nv);
        wci_free(&r->st->a, r->v);
        r->v = nv;
        r->cap = nc;
    }
    r->v[r->n++] = o->revision;
    return 0;
}

static int rev_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int source_revs(wcache_store *st, const void *id, size_t len, revs *r)
{
    memset(r, 0, sizeof *r);
    r->st = st;
    if (!id || !len || len > WCACHE_SNAP_MAX_SOURCE_ID)
        return WCACHE_EINVAL;
    char dir[3 * WCACHE_SNAP_MAX_SOURCE_ID + 2];
    size_t n = escape_id(id, len, dir);
    dir[n] = '/';
    dir[n + 1] = '\0';
    int rc = wcache_store_list(st, dir, collect_rev, r);
    if (r->oom)
        rc = WCACHE_ENOMEM;
    if (rc == WCACHE_OK && r->n)
        qsort(r->v, r->n, sizeof *r->v, rev_cmp);
    return rc;
}

wcache_code wcache_store_newest(wcache_store *st, const void *source_id, size_t source_id_len,
                                char *key, size_t key_len, int64_t *revision)
{
    if (!live(st) || !key)
        return WCACHE_EINVAL;
    revs r;
    int rc = source_revs(st, source_id, source_id_len, &r);
    if (rc == WCACHE_OK && r.n == 0)
        rc = wci_store_err(st, WCACHE_ENOTFOUND,
                           "store: no snapshot of that source under %.300s", st->url);
    if (rc == WCACHE_OK)
        rc = wcache_store_snapshot_key(source_id, source_id_len, r.v[r.n - 1], key, key_len);
    if (rc == WCACHE_OK && revision)
        *revision = r.v[r.n - 1];
    wci_free(&st->a, r.v);
    return rc;
}

wcache_code wcache_store_retain(wcache_store *st, const void *source_id, size_t source_id_len,
                                size_t keep, size_t *removed)
{
    if (removed)
        *removed = 0;
    if (!live(st) || keep < 1)
        return WCACHE_EINVAL;
    revs r;
    int rc = source_revs(st, source_id, source_id_len, &r);
    char k[3 * WCACHE_SNAP_MAX_SOURCE_ID + 32];
    for (size_t i = 0; rc == WCACHE_OK && i + keep < r.n; i++) {
        rc = wcache_store_snapshot_key(source_id, source_id_len, r.v[i], k, sizeof k);
        if (rc == WCACHE_OK)
            rc = wcache_store_delete(st, k);
        if (rc == WCACHE_OK && removed)
            (*removed)++;
    }
    wci_free(&st->a, r.v);
    return rc;
}
