/*
 * check_watch.c - watch subscriptions and fresh reads, black-box.
 *
 * The cases follow section 8.3 of the Kubernetes watch-cache notes: watch
 * from a too-old, exact and future revision, initial events and their end
 * marker, selector transitions, slow-watcher termination, bookmark
 * revisions, and a fresh read that waits for a late revision or times out.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <watchcache.h>

#include "testutil.h"

static wcache_cache *C;
static int64_t NOW_NS;

static int64_t fake_clock(void *ud)
{
    (void)ud;
    return __atomic_load_n(&NOW_NS, __ATOMIC_SEQ_CST);
}

static void setup(void)
{
    NOW_NS = 1000000000;
    ck_assert_ok(wcache_cache_create(&C, NULL));
    ck_assert_ok(wcache_cache_set_param(C, WCACHE_P_RETAIN_SECONDS, 0));
    ck_assert_ok(wcache_cache_set_clock(C, fake_clock, NULL));
    ck_assert_ok(wcache_cache_open(C));
}

static void teardown(void)
{
    wcache_cache_close(C);
    C = NULL;
}

static void put(const char *k, const char *v, int64_t rev)
{
    ck_assert_ok(wcache_ingest_put(C, k, strlen(k), v, strlen(v), rev));
}

static void del(const char *k, int64_t rev)
{
    ck_assert_ok(wcache_ingest_delete(C, k, strlen(k), rev));
}

static wcache_watch *open_watch(const char *prefix, int64_t from)
{
    wcache_watch_opts o = {.size = sizeof o, .start_revision = from};
    if (prefix) {
        o.prefix = prefix;
        o.prefix_len = strlen(prefix);
    }
    wcache_watch *w = NULL;
    ck_assert_ok(wcache_watch_open(C, &o, &w));
    return w;
}

/* Take everything available now; returns the count, sets *end. */
static size_t drain(wcache_watch *w, wcache_watch_event *evs, size_t cap, wcache_code *end)
{
    size_t total = 0, n;
    wcache_code rc;
    *end = WCACHE_OK;
    while ((rc = wcache_watch_next(w, evs + total, cap - total, &n)) == WCACHE_OK && n) {
        total += n;
        if (total == cap)
            break;
    }
    if (rc != WCACHE_OK)
        *end = rc;
    return total;
}

static void release(wcache_watch_event *evs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        wcache_event_unref(evs[i].ev);
}

static void expect_ev(const wcache_watch_event *e, wcache_event_type t, const char *key,
                      int64_t rev)
{
    ck_assert_int_eq(e->type, t);
    ck_assert_int_eq(e->revision, rev);
    if (key) {
        ck_assert_uint_eq(e->kv.key_len, strlen(key));
        ck_assert(memcmp(e->kv.key, key, e->kv.key_len) == 0);
    }
}

START_TEST(test_watch_live_and_types)
{
    put("/a/1", "x", 1);
    wcache_watch *w = open_watch("/a/", 0);
    put("/a/1", "y", 2);
    put("/b/1", "z", 3); /* other prefix */
    put("/a/2", "q", 4);
    del("/a/1", 5);
    wcache_watch_event evs[16];
    wcache_code end;
    size_t n = drain(w, evs, 16, &end);
    ck_assert_int_eq(end, WCACHE_OK);
    ck_assert_uint_eq(n, 3);
    expect_ev(&evs[0], WCACHE_EV_MODIFIED, "/a/1", 2);
    ck_assert_int_eq(evs[0].kv.version, 2);
    expect_ev(&evs[1], WCACHE_EV_ADDED, "/a/2", 4);
    expect_ev(&evs[2], WCACHE_EV_DELETED, "/a/1", 5);
    /* a delete shows the last state */
    ck_assert_uint_eq(evs[2].kv.value_len, 1);
    ck_assert(memcmp(evs[2].kv.value, "y", 1) == 0);
    release(evs, n);
    wcache_watch_close(w);
}
END_TEST

START_TEST(test_watch_from_past_exact_and_compacted)
{
    for (int i = 1; i <= 10; i++) {
        char k[16];
        snprintf(k, sizeof k, "/k/%d", i % 3);
        put(k, "v", i);
    }
    wcache_watch *w = open_watch(NULL, 6);
    wcache_watch_event evs[16];
    wcache_code end;
    size_t n = drain(w, evs, 16, &end);
    ck_assert_uint_eq(n, 4); /* revisions 7..10, nothing before, nothing twice */
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(evs[i].revision, 7 + (int64_t)i);
    release(evs, n);
    put("/k/9", "v", 11);
    n = drain(w, evs, 16, &end);
    ck_assert_uint_eq(n, 1);
    expect_ev(&evs[0], WCACHE_EV_ADDED, "/k/9", 11);
    release(evs, n);
    wcache_watch_close(w);

    ck_assert_ok(wcache_cache_compact(C, 8));
    wcache_watch_opts o = {.size = sizeof o, .start_revision = 7};
    ck_assert_wc(wcache_watch_open(C, &o, &w), WCACHE_ECOMPACTED);
    o.start_revision = 8; /* the compacted revision itself is still readable */
    ck_assert_ok(wcache_watch_open(C, &o, &w));
    n = drain(w, evs, 16, &end);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(evs[0].revision, 9);
    release(evs, n);
    wcache_watch_close(w);
}
END_TEST

START_TEST(test_watch_future_revision_waits)
{
    put("/f/1", "a", 1);
    wcache_watch *w = open_watch("/f/", 5);
    wcache_watch_event evs[8];
    wcache_code end;
    put("/f/1", "b", 3);
    put("/f/1", "c", 5);
    ck_assert_uint_eq(drain(w, evs, 8, &end), 0);
    put("/f/1", "d", 6);
    size_t n = drain(w, evs, 8, &end);
    ck_assert_uint_eq(n, 1);
    expect_ev(&evs[0], WCACHE_EV_MODIFIED, "/f/1", 6);
    release(evs, n);
    wcache_watch_close(w);
}
END_TEST

START_TEST(test_watch_initial_events)
{
    put("/p/b", "1", 1);
    put("/p/a", "2", 2);
    put("/q/x", "3", 3);
    put("/p/c", "4", 4);
    del("/p/c", 5);
    wcache_watch_opts o = {
        .size = sizeof o, .prefix = "/p/", .prefix_len = 3, .initial_events = 1};
    wcache_watch *w;
    ck_assert_ok(wcache_watch_open(C, &o, &w));
    put("/p/d", "5", 6);
    wcache_watch_event evs[8];
    wcache_code end;
    size_t n = drain(w, evs, 8, &end);
    ck_assert_uint_eq(n, 4);
    expect_ev(&evs[0], WCACHE_EV_ADDED, "/p/a", 2); /* key order, own revisions */
    expect_ev(&evs[1], WCACHE_EV_ADDED, "/p/b", 1);
    expect_ev(&evs[2], WCACHE_EV_INITIAL_END, NULL, 5); /* the global revision */
    expect_ev(&evs[3], WCACHE_EV_ADDED, "/p/d", 6);
    release(evs, n);
    wcache_watch_close(w);
}
END_TEST

static const char *pod(const char *app)
{
    static char buf[128];
    snprintf(buf, sizeof buf, "{\"metadata\":{\"labels\":{\"app\":\"%s\"}}}", app);
    return buf;
}

