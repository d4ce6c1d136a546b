/*
 * wcache.c - the wcache(1) command: look into, check and compare snapshot
 * files of the wcsnap(5) format.
 *
 * Exit codes are part of the interface (wcache(1)): 0 success, 1 usage or
 * system error (diff: the files differ), 2 a damaged snapshot (diff: any
 * trouble), 3 key not found (get).  Every message goes to stderr; stdout
 * carries only the requested output, so it can be piped.  Progress is shown
 * only when stderr is a terminal.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <yaml.h>

#include <watchcache.h>

#include "store_cmds.h"

enum { EX_OK = 0, EX_ERR = 1, EX_DAMAGED = 2, EX_NOTFOUND = 3 };
enum fmt { F_TEXT, F_JSON, F_YAML, F_KEYS, F_VALUE };

typedef struct args {
    const char *cmd;
    const char *pos[64]; /* verify takes a chain */
    int npos;
    enum fmt fmt;
    int fmt_set;
    const char *prefix;
    long long limit;
    long long max_block; /* 0: the library's default */
} args;

static const char *prog = "wcache";
static char errbuf[512];

/* ------------------------------------------------------------------------ */
/* Errors and progress                                                      */
/* ------------------------------------------------------------------------ */

static int is_damage(int rc)
{
    return rc == WCACHE_ECORRUPT || rc == WCACHE_EVERSION || rc == WCACHE_EZSTD ||
           rc == WCACHE_ETOOBIG;
}

/* Report a library error on stderr and map it to an exit code. */
static int report(const char *file, int rc)
{
    fprintf(stderr, "%s: %s: %s%s%s\n", prog, file, wcache_strerror(rc), errbuf[0] ? ": " : "",
            errbuf);
    errbuf[0] = 0;
    return is_damage(rc) ? EX_DAMAGED : EX_ERR;
}

typedef struct progress {
    int on;
    const char *what;
    uint64_t total, last_pct;
} progress;

static void progress_start(progress *p, const char *what, uint64_t total)
{
    p->on = isatty(STDERR_FILENO) && total > 0;
    p->what = what;
    p->total = total;
    p->last_pct = 101;
}

static void progress_tick(progress *p, uint64_t done)
{
    if (!p->on)
        return;
    uint64_t pct = done * 100 / p->total;
    if (pct == p->last_pct)
        return;
    p->last_pct = pct;
    fprintf(stderr, "\r%s: %3u%% (%llu/%llu objects)", p->what, (unsigned)pct,
            (unsigned long long)done, (unsigned long long)p->total);
}

static void progress_end(progress *p)
{
    if (p->on && p->last_pct != 101)
        fprintf(stderr, "\r\033[K");
}

/* ------------------------------------------------------------------------ */
/* Encodings                                                                */
/* ------------------------------------------------------------------------ */

static char *base64(const unsigned char *p, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *o = 0;
    return out;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static int utf8_ok(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i], need;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            need = 1, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3, cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= need)
            return 0;
        for (unsigned k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* Bytes for text output: printable ASCII as is, the rest as \xHH. */
static void put_escaped(FILE *f, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\')
            fputs("\\\\", f);
        else if (p[i] >= 0x20 && p[i] < 0x7f)
            fputc(p[i], f);
        else
            fprintf(f, "\\x%02x", p[i]);
    }
}

static void iso_time(int64_t ns, char *out, size_t n)
{
    time_t s = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t l = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + l, n - l, ".%09lldZ", (long long)(ns % 1000000000));
}

/* ------------------------------------------------------------------------ */
/* JSON (jansson)                                                           */
/* ------------------------------------------------------------------------ */

/* name: the bytes as a string, or base64 with name_encoding beside it. */
static void json_bytes(json_t *o, const char *name, const void *p, size_t n)
{
    if (utf8_ok(p, n)) {
        json_object_set_new(o, name, json_stringn(p ? p : "", n));
        return;
    }
    char *b = base64(p, n), enc[64];
    json_object_set_new(o, name, json_string(b ? b : ""));
    snprintf(enc, sizeof enc, "%s_encoding", name);
    json_object_set_new(o, enc, json_string("base64"));
    free(b);
}

/* In a delta, version 0 marks a tombstone: the key was deleted at
 * mod_revision (wcsnap(5)). */
static int is_tomb(const wcache_kv *kv)
{
    return kv->version == 0;
}

static json_t *kv_json(const wcache_kv *kv)
{
    json_t *o = json_object();
    if (is_tomb(kv)) {
        json_bytes(o, "key", kv->key, kv->key_len);
        json_object_set_new(o, "deleted", json_true());
        json_object_set_new(o, "mod_revision", json_integer(kv->mod_revision));
        return o;
    }
    json_bytes(o, "key", kv->key, kv->key_len);
    json_bytes(o, "value", kv->value, kv->value_len);
    json_object_set_new(o, "create_revision", json_integer(kv->create_revision));
    json_object_set_new(o, "mod_revision", json_integer(kv->mod_revision));
    json_object_set_new(o, "version", json_integer(kv->version));
    return o;
}

static double ratio(const wcache_snapshot_info *in)
{
    /* Two decimals are all a ratio needs; keeps the JSON stable to read. */
    double r = in->file_bytes ? (double)in->raw_bytes / (double)in->file_bytes : 0.0;
    return (double)(long long)(r * 100 + 0.5) / 100;
}

static json_t *info_json(const char *file, const wcache_snapshot_info *in)
{
    char ver[32], when[64];
    json_t *o = json_object();
    snprintf(ver, sizeof ver, "%u.%u", in->format_major, in->format_minor);
    iso_time(in->created_unix_ns, when, sizeof when);
    json_object_set_new(o, "file", json_string(file));
    json_object_set_new(o, "format_version", json_string(ver));
    json_object_set_new(o, "flags", json_integer(in->flags));
    json_object_set_new(o, "revision", json_integer(in->revision));
    json_object_set_new(o, "compacted_revision", json_integer(in->compacted_revision));
    json_object_set_new(o, "objects", json_integer((json_int_t)in->objects));
    json_bytes(o, "source_id", in->source_id, in->source_id_len);
    json_object_set_new(o, "created", json_string(when));
    json_object_set_new(o, "created_unix_ns", json_integer(in->created_unix_ns));
    json_object_set_new(o, "blocks", json_integer((json_int_t)in->blocks));
    json_object_set_new(o, "kv_bytes", json_integer((json_int_t)in->kv_bytes));
    json_object_set_new(o, "raw_bytes", json_integer((json_int_t)in->raw_bytes));
    json_object_set_new(o, "file_bytes", json_integer((json_int_t)in->file_bytes));
    json_object_set_new(o, "ratio", json_real(ratio(in)));
    char h[24];
    int delta = (in->flags & WCACHE_SNAP_FLAG_DELTA) != 0;
    json_object_set_new(o, "kind", json_string(delta ? "delta" : "full"));
    snprintf(h, sizeof h, "%016llx", (unsigned long long)in->file_hash);
    json_object_set_new(o, "file_hash", json_string(h));
    if (delta) {
        json_object_set_new(o, "base_revision", json_integer(in->base_revision));
        snprintf(h, sizeof h, "%016llx", (unsigned long long)in->base_file_hash);
        json_object_set_new(o, "base_file_hash", json_string(h));
        json_object_set_new(o, "tombstones", json_integer((json_int_t)in->tombstones));
    }
    return o;
}

