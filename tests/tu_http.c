/*
 * tu_http.c - what the suites that stand in for a peer share: a loopback
 * HTTP server (an acceptor thread and a thread a connection, each
 * connection handed to the suite's serve function), chunked sends,
 * temporary directories, and waits for a condition with a deadline.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tu_pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int64_t tu_patient(int64_t ms)
{
    if (getenv("WCACHE_VALGRIND") || getenv("WCACHE_TSAN"))
        return ms * 6;
    return getenv("WCACHE_ASAN") ? ms * 3 : ms;
}

int tu_wait_for(int (*cond)(void *), void *ud, int64_t ms)
{
    int64_t end = tu_now_ms() + tu_patient(ms);
    while (!cond(ud)) {
        if (tu_now_ms() > end)
            return 0;
        tu_pause_ms(2);
    }
    return 1;
}

int tu_send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int tu_send_chunked(int fd, const char *text, tu_rng *r)
{
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        size_t k = 1 + tu_below(r, 7);
        if (k > n - i)
            k = n - i;
        char hdr[32];
        int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", k);
        if (tu_send_all(fd, hdr, (size_t)hl) || tu_send_all(fd, text + i, k) ||
            tu_send_all(fd, "\r\n", 2))
            return -1;
        i += k;
    }
    return 0;
}

void tu_hold(tu_srv *sv, int fd)
{
    int64_t end = tu_now_ms() + 60000;
    while (!atomic_load(&sv->stop) && tu_now_ms() < end) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 20) > 0) {
            char tmp[256];
            if (recv(fd, tmp, sizeof tmp, 0) <= 0)
                return;
        }
    }
}

typedef struct conn_arg {
    tu_srv *sv;
    int fd;
} conn_arg;

static void *conn_main(void *arg)
{
    conn_arg *ca = arg;
    tu_srv *sv = ca->sv;
    int fd = ca->fd;
    free(ca);
    sv->serve(sv, fd);
    close(fd);
    atomic_fetch_sub(&sv->active, 1);
    return NULL;
}

static void *acceptor_main(void *arg)
{
    tu_srv *sv = arg;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    while (!atomic_load(&sv->stop)) {
        struct pollfd p = {sv->lfd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept(sv->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        conn_arg *ca = malloc(sizeof *ca);
        ca->sv = sv;
        ca->fd = fd;
        pthread_t th;
        atomic_fetch_add(&sv->active, 1);
        if (pthread_create(&th, &at, conn_main, ca) != 0) {
            atomic_fetch_sub(&sv->active, 1);
            close(fd);
            free(ca);
        }
    }
    pthread_attr_destroy(&at);
    return NULL;
}

void tu_srv_start(tu_srv *sv, void (*serve)(tu_srv *sv, int fd), void *ud)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    sv->serve = serve;
    sv->ud = ud;
    atomic_store(&sv->active, 0);
    atomic_store(&sv->stop, 0);
    sv->lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(sv->lfd, 0);
    ck_assert_int_eq(bind(sv->lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(sv->lfd, 64), 0);
    socklen_t al = sizeof a;
    getsockname(sv->lfd, (struct sockaddr *)&a, &al);
    sv->port = ntohs(a.sin_port);
    ck_assert_int_eq(pthread_create(&sv->acceptor, NULL, acceptor_main, sv), 0);
}

static int srv_idle(void *ud)
{
    return atomic_load(&((tu_srv *)ud)->active) == 0;
}

void tu_srv_stop(tu_srv *sv)
{
    atomic_store(&sv->stop, 1);
    pthread_join(sv->acceptor, NULL);
    if (!tu_wait_for(srv_idle, sv, 60000))
        fprintf(stderr, "tu_srv_stop: %d connections still open\n", atomic_load(&sv->active));
    close(sv->lfd);
}

void tu_tmpdir(char *buf, size_t cap, const char *stem)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, cap, "%s/%s-XXXXXX", t && *t ? t : "/tmp", stem);
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

void tu_rm_rf(const char *p)
{
    struct stat sb;
    if (lstat(p, &sb) != 0)
        return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(p);
        struct dirent *de;
        char q[1024];
        while (d && (de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                snprintf(q, sizeof q, "%s/%s", p, de->d_name);
                tu_rm_rf(q);
            }
        }
        if (d)
            closedir(d);
        rmdir(p);
    } else {
        unlink(p);
    }
}
