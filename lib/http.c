/*
 * http.c - libcurl helpers shared by the etcd and Kubernetes sources.
 */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

size_t wci_rbuf_write(char *data, size_t sz, size_t nm, void *ud)
{
    wci_rbuf *b = ud;
    size_t n = sz * nm;
    if (b->bytes)
        atomic_fetch_add_explicit(b->bytes, n, memory_order_relaxed);
    if (b->len + n > b->max) {
        b->over = 1;
        return 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = wci_malloc(b->al, cap);
        if (!np)
            return 0;
        if (b->len)
            memcpy(np, b->p, b->len);
        wci_free(b->al, b->p);
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
    return n;
}

CURLcode wci_xfer_run(CURLM *multi, CURL *e, _Atomic int *stop)
{
    if (curl_multi_add_handle(multi, e) != CURLM_OK)
        return CURLE_OUT_OF_MEMORY;
    CURLcode res = CURLE_OK;
    for (;;) {
        if (atomic_load(stop)) {
            res = CURLE_ABORTED_BY_CALLBACK;
            break;
        }
        int running = 0, q;
        if (curl_multi_perform(multi, &running) != CURLM_OK) {
            res = CURLE_OUT_OF_MEMORY;
            break;
        }
        CURLMsg *m;
        int done = 0;
        while ((m = curl_multi_info_read(multi, &q)))
            if (m->msg == CURLMSG_DONE && m->easy_handle == e) {
                res = m->data.result;
                done = 1;
            }
        if (done)
            break;
        curl_multi_poll(multi, NULL, 0, 1000, NULL);
    }
    curl_multi_remove_handle(multi, e);
    return res;
}

long wci_http_status_line(const char *data, size_t n)
{
    if (n <= 9 || memcmp(data, "HTTP/", 5) != 0)
        return -1;
    const char *sp = memchr(data, ' ', n);
    return sp ? strtol(sp + 1, NULL, 10) : 0;
}

wcache_code wci_http_acquire(CURLM **multi, int *curl_inited, int wake[2], int *err)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return WCACHE_ECURL;
    *curl_inited = 1;
    if (!(*multi = curl_multi_init()))
        return WCACHE_ECURL;
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        *err = errno;
        wake[0] = wake[1] = -1;
        return WCACHE_ESYS;
    }
    return WCACHE_OK;
}

void wci_http_thread_stop(pthread_t th, _Atomic int *stop, CURLM *multi, int wake_fd)
{
    atomic_store(stop, 1);
    if (multi)
        curl_multi_wakeup(multi);
    ssize_t w = write(wake_fd, "x", 1);
    (void)w; /* a full pipe wakes the thread all the same */
    pthread_join(th, NULL);
}

void wci_http_release(CURLM *multi, int curl_inited, int wake[2])
{
    if (multi)
        curl_multi_cleanup(multi);
    if (curl_inited)
        curl_global_cleanup();
    for (int i = 0; i < 2; i++)
        if (wake[i] >= 0)
            close(wake[i]);
}

int64_t wci_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