START_TEST(test_watch_selector_transitions)
{
    put("/pods/x", pod("web"), 1);
    wcache_watch_opts o = {.size = sizeof o,
                           .label_selector = "app=web",
                           .label_selector_len = 7,
                           .prev_value = 1};
    wcache_watch *w;
    ck_assert_ok(wcache_watch_open(C, &o, &w));
    put("/pods/x", pod("db"), 2);  /* moves out: DELETED with the previous object */
    put("/pods/x", pod("db2"), 3); /* stays out: nothing */
    put("/pods/x", pod("web"), 4); /* moves in: ADDED */
    put("/pods/x", pod("web"), 5); /* stays in: MODIFIED */
    put("/pods/y", pod("db"), 6);
    del("/pods/x", 7);
    wcache_watch_event evs[8];
    wcache_code end;
    size_t n = drain(w, evs, 8, &end);
    ck_assert_uint_eq(n, 4);
    expect_ev(&evs[0], WCACHE_EV_DELETED, "/pods/x", 2);
    ck_assert(memmem(evs[0].kv.value, evs[0].kv.value_len, "\"web\"", 5) != NULL);
    ck_assert_int_eq(evs[0].kv.mod_revision, 1);
    expect_ev(&evs[1], WCACHE_EV_ADDED, "/pods/x", 4);
    expect_ev(&evs[2], WCACHE_EV_MODIFIED, "/pods/x", 5);
    ck_assert_int_eq(evs[2].prev.mod_revision, 4);
    expect_ev(&evs[3], WCACHE_EV_DELETED, "/pods/x", 7);
    release(evs, n);
    wcache_watch_close(w);

    o.label_selector = "app in (web";
    o.label_selector_len = strlen(o.label_selector);
    ck_assert_wc(wcache_watch_open(C, &o, &w), WCACHE_EINVAL);
}
END_TEST

START_TEST(test_watch_slow_watcher_ends)
{
    wcache_watch_opts o = {.size = sizeof o, .queue_size = 8};
    wcache_watch *slow, *fast;
    ck_assert_ok(wcache_watch_open(C, &o, &slow));
    ck_assert_ok(wcache_watch_open(C, &o, &fast));
    wcache_watch_event evs[16];
    wcache_code end;
    for (int i = 1; i <= 20; i++) {
        put("/s/1", "v", i);
        size_t n = drain(fast, evs, 16, &end);
        ck_assert_uint_eq(n, 1); /* the slow one does not hold the fast one back */
        release(evs, n);
    }
    /* the queued 8 are handed out, then the reason */
    size_t n = drain(slow, evs, 16, &end);
    ck_assert_uint_eq(n, 8);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(evs[i].revision, 1 + (int64_t)i);
    release(evs, n);
    ck_assert_int_eq(end, WCACHE_EOVERFLOW);
    ck_assert_wc(wcache_watch_next(slow, evs, 16, &n), WCACHE_EOVERFLOW);
    wcache_wait_stat ws = {.size = sizeof ws};
    ck_assert_ok(wcache_cache_wait_stat(C, &ws));
    ck_assert_uint_eq(ws.overflows, 1);
    wcache_watch_close(slow);
    wcache_watch_close(fast);
}
END_TEST

/*
 * Plain watchers on one prefix with queues of 256 or more share their
 * bucket's ring (a "fan", see lib/watch.h): each must still get exactly
 * its own stream, with its own options, across segment boundaries (512
 * slots), with overflow at exactly its queue_size, stop, close with a
 * backlog, bookmarks and fd wake-ups as a watcher with its own queue;
 * and deliveries lent by wcache_watch_next_borrowed() stay valid until
 * the next call even when the watcher overflows meanwhile.
 */
static wcache_watch *open_fan(int64_t from, uint32_t qs, int prev, int64_t bm_ms)
{
    wcache_watch_opts o = {.size = sizeof o,
                           .start_revision = from,
                           .prefix = "/f/",
                           .prefix_len = 3,
                           .queue_size = qs,
                           .prev_value = prev,
                           .bookmark_interval_ms = bm_ms};
    wcache_watch *w = NULL;
    ck_assert_ok(wcache_watch_open(C, &o, &w));
    return w;
}

/* What fan_write made each revision: key /f/<rev % 7>, put, or a delete
 * every 5th revision when the key is there. */
static wcache_event_type FAN_TYPE[1200];
static int FAN_LIVE[7];

static void expect_fan_batch(const wcache_watch_event *evs, size_t n, int64_t from, int prev)
{
    for (size_t i = 0; i < n; i++) {
        int64_t rev = from + (int64_t)i;
        char key[16];
        snprintf(key, sizeof key, "/f/%d", (int)(rev % 7));
        wcache_event_type t = FAN_TYPE[rev];
        expect_ev(&evs[i], t, key, rev);
        ck_assert_int_eq(evs[i].prev.key_len > 0, prev && t == WCACHE_EV_MODIFIED);
    }
}

/* Check the next want events of w against revisions [from, from + want),
 * taken by wcache_watch_next(), or borrowed (checked before the next call
 * takes them back). */
static void expect_fan_stream_by(wcache_watch *w, int64_t from, size_t want, int prev, int lend)
{
    wcache_watch_event evs[64];
    size_t total = 0, n;
    while (total < want) {
        size_t cap = want - total < 64 ? want - total : 64;
        wcache_code rc = lend ? wcache_watch_next_borrowed(w, evs, cap, &n)
                              : wcache_watch_next(w, evs, cap, &n);
        ck_assert_ok(rc);
        if (!n)
            break;
        expect_fan_batch(evs, n, from + (int64_t)total, prev);
        for (size_t i = 0; i < n; i++)
            ck_assert(lend ? evs[i].ev == NULL : evs[i].ev != NULL);
        if (!lend)
            release(evs, n);
        total += n;
    }
    ck_assert_uint_eq(total, want);
}

static void expect_fan_stream(wcache_watch *w, int64_t from, size_t want, int prev)
{
    expect_fan_stream_by(w, from, want, prev, 0);
}

static void fan_write(int64_t from, int64_t to)
{
    for (int64_t rev = from; rev <= to; rev++) {
        char key[16];
        int k = (int)(rev % 7);
        snprintf(key, sizeof key, "/f/%d", k);
        if (rev % 5 == 0 && FAN_LIVE[k]) {
            del(key, rev);
            FAN_TYPE[rev] = WCACHE_EV_DELETED;
        } else {
            put(key, "v", rev);
            FAN_TYPE[rev] = FAN_LIVE[k] ? WCACHE_EV_MODIFIED : WCACHE_EV_ADDED;
        }
        FAN_LIVE[k] = FAN_TYPE[rev] != WCACHE_EV_DELETED;
    }
}