/* One JSON value on one line; steals o. */
static void json_line(json_t *o)
{
    json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
}

/* ------------------------------------------------------------------------ */
/* YAML (libyaml's emitter)                                                 */
/* ------------------------------------------------------------------------ */

typedef struct yout {
    yaml_emitter_t em;
    int bad;
} yout;

static void y_emit(yout *y, yaml_event_t *ev)
{
    if (!y->bad && !yaml_emitter_emit(&y->em, ev))
        y->bad = 1;
}

static void y_simple(yout *y, int type)
{
    yaml_event_t ev;
    switch (type) {
    case YAML_STREAM_START_EVENT:
        yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
        break;
    case YAML_STREAM_END_EVENT: yaml_stream_end_event_initialize(&ev); break;
    case YAML_DOCUMENT_START_EVENT:
        yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 0);
        break;
    case YAML_DOCUMENT_END_EVENT: yaml_document_end_event_initialize(&ev, 1); break;
    case YAML_MAPPING_START_EVENT:
        yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
        break;
    case YAML_MAPPING_END_EVENT: yaml_mapping_end_event_initialize(&ev); break;
    case YAML_SEQUENCE_START_EVENT:
        yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE);
        break;
    default: yaml_sequence_end_event_initialize(&ev); break;
    }
    y_emit(y, &ev);
}

/* A string scalar: quoted whenever plain would read as something else. */
static void y_str(yout *y, const char *s, size_t n)
{
    yaml_event_t ev;
    yaml_scalar_event_initialize(&ev, NULL, (yaml_char_t *)YAML_STR_TAG, (yaml_char_t *)s,
                                 (int)n, 0, 1, YAML_ANY_SCALAR_STYLE);
    y_emit(y, &ev);
}

/* A field name: plain, as names are fixed identifiers. */
static void y_name(yout *y, const char *name)
{
    yaml_event_t ev;
    yaml_scalar_event_initialize(&ev, NULL, (yaml_char_t *)YAML_STR_TAG, (yaml_char_t *)name,
                                 (int)strlen(name), 1, 1, YAML_PLAIN_SCALAR_STYLE);
    y_emit(y, &ev);
}

static void y_int(yout *y, const char *name, long long v)
{
    char b[32];
    yaml_event_t ev;
    y_name(y, name);
    snprintf(b, sizeof b, "%lld", v);
    yaml_scalar_event_initialize(&ev, NULL, (yaml_char_t *)YAML_INT_TAG, (yaml_char_t *)b,
                                 (int)strlen(b), 1, 0, YAML_PLAIN_SCALAR_STYLE);
    y_emit(y, &ev);
}

static void y_bytes(yout *y, const char *name, const void *p, size_t n)
{
    y_name(y, name);
    if (utf8_ok(p, n)) {
        y_str(y, p ? p : "", n);
        return;
    }
    char *b = base64(p, n), enc[64];
    y_str(y, b ? b : "", b ? strlen(b) : 0);
    free(b);
    snprintf(enc, sizeof enc, "%s_encoding", name);
    y_name(y, enc);
    y_str(y, "base64", 6);
}

static void y_kv(yout *y, const wcache_kv *kv)
{
    y_simple(y, YAML_MAPPING_START_EVENT);
    y_bytes(y, "key", kv->key, kv->key_len);
    if (is_tomb(kv)) {
        yaml_event_t ev;
        y_name(y, "deleted");
        yaml_scalar_event_initialize(&ev, NULL, (yaml_char_t *)YAML_BOOL_TAG,
                                     (yaml_char_t *)"true", 4, 1, 0, YAML_PLAIN_SCALAR_STYLE);
        y_emit(y, &ev);
        y_int(y, "mod_revision", kv->mod_revision);
        y_simple(y, YAML_MAPPING_END_EVENT);
        return;
    }
    y_bytes(y, "value", kv->value, kv->value_len);
    y_int(y, "create_revision", kv->create_revision);
    y_int(y, "mod_revision", kv->mod_revision);
    y_int(y, "version", kv->version);
    y_simple(y, YAML_MAPPING_END_EVENT);
}

static void y_info(yout *y, const char *file, const wcache_snapshot_info *in)
{
    char ver[32], when[64];
    snprintf(ver, sizeof ver, "%u.%u", in->format_major, in->format_minor);
    iso_time(in->created_unix_ns, when, sizeof when);
    y_simple(y, YAML_MAPPING_START_EVENT);
    y_bytes(y, "file", file, strlen(file));
    y_bytes(y, "format_version", ver, strlen(ver));
    y_int(y, "revision", in->revision);
    y_int(y, "compacted_revision", in->compacted_revision);
    y_int(y, "objects", (long long)in->objects);
    y_bytes(y, "source_id", in->source_id, in->source_id_len);
    y_bytes(y, "created", when, strlen(when));
    y_int(y, "created_unix_ns", in->created_unix_ns);
    int delta = (in->flags & WCACHE_SNAP_FLAG_DELTA) != 0;
    y_bytes(y, "kind", delta ? "delta" : "full", delta ? 5 : 4);
    if (delta) {
        y_int(y, "base_revision", in->base_revision);
        y_int(y, "tombstones", (long long)in->tombstones);
    }
    y_simple(y, YAML_MAPPING_END_EVENT);
}

static void y_begin(yout *y)
{
    memset(y, 0, sizeof *y);
    if (!yaml_emitter_initialize(&y->em)) {
        y->bad = 1;
        return;
    }
    yaml_emitter_set_output_file(&y->em, stdout);
    yaml_emitter_set_unicode(&y->em, 1);
    y_simple(y, YAML_STREAM_START_EVENT);
}

