/*
 * store_cmds.c - wcache push, pull and ls: snapshots to and from a store
 * (file://, s3://, gs://; wcache_store(3)).
 *
 * Exit codes as in wcache.c: 0 ok, 1 usage, system or transfer error, 2 a
 * damaged snapshot (or an object whose checksum does not verify), 3 no
 * such object.  Messages go to stderr; ls writes its listing to stdout.
 * Credentials are read by the library from the environment or the shared
 * credentials file and never printed: errors name bucket, key and status.
 */
#define _POSIX_C_SOURCE 200809L
#include "store_cmds.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { EX_OK = 0, EX_ERR = 1, EX_DAMAGED = 2, EX_NOTFOUND = 3 };

static const char *prog = "wcache";

int store_is_command(const char *cmd)
{
    return !strcmp(cmd, "push") || !strcmp(cmd, "pull") || !strcmp(cmd, "ls");
}

static int num(const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    if (!v || !*v)
        return -1;
    long long x = strtoll(v, &end, 10);
    if (*end == 'M' || *end == 'm') {
        x <<= 20;
        end++;
    } else if (*end == 'K' || *end == 'k') {
        x <<= 10;
        end++;
    }
    if (*end || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

/* The value of "--name V" or "--name=V"; NULL if argv[*i] is not --name. */
static const char *val(int argc, char **argv, int *i, const char *name, int *missing)
{
    size_t n = strlen(name);
    const char *s = argv[*i];
    if (!strcmp(s, name)) {
        if (*i + 1 >= argc) {
            *missing = 1;
            return NULL;
        }
        return argv[++*i];
    }
    if (!strncmp(s, name, n) && s[n] == '=')
        return s + n + 1;
    return NULL;
}

int store_flag(int argc, char **argv, int *i, wcache_store_opts *o)
{
    const char *s = argv[*i], *v;
    int miss = 0;
    long long x;
    if (!strcmp(s, "--path-style")) {
        o->style = WCACHE_STORE_STYLE_PATH;
    } else if (!strcmp(s, "--virtual-style")) {
        o->style = WCACHE_STORE_STYLE_VIRTUAL;
    } else if (!strcmp(s, "--insecure")) {
        o->tls_insecure = 1;
    } else if ((v = val(argc, argv, i, "--endpoint", &miss))) {
        o->endpoint = v;
    } else if ((v = val(argc, argv, i, "--region", &miss))) {
        o->region = v;
    } else if ((v = val(argc, argv, i, "--profile", &miss))) {
        o->profile = v;
    } else if ((v = val(argc, argv, i, "--ca-file", &miss))) {
        o->ca_file = v;
    } else if ((v = val(argc, argv, i, "--gcs-token-file", &miss))) {
        o->gcs_token_file = v; /* a path, not the token: safe to show in ps */
    } else if ((v = val(argc, argv, i, "--part-size", &miss))) {
        if (num(v, 5 << 20, 5LL << 30, &x)) {
            fprintf(stderr, "%s: --part-size needs 5M .. 5120M\n", prog);
            return -1;
        }
        o->part_bytes = (uint64_t)x;
    } else if ((v = val(argc, argv, i, "--parallel", &miss))) {
        if (num(v, 1, 64, &x)) {
            fprintf(stderr, "%s: --parallel needs 1 .. 64\n", prog);
            return -1;
        }
        o->parallel_parts = (int)x;
    } else if ((v = val(argc, argv, i, "--retries", &miss))) {
        if (num(v, 0, 100, &x)) {
            fprintf(stderr, "%s: --retries needs 0 .. 100\n", prog);
            return -1;
        }
        o->max_retries = x ? (int)x : -1;
    } else if (miss) {
        fprintf(stderr, "%s: %s needs a value\n", prog, s);
        return -1;
    } else {
        return 0;
    }
    return 1;
}

/* ---- progress bar: bytes, on a terminal only ---- */

typedef struct bar {
    const char *what;
    int on;
    int64_t last_ns;
    int drawn;
} bar;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int bar_tick(uint64_t done, uint64_t total, void *ud)
{
    bar *b = ud;
    if (!b->on)
        return 0;
    int64_t t = now_ns();
    if (t - b->last_ns < 100000000 && done != total)
        return 0;
    b->last_ns = t;
    b->drawn = 1;
    if (total) {
        int w = (int)(done * 30 / total);
        fprintf(stderr, "\r%s [%.*s%*s] %3u%% %.1f/%.1f MiB", b->what, w,
                "##############################", 30 - w, "", (unsigned)(done * 100 / total),
                (double)done / 1048576, (double)total / 1048576);
    } else {
        fprintf(stderr, "\r%s %.1f MiB", b->what, (double)done / 1048576);
    }
    return 0;
}

static void bar_end(bar *b)
{
    if (b->drawn)
        fprintf(stderr, "\r\033[K");
}

static bar the_bar;

int store_open(const char *url, wcache_store_opts *o, wcache_store **st, char *eb, size_t el)
{
    o->size = sizeof *o;
    o->errbuf = eb;
    o->errbuf_len = el;
    the_bar.on = isatty(STDERR_FILENO);
    o->progress = bar_tick;
    o->progress_userdata = &the_bar;
    return wcache_store_open(st, url, o);
}

/* ---- the commands ---- */

static char eb[1024];

static int fail(const char *what, int rc)
{
    bar_end(&the_bar);
    fprintf(stderr, "%s: %s: %s%s%s\n", prog, what, wcache_strerror(rc), eb[0] ? ": " : "", eb);
    if (rc == WCACHE_ENOTFOUND)
        return EX_NOTFOUND;
    return rc == WCACHE_ECORRUPT || rc == WCACHE_EVERSION || rc == WCACHE_EZSTD ? EX_DAMAGED
                                                                                : EX_ERR;
}

static int ls_one(const wcache_store_object *o, void *ud)
{
    (void)ud;
    char when[32] = "-";
    if (o->mtime_unix_ns) {
        time_t t = (time_t)(o->mtime_unix_ns / 1000000000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    printf("%s %12llu %s\n", when, (unsigned long long)o->bytes, o->key);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: wcache push SNAP URL | pull URL SNAP [--no-verify] | ls URL\n"
                    "       [--endpoint URL] [--region R] [--path-style|--virtual-style]\n"
                    "       [--profile P] [--part-size N[M]] [--parallel N] [--ca-file F]\n"
                    "       [--insecure] [--retries N] [--gcs-token-file F]\n"
                    "Try 'wcache --help'.\n");
}

int store_main(int argc, char **argv)
{
    const char *cmd = argv[1];
    wcache_store_opts o;
    memset(&o, 0, sizeof o);
    const char *pos[2] = {NULL, NULL};
    int npos = 0, verify = 1;
    for (int i = 2; i < argc; i++) {
        int r = store_flag(argc, argv, &i, &o);
        if (r < 0)
            return EX_ERR;
        if (r)
            continue;
        if (!strcmp(argv[i], "--no-verify") && !strcmp(cmd, "pull")) {
            verify = 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "%s: unknown option: %s\n", prog, argv[i]);
            usage();
            return EX_ERR;
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            usage();
            return EX_ERR;
        }
    }
    int want = strcmp(cmd, "ls") ? 2 : 1;
    if (npos != want) {
        usage();
        return EX_ERR;
    }
    const char *url = !strcmp(cmd, "pull") || !strcmp(cmd, "ls") ? pos[0] : pos[1];
    wcache_store *st = NULL;
    int rc = store_open(url, &o, &st, eb, sizeof eb);
    if (rc != WCACHE_OK)
        return fail(url, rc);
    int ex = EX_OK;
    wcache_store_object obj;
    memset(&obj, 0, sizeof obj);
    obj.size = sizeof obj;
    if (!strcmp(cmd, "push")) {
        the_bar.what = "push";
        rc = wcache_store_put_file(st, "", pos[0], &obj);
        bar_end(&the_bar);
        if (rc != WCACHE_OK)
            ex = fail(url, rc);
        else
            fprintf(stderr, "%s: pushed %llu bytes to %s\n", prog,
                    (unsigned long long)obj.bytes, url);
    } else if (!strcmp(cmd, "pull")) {
        the_bar.what = "pull";
        rc = wcache_store_get_file(st, "", pos[1], verify, &obj);
        bar_end(&the_bar);
        if (rc != WCACHE_OK)
            ex = fail(url, rc);
        else
            fprintf(stderr, "%s: pulled %llu bytes to %s%s\n", prog,
                    (unsigned long long)obj.bytes, pos[1], verify ? " (verified)" : "");
    } else {
        rc = wcache_store_list(st, NULL, ls_one, NULL);
        if (rc != WCACHE_OK)
            ex = fail(url, rc);
    }
    wcache_store_close(st);
    return ex;
}