START_TEST(test_watch_shared_fan)
{
    memset(FAN_LIVE, 0, sizeof FAN_LIVE);
    wcache_watch *a = open_fan(0, 1024, 0, 0), *b = open_fan(0, 1024, 1, 0);
    wcache_watch *slow = open_fan(0, 256, 0, 0), *stopped = open_fan(0, 1024, 0, 0);
    wcache_watch *gone = open_fan(0, 1024, 0, 0), *future = open_fan(700, 1024, 0, 0);
    wcache_watch_event evs[4];
    size_t n;
    ck_assert_ok(wcache_watch_next(a, evs, 4, &n)); /* arms a's fd */
    ck_assert_uint_eq(n, 0);
    struct pollfd p = {.fd = wcache_watch_fd(a), .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 0), 0);
    wcache_watch *lender = open_fan(0, 256, 0, 0);
    fan_write(1, 100);
    ck_assert_int_eq(poll(&p, 1, 0), 1);
    wcache_watch_stop(stopped); /* after 100 revisions: those are its backlog */
    /* lender borrows 10, then falls 256 behind while they are lent: the
     * writer ends and detaches it, and what it lent must stay readable */
    wcache_watch_event lent[10];
    ck_assert_ok(wcache_watch_next_borrowed(lender, lent, 10, &n));
    ck_assert_uint_eq(n, 10);
    fan_write(101, 400);
    expect_fan_batch(lent, 10, 1, 0);
    expect_fan_stream_by(lender, 11, 246, 0, 1);
    ck_assert_wc(wcache_watch_next_borrowed(lender, evs, 4, &n), WCACHE_EOVERFLOW);
    expect_fan_stream(a, 1, 400, 0);
    expect_fan_stream_by(b, 1, 400, 1, 1);
    wcache_watch *late = open_fan(0, 1024, 0, 0); /* joins at 400 */
    fan_write(401, 1100);                         /* past two segment ends */
    expect_fan_stream(a, 401, 700, 0);
    expect_fan_stream_by(b, 401, 700, 1, 1);
    expect_fan_stream(late, 401, 700, 0);
    expect_fan_stream(future, 701, 400, 0);
    /* never read: exactly its queue, then the reason */
    expect_fan_stream(slow, 1, 256, 0);
    ck_assert_wc(wcache_watch_next(slow, evs, 4, &n), WCACHE_EOVERFLOW);
    ck_assert_uint_eq(n, 0);
    expect_fan_stream(stopped, 1, 100, 0);
    ck_assert_wc(wcache_watch_next(stopped, evs, 4, &n), WCACHE_ESTOPPED);
    wcache_wait_stat ws = {.size = sizeof ws};
    ck_assert_ok(wcache_cache_wait_stat(C, &ws));
    ck_assert_uint_eq(ws.overflows, 3); /* slow, lender, and gone past 1,024 */
    wcache_watch_close(gone);           /* 1,024 undelivered: their references go with it */
    /* an idle fan watcher gets its bookmark after what the fan holds */
    wcache_watch *bm = open_fan(0, 1024, 0, 1000);
    fan_write(1101, 1102);
    __atomic_add_fetch(&NOW_NS, 2000000000, __ATOMIC_SEQ_CST);
    put("/elsewhere", "v", 1103);
    expect_fan_stream(bm, 1101, 2, 0);
    ck_assert_ok(wcache_watch_next(bm, evs, 4, &n));
    ck_assert_uint_eq(n, 1);
    expect_ev(&evs[0], WCACHE_EV_BOOKMARK, NULL, 1103);
    release(evs, n);
    wcache_watch *all[] = {a, b, slow, stopped, future, late, bm, lender};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        wcache_watch_close(all[i]);
}
END_TEST

/*
 * Fans under threads: a writer thread, one consumer thread taking from
 * three fan watchers (owned, borrowed, and one stopped from the main
 * thread half way), another borrowing slowly from a fourth so that the
 * writer ends it and detaches it while it has deliveries lent.  Each must
 * get a gap-free stream from revision 1 (all of it unless it ended), in
 * order, with the right key and revision in every delivery.
 */
typedef struct fan_reader {
    wcache_watch *w;
    int lend, slow;
    int64_t next; /* revision expected next */
    wcache_code end;
    _Atomic int done;
    _Atomic int64_t seen; /* last revision taken, for the writer's pacing */
} fan_reader;

static _Atomic int64_t FT_WRITTEN;
static int64_t FT_N;
static _Atomic int FT_BAD;

/* Paced by the first three readers (256 behind at most, their queues
 * hold 512): two must get everything, the third everything up to its stop;
 * the slow one is not waited for. */
static void *fan_writer(void *arg)
{
    fan_reader *paced = arg;
    for (int64_t rev = 1; rev <= FT_N; rev++) {
        for (int i = 0; i < 3; i++)
            while (!atomic_load(&paced[i].done) && rev - atomic_load(&paced[i].seen) > 256)
                sched_yield();
        char key[16];
        snprintf(key, sizeof key, "/f/%d", (int)(rev % 10));
        if (wcache_ingest_put(C, key, strlen(key), "v", 1, rev) != WCACHE_OK)
            atomic_store(&FT_BAD, 1);
        atomic_store(&FT_WRITTEN, rev);
    }
    return NULL;
}

/* One call; 0 while the reader has more to take. */
static int fan_read_once(fan_reader *r)
{
    wcache_watch_event evs[32];
    size_t n = 0;
    wcache_code rc = r->lend ? wcache_watch_next_borrowed(r->w, evs, 32, &n)
                             : wcache_watch_next(r->w, evs, 32, &n);
    for (size_t i = 0; i < n; i++, r->next++) {
        char key[16];
        int kl = snprintf(key, sizeof key, "/f/%d", (int)(r->next % 10));
        if (evs[i].revision != r->next || evs[i].kv.mod_revision != r->next ||
            evs[i].kv.key_len != (size_t)kl || memcmp(evs[i].kv.key, key, (size_t)kl) ||
            (r->lend != (evs[i].ev == NULL)))
            atomic_store(&FT_BAD, 1);
        wcache_event_unref(evs[i].ev);
    }
    atomic_store(&r->seen, r->next - 1);
    if (rc != WCACHE_OK) {
        r->end = rc;
        return 1;
    }
    return r->next > FT_N;
}

/* Polls without an fd: an empty next() makes no system call, so a round
 * that found nothing yields, or valgrind (one thread at a time, switched
 * at system calls or after a long slice) would spin it for a whole slice
 * while the writer waits for a core. */
static void *fan_consumer(void *arg)
{
    fan_reader *rs = arg;
    for (int live = 1; live;) {
        live = 0;
        int64_t before = 0, after = 0;
        for (fan_reader *r = rs; r->w; r++) {
            if (atomic_load(&r->done))
                continue;
            before += r->next;
            if (fan_read_once(r))
                atomic_store(&r->done, 1);
            else
                live = 1;
            after += r->next;
            for (int y = 0; r->slow && y < 50; y++)
                sched_yield();
        }
        if (after == before)
            sched_yield();
    }
    return NULL;
}