static int y_end(yout *y)
{
    y_simple(y, YAML_STREAM_END_EVENT);
    int bad = y->bad;
    if (bad)
        fprintf(stderr, "%s: YAML output: %s\n", prog,
                y->em.problem ? y->em.problem : "emitter failed");
    yaml_emitter_delete(&y->em);
    return bad ? EX_ERR : EX_OK;
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                 */
/* ------------------------------------------------------------------------ */

static uint32_t max_block_bytes; /* --max-block-bytes, 0: default */

static int open_snap(const char *file, wcache_snapshot **s, wcache_snapshot_info *in)
{
    wcache_snapshot_read_opts o = {.size = sizeof o};
    o.max_block_bytes = max_block_bytes;
    o.errbuf = errbuf; /* kept by the handle for the errors of later calls */
    o.errbuf_len = sizeof errbuf;
    int rc = wcache_snapshot_open(s, file, &o);
    if (rc == WCACHE_OK) {
        in->size = sizeof *in;
        rc = wcache_snapshot_get_info(*s, in);
    }
    return rc;
}

static void inspect_text(const char *file, const wcache_snapshot_info *in)
{
    char when[64];
    iso_time(in->created_unix_ns, when, sizeof when);
    printf("file:               %s\n", file);
    printf("format:             %u.%u (flags 0x%x)\n", in->format_major, in->format_minor,
           in->flags);
    if (in->flags & WCACHE_SNAP_FLAG_DELTA)
        printf("kind:               delta on revision %lld (checksum %016llx)\n"
               "tombstones:         %llu\n",
               (long long)in->base_revision, (unsigned long long)in->base_file_hash,
               (unsigned long long)in->tombstones);
    else
        printf("kind:               full\n");
    printf("revision:           %lld\n", (long long)in->revision);
    printf("compacted revision: %lld%s\n", (long long)in->compacted_revision,
           in->compacted_revision ? "" : " (unknown)");
    printf("objects:            %llu\n", (unsigned long long)in->objects);
    printf("source:             ");
    put_escaped(stdout, in->source_id, in->source_id_len);
    printf("\ncreated:            %s\n", when);
    printf("blocks:             %llu\n", (unsigned long long)in->blocks);
    printf("key+value bytes:    %llu\n", (unsigned long long)in->kv_bytes);
    printf("uncompressed bytes: %llu\n", (unsigned long long)in->raw_bytes);
    printf("file bytes:         %llu\n", (unsigned long long)in->file_bytes);
    printf("ratio:              %.2f\n", ratio(in));
    printf("checksum:           %016llx\n", (unsigned long long)in->file_hash);
}

static int cmd_inspect(const args *a)
{
    wcache_snapshot *s;
    wcache_snapshot_info in;
    int rc = open_snap(a->pos[0], &s, &in);
    if (rc)
        return report(a->pos[0], rc);
    if (a->fmt == F_JSON)
        json_line(info_json(a->pos[0], &in));
    else
        inspect_text(a->pos[0], &in);
    wcache_snapshot_close(s);
    return EX_OK;
}

/* Read every record of s, with progress; WCACHE_OK when all is sound. */
static int read_rest(wcache_snapshot *s, const wcache_snapshot_info *in, const char *what,
                     void (*each)(const wcache_kv *, void *), void *ud)
{
    progress p;
    wcache_kv kv;
    uint64_t n = 0;
    int rc;
    progress_start(&p, what, in->objects);
    while ((rc = wcache_snapshot_next(s, &kv)) == WCACHE_OK) {
        if (each)
            each(&kv, ud);
        if ((++n & 1023) == 0)
            progress_tick(&p, n);
    }
    progress_end(&p);
    return rc == WCACHE_ENOTFOUND ? WCACHE_OK : rc;
}

static int verify_one(const char *file, wcache_snapshot_info *in, int *ex)
{
    wcache_snapshot *s;
    int rc = open_snap(file, &s, in);
    if (!rc)
        rc = read_rest(s, in, "verifying", NULL, NULL);
    if (!rc)
        printf("%s: ok: %llu objects at revision %lld, %llu blocks, format %u.%u%s\n", file,
               (unsigned long long)in->objects, (long long)in->revision,
               (unsigned long long)in->blocks, in->format_major, in->format_minor,
               in->flags & WCACHE_SNAP_FLAG_DELTA ? ", delta" : "");
    wcache_snapshot_close(s); /* in->source_id is not used after this */
    in->source_id = NULL;
    if (rc)
        *ex = report(file, rc);
    return rc;
}

/* verify SNAP [DELTA...]: every file, then, for a chain, every link (the
 * checks wcache_snapshot_restore_chain(3) makes). */
static int cmd_verify(const args *a)
{
    wcache_snapshot_info prev = {0}, in;
    int ex = EX_OK;
    for (int i = 0; i < a->npos; i++) {
        if (verify_one(a->pos[i], &in, &ex))
            return ex;
        int delta = (in.flags & WCACHE_SNAP_FLAG_DELTA) != 0;
        if (a->npos > 1 && i == 0 && delta) {
            fprintf(stderr,
                    "%s: %s: a delta on revision %lld: a chain begins with a full "
                    "snapshot\n",
                    prog, a->pos[0], (long long)in.base_revision);
            return EX_DAMAGED;
        }
        if (i > 0 && (!delta || in.base_revision != prev.revision ||
                      in.base_file_hash != prev.file_hash)) {
            fprintf(stderr,
                    "%s: %s: broken chain: %s%lld (checksum %016llx), but %s is "
                    "revision %lld (checksum %016llx)\n",
                    prog, a->pos[i], delta ? "a delta on revision " : "not a delta; ",
                    (long long)in.base_revision, (unsigned long long)in.base_file_hash,
                    a->pos[i - 1], (long long)prev.revision,
                    (unsigned long long)prev.file_hash);
            return EX_DAMAGED;
        }
        prev = in;
    }
    if (a->npos > 1)
        printf("chain ok: %d files, revision %lld\n", a->npos, (long long)prev.revision);
    return EX_OK;
}

static void print_kv(const wcache_kv *kv, enum fmt f, yout *y)
{
    if (f == F_JSON) {
        json_line(kv_json(kv));
    } else if (f == F_YAML) {
        y_kv(y, kv);
    } else {
        put_escaped(stdout, kv->key, kv->key_len);
        fputs(is_tomb(kv) ? "\tdeleted\n" : "\n", stdout);
    }
}

/* <0: key sorts before every key with the prefix; 0: has it; >0: after. */
static int prefix_cmp(const wcache_kv *kv, const char *prefix, size_t pl)
{
    size_t n = kv->key_len < pl ? kv->key_len : pl;
    int c = memcmp(kv->key, prefix, n);
    if (c)
        return c;
    return kv->key_len < pl ? -1 : 0;
}

static int cmd_list(const args *a)
{
    wcache_snapshot *s;
    wcache_snapshot_info in;
    wcache_kv kv;
    yout y;
    long long shown = 0;
    size_t pl = a->prefix ? strlen(a->prefix) : 0;
    int rc = open_snap(a->pos[0], &s, &in);
    if (rc)
        return report(a->pos[0], rc);
    if (a->fmt == F_YAML) {
        y_begin(&y);
        y_simple(&y, YAML_DOCUMENT_START_EVENT);
        y_simple(&y, YAML_SEQUENCE_START_EVENT);
    }
    while ((a->limit < 0 || shown < a->limit) && (rc = wcache_snapshot_next(s, &kv)) == 0) {
        int c = pl ? prefix_cmp(&kv, a->prefix, pl) : 0;
        if (c > 0)
            break; /* keys are sorted: nothing with the prefix follows */
        if (c == 0) {
            print_kv(&kv, a->fmt, &y);
            shown++;
        }
    }
    int ex = rc && rc != WCACHE_ENOTFOUND ? report(a->pos[0], rc) : EX_OK;
    if (a->fmt == F_YAML) {
        y_simple(&y, YAML_SEQUENCE_END_EVENT);
        y_simple(&y, YAML_DOCUMENT_END_EVENT);
        int ye = y_end(&y);
        ex = ex ? ex : ye;
    }
    wcache_snapshot_close(s);
    return ex;
}

static int key_cmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

static int show_one(const wcache_kv *kv, enum fmt f)
{
    yout y;
    if (f == F_VALUE) {
        fwrite(kv->value, 1, kv->value_len, stdout);
        return EX_OK;
    }
    if (f == F_JSON) {
        json_line(kv_json(kv));
        return EX_OK;
    }
    y_begin(&y);
    y_simple(&y, YAML_DOCUMENT_START_EVENT);
    y_kv(&y, kv);
    y_simple(&y, YAML_DOCUMENT_END_EVENT);
    return y_end(&y);
}

static int cmd_get(const args *a)
{
    wcache_snapshot *s;
    wcache_snapshot_info in;
    wcache_kv kv;
    const char *key = a->pos[1];
    size_t kl = strlen(key);
    int rc = open_snap(a->pos[0], &s, &in), c = 1;
    while (!rc && (rc = wcache_snapshot_next(s, &kv)) == WCACHE_OK &&
           (c = key_cmp(kv.key, kv.key_len, key, kl)) < 0)
        ;
    int ex;
    if (rc == WCACHE_OK && c == 0 && is_tomb(&kv)) {
        fprintf(stderr, "%s: %s: key \"", prog, a->pos[0]);
        put_escaped(stderr, key, kl);
        fprintf(stderr, "\" deleted at revision %lld (a tombstone of this delta)\n",
                (long long)kv.mod_revision);
        ex = EX_NOTFOUND;
    } else if (rc == WCACHE_OK && c == 0) {
        ex = show_one(&kv, a->fmt);
    } else if (rc == WCACHE_OK || rc == WCACHE_ENOTFOUND) {
        fprintf(stderr, "%s: %s: key \"", prog, a->pos[0]);
        put_escaped(stderr, key, kl);
        fprintf(stderr, "\" not found\n");
        ex = EX_NOTFOUND;
    } else {
        ex = report(a->pos[0], rc);
    }
    wcache_snapshot_close(s);
    return ex;
}

static void export_json_one(const wcache_kv *kv, void *ud)
{
    (void)ud;
    json_line(kv_json(kv));
}

static void export_yaml_one(const wcache_kv *kv, void *ud)
{
    y_kv(ud, kv);
}

static int cmd_export(const args *a)
{
    wcache_snapshot *s;
    wcache_snapshot_info in;
    yout y;
    int rc = open_snap(a->pos[0], &s, &in);
    if (rc)
        return report(a->pos[0], rc);
    if (a->fmt == F_JSON) {
        json_t *h = json_object();
        json_object_set_new(h, "snapshot", info_json(a->pos[0], &in));
        json_line(h);
        rc = read_rest(s, &in, "exporting", export_json_one, NULL);
    } else {
        y_begin(&y);
        y_simple(&y, YAML_DOCUMENT_START_EVENT);
        y_info(&y, a->pos[0], &in);
        y_simple(&y, YAML_DOCUMENT_END_EVENT);
        y_simple(&y, YAML_DOCUMENT_START_EVENT);
        y_simple(&y, YAML_SEQUENCE_START_EVENT);
        rc = read_rest(s, &in, "exporting", export_yaml_one, &y);
        y_simple(&y, YAML_SEQUENCE_END_EVENT);
        y_simple(&y, YAML_DOCUMENT_END_EVENT);
        int ye = y_end(&y);
        if (!rc && ye) {
            wcache_snapshot_close(s);
            return ye;
        }
    }
    wcache_snapshot_close(s);
    return rc ? report(a->pos[0], rc) : EX_OK;
}

/* ------------------------------------------------------------------------ */
/* diff                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct side {
    const char *file;
    wcache_snapshot *s;
    wcache_kv kv;
    int rc; /* WCACHE_OK: kv holds the next record */
} side;

