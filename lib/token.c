/*
 * token.c - continue tokens for paged LISTs.
 *
 * A token names where a page ended: the revision it was read at, a hash of
 * the range it was asked for (so it cannot be replayed on another range),
 * and the last key returned; the next page starts strictly after that key.
 * It is binary, checksummed with XXH3 and base64url-encoded.  It is not
 * signed: a client that forges one can only ask for a revision and a key
 * it could have asked for directly, so integrity, not secrecy, is needed.
 *
 *   "WCT" 0x01 | rev (8, LE) | range hash (8, LE) | klen (4, LE) | key |
 *   XXH3-64 of all the preceding bytes (8, LE)
 */
#include "wcache_int.h"

#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#define HDR 24
#define SUM 8

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void hash_part(XXH3_state_t *st, const void *p, size_t n)
{
    unsigned char len[8];
    put64(len, n);
    XXH3_64bits_update(st, len, sizeof len);
    if (n)
        XXH3_64bits_update(st, p, n);
}

uint64_t wci_range_hash(const wcache_list_opts *o)
{
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    if (o && o->prefix_len) {
        XXH3_64bits_update(&st, "p", 1);
        hash_part(&st, o->prefix, o->prefix_len);
    } else {
        XXH3_64bits_update(&st, "r", 1);
        hash_part(&st, o ? o->start : NULL, o ? o->start_len : 0);
        hash_part(&st, o ? o->end : NULL, o ? o->end_len : 0);
    }
    return XXH3_64bits_digest(&st);
}

static size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = B64[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = B64[v & 63];
    }
    out[o] = 0;
    return o;
}

static int b64_val(unsigned char ch)
{
    const char *p = ch ? strchr(B64, ch) : NULL;
    return p ? (int)(p - B64) : -1;
}

/* Strict: only the alphabet, no padding, no stray trailing bits. */
static int b64_decode(const char *in, size_t n, unsigned char *out, size_t *outlen)
{
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        size_t m = n - i < 4 ? n - i : 4;
        uint32_t v = 0;
        for (size_t j = 0; j < 4; j++) {
            int d = j < m ? b64_val((unsigned char)in[i + j]) : 0;
            if (d < 0)
                return -1;
            v = v << 6 | (uint32_t)d;
        }
        out[o++] = (unsigned char)(v >> 16);
        if (m > 2)
            out[o++] = (unsigned char)(v >> 8);
        if (m > 3)
            out[o++] = (unsigned char)v;
        if ((m == 2 && (v & 0xffff)) || (m == 3 && (v & 0xff)))
            return -1;
    }
    *outlen = o;
    return 0;
}

static int grow(wcache_cache *c, char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    char *n = wci_malloc(&c->al, need);
    if (!n)
        return -1;
    wci_free(&c->al, *buf);
    *buf = n;
    *cap = need;
    return 0;
}

wcache_code wci_token_encode(wcache_view *v, uint64_t rh, const wci_key *last)
{
    wcache_cache *c = v->c;
    size_t raw = HDR + last->klen + SUM;
    size_t enc = (raw + 2) / 3 * 4 + 1;
    if (grow(c, &v->scratch, &v->scratchcap, raw) || grow(c, &v->tok, &v->tokcap, enc))
        return WCACHE_ENOMEM;
    unsigned char *p = (unsigned char *)v->scratch;
    memcpy(p, "WCT\x01", 4);
    put64(p + 4, (uint64_t)v->rev);
    put64(p + 12, rh);
    for (int i = 0; i < 4; i++)
        p[20 + i] = (unsigned char)(last->klen >> (8 * i));
    memcpy(p + HDR, last->key, last->klen);
    put64(p + HDR + last->klen, XXH3_64bits(p, HDR + last->klen));
    b64_encode(p, raw, v->tok);
    return WCACHE_OK;
}

/* Decode and check buf[0..n) in place of its base64 text. */
static wcache_code parse(const unsigned char *p, size_t n, int64_t *rev, uint64_t *rh,
                         size_t *klen)
{
    if (n < HDR + SUM)
        return WCACHE_EBADTOKEN;
    if (memcmp(p, "WCT", 3) != 0)
        return WCACHE_EBADTOKEN;
    if (p[3] != 1)
        return WCACHE_EBADTOKEN; /* a format this library does not know */
    uint32_t kl =
        (uint32_t)p[20] | (uint32_t)p[21] << 8 | (uint32_t)p[22] << 16 | (uint32_t)p[23] << 24;
    if (kl != n - HDR - SUM || kl == 0)
        return WCACHE_EBADTOKEN;
    if (get64(p + HDR + kl) != XXH3_64bits(p, HDR + kl))
        return WCACHE_EBADTOKEN;
    int64_t r = (int64_t)get64(p + 4);
    if (r < 1)
        return WCACHE_EBADTOKEN;
    *rev = r;
    *rh = get64(p + 12);
    *klen = kl;
    return WCACHE_OK;
}

wcache_code wci_token_decode(wcache_view *v, const char *tok, size_t len, int64_t *rev,
                             uint64_t *rh, const char **key, size_t *klen)
{
    size_t n;
    if (len > (size_t)4 << 20) /* far above any key limit */
        return WCACHE_EBADTOKEN;
    if (grow(v->c, &v->scratch, &v->scratchcap, len / 4 * 3 + 3))
        return WCACHE_ENOMEM;
    unsigned char *p = (unsigned char *)v->scratch;
    if (b64_decode(tok, len, p, &n) != 0)
        return WCACHE_EBADTOKEN;
    wcache_code rc = parse(p, n, rev, rh, klen);
    if (rc == WCACHE_OK)
        *key = (const char *)p + HDR;
    return rc;
}

wcache_code wcache_token_revision(const char *token, size_t len, int64_t *rev)
{
    if (!token || !rev || len > (size_t)4 << 20)
        return token && rev ? WCACHE_EBADTOKEN : WCACHE_EINVAL;
    unsigned char *p = wci_malloc(&wci_libc_alloc, len / 4 * 3 + 3);
    if (!p)
        return WCACHE_ENOMEM;
    size_t n, klen;
    uint64_t rh;
    wcache_code rc = WCACHE_EBADTOKEN;
    if (b64_decode(token, len, p, &n) == 0)
        rc = parse(p, n, rev, &rh, &klen);
    wci_free(&wci_libc_alloc, p);
    return rc;
}