START_TEST(test_watch_fan_threads)
{
    FT_N = getenv("WCACHE_VALGRIND") ? 3000 : getenv("WCACHE_TSAN") ? 6000 : 30000;
    atomic_store(&FT_WRITTEN, 0);
    atomic_store(&FT_BAD, 0);
    fan_reader fast[4] = {{0}}, slow[2] = {{0}};
    for (int i = 0; i < 3; i++) {
        fast[i].w = open_fan(0, 512, 0, 0);
        fast[i].lend = i == 1;
        fast[i].next = 1;
    }
    slow[0] = (fan_reader){.w = open_fan(0, 256, 0, 0), .lend = 1, .slow = 1, .next = 1};
    pthread_t wt, ct[2];
    ck_assert_int_eq(pthread_create(&ct[0], NULL, fan_consumer, fast), 0);
    ck_assert_int_eq(pthread_create(&ct[1], NULL, fan_consumer, slow), 0);
    ck_assert_int_eq(pthread_create(&wt, NULL, fan_writer, fast), 0);
    while (atomic_load(&FT_WRITTEN) < FT_N / 2)
        sched_yield();
    int64_t stopped_at = atomic_load(&FT_WRITTEN);
    wcache_watch_stop(fast[2].w);
    int64_t written_after = atomic_load(&FT_WRITTEN);
    pthread_join(wt, NULL);
    pthread_join(ct[0], NULL);
    pthread_join(ct[1], NULL);
    ck_assert_int_eq(atomic_load(&FT_BAD), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(fast[i].end, WCACHE_OK);
        ck_assert_int_eq(fast[i].next, FT_N + 1);
    }
    /* The stopped one (paced, so it cannot overflow) took a gap-free prefix
     * (FT_BAD above) and then its end.  The contract of wcache_watch_stop():
     * every change applied before the call is delivered, and none whose
     * ingest began after it returned; the one put that may be in flight
     * (written_after + 1) is on either side. */
    ck_assert_int_eq(fast[2].end, WCACHE_ESTOPPED);
    ck_assert_int_ge(fast[2].next - 1, stopped_at);
    ck_assert_int_le(fast[2].next - 1, written_after + 1);
    wcache_watch_event ev;
    size_t n = 9;
    ck_assert_int_eq(wcache_watch_next(fast[2].w, &ev, 1, &n), WCACHE_ESTOPPED);
    ck_assert_uint_eq(n, 0); /* the end stays the last word */
    ck_assert(slow[0].end == WCACHE_OK || slow[0].end == WCACHE_EOVERFLOW);
    if (getenv("WCACHE_VERBOSE"))
        fprintf(stderr,
                "fan threads: stop at %lld, ended at %lld of %lld, slow one %s at %lld\n",
                (long long)stopped_at, (long long)fast[2].next, (long long)FT_N,
                wcache_strerror(slow[0].end), (long long)slow[0].next);
    for (int i = 0; i < 3; i++)
        wcache_watch_close(fast[i].w);
    wcache_watch_close(slow[0].w);
}
END_TEST

/* ---- watch sets ---- */

static int fd_ready(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0);
}

/* The userdata of every watch the set hands out now, as a bit mask (each
 * at most once: a second hand-out fails). */
static unsigned set_ready(wcache_watchset *s)
{
    unsigned got = 0;
    wcache_watch *w;
    void *ud;
    for (;;) {
        ck_assert_ok(wcache_watchset_next(s, &w, &ud));
        if (!w)
            return got;
        unsigned bit = 1u << (uintptr_t)ud;
        ck_assert_msg(!(got & bit), "watch %u handed out twice", (unsigned)(uintptr_t)ud);
        got |= bit;
    }
}

/* Take everything of w until next() says nothing (that re-arms it). */
static size_t set_drain(wcache_watch *w, int64_t *last, wcache_code *end)
{
    wcache_watch_event evs[16];
    size_t total = 0, n;
    wcache_code rc;
    while ((rc = wcache_watch_next(w, evs, 16, &n)) == WCACHE_OK && n) {
        for (size_t i = 0; i < n; i++) {
            ck_assert_int_gt(evs[i].revision, *last);
            *last = evs[i].revision;
        }
        release(evs, n);
        total += n;
    }
    *end = rc;
    return total;
}

START_TEST(test_watchset_wakeups)
{
    memset(FAN_LIVE, 0, sizeof FAN_LIVE); /* fan_write's state: fresh without fork too */
    for (int64_t rev = 1; rev <= 10; rev++)
        put("/r/k", "v", rev);
    wcache_watchset *s, *s2;
    ck_assert_ok(wcache_watchset_create(C, &s));
    ck_assert_ok(wcache_watchset_create(C, &s2));
    int sfd = wcache_watchset_fd(s);
    ck_assert_int_ge(sfd, 0);
    ck_assert_int_eq(fd_ready(sfd), 0);
    /* 0: own queue, 1 and 2: one fan, 3: replaying from 5, 4: stopped */
    wcache_watch *w[5] = {open_watch("/a/", 0), open_fan(0, 1024, 0, 0),
                          open_fan(0, 1024, 0, 0), open_watch("/r/", 5), open_watch(NULL, 0)};
    for (uintptr_t i = 0; i < 5; i++)
        ck_assert_ok(wcache_watchset_add(s, w[i], (void *)i));
    ck_assert_wc(wcache_watchset_add(s2, w[0], NULL), WCACHE_EBUSY);
    ck_assert_wc(wcache_watchset_add(s, w[0], NULL), WCACHE_EBUSY);
    ck_assert_int_eq(fd_ready(sfd), 1); /* each is handed out once on joining */
    ck_assert_uint_eq(set_ready(s), 0x1f);
    ck_assert_int_eq(fd_ready(sfd), 0);
    int64_t last[5] = {0};
    wcache_code end;
    ck_assert_uint_eq(set_drain(w[3], &last[3], &end), 5); /* revisions 6..10 */
    ck_assert_int_eq(last[3], 10);
    for (int i = 0; i < 5; i++)
        if (i != 3)
            ck_assert_uint_eq(set_drain(w[i], &last[i], &end), 0);
    ck_assert_int_eq(fd_ready(sfd), 0);
    /* one change: its watchers, once, however many changes come before
     * they are drained; their own fds stay quiet */
    put("/a/1", "v", 11);
    put("/a/2", "v", 12);
    ck_assert_int_eq(fd_ready(sfd), 1);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(w[0])), 0);
    ck_assert_uint_eq(set_ready(s), 0x11);
    put("/a/3", "v", 13); /* not drained yet: not handed out again */
    ck_assert_uint_eq(set_ready(s), 0);
    ck_assert_uint_eq(set_drain(w[0], &last[0], &end), 3);
    ck_assert_uint_eq(set_drain(w[4], &last[4], &end), 3);
    fan_write(14, 20);
    ck_assert_uint_eq(set_ready(s), 0x16);
    ck_assert_uint_eq(set_drain(w[1], &last[1], &end), 7);
    ck_assert_uint_eq(set_drain(w[2], &last[2], &end), 7);
    ck_assert_uint_eq(set_drain(w[4], &last[4], &end), 7);
    ck_assert_uint_eq(set_ready(s), 0);
    /* a member does not wait on its own fd */
    wcache_watch_event evs[4];
    size_t n = 7;
    ck_assert_wc(wcache_watch_wait(w[0], evs, 4, &n, 0), WCACHE_ESTATE);
    ck_assert_uint_eq(n, 0);
    /* an end wakes it too, and stays */
    wcache_watch_stop(w[4]);
    ck_assert_uint_eq(set_ready(s), 0x10);
    ck_assert_uint_eq(set_drain(w[4], &last[4], &end), 0);
    ck_assert_int_eq(end, WCACHE_ESTOPPED);
    /* out of the set: its own fd again, readable once */
    ck_assert_ok(wcache_watchset_remove(s, w[0]));
    ck_assert_wc(wcache_watchset_remove(s, w[0]), WCACHE_ENOTFOUND);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(w[0])), 1);
    ck_assert_uint_eq(set_drain(w[0], &last[0], &end), 0);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(w[0])), 0);
    put("/a/4", "v", 21);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(w[0])), 1);
    ck_assert_uint_eq(set_ready(s), 0);
    ck_assert_ok(wcache_watch_wait(w[0], evs, 4, &n, 1000));
    ck_assert_uint_eq(n, 1);
    release(evs, n);
    /* a member handed out and closed before it is taken: the set forgets it */
    put("/f/x", "v", 22);
    wcache_watch_close(w[2]);
    ck_assert_uint_eq(set_ready(s), 0x02);
    ck_assert_uint_eq(set_drain(w[1], &last[1], &end), 1);
    ck_assert_wc(wcache_watchset_add(NULL, w[1], NULL), WCACHE_EINVAL);
    ck_assert_wc(wcache_watchset_next(s, NULL, NULL), WCACHE_EINVAL);
    ck_assert_int_eq(wcache_watchset_fd(NULL), -1);
    /* freed with members: they go back to their own fds */
    wcache_watchset_free(s);
    wcache_watchset_free(s2);
    wcache_watchset_free(NULL);
    fan_write(23, 23);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(w[1])), 1);
    ck_assert_ok(wcache_watch_wait(w[1], evs, 4, &n, 1000));
    ck_assert_uint_eq(n, 1);
    release(evs, n);
    wcache_watch *all[] = {w[0], w[1], w[3], w[4]};
    for (size_t i = 0; i < 4; i++)
        wcache_watch_close(all[i]);
}
END_TEST