static int same_kv(const wcache_kv *a, const wcache_kv *b)
{
    return a->value_len == b->value_len &&
           (!a->value_len || memcmp(a->value, b->value, a->value_len) == 0) &&
           a->create_revision == b->create_revision && a->mod_revision == b->mod_revision &&
           a->version == b->version;
}

static void diff_line(char mark, const wcache_kv *kv)
{
    printf("%c ", mark);
    put_escaped(stdout, kv->key, kv->key_len);
    fputc('\n', stdout);
}

/* Merge the two key-ordered streams; returns how many keys differ. */
static uint64_t diff_merge(side *x, side *y)
{
    uint64_t n = 0;
    x->rc = wcache_snapshot_next(x->s, &x->kv);
    y->rc = wcache_snapshot_next(y->s, &y->kv);
    while (x->rc == WCACHE_OK || y->rc == WCACHE_OK) {
        if ((x->rc && x->rc != WCACHE_ENOTFOUND) || (y->rc && y->rc != WCACHE_ENOTFOUND))
            break;
        int c = x->rc   ? 1
                : y->rc ? -1
                        : key_cmp(x->kv.key, x->kv.key_len, y->kv.key, y->kv.key_len);
        if (c < 0 || (c == 0 && !same_kv(&x->kv, &y->kv))) {
            diff_line(c < 0 ? '-' : '~', &x->kv);
            n++;
        } else if (c > 0) {
            diff_line('+', &y->kv);
            n++;
        }
        if (c <= 0)
            x->rc = wcache_snapshot_next(x->s, &x->kv);
        if (c >= 0)
            y->rc = wcache_snapshot_next(y->s, &y->kv);
    }
    return n;
}

static int cmd_diff(const args *a)
{
    side x = {.file = a->pos[0]}, y = {.file = a->pos[1]};
    wcache_snapshot_info ix, iy;
    int rc = open_snap(x.file, &x.s, &ix);
    if (rc) {
        report(x.file, rc);
        return 2;
    }
    rc = open_snap(y.file, &y.s, &iy);
    if (rc) {
        report(y.file, rc);
        wcache_snapshot_close(x.s);
        return 2;
    }
    uint64_t n = diff_merge(&x, &y);
    int ex = n ? 1 : 0;
    if (x.rc != WCACHE_ENOTFOUND)
        ex = (report(x.file, x.rc), 2);
    else if (y.rc != WCACHE_ENOTFOUND)
        ex = (report(y.file, y.rc), 2);
    wcache_snapshot_close(x.s);
    wcache_snapshot_close(y.s);
    return ex;
}

/* ------------------------------------------------------------------------ */
/* Command line                                                             */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: wcache COMMAND [ARGS]\n"
            "\n"
            "  inspect SNAP [-o text|json]        header, counts, sizes, ratio\n"
            "  verify SNAP [DELTA...]             check every checksum and invariant (and\n"
            "                                     each delta's link to the file before)\n"
            "  list SNAP [--prefix P] [--limit N] [-o keys|json|yaml]\n"
            "                                     objects in key order\n"
            "  get SNAP KEY [-o json|yaml|value]  one object\n"
            "  export SNAP -o json|yaml           header and every object\n"
            "  diff SNAP1 SNAP2                   added (+), removed (-), changed (~) keys\n"
            "  sync --etcd URLS --prefix P --out SNAP [--until-revision R] [--timeout S]\n"
            "       [--level N] [--workers N]     list+watch etcd, write one snapshot\n"
            "  check --etcd URLS --prefix P SNAP  compare a snapshot with etcd at its\n"
            "                                     revision (digest and differing keys)\n"
            "  push SNAP URL                      upload a snapshot (s3://, gs://, file://)\n"
            "  pull URL SNAP [--no-verify]        download and verify a snapshot\n"
            "  ls URL                             objects under a store prefix\n"
            "  version                            library and format versions\n"
            "\n"
            "  --max-block-bytes N  read blocks up to N bytes uncompressed (default\n"
            "                       64 MiB; snapshots of values larger than that)\n"
            "\n"
            "exit: 0 ok (diff, check: same), 1 usage or system error (diff, check:\n"
            "      differ; sync: any failure), 2 damaged snapshot (diff, check: any\n"
            "      trouble), 3 key not found.\n"
            "See wcache(1).\n");
}

