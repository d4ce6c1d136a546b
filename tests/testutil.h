/*
 * testutil.h - helpers shared by the black-box suites (check_api.c,
 * check_model.c, check_threads.c, check_oom.c, the sources' and stores').
 *
 * Everything here is static, but for the stand-in servers and temporary
 * directories of tu_http.c, so that each suite sees only <watchcache.h>;
 * nothing in here knows the library's internals.
 */
#ifndef WCACHE_TESTUTIL_H
#define WCACHE_TESTUTIL_H

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <watchcache.h>

/*
 * Check's ck_assert_msg() -- under every ck_assert_*() -- records each
 * assertion that passes as the test's "last point reached": a write and an
 * fflush() to the result file, that is a write(2) per passing assertion.
 * The randomized and stress suites pass millions; that syscall was 68% of
 * the tree suite and most of its cost under valgrind and ASan.  Here a
 * passing assertion costs a compare; a failing one reports exactly as
 * before.  What is lost is the "after this point" line when a test
 * crashes, which the sanitizer passes replace with a stack trace.  Being
 * silent on success also keeps worker threads out of Check, which is not
 * thread-safe.  ck_assert_msg is a macro that the others name at their
 * expansion, so this covers them all.
 */
#undef ck_assert_msg
#define ck_assert_msg(expr, ...)                                                    \
    ((expr) ? (void)0                                                               \
            : _ck_assert_failed(__FILE__, __LINE__, "Assertion '" #expr "' failed", \
                                ##__VA_ARGS__))

/* Assert that a call returns a given wcache_code, naming both codes. */
#define ck_assert_wc(expr, want)                                                   \
    do {                                                                           \
        int got_ = (int)(expr);                                                    \
        int want_ = (int)(want);                                                   \
        ck_assert_msg(got_ == want_, "%s: got %d (%s), want %d (%s)", #expr, got_, \
                      wcache_strerror(got_), want_, wcache_strerror(want_));       \
    } while (0)

#define ck_assert_ok(expr) ck_assert_wc(expr, WCACHE_OK)

/* WCACHE_LONG=1 (make check-long) scales the randomized loops up. */
static inline int tu_long(void)
{
    const char *s = getenv("WCACHE_LONG");
    return s && *s && strcmp(s, "0") != 0;
}

/* Test timeouts sized for valgrind; CK_TIMEOUT_MULTIPLIER scales them further. */
static inline int tu_timeout(int base)
{
    return tu_long() ? base * 10 : base;
}

/* WCACHE_SEED replays a failing randomized run. */
static inline uint64_t tu_seed(uint64_t dflt)
{
    const char *s = getenv("WCACHE_SEED");
    if (s && *s)
        return strtoull(s, NULL, 0);
    return dflt;
}

/* splitmix64: tiny, seedable, and identical on every platform. */
typedef struct tu_rng {
    uint64_t s;
} tu_rng;

static inline uint64_t tu_next(tu_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n); 0 when n is 0.  The modulo bias is irrelevant here. */
static inline uint64_t tu_below(tu_rng *r, uint64_t n)
{
    return n ? tu_next(r) % n : 0;
}

/* Uniform in [lo, hi]. */
static inline int64_t tu_range(tu_rng *r, int64_t lo, int64_t hi)
{
    return lo + (int64_t)tu_below(r, (uint64_t)(hi - lo) + 1);
}

/* Byte-wise key order with the shorter key first on a common prefix: the
 * order etcd and the Kubernetes btree use, and the one the header promises. */
static inline int tu_keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* Render bytes for a failure message: printable ASCII as is, others \xNN. */
static inline const char *tu_hex(const void *p, size_t n, char *buf, size_t cap)
{
    const unsigned char *s = p;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        if (s[i] >= 0x21 && s[i] < 0x7f && s[i] != '\\')
            buf[o++] = (char)s[i];
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", s[i]);
    }
    buf[o < cap ? o : cap - 1] = 0;
    return buf;
}

/*
 * Counting and failing allocator.  Each block carries a header with a magic
 * word so that a free of a foreign pointer or a double free is caught at
 * once instead of corrupting the count.  fail_at is compared with the
 * number of allocation attempts since tu_alloc_arm(): the allocation whose
 * index equals fail_at returns NULL (once; later ones succeed), which is
 * how jansson's chaos test walks every failure point of an operation.
 */
#define TU_ALLOC_MAGIC 0x77636163686521ULL
#define TU_ALLOC_DEAD 0xdeadbeefdeadbeefULL

typedef struct tu_alloc_state {
    long attempts;        /* allocation calls since arming */
    long fail_at;         /* attempt index to fail; -1 never */
    int fail_all;         /* 1: every attempt from fail_at on fails */
    long live;            /* blocks allocated and not yet freed */
    long long live_bytes; /* their sizes as asked for */
    long total;           /* successful allocations ever */
    long failed;          /* allocations refused */
    long bad_frees;       /* frees of pointers we never handed out */
    int fail_per_mille;   /* > 0: also fail this share of allocations at random */
    uint64_t fail_rng;    /* splitmix64 state for the random failures */
} tu_alloc_state;

typedef union tu_alloc_hdr {
    struct {
        uint64_t magic;
        size_t n;
    } h;
    max_align_t align;
} tu_alloc_hdr;

static inline void *tu_alloc_fn(size_t n, void *ud)
{
    tu_alloc_state *st = ud;
    long idx = st->attempts++;
    if (st->fail_at >= 0 && (idx == st->fail_at || (st->fail_all && idx > st->fail_at))) {
        st->failed++;
        return NULL;
    }
    if (st->fail_per_mille > 0) {
        uint64_t z = (st->fail_rng += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        if ((z ^ (z >> 31)) % 1000 < (uint64_t)st->fail_per_mille) {
            st->failed++;
            return NULL;
        }
    }
    if (n > SIZE_MAX - sizeof(tu_alloc_hdr))
        return NULL;
    tu_alloc_hdr *h = malloc(sizeof *h + n);
    if (!h)
        return NULL;
    h->h.magic = TU_ALLOC_MAGIC;
    h->h.n = n;
    st->live++;
    st->live_bytes += (long long)n;
    st->total++;
    return h + 1;
}

static inline void tu_free_fn(void *p, void *ud)
{
    tu_alloc_state *st = ud;
    if (!p)
        return;
    tu_alloc_hdr *h = (tu_alloc_hdr *)p - 1;
    if (h->h.magic != TU_ALLOC_MAGIC) {
        st->bad_frees++;
        return;
    }
    h->h.magic = TU_ALLOC_DEAD;
    st->live--;
    st->live_bytes -= (long long)h->h.n;
    free(h);
}

static inline wcache_allocator tu_allocator(tu_alloc_state *st)
{
    wcache_allocator a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.alloc = tu_alloc_fn;
    a.free = tu_free_fn;
    a.userdata = st;
    return a;
}

#ifdef WCI_ALLOC_H
/* For suites of lib/ internals (wb_*.c): a fresh counting wci_alloc for
 * one test, and the check at its end that everything went back. */
static inline wci_alloc tu_wci_alloc(tu_alloc_state *st)
{
    memset(st, 0, sizeof *st);
    st->fail_at = -1;
    return (wci_alloc){tu_alloc_fn, tu_free_fn, st};
}

static inline void tu_wci_alloc_done(const tu_alloc_state *st)
{
    ck_assert_msg(st->live == 0, "%ld blocks leaked", st->live);
    ck_assert_int_eq(st->bad_frees, 0);
}
#endif

/* Fail the allocation at index n counted from now (-1: never). */
static inline void tu_alloc_arm(tu_alloc_state *st, long n)
{
    st->attempts = 0;
    st->fail_at = n;
    st->fail_all = 0;
}

/* A fake monotonic clock for age-based retention: no sleeping in tests. */
typedef struct tu_clock {
    int64_t now_ns;
    long calls;
} tu_clock;

static inline int64_t tu_clock_fn(void *ud)
{
    tu_clock *c = ud;
    c->calls++;
    return c->now_ns;
}

/* key's create_revision, mod_revision and version at rev (0: latest). */
static inline void tu_expect_meta(wcache_cache *c, int64_t rev, const char *key, int64_t cr,
                                  int64_t mr, int64_t ver)
{
    wcache_view *v;
    ck_assert_ok(wcache_view_create(c, &v));
    ck_assert_ok(wcache_view_begin(v, rev));
    wcache_kv kv;
    ck_assert_ok(wcache_view_get(v, key, strlen(key), &kv));
    ck_assert_msg(kv.create_revision == cr && kv.mod_revision == mr && kv.version == ver,
                  "%s at %lld: %lld/%lld/%lld, want %lld/%lld/%lld", key, (long long)rev,
                  (long long)kv.create_revision, (long long)kv.mod_revision,
                  (long long)kv.version, (long long)cr, (long long)mr, (long long)ver);
    wcache_view_free(v);
}

#define TU_NS_PER_S INT64_C(1000000000)

/* An open cache that compacts only when asked (a snapshot's revisions stay). */
static inline wcache_cache *tu_new_cache(void)
{
    wcache_cache *c = NULL;
    ck_assert_int_eq(wcache_cache_create(&c, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_set_param(c, WCACHE_P_AUTO_COMPACT, 0), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_open(c), WCACHE_OK);
    return c;
}

/* ---- tu_http.c: stand-ins for HTTP peers, temporary directories, waits ---- */

/* A loopback HTTP server: a thread a connection, each handed to serve,
 * which answers and returns (the server closes fd).  Connection threads
 * are detached and counted, so a relay can carry thousands of them. */
typedef struct tu_srv {
    int lfd, port;
    pthread_t acceptor;
    _Atomic int active; /* connection threads still running */
    _Atomic int stop;
    void (*serve)(struct tu_srv *sv, int fd);
    void *ud; /* the suite's */
} tu_srv;

/* Listen on 127.0.0.1, a port of the kernel's (sv->port). */
void tu_srv_start(tu_srv *sv, void (*serve)(tu_srv *sv, int fd), void *ud);
/* Stop accepting, then wait (60 s at most) until every connection's
 * serve function has returned (one waiting on the peer watches sv->stop). */
void tu_srv_stop(tu_srv *sv);
/* All of p, or -1. */
int tu_send_all(int fd, const char *p, size_t n);
/* text as HTTP chunks of 1 to 7 bytes: every parser sees it split. */
int tu_send_chunked(int fd, const char *text, tu_rng *r);
/* Wait until the peer hangs up or the server stops (at most 60 s). */
void tu_hold(tu_srv *sv, int fd);

/* CLOCK_MONOTONIC in milliseconds; a pause of ms. */
int64_t tu_now_ms(void);
void tu_pause_ms(int ms);
/* A deadline of ms on a plain build, longer where everything is slower
 * (valgrind serialises threads and runs OpenSSL's handshake 50 times
 * slower; the sanitizers less so).  Deadlines only bound a wait. */
int64_t tu_patient(int64_t ms);
/* Poll cond(ud) until it holds (1) or tu_patient(ms) pass (0). */
int tu_wait_for(int (*cond)(void *), void *ud, int64_t ms);

/* A new directory $TMPDIR/stem-XXXXXX (default /tmp) into buf. */
void tu_tmpdir(char *buf, size_t cap, const char *stem);
/* Remove p and everything below it. */
void tu_rm_rf(const char *p);

#endif /* WCACHE_TESTUTIL_H */