/*
 * Watch sets under threads: a writer, two consumer threads each sleeping
 * on one set (poll without a deadline that could hide a lost wake-up:
 * one that long fails), each set holding watchers of a shared fan, of a
 * prefix of their own, and one stopped from the main thread half way.
 * Every stream must be gap-free, complete (up to the stop for that one).
 */
#define WS_PREFIXES 4

typedef struct ws_reader {
    wcache_watch *w;
    int64_t step, next; /* revisions it gets: next, next + step, ... */
    int64_t last;       /* last taken, for the writer's pacing */
    wcache_code end;
    int done;
} ws_reader;

typedef struct ws_consumer {
    wcache_watchset *s;
    ws_reader r[WS_PREFIXES + 2];
    size_t nr;
    _Atomic int64_t slowest; /* lowest last of its readers still going */
    _Atomic int bad, lost;
} ws_consumer;

static int64_t WS_N;
static _Atomic int64_t WS_WRITTEN;

static void *ws_writer(void *arg)
{
    ws_consumer *cs = arg;
    for (int64_t rev = 1; rev <= WS_N; rev++) {
        for (int i = 0; i < 2; i++)
            while (rev - atomic_load(&cs[i].slowest) > 512)
                sched_yield();
        char key[16];
        snprintf(key, sizeof key, "/s/%d/k", (int)(rev % (2 * WS_PREFIXES)));
        if (wcache_ingest_put(C, key, strlen(key), "v", 1, rev) != WCACHE_OK)
            atomic_store(&cs[0].bad, 1);
        atomic_store(&WS_WRITTEN, rev);
    }
    return NULL;
}

static void ws_serve(ws_consumer *c, ws_reader *r)
{
    wcache_watch_event evs[32];
    size_t n;
    wcache_code rc;
    while (!r->done && (rc = wcache_watch_next_borrowed(r->w, evs, 32, &n)) == WCACHE_OK && n) {
        for (size_t i = 0; i < n; i++, r->next += r->step)
            if (evs[i].revision != r->next)
                atomic_store(&c->bad, 1);
        r->last = r->next - r->step;
        if (r->next > WS_N)
            r->done = 1;
    }
    if (!r->done && rc != WCACHE_OK) {
        r->end = rc;
        r->done = 1;
    }
}

static void *ws_consume(void *arg)
{
    ws_consumer *c = arg;
    struct pollfd p = {.fd = wcache_watchset_fd(c->s), .events = POLLIN};
    for (;;) {
        wcache_watch *w;
        void *ud;
        while (wcache_watchset_next(c->s, &w, &ud) == WCACHE_OK && w)
            ws_serve(c, ud);
        int64_t slowest = INT64_MAX;
        for (size_t i = 0; i < c->nr; i++)
            if (!c->r[i].done && c->r[i].last < slowest)
                slowest = c->r[i].last;
        atomic_store(&c->slowest, slowest);
        if (slowest == INT64_MAX)
            return NULL;
        if (poll(&p, 1, 30000) == 0) { /* a wake-up was lost */
            atomic_store(&c->lost, 1);
            return NULL;
        }
    }
}

START_TEST(test_watchset_threads)
{
    WS_N = getenv("WCACHE_VALGRIND") ? 2000 : getenv("WCACHE_TSAN") ? 6000 : 40000;
    atomic_store(&WS_WRITTEN, 0);
    static ws_consumer cs[2];
    memset(cs, 0, sizeof cs);
    for (int t = 0; t < 2; t++) {
        ws_consumer *c = &cs[t];
        ck_assert_ok(wcache_watchset_create(C, &c->s));
        wcache_watch_opts o = {
            .size = sizeof o, .prefix = "/s/", .prefix_len = 3, .queue_size = 1024};
        for (int k = 0; k < 2; k++) { /* the fan of /s/, shared by all four */
            wcache_watch *w;
            ck_assert_ok(wcache_watch_open(C, &o, &w));
            c->r[c->nr++] = (ws_reader){w, 1, 1, 0, WCACHE_OK, 0};
        }
        for (int k = 0; k < WS_PREFIXES; k++) { /* one of the 8 prefixes each */
            int pfx = t * WS_PREFIXES + k;
            char p[16];
            snprintf(p, sizeof p, "/s/%d/", pfx);
            o.prefix = p;
            o.prefix_len = strlen(p);
            wcache_watch *w;
            ck_assert_ok(wcache_watch_open(C, &o, &w));
            c->r[c->nr++] =
                (ws_reader){w, 2 * WS_PREFIXES, pfx ? pfx : 2 * WS_PREFIXES, 0, WCACHE_OK, 0};
        }
        for (size_t i = 0; i < c->nr; i++)
            ck_assert_ok(wcache_watchset_add(c->s, c->r[i].w, &c->r[i]));
    }
    pthread_t wt, ct[2];
    for (int t = 0; t < 2; t++)
        ck_assert_int_eq(pthread_create(&ct[t], NULL, ws_consume, &cs[t]), 0);
    ck_assert_int_eq(pthread_create(&wt, NULL, ws_writer, cs), 0);
    while (atomic_load(&WS_WRITTEN) < WS_N / 2)
        sched_yield();
    int64_t stopped_at = atomic_load(&WS_WRITTEN);
    wcache_watch_stop(cs[1].r[1].w);
    int64_t written_after = atomic_load(&WS_WRITTEN);
    pthread_join(wt, NULL);
    for (int t = 0; t < 2; t++)
        pthread_join(ct[t], NULL);
    for (int t = 0; t < 2; t++) {
        ws_consumer *c = &cs[t];
        ck_assert_int_eq(atomic_load(&c->lost), 0);
        ck_assert_int_eq(atomic_load(&c->bad), 0);
        for (size_t i = 0; i < c->nr; i++) {
            ws_reader *r = &c->r[i];
            if (t == 1 && i == 1) {
                ck_assert_int_eq(r->end, WCACHE_ESTOPPED);
                ck_assert_int_ge(r->next - 1, stopped_at);
                ck_assert_int_le(r->next - 1, written_after + 1);
            } else {
                ck_assert_int_eq(r->end, WCACHE_OK);
                ck_assert_int_gt(r->next, WS_N);
            }
            wcache_watch_close(r->w); /* takes it out of the set */
        }
        wcache_watchset_free(c->s);
    }
}
END_TEST

