/*
 * http.h - libcurl helpers shared by the sources that speak HTTP (private
 * to lib/): a response gathered in memory with a size bound, a transfer
 * run in a multi handle that a stop interrupts at once, the status of a
 * response's first header line.
 */
#ifndef WCI_HTTP_H
#define WCI_HTTP_H

#include "wcache_int.h"

#include <curl/curl.h>
#include <pthread.h>

/* A response body gathered in memory, at most max bytes. */
typedef struct wci_rbuf {
    const wci_alloc *al;
    char *p; /* NUL-terminated once anything arrived; NULL before */
    size_t len, cap, max;
    int over;                /* the body went over max: the transfer stops */
    _Atomic uint64_t *bytes; /* NULL, or a counter of the bytes received */
} wci_rbuf;

/* CURLOPT_WRITEFUNCTION for a wci_rbuf (CURLOPT_WRITEDATA). */
size_t wci_rbuf_write(char *data, size_t sz, size_t nm, void *ud);

/* Run e in multi until it is done, or until *stop is set: then
 * CURLE_ABORTED_BY_CALLBACK (curl_multi_wakeup(multi) makes a stop seen at
 * once).  e is added to and removed from multi here. */
CURLcode wci_xfer_run(CURLM *multi, CURL *e, _Atomic int *stop);

/* The status code of an "HTTP/1.1 200 OK" header line, or -1 for any
 * other header line (CURLOPT_HEADERFUNCTION sees every line). */
long wci_http_status_line(const char *data, size_t n);

/* What a source's thread needs, taken in wci_http_release()'s order: a
 * share of curl_global_init (*curl_inited = 1), a multi handle, and a
 * non-blocking wake-up pipe (-1s until it exists; a failure sets *err to
 * errno).  WCACHE_OK, WCACHE_ECURL or WCACHE_ESYS; what was taken before a
 * failure is left for wci_http_release(). */
wcache_code wci_http_acquire(CURLM **multi, int *curl_inited, int wake[2], int *err);

/* Stop a source's thread: set *stop, wake it (multi, if not NULL, out of
 * curl_multi_poll; wake_fd, a pipe's write end, out of poll) and join it. */
void wci_http_thread_stop(pthread_t th, _Atomic int *stop, CURLM *multi, int wake_fd);

/* Release what a source's thread used: the multi handle (NULL: none), its
 * share of curl_global_init (curl_inited: it took one) and the wake-up
 * pipe (-1: not open). */
void wci_http_release(CURLM *multi, int curl_inited, int wake[2]);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t wci_mono_ms(void);

#endif