typedef struct command {
    const char *name;
    int npos;
    unsigned fmts; /* allowed output formats, bit per enum fmt */
    enum fmt dflt;
    int (*run)(const args *);
} command;

#define B(f) (1u << (f))
static const command commands[] = {
    {"inspect", 1, B(F_TEXT) | B(F_JSON), F_TEXT, cmd_inspect},
    {"verify", -1, 0, F_TEXT, cmd_verify},
    {"list", 1, B(F_KEYS) | B(F_JSON) | B(F_YAML), F_KEYS, cmd_list},
    {"get", 2, B(F_JSON) | B(F_YAML) | B(F_VALUE), F_JSON, cmd_get},
    {"export", 1, B(F_JSON) | B(F_YAML), F_JSON, cmd_export},
    {"diff", 2, 0, F_TEXT, cmd_diff},
};

static int parse_fmt(const char *s, enum fmt *f)
{
    static const char *names[] = {"text", "json", "yaml", "keys", "value"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0) {
            *f = (enum fmt)i;
            return 0;
        }
    return -1;
}

/* The value of an option given as "--opt V", "--opt=V" or "-oV". */
static const char *opt_value(int argc, char **argv, int *i, const char *lng, const char *sht)
{
    const char *s = argv[*i];
    size_t n = strlen(lng);
    if (strcmp(s, lng) == 0 || (sht && strcmp(s, sht) == 0))
        return *i + 1 < argc ? argv[++*i] : NULL;
    if (strncmp(s, lng, n) == 0 && s[n] == '=')
        return s + n + 1;
    if (sht && strncmp(s, sht, 2) == 0 && s[2])
        return s + 2;
    return NULL;
}

static int is_opt(const char *s, const char *lng, const char *sht)
{
    size_t n = strlen(lng);
    return strcmp(s, lng) == 0 || (strncmp(s, lng, n) == 0 && s[n] == '=') ||
           (sht && strncmp(s, sht, 2) == 0);
}

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "%s: %s%s%s\n", prog, msg, arg ? ": " : "", arg ? arg : "");
    fprintf(stderr, "Try 'wcache --help'.\n");
    return -1;
}

static int parse_one(int argc, char **argv, int *i, args *a)
{
    const char *s = argv[*i], *v;
    if (is_opt(s, "--output", "-o")) {
        if (!(v = opt_value(argc, argv, i, "--output", "-o")) || parse_fmt(v, &a->fmt))
            return bad("bad or missing output format", v);
        a->fmt_set = 1;
    } else if (is_opt(s, "--prefix", NULL)) {
        if (!(a->prefix = opt_value(argc, argv, i, "--prefix", NULL)))
            return bad("--prefix needs a value", NULL);
    } else if (is_opt(s, "--limit", NULL)) {
        char *end;
        v = opt_value(argc, argv, i, "--limit", NULL);
        a->limit = v ? strtoll(v, &end, 10) : -1;
        if (!v || !*v || *end || a->limit < 0)
            return bad("--limit needs a number >= 0", v);
    } else if (is_opt(s, "--max-block-bytes", NULL)) {
        char *end;
        v = opt_value(argc, argv, i, "--max-block-bytes", NULL);
        a->max_block = v ? strtoll(v, &end, 10) : -1;
        if (!v || !*v || *end || a->max_block < 1 || a->max_block >= (1LL << 31))
            return bad("--max-block-bytes needs a number from 1 to 2147483647", v);
    } else if (s[0] == '-' && s[1]) {
        return bad("unknown option", s);
    } else if (a->npos < 64) {
        a->pos[a->npos++] = s;
    } else {
        return bad("too many arguments", s);
    }
    return 0;
}