START_TEST(test_watch_bookmarks)
{
    put("/a/1", "v", 1);
    wcache_watch_opts o = {
        .size = sizeof o, .prefix = "/a/", .prefix_len = 3, .bookmark_interval_ms = 1000};
    wcache_watch *w;
    ck_assert_ok(wcache_watch_open(C, &o, &w));
    wcache_watch_event evs[4];
    size_t n;
    ck_assert_ok(wcache_watch_next(w, evs, 4, &n));
    ck_assert_uint_eq(n, 0);
    put("/b/1", "v", 7); /* elsewhere: only the revision moves */
    ck_assert_ok(wcache_watch_next(w, evs, 4, &n));
    ck_assert_uint_eq(n, 0); /* not due yet */
    __atomic_add_fetch(&NOW_NS, 2000000000, __ATOMIC_SEQ_CST);
    ck_assert_ok(wcache_watch_next(w, evs, 4, &n));
    ck_assert_uint_eq(n, 1);
    expect_ev(&evs[0], WCACHE_EV_BOOKMARK, NULL, 7);
    release(evs, n);
    __atomic_add_fetch(&NOW_NS, 2000000000, __ATOMIC_SEQ_CST);
    ck_assert_ok(wcache_watch_next(w, evs, 4, &n));
    ck_assert_uint_eq(n, 0); /* nothing new since the last bookmark */
    wcache_watch_close(w);
}
END_TEST

START_TEST(test_watch_fd_and_stop)
{
    wcache_watch *w = open_watch(NULL, 0);
    int fd = wcache_watch_fd(w);
    ck_assert_int_ge(fd, 0);
    wcache_watch_event evs[4];
    size_t n;
    ck_assert_ok(wcache_watch_next(w, evs, 4, &n)); /* arms the fd */
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 0), 0);
    put("/x", "v", 1);
    ck_assert_int_eq(poll(&p, 1, 0), 1);
    ck_assert_ok(wcache_watch_wait(w, evs, 4, &n, 1000));
    ck_assert_uint_eq(n, 1);
    release(evs, n);
    wcache_watch_stop(w);
    ck_assert_int_eq(poll(&p, 1, 0), 1);
    ck_assert_wc(wcache_watch_next(w, evs, 4, &n), WCACHE_ESTOPPED);
    wcache_watch_close(w);
}
END_TEST

/* An event loop may poll the fd before it ever calls next(). */
START_TEST(test_watch_fd_wakes_before_first_next)
{
    wcache_watch *w = open_watch(NULL, 0);
    struct pollfd p = {.fd = wcache_watch_fd(w), .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 0), 0);
    put("/x", "v", 1);
    ck_assert_int_eq(poll(&p, 1, 0), 1);
    wcache_watch_event evs[4];
    size_t n;
    ck_assert_ok(wcache_watch_next(w, evs, 4, &n));
    ck_assert_uint_eq(n, 1);
    release(evs, n);
    wcache_watch_close(w);
}
END_TEST

START_TEST(test_watch_events_outlive_compaction)
{
    wcache_watch *w = open_watch(NULL, 0);
    for (int i = 1; i <= 5; i++)
        put("/c", i % 2 ? "odd" : "even", i);
    ck_assert_ok(wcache_cache_compact(C, 5)); /* frees the old versions... */
    wcache_watch_event evs[8];
    wcache_code end;
    size_t n = drain(w, evs, 8, &end);
    ck_assert_uint_eq(n, 5); /* ...but not the ones still queued */
    ck_assert(memcmp(evs[1].kv.value, "even", 4) == 0);
    release(evs, n);
    wcache_watch_close(w);
}
END_TEST

/* ---- fresh reads ---- */

static _Atomic int64_t SRC_REV;
static _Atomic int PROGRESS_CALLS;

static int src_rev(int64_t *rev, void *ud)
{
    (void)ud;
    *rev = atomic_load(&SRC_REV);
    return 0;
}

static void src_progress(void *ud)
{
    (void)ud;
    atomic_fetch_add(&PROGRESS_CALLS, 1);
}

static void fresh_setup(void)
{
    ck_assert_ok(wcache_cache_create(&C, NULL));
    ck_assert_ok(wcache_cache_set_source(C, src_rev, src_progress, NULL));
    ck_assert_ok(wcache_cache_open(C));
}

static void *late_writer(void *arg)
{
    (void)arg;
    wcache_wait_stat ws = {.size = sizeof ws};
    do { /* until the reader is known to be waiting: no sleep */
        sched_yield();
        wcache_cache_wait_stat(C, &ws);
    } while (ws.waits == 0);
    wcache_ingest_put(C, "k", 1, "v", 1, 5);
    wcache_ingest_progress(C, 9);
    return NULL;
}

START_TEST(test_fresh_read_waits_for_late_revision)
{
    atomic_store(&SRC_REV, 9);
    pthread_t t;
    pthread_create(&t, NULL, late_writer, NULL);
    wcache_view *v;
    ck_assert_ok(wcache_view_create(C, &v));
    ck_assert_ok(wcache_view_begin_fresh(v, -1, 10000));
    ck_assert_int_ge(wcache_view_revision(v), 9);
    wcache_kv kv;
    ck_assert_ok(wcache_view_get(v, "k", 1, &kv));
    pthread_join(t, NULL);
    wcache_wait_stat ws = {.size = sizeof ws};
    ck_assert_ok(wcache_cache_wait_stat(C, &ws));
    ck_assert_uint_eq(ws.reads, 1);
    ck_assert_uint_eq(ws.waits, 1);
    ck_assert_uint_eq(ws.timeouts, 0);
    wcache_view_free(v);
}
END_TEST

START_TEST(test_fresh_read_timeout_and_fast_path)
{
    atomic_store(&SRC_REV, 3);
    atomic_store(&PROGRESS_CALLS, 0);
    wcache_view *v;
    ck_assert_ok(wcache_view_create(C, &v));
    ck_assert_wc(wcache_view_begin_fresh(v, -1, 250), WCACHE_ETIMEDOUT);
    ck_assert_int_ge(atomic_load(&PROGRESS_CALLS), 1); /* asked the source to speak */
    ck_assert_int_eq(wcache_view_revision(v), 0);
    ck_assert_ok(wcache_ingest_progress(C, 3)); /* an idle source's progress notification */
    ck_assert_ok(wcache_view_begin_fresh(v, -1, 250));
    ck_assert_int_eq(wcache_view_revision(v), 3);
    ck_assert_ok(wcache_view_begin_fresh(v, 2, 0)); /* not older than 2: no wait */
    wcache_wait_stat ws = {.size = sizeof ws};
    ck_assert_ok(wcache_cache_wait_stat(C, &ws));
    ck_assert_uint_eq(ws.timeouts, 1);
    ck_assert_uint_eq(ws.waits, 1);
    wcache_view_free(v);
}
END_TEST

START_TEST(test_fresh_read_without_source)
{
    wcache_cache *c;
    ck_assert_ok(wcache_cache_create(&c, NULL));
    ck_assert_ok(wcache_cache_open(c));
    wcache_view *v;
    ck_assert_ok(wcache_view_create(c, &v));
    ck_assert_wc(wcache_view_begin_fresh(v, -1, 10), WCACHE_ENOTREADY);
    wcache_view_free(v);
    wcache_cache_close(c);
}
END_TEST

/*
 * A watch's queue grows with its backlog, up to queue_size, instead of
 * being allocated whole at open (lib/watch.h, wci_qarr): thousands of
 * watchers with a generous queue_size cost little while they keep up.
 * Growth must not lose, repeat or reorder a slot, also while deliveries
 * are lent across it, and the overflow limit stays exactly queue_size.
 */
/*
 * A watcher catching up (initial events, then history) switches to live
 * delivery inside one of its next() calls.  If catching up had filled its
 * queue, the first few changes after the switch would overflow it though
 * the consumer reads one event per call without pause.  Catching up fills
 * half the queue, so a burst of up to queue_size / 2 - 1 changes between
 * any two reads fits: tried after every read of a catch-up of 100 events.
 */
START_TEST(test_watch_catchup_leaves_room)
{
    enum { Q = 64, HIST = 100, BURST = Q / 2 - 1 };
    for (int initial = 0; initial < 2; initial++)
        for (int k = 1; k <= HIST + 2; k++) {
            wcache_cache *c = tu_new_cache();
            int64_t rev = 0;
            char key[16];
            if (initial) /* HIST objects at the start revision */
                for (int i = 0; i < HIST; i++) {
                    int kl = snprintf(key, sizeof key, "/c/%03d", i);
                    ck_assert_ok(wcache_ingest_put(c, key, (size_t)kl, "v", 1, ++rev));
                }
            else
                ck_assert_ok(wcache_ingest_put(c, "/c/start", 8, "v", 1, ++rev));
            int64_t from = rev;
            if (!initial) /* HIST changes after the start revision */
                for (int i = 0; i < HIST; i++)
                    ck_assert_ok(wcache_ingest_put(c, "/c/h", 4, "v", 1, ++rev));
            wcache_watch_opts o = {.size = sizeof o,
                                   .queue_size = Q,
                                   .prefix = "/c/",
                                   .prefix_len = 3,
                                   .start_revision = initial ? 0 : from,
                                   .initial_events = initial != 0};
            wcache_watch *w;
            ck_assert_ok(wcache_watch_open(c, &o, &w));
            wcache_watch_event ev;
            size_t n, got = 0, want = HIST + (size_t)initial + BURST; /* + INITIAL_END */
            for (int i = 0; i < k; i++) {
                ck_assert_ok(wcache_watch_next(w, &ev, 1, &n));
                got += n;
                release(&ev, n);
            }
            for (int i = 0; i < BURST; i++)
                ck_assert_ok(wcache_ingest_put(c, "/c/live", 7, "v", 1, ++rev));
            wcache_code rc;
            while ((rc = wcache_watch_next(w, &ev, 1, &n)) == WCACHE_OK && n) {
                got += n;
                release(&ev, n);
            }
            ck_assert_msg(rc == WCACHE_OK, "initial %d, burst after %d reads: %s", initial, k,
                          wcache_strerror(rc));
            ck_assert_uint_eq(got, want);
            wcache_watch_close(w);
            wcache_cache_close(c);
        }
}
END_TEST

START_TEST(test_watch_queue_grows)
{
    tu_alloc_state st = {.fail_at = -1}; /* counts the bytes the cache holds */
    wcache_allocator al = tu_allocator(&st);
    wcache_cache *c;
    ck_assert_ok(wcache_cache_create(&c, &al));
    ck_assert_ok(wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 0));
    ck_assert_ok(wcache_cache_open(c));
    char v[64];
    int64_t rev = 0;
    ck_assert_ok(wcache_ingest_put(c, "/g/0", 4, "v", 1, ++rev));

    /* 200 idle watchers, queue_size 65536 (512 KiB of slots each if
     * allocated at open): half share the prefix's fan, half have their
     * own queue (a [start, end) range never shares one). */
    enum { NW = 200 };
    static wcache_watch *ws[NW];
    long long before = st.live_bytes;
    for (int i = 0; i < NW; i++) {
        wcache_watch_opts o = {.size = sizeof o, .queue_size = 65536};
        if (i % 2)
            o.prefix = "/g/", o.prefix_len = 3;
        else
            o.start = "/g/", o.start_len = 3, o.end = "/g0", o.end_len = 3;
        ck_assert_ok(wcache_watch_open(c, &o, &ws[i]));
    }
    ck_assert_ok(wcache_ingest_put(c, "/g/1", 4, "v", 1, ++rev));
    wcache_watch_event evs[512];
    size_t n;
    for (int i = 0; i < NW; i++) {
        ck_assert_ok(wcache_watch_next(ws[i], evs, 512, &n));
        ck_assert_uint_eq(n, 1);
        release(evs, n);
    }
    long long per = (st.live_bytes - before) / NW;
    ck_assert_msg(per < 2048, "%lld bytes per idle watcher", per);
    for (int i = 0; i < NW; i++)
        wcache_watch_close(ws[i]);

    /* One watcher, queue_size 4096, far behind: 3,000 changes queue up
     * (the array doubles from 32 slots), 10 are lent, 1,000 more come
     * (it grows again under the lent ones), then all 4,000 come out in
     * order, borrowed and owned calls mixed. */
    wcache_watch_opts o = {.size = sizeof o,
                           .queue_size = 4096,
                           .start = "/g/",
                           .start_len = 3,
                           .end = "/g0",
                           .end_len = 3};
    wcache_watch *w;
    ck_assert_ok(wcache_watch_open(c, &o, &w));
    int64_t first = rev + 1;
    for (int i = 0; i < 3000; i++) {
        snprintf(v, sizeof v, "%d", i);
        ck_assert_ok(wcache_ingest_put(c, "/g/2", 4, v, strlen(v), ++rev));
    }
    ck_assert_ok(wcache_watch_next_borrowed(w, evs, 10, &n));
    ck_assert_uint_eq(n, 10);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(evs[i].revision, first + (int64_t)i);
    for (int i = 3000; i < 4000; i++) {
        snprintf(v, sizeof v, "%d", i);
        ck_assert_ok(wcache_ingest_put(c, "/g/2", 4, v, strlen(v), ++rev));
    }
    /* the lent 10 are still readable: their memory moved, not their events */
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(evs[i].revision, first + (int64_t)i);
        snprintf(v, sizeof v, "%zu", i);
        ck_assert_uint_eq(evs[i].kv.value_len, strlen(v));
        ck_assert(memcmp(evs[i].kv.value, v, strlen(v)) == 0);
    }
    int64_t want = first + 10;
    for (int call = 0; want <= rev; call++) {
        bool lend = call % 2;
        ck_assert_ok(lend ? wcache_watch_next_borrowed(w, evs, 300, &n)
                          : wcache_watch_next(w, evs, 300, &n));
        ck_assert_uint_gt(n, 0);
        for (size_t i = 0; i < n; i++) {
            ck_assert_int_eq(evs[i].revision, want);
            snprintf(v, sizeof v, "%lld", (long long)(want - first));
            ck_assert(evs[i].kv.value_len == strlen(v) &&
                      memcmp(evs[i].kv.value, v, strlen(v)) == 0);
            want++;
        }
        if (!lend)
            release(evs, n);
    }
    ck_assert_ok(wcache_watch_next(w, evs, 300, &n));
    ck_assert_uint_eq(n, 0);

    /* The 4096-slot array (32 KiB) stays while rounds need it; after a
     * round that used a few slots of it, the next push moves the queue to
     * a small array, and the consumer's next look frees the large one. */
    long long grown = st.live_bytes;
    for (int i = 0; i < 3; i++) {
        ck_assert_ok(wcache_ingest_put(c, "/g/2", 4, "y", 1, ++rev));
        ck_assert_ok(wcache_ingest_put(c, "/g/2", 4, "z", 1, ++rev));
        ck_assert_ok(wcache_watch_next(w, evs, 300, &n));
        ck_assert_uint_eq(n, 2);
        ck_assert_int_eq(evs[1].revision, rev);
        release(evs, n);
        if (i == 0) /* the first round after the burst: kept */
            ck_assert_int_le(grown - st.live_bytes, 1024);
    }
    ck_assert_msg(grown - st.live_bytes > 24 * 1024, "%lld bytes before, %lld after", grown,
                  st.live_bytes);

    /* Exactly queue_size fit (growing again from a small array); one more
     * ends it, after all 4096. */
    first = rev + 1;
    for (int i = 0; i < 4097; i++)
        ck_assert_ok(wcache_ingest_put(c, "/g/3", 4, "x", 1, ++rev));
    size_t total = 0;
    wcache_code rc;
    while ((rc = wcache_watch_next(w, evs, 512, &n)) == WCACHE_OK && n) {
        for (size_t i = 0; i < n; i++)
            ck_assert_int_eq(evs[i].revision, first + (int64_t)(total + i));
        total += n;
        release(evs, n);
    }
    ck_assert_uint_eq(total, 4096);
    ck_assert_wc(rc, WCACHE_EOVERFLOW);
    wcache_watch_close(w);
    wcache_cache_close(c);
    ck_assert_int_eq(st.live_bytes, 0);
    ck_assert_int_eq(st.live, 0);
}
END_TEST