static int parse(int argc, char **argv, args *a)
{
    int opts = 1;
    for (int i = 2; i < argc; i++) {
        if (opts && strcmp(argv[i], "--") == 0) {
            opts = 0;
        } else if (!opts) {
            if (a->npos == 64)
                return bad("too many arguments", argv[i]);
            a->pos[a->npos++] = argv[i];
        } else if (parse_one(argc, argv, &i, a)) {
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* sync and check: a real etcd                                              */
/* ------------------------------------------------------------------------ */

typedef struct etcd_args {
    const char *etcd, *prefix, *out, *snap;
    long long until; /* 0: follow until a signal */
    long long timeout_s;
    int level, workers;
} etcd_args;

static volatile sig_atomic_t got_signal;
static char last_warn[400]; /* the source's latest warning, for the error */

static void on_signal(int sig)
{
    got_signal = sig;
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a wait wakes up */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void keep_warning(int level, const char *msg, size_t len, void *ud)
{
    (void)ud;
    if (level <= WCACHE_LOG_WARN)
        snprintf(last_warn, sizeof last_warn, "%.*s", (int)len, msg);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal cuts it short, as wanted */
}

/* A cache and an etcd source for ea (not started). */
static int etcd_open(const etcd_args *ea, int follow, wcache_cache **c, wcache_etcd **src)
{
    wcache_etcd_opts o = {.size = sizeof o};
    o.endpoints = ea->etcd;
    o.prefix = ea->prefix;
    o.prefix_len = strlen(ea->prefix);
    o.connect_timeout_ms = 3000;
    o.request_timeout_ms = ea->timeout_s * 1000;
    o.backoff_max_ms = 1000;
    int rc = wcache_cache_create(c, NULL);
    /* Until R, history back to the list stays: the snapshot is pinned at
     * R, which may already be below the revision the watch reached. */
    if (!rc && !follow)
        rc = wcache_cache_set_param(*c, WCACHE_P_AUTO_COMPACT, 0);
    if (!rc)
        rc = wcache_cache_set_log(*c, keep_warning, WCACHE_LOG_WARN, NULL);
    if (!rc)
        rc = wcache_etcd_create(src, *c, &o);
    if (!rc)
        rc = wcache_cache_open(*c);
    if (rc) {
        fprintf(stderr, "%s: --etcd %s: %s\n", prog, ea->etcd, wcache_strerror(rc));
        return EX_ERR;
    }
    return EX_OK;
}

static void etcd_close(wcache_cache *c, wcache_etcd *src)
{
    wcache_etcd_free(src);
    wcache_cache_close(c);
}

/* Why etcd could not be used, on stderr. */
static int etcd_fail(const etcd_args *ea, const char *what, int rc)
{
    fprintf(stderr, "%s: %s: %s: %s%s%s\n", prog, ea->etcd, what, wcache_strerror(rc),
            last_warn[0] ? ": " : "", last_warn);
    return EX_ERR;
}

/* The progress bar of a snapshot write. */
static int write_progress(int st, uint64_t bytes, uint64_t objs, uint64_t total, void *ud)
{
    (void)bytes;
    progress *p = ud;
    if (st == WCACHE_SNAP_STEP_WRITE && (objs & 1023) == 0)
        progress_tick(p, objs);
    (void)total;
    return 0;
}

/*
 * Where a snapshot goes.  A plain path is written atomically by the
 * library; a URL (scheme://...) is for a store sink, which this build
 * does not have yet.
 */
/* Store options of sync (--endpoint, --region, ...; see store_flag()). */
static wcache_store_opts sync_store;

/* sync --out URL: the URL is a store prefix; the snapshot goes straight
 * from the cache into the store (no local file) under the layout
 * PREFIX/<source>/<revision>.wcsnap. */
static int write_store(wcache_cache *c, const char *url, wcache_snapshot_write_opts *o,
                       wcache_snapshot_info *in)
{
    wcache_store *st = NULL;
    int rc = store_open(url, &sync_store, &st, errbuf, sizeof errbuf);
    o->errbuf = errbuf;
    o->errbuf_len = sizeof errbuf;
    in->size = sizeof *in;
    if (rc == WCACHE_OK)
        rc = wcache_store_put_snapshot(st, NULL, c, o, 0, in);
    char key[3 * WCACHE_SNAP_MAX_SOURCE_ID + 32];
    if (rc == WCACHE_OK &&
        wcache_store_snapshot_key(o->source_id, o->source_id_len, in->revision, key,
                                  sizeof key) == WCACHE_OK)
        fprintf(stderr, "%s: uploaded %s/%s\n", prog, url, key);
    wcache_store_close(st);
    return rc ? report(url, rc) : EX_OK;
}

static int write_out(wcache_cache *c, const char *out, wcache_snapshot_write_opts *o,
                     wcache_snapshot_info *in)
{
    progress p;
    if (strstr(out, "://"))
        return write_store(c, out, o, in);
    wcache_stat st = {.size = sizeof st};
    wcache_cache_stat(c, &st);
    progress_start(&p, "writing", st.objects);
    o->progress = write_progress;
    o->userdata = &p;
    o->errbuf = errbuf;
    o->errbuf_len = sizeof errbuf;
    in->size = sizeof *in;
    int rc = wcache_snapshot_write(c, out, o, in);
    progress_end(&p);
    return rc ? report(out, rc) : EX_OK;
}

static int sync_write(const etcd_args *ea, wcache_cache *c, int64_t rev, const void *id,
                      size_t idlen)
{
    wcache_snapshot_write_opts o = {.size = sizeof o};
    wcache_snapshot_info in;
    o.revision = rev;
    o.level = ea->level;
    o.workers = ea->workers;
    o.source_id = id;
    o.source_id_len = idlen;
    int ex = write_out(c, ea->out, &o, &in);
    if (!ex)
        fprintf(stderr, "%s: wrote %s: %llu objects at revision %lld, %llu bytes\n", prog,
                ea->out, (unsigned long long)in.objects, (long long)in.revision,
                (unsigned long long)in.file_bytes);
    return ex;
}

typedef struct loader {
    wcache_batch *b;
    progress p;
    uint64_t n;
    int rc;
} loader;

static int load_kv(const wcache_kv *kv, void *ud)
{
    loader *l = ud;
    l->rc = wcache_batch_put_meta(l->b, kv->key, kv->key_len, kv->value, kv->value_len,
                                  kv->create_revision, kv->mod_revision, kv->version);
    if ((++l->n & 1023) == 0)
        progress_tick(&l->p, l->n);
    return l->rc != WCACHE_OK || got_signal;
}

/* The range at exactly rev into the empty cache c. */
static int list_at(const etcd_args *ea, wcache_cache *c, wcache_etcd *src, int64_t rev,
                   uint64_t count)
{
    loader l = {0};
    wcache_etcd_range_info ri = {.size = sizeof ri};
    int rc = wcache_batch_create(c, &l.b);
    if (rc)
        return etcd_fail(ea, "batch", rc);
    progress_start(&l.p, "listing", count);
    rc = wcache_etcd_range(src, rev, load_kv, &l, &ri);
    progress_end(&l.p);
    if (rc == WCACHE_ESTOPPED && l.rc)
        rc = l.rc;
    if (rc == WCACHE_OK && wcache_batch_count(l.b) > 0)
        rc = wcache_ingest_load(c, l.b, rev);
    else if (rc == WCACHE_OK) /* nothing under the prefix at rev */
        rc = wcache_ingest_progress(c, rev);
    wcache_batch_free(l.b);
    if (got_signal) {
        fprintf(stderr, "%s: interrupted during the list: nothing written\n", prog);
        return EX_ERR;
    }
    if (rc == WCACHE_ECOMPACTED)
        fprintf(stderr, "%s: %s: revision %lld is compacted at the source\n", prog, ea->etcd,
                (long long)rev);
    else if (rc)
        return etcd_fail(ea, "list", rc);
    return rc ? EX_ERR : EX_OK;
}

/* The source's revision and identity, retried until the deadline. */
static int etcd_hello(const etcd_args *ea, wcache_etcd *src, int64_t deadline,
                      wcache_etcd_range_info *ri, char *id, size_t *idlen)
{
    int rc;
    ri->size = sizeof *ri;
    for (;;) {
        rc = wcache_etcd_range(src, 0, NULL, NULL, ri);
        if (!rc)
            rc = wcache_etcd_source_id(src, id, WCACHE_SNAP_MAX_SOURCE_ID, idlen);
        if (!rc || got_signal || mono_ms() >= deadline ||
            (rc != WCACHE_ECURL && rc != WCACHE_EHTTP))
            break;
        nap_ms(200);
    }
    if (got_signal) {
        fprintf(stderr, "%s: interrupted before the list: nothing written\n", prog);
        return EX_ERR;
    }
    return rc ? etcd_fail(ea, "unreachable", rc) : EX_OK;
}

/* Follow the source until R is applied, or etcd passed R and the watch did
 * not bring it (an idle prefix: nothing changed up to R) within a grace;
 * then the range at exactly R.  Timed progress notifications also move an
 * idle prefix on; requested ones are not used, as etcd 3.4 may send them
 * before events of their revision (etcd-io/etcd#15220). */
static int sync_until(const etcd_args *ea, wcache_cache *c, wcache_etcd *src, int64_t deadline,
                      const char *id, size_t idlen)
{
    int64_t R = ea->until, passed_at = 0;
    int rc = wcache_etcd_start(src);
    if (rc)
        return etcd_fail(ea, "start", rc);
    while (!got_signal && mono_ms() < deadline && wcache_cache_revision(c) < R) {
        wcache_etcd_range_info ri = {.size = sizeof ri};
        if (!passed_at && wcache_etcd_range(src, 0, NULL, NULL, &ri) == WCACHE_OK &&
            ri.header_revision >= R)
            passed_at = mono_ms();
        if (passed_at && mono_ms() - passed_at > 1000)
            break;
        nap_ms(100);
    }
    wcache_etcd_stop(src);
    if (got_signal) {
        fprintf(stderr, "%s: interrupted before revision %lld: nothing written\n", prog,
                (long long)R);
        return EX_ERR;
    }
    if (wcache_cache_revision(c) >= R)
        return sync_write(ea, c, R, id, idlen);
    if (!passed_at) {
        fprintf(stderr,
                "%s: %s: revision %lld not reached in %lld s (the cache is at %lld)%s%s\n",
                prog, ea->etcd, (long long)R, ea->timeout_s,
                (long long)wcache_cache_revision(c), last_warn[0] ? ": " : "", last_warn);
        return EX_ERR;
    }
    /* The cache is at some other state: list R into a fresh one. */
    wcache_cache *c2;
    wcache_etcd *s2;
    int ex = etcd_open(ea, 0, &c2, &s2);
    if (!ex)
        ex = list_at(ea, c2, s2, R, 0);
    if (!ex)
        ex = sync_write(ea, c2, R, id, idlen);
    etcd_close(c2, s2);
    return ex;
}

/* Follow until SIGINT/SIGTERM, then write the latest applied revision. */
static int sync_follow(const etcd_args *ea, wcache_cache *c, wcache_etcd *src, int64_t deadline,
                       const char *id, size_t idlen)
{
    int rc = wcache_etcd_start(src);
    if (rc)
        return etcd_fail(ea, "start", rc);
    while (!got_signal && wcache_cache_revision(c) == 0 && mono_ms() < deadline)
        nap_ms(50);
    if (wcache_cache_revision(c) == 0) {
        wcache_etcd_stop(src);
        if (got_signal)
            fprintf(stderr, "%s: interrupted during the initial list: nothing written\n", prog);
        else
            etcd_fail(ea, "initial list not done in time", WCACHE_ETIMEDOUT);
        return EX_ERR;
    }
    wcache_stat st0 = {.size = sizeof st0};
    wcache_cache_stat(c, &st0);
    fprintf(stderr,
            "%s: listed %llu objects at revision %lld; following until SIGINT or SIGTERM\n",
            prog, (unsigned long long)st0.objects, (long long)wcache_cache_revision(c));
    int tty = isatty(STDERR_FILENO);
    int64_t shown = -1;
    while (!got_signal) {
        int64_t r = wcache_cache_revision(c);
        if (tty && r != shown) {
            wcache_stat st = {.size = sizeof st};
            wcache_cache_stat(c, &st);
            fprintf(stderr, "\r\033[Kfollowing: revision %lld, %llu objects (Ctrl-C writes)",
                    (long long)r, (unsigned long long)st.objects);
            shown = r;
        }
        nap_ms(200);
    }
    wcache_etcd_stop(src);
    if (tty)
        fprintf(stderr, "\r\033[K");
    return sync_write(ea, c, WCACHE_REV_LATEST, id, idlen);
}

static int cmd_sync(const etcd_args *ea)
{
    wcache_cache *c;
    wcache_etcd *src;
    wcache_etcd_range_info ri;
    static char id[WCACHE_SNAP_MAX_SOURCE_ID];
    size_t idlen = 0;
    int64_t deadline = mono_ms() + ea->timeout_s * 1000;
    catch_signals();
    int ex = etcd_open(ea, ea->until == 0, &c, &src);
    if (ex)
        return ex;
    fprintf(stderr, "%s: syncing prefix \"%s\" from %s\n", prog, ea->prefix, ea->etcd);
    ex = etcd_hello(ea, src, deadline, &ri, id, &idlen);
    if (!ex && ea->until && ri.header_revision >= ea->until) {
        ex = list_at(ea, c, src, ea->until, ri.count);
        if (!ex)
            ex = sync_write(ea, c, ea->until, id, idlen);
    } else if (!ex && ea->until) {
        ex = sync_until(ea, c, src, deadline, id, idlen);
    } else if (!ex) {
        ex = sync_follow(ea, c, src, deadline, id, idlen);
    }
    etcd_close(c, src);
    return ex;
}

/*
 * check: the snapshot against the source at the snapshot's revision S,
 * like Kubernetes' consistency checker: a digest of both sides (64-bit
 * FNV-1 over key "/" mod_revision of every object in key order), and the
 * keys that differ, found by merging the two key-ordered streams.
 */
typedef struct checker {
    wcache_snapshot *s;
    wcache_kv kv; /* the snapshot's next record, when rc is WCACHE_OK */
    int rc;
    uint64_t dsnap, dsrc, differ, nsnap, nsrc;
    progress p;
} checker;

static uint64_t fnv1(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h *= 1099511628211ULL;
        h ^= b[i];
    }
    return h;
}

static uint64_t digest_kv(uint64_t h, const wcache_kv *kv)
{
    char r[32];
    int n = snprintf(r, sizeof r, "/%lld", (long long)kv->mod_revision);
    return fnv1(fnv1(h, kv->key, kv->key_len), r, (size_t)n);
}

static void snap_advance(checker *k)
{
    k->rc = wcache_snapshot_next(k->s, &k->kv);
    if (k->rc == WCACHE_OK) {
        k->dsnap = digest_kv(k->dsnap, &k->kv);
        if ((++k->nsnap & 1023) == 0)
            progress_tick(&k->p, k->nsnap);
    }
}

static int check_kv(const wcache_kv *e, void *ud)
{
    checker *k = ud;
    k->dsrc = digest_kv(k->dsrc, e);
    k->nsrc++;
    for (;;) {
        int c = k->rc ? 1 : key_cmp(k->kv.key, k->kv.key_len, e->key, e->key_len);
        if (c < 0) { /* only in the snapshot */
            diff_line('-', &k->kv);
            k->differ++;
            snap_advance(k);
            continue;
        }
        if (c > 0) {
            diff_line('+', e);
            k->differ++;
        } else {
            if (!same_kv(&k->kv, e)) {
                diff_line('~', e);
                k->differ++;
            }
            snap_advance(k);
        }
        break;
    }
    return (k->rc != WCACHE_OK && k->rc != WCACHE_ENOTFOUND) || got_signal;
}

static int cmd_check(const etcd_args *ea)
{
    checker k = {.dsnap = 14695981039346656037ULL, .dsrc = 14695981039346656037ULL};
    wcache_snapshot_info in;
    wcache_cache *c;
    wcache_etcd *src;
    static char id[WCACHE_SNAP_MAX_SOURCE_ID];
    size_t idlen = 0;
    catch_signals();
    int rc = open_snap(ea->snap, &k.s, &in);
    if (rc) {
        report(ea->snap, rc);
        return 2;
    }
    if (in.flags & WCACHE_SNAP_FLAG_DELTA) {
        fprintf(stderr, "%s: %s: a delta holds changes, not a state: check a full snapshot\n",
                prog, ea->snap);
        wcache_snapshot_close(k.s);
        return 2;
    }
    int ex = etcd_open(ea, 1, &c, &src);
    if (!ex)
        ex = etcd_hello(ea, src, mono_ms() + ea->timeout_s * 1000,
                        &(wcache_etcd_range_info){.size = sizeof(wcache_etcd_range_info)}, id,
                        &idlen);
    if (!ex && in.source_id_len &&
        (in.source_id_len != idlen || memcmp(in.source_id, id, idlen) != 0)) {
        fprintf(stderr, "%s: %s: a snapshot of source \"", prog, ea->snap);
        put_escaped(stderr, in.source_id, in.source_id_len);
        fprintf(stderr, "\", not of this one (\"%.*s\")\n", (int)idlen, id);
        ex = EX_ERR;
    }
    if (ex) {
        wcache_snapshot_close(k.s);
        etcd_close(c, src);
        return 2;
    }
    wcache_etcd_range_info ri = {.size = sizeof ri};
    progress_start(&k.p, "checking", in.objects);
    snap_advance(&k);
    rc = in.revision > 0 ? wcache_etcd_range(src, in.revision, check_kv, &k, &ri) : WCACHE_OK;
    while (rc == WCACHE_OK && k.rc == WCACHE_OK) { /* the rest is only in the snapshot */
        diff_line('-', &k.kv);
        k.differ++;
        snap_advance(&k);
    }
    progress_end(&k.p);
    if (k.rc != WCACHE_ENOTFOUND && k.rc != WCACHE_OK) {
        report(ea->snap, k.rc);
        ex = 2;
    } else if (rc == WCACHE_ECOMPACTED) {
        fprintf(stderr,
                "%s: %s: revision %lld is compacted at the source: nothing to compare\n", prog,
                ea->etcd, (long long)in.revision);
        ex = 2;
    } else if (rc) {
        etcd_fail(ea, got_signal ? "interrupted" : "range", rc);
        ex = 2;
    } else {
        printf("%s at revision %lld: snapshot %llu objects, digest %016llx; source %llu "
               "objects, digest %016llx\n",
               k.differ ? "differ" : "consistent", (long long)in.revision,
               (unsigned long long)k.nsnap, (unsigned long long)k.dsnap,
               (unsigned long long)k.nsrc, (unsigned long long)k.dsrc);
        ex = k.differ ? 1 : 0;
    }
    wcache_snapshot_close(k.s);
    etcd_close(c, src);
    return ex;
}

static long long num_arg(const char *v, long long lo, long long hi, const char *what)
{
    char *end;
    long long n = v ? strtoll(v, &end, 10) : lo - 1;
    if (!v || !*v || *end || n < lo || n > hi) {
        bad(what, v);
        return lo - 1;
    }
    return n;
}

/* sync and check take their own options. */
static int run_etcd(int check, int argc, char **argv)
{
    /* Compression threads: one per core, up to 4 (the writer's default of
     * none would leave the other cores idle while the command waits). */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    etcd_args ea = {.timeout_s = 60,
                    .level = 1,
                    .workers = cores > 4   ? 4
                               : cores > 1 ? (int)cores
                                           : 0};
    int npos = 0, sf;
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i], *v;
        if (is_opt(s, "--etcd", NULL)) {
            ea.etcd = opt_value(argc, argv, &i, "--etcd", NULL);
        } else if (is_opt(s, "--prefix", NULL)) {
            ea.prefix = opt_value(argc, argv, &i, "--prefix", NULL);
        } else if (is_opt(s, "--timeout", NULL)) {
            v = opt_value(argc, argv, &i, "--timeout", NULL);
            if ((ea.timeout_s = num_arg(v, 1, 86400, "--timeout needs seconds, 1 to 86400")) <
                1)
                return EX_ERR + check;
        } else if (!check && (sf = store_flag(argc, argv, &i, &sync_store)) != 0) {
            if (sf < 0) /* store_flag said why */
                return EX_ERR;
        } else if (!check && is_opt(s, "--out", NULL)) {
            ea.out = opt_value(argc, argv, &i, "--out", NULL);
        } else if (!check && is_opt(s, "--until-revision", NULL)) {
            v = opt_value(argc, argv, &i, "--until-revision", NULL);
            if ((ea.until =
                     num_arg(v, 1, INT64_MAX, "--until-revision needs a revision >= 1")) < 1)
                return EX_ERR;
        } else if (!check && is_opt(s, "--level", NULL)) {
            v = opt_value(argc, argv, &i, "--level", NULL);
            if ((ea.level = (int)num_arg(v, 1, 19, "--level needs 1 to 19")) < 1)
                return EX_ERR;
        } else if (!check && is_opt(s, "--workers", NULL)) {
            v = opt_value(argc, argv, &i, "--workers", NULL);
            if ((ea.workers = (int)num_arg(v, 0, 64, "--workers needs 0 to 64")) < 0)
                return EX_ERR;
        } else if (s[0] == '-' && s[1]) {
            bad("unknown option", s);
            return EX_ERR + check;
        } else if (check && npos++ == 0) {
            ea.snap = s;
        } else {
            bad("too many arguments", s);
            return EX_ERR + check;
        }
    }
    if (!ea.etcd || !*ea.etcd || !ea.prefix) {
        bad("--etcd URLS and --prefix P are required", NULL);
        return EX_ERR + check;
    }
    if (check ? !ea.snap : !ea.out) {
        bad(check ? "expected one snapshot file" : "--out SNAP is required", NULL);
        return EX_ERR + check;
    }
    return check ? cmd_check(&ea) : cmd_sync(&ea);
}

static int run(const command *c, int argc, char **argv)
{
    args a = {.cmd = c->name, .limit = -1, .fmt = c->dflt};
    if (parse(argc, argv, &a))
        return EX_ERR;
    if (c->npos < 0 ? a.npos < 1 : a.npos != c->npos)
        return bad(c->npos < 0    ? "expected a snapshot file and its deltas"
                   : c->npos == 1 ? "expected one snapshot file"
                                  : "expected two arguments",
                   NULL),
               c->name[0] == 'd' ? 2 : EX_ERR;
    if (a.fmt_set && !(c->fmts & B(a.fmt)))
        return bad("output format not available for this command", c->name), EX_ERR;
    if ((a.prefix || a.limit >= 0) && strcmp(c->name, "list") != 0)
        return bad("--prefix and --limit are options of list", NULL), EX_ERR;
    max_block_bytes = (uint32_t)a.max_block;
    int ex = c->run(&a);
    if (fflush(stdout) != 0 && ex == EX_OK) {
        fprintf(stderr, "%s: writing output: %s\n", prog, strerror(errno));
        ex = EX_ERR;
    }
    return ex;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EX_ERR;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return EX_OK;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("wcache %s (libwatchcache %s), snapshot format %d.%d\n", WCACHE_VERSION_STRING,
               wcache_version_string(), WCACHE_SNAP_FORMAT_MAJOR, WCACHE_SNAP_FORMAT_MINOR);
        return EX_OK;
    }
    if (!strcmp(cmd, "sync") || !strcmp(cmd, "check"))
        return run_etcd(cmd[0] == 'c', argc, argv);
    if (store_is_command(cmd))
        return store_main(argc, argv);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(cmd, commands[i].name) == 0)
            return run(&commands[i], argc, argv);
    fprintf(stderr, "%s: unknown command '%s'\n", prog, cmd);
    fprintf(stderr, "Try 'wcache --help'.\n");
    return EX_ERR;
}