/*
 * A watch makes its eventfd when first asked for it (wcache_watch_fd(),
 * wcache_watch_wait()): thousands of watchers served through watch sets
 * hold no fd each, under the usual RLIMIT_NOFILE of 1024.  A wake-up that
 * came before the fd existed must show on it when it is made; an idle
 * watch's new fd must not be readable; running out of fds is an error
 * code, never a crash.
 */
static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        n += fcntl(fd, F_GETFD) != -1;
    return n;
}

START_TEST(test_watch_fd_made_on_first_use)
{
    struct rlimit old;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    int base = open_fds();
    enum { NW = 2000 };
    static wcache_watch *ws[NW];
    wcache_watchset *set;
    ck_assert_ok(wcache_watchset_create(C, &set));
    for (uintptr_t i = 0; i < NW; i++) {
        char p[32];
        snprintf(p, sizeof p, "/n/%04u/", (unsigned)i);
        ws[i] = open_watch(i % 2 ? p : "/n/", 0); /* half own queue, half one fan */
        ck_assert_ok(wcache_watchset_add(set, ws[i], (void *)i));
    }
    ck_assert_int_le(open_fds() - base, 8); /* the set's one, not 2,000 */
    put("/n/0001/a", "v", 1);
    size_t got = 0;
    wcache_watch *w;
    void *ud;
    while (wcache_watchset_next(set, &w, &ud) == WCACHE_OK && w) {
        int64_t last = 0;
        wcache_code end;
        got += set_drain(w, &last, &end);
    }
    ck_assert_uint_eq(got, NW / 2 + 1); /* the fan's 1,000 and /n/0001/'s */
    wcache_watchset_free(set);

    /* Out of the set, without fds: its fd, made now, is readable once
     * (wcache_watchset_free(3)), then quiet. */
    ck_assert_int_eq(fd_ready(wcache_watch_fd(ws[3])), 1);
    wcache_watch_event evs[4];
    size_t n;
    ck_assert_ok(wcache_watch_next(ws[3], evs, 4, &n));
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(ws[3])), 0);
    /* Never in a set, no fd yet: a change reaches wa and not wb, and the
     * fds made after it say so. */
    wcache_watch *wa = open_watch("/m/", 0), *wb = open_watch("/q/", 0);
    put("/m/x", "v", 2);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(wb)), 0);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(wa)), 1);
    ck_assert_int_eq(wcache_watch_fd(wa), wcache_watch_fd(wa)); /* made once */
    ck_assert_ok(wcache_watch_wait(wa, evs, 4, &n, 1000));
    ck_assert_uint_eq(n, 1);
    release(evs, n);
    ck_assert_ok(wcache_watch_next(wa, evs, 4, &n));
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(wa)), 0);
    put("/q/x", "v", 3);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(wb)), 1);
    wcache_watch_close(wa);
    wcache_watch_close(wb);
    /* a replaying watch is readable at once; a stopped one too */
    wcache_watch *r = open_watch("/n/", 1);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(r)), 1);
    wcache_watch_stop(ws[4]);
    ck_assert_int_eq(fd_ready(wcache_watch_fd(ws[4])), 1);

    /* No fds left: -1 and WCACHE_ESYS, and the watches still work. */
    struct rlimit low = old;
    low.rlim_cur = (rlim_t)open_fds() + 2;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    int bad = -1;
    for (int i = 6; i < 40 && bad < 0; i += 2)
        if (wcache_watch_fd(ws[i]) < 0)
            bad = i;
    ck_assert_int_ge(bad, 0);
    ck_assert_ok(wcache_watch_next(ws[bad], evs, 4, &n)); /* no fd needed */
    ck_assert_uint_eq(n, 0);
    ck_assert_wc(wcache_watch_wait(ws[bad], evs, 4, &n, 10), WCACHE_ESYS);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    put("/n/y", "v", 4);
    ck_assert_ok(wcache_watch_wait(ws[bad], evs, 4, &n, 1000));
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(evs[0].revision, 4);
    release(evs, n);
    wcache_watch_close(r);
    for (int i = 0; i < NW; i++)
        wcache_watch_close(ws[i]);
}
END_TEST

Suite *watch_suite(void)
{
    Suite *s = suite_create("watch");
    TCase *tc = tcase_create("watch");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_watch_live_and_types);
    tcase_add_test(tc, test_watch_from_past_exact_and_compacted);
    tcase_add_test(tc, test_watch_future_revision_waits);
    tcase_add_test(tc, test_watch_initial_events);
    tcase_add_test(tc, test_watch_selector_transitions);
    tcase_add_test(tc, test_watch_slow_watcher_ends);
    tcase_add_test(tc, test_watch_catchup_leaves_room);
    tcase_add_test(tc, test_watch_queue_grows);
    tcase_add_test(tc, test_watch_shared_fan);
    tcase_add_test(tc, test_watch_fan_threads);
    tcase_add_test(tc, test_watchset_wakeups);
    tcase_add_test(tc, test_watchset_threads);
    tcase_add_test(tc, test_watch_bookmarks);
    tcase_add_test(tc, test_watch_fd_and_stop);
    tcase_add_test(tc, test_watch_fd_wakes_before_first_next);
    tcase_add_test(tc, test_watch_fd_made_on_first_use);
    tcase_add_test(tc, test_watch_events_outlive_compaction);
    tcase_set_timeout(tc, tu_timeout(60));
    suite_add_tcase(s, tc);
    TCase *tf = tcase_create("fresh");
    tcase_add_checked_fixture(tf, fresh_setup, teardown);
    tcase_add_test(tf, test_fresh_read_waits_for_late_revision);
    tcase_add_test(tf, test_fresh_read_timeout_and_fast_path);
    tcase_add_test(tf, test_fresh_read_without_source);
    tcase_set_timeout(tf, tu_timeout(60));
    suite_add_tcase(s, tf);
    return s;
}
