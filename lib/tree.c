/*
 * tree.c - the ordered index: a copy-on-write B+tree of wci_key pointers.
 *
 * Readers descend and iterate without locks.  A node's contents never
 * change after it is published, with one exception: an inner node's child
 * pointers, which the writer may swap with one release store to publish a
 * rebuilt child.  Any other change builds new nodes bottom-up, privately,
 * and publishes them with a single store at the highest level that changed
 * (a child pointer of the first unchanged ancestor, or the root).  A reader
 * therefore sees the tree either before or after a change, never half of
 * it; what it may still be looking at is retired through reclaim.c.
 *
 * Updates of existing keys never touch the tree (they are chain pushes), so
 * its cost is only paid by creates and by compaction removing dead keys.
 *
 * Inner nodes own copies of their separator keys, so that removing a key
 * never leaves a separator dangling.  Separator i (i >= 1) is a lower bound
 * of child i; child 0 has none.  Leaves that empty are removed; underfull
 * nodes are not merged (their cost is memory, bounded by one node per key
 * ever deleted from a leaf, and is undone by the next load).
 */
#include "wcache_int.h"

#include <string.h>

typedef wci_leaf leaf;

/* A leaf entry being placed in a new leaf. */
typedef struct lent {
    wci_key *k;
    wci_ver *v;
    uint16_t klen;
} lent;

typedef struct inner {
    wci_node h;
    wci_node *_Atomic child[WCI_INNER_MAX];
    uint32_t soff[WCI_INNER_MAX];
    uint32_t slen[WCI_INNER_MAX];
    char blob[];
} inner;

/* A child being placed in a new inner node, with its lower bound. */
typedef struct ent {
    wci_node *node;
    const char *sep;
    uint32_t slen;
} ent;

#define BUILD_FILL 56 /* leave room so early inserts do not split at once */

int wci_keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t m = alen < blen ? alen : blen;
    int r = m ? memcmp(a, b, m) : 0;
    if (r)
        return r;
    return (alen > blen) - (alen < blen);
}

static int cmp_key(const wci_key *k, const void *key, size_t len)
{
    return wci_keycmp(k->key, k->klen, key, len);
}

static wci_node *child_at(const inner *in, int i)
{
    return atomic_load_explicit(&((inner *)in)->child[i], memory_order_acquire);
}

/* Index of the child whose range holds key: last i with sep[i] <= key. */
static int inner_find(const inner *in, const void *key, size_t len)
{
    int lo = 1, hi = in->h.n - 1, ans = 0;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (wci_keycmp(in->blob + in->soff[mid], in->slen[mid], key, len) <= 0) {
            ans = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return ans;
}

/* First index whose key is >= key. */
static int leaf_lower(const leaf *lf, const void *key, size_t len)
{
    int lo = 0, hi = lf->h.n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (cmp_key(lf->ent[mid], key, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void wci_tree_init(wci_tree *t)
{
    atomic_init(&t->root, NULL);
    t->nkeys = 0;
}

static void free_subtree(wcache_cache *c, wci_node *n, int free_keys)
{
    if (!n)
        return;
    if (n->leaf) {
        leaf *lf = (leaf *)n;
        for (int i = 0; free_keys && i < n->n; i++)
            wci_free_key(c, lf->ent[i]);
    } else {
        for (int i = 0; i < n->n; i++)
            free_subtree(c, child_at((inner *)n, i), free_keys);
    }
    wci_free(&c->al, n);
}

void wci_tree_fini(wcache_cache *c, wci_tree *t)
{
    free_subtree(c, atomic_load_explicit(&t->root, memory_order_relaxed), 1);
    atomic_store_explicit(&t->root, NULL, memory_order_relaxed);
    t->nkeys = 0;
}

static lent lent_of_key(wci_key *k)
{
    return (lent){k, atomic_load_explicit(&k->head, memory_order_relaxed),
                  k->klen < WCI_KLEN_FAR ? (uint16_t)k->klen : WCI_KLEN_FAR};
}

static lent lent_at(const leaf *lf, int i)
{
    return (lent){lf->ent[i], atomic_load_explicit(&((leaf *)lf)->ver[i], memory_order_relaxed),
                  lf->klen[i]};
}

static leaf *leaf_new(wcache_cache *c, const lent *e, int n)
{
    leaf *lf = wci_malloc(&c->al, sizeof *lf);
    if (!lf)
        return NULL;
    lf->h.n = (uint16_t)n;
    lf->h.leaf = 1;
    for (int i = 0; i < n; i++) {
        lf->ent[i] = e[i].k;
        lf->klen[i] = e[i].klen;
        atomic_init(&lf->ver[i], e[i].v);
    }
    return lf;
}

/* Point the keys of a published leaf at their slots in it (writer).  The
 * keys are scattered: their misses go out together before the stores. */
static void leaf_adopt(leaf *lf)
{
    for (int i = 0; i < lf->h.n; i++)
        __builtin_prefetch(lf->ent[i], 1);
    for (int i = 0; i < lf->h.n; i++)
        lf->ent[i]->lslot = &lf->ver[i];
}

static inner *inner_new(wcache_cache *c, const ent *e, int n)
{
    size_t blob = 0;
    for (int i = 1; i < n; i++)
        blob += e[i].slen;
    inner *in = wci_malloc(&c->al, sizeof *in + blob);
    if (!in)
        return NULL;
    in->h.n = (uint16_t)n;
    in->h.leaf = 0;
    uint32_t off = 0;
    for (int i = 0; i < n; i++) {
        atomic_init(&in->child[i], e[i].node);
        in->soff[i] = off;
        in->slen[i] = i ? e[i].slen : 0;
        if (i && e[i].slen)
            memcpy(in->blob + off, e[i].sep, e[i].slen);
        off += in->slen[i];
    }
    return in;
}

/* The children of an inner node as build entries. */
static int inner_ents(const inner *in, ent *out)
{
    for (int i = 0; i < in->h.n; i++)
        out[i] = (ent){child_at(in, i), in->blob + in->soff[i], in->slen[i]};
    return in->h.n;
}

/* ---- the writer's path and publication ---- */

typedef struct path {
    inner *node[WCI_TREE_DEPTH_MAX];
    int idx[WCI_TREE_DEPTH_MAX];
    int depth; /* number of inner levels above the leaf */
    leaf *lf;
} path;

static void descend(const wci_tree *t, const void *key, size_t len, path *p)
{
    wci_node *n = atomic_load_explicit(&t->root, memory_order_relaxed);
    p->depth = 0;
    while (n && !n->leaf) {
        inner *in = (inner *)n;
        int i = inner_find(in, key, len);
        p->node[p->depth] = in;
        p->idx[p->depth++] = i;
        n = child_at(in, i);
    }
    p->lf = (leaf *)n;
}

/* What a level hands to its parent: one node, two (a split), or none. */
typedef struct up {
    int cnt;
    ent e[2];
} up;

/* Nodes built so far and nodes they replace, for rollback or retirement. */
typedef struct work {
    wci_node *built[2 * WCI_TREE_DEPTH_MAX + 4];
    int nbuilt;
    wci_node *old[WCI_TREE_DEPTH_MAX + 2];
    int nold;
} work;

static void work_fail(wcache_cache *c, work *w)
{
    for (int i = 0; i < w->nbuilt; i++)
        wci_free(&c->al, w->built[i]);
}

/* Make the change visible with one store, then retire what it replaced. */
static void publish(wcache_cache *c, path *p, int level, wci_node *n, work *w)
{
    if (level < 0)
        atomic_store_explicit(&c->tree.root, n, memory_order_release);
    else
        atomic_store_explicit(&p->node[level]->child[p->idx[level]], n, memory_order_release);
    for (int i = 0; i < w->nbuilt; i++)
        if (w->built[i]->leaf)
            leaf_adopt((leaf *)w->built[i]);
    for (int i = 0; i < w->nold; i++)
        wci_retire(c, w->old[i], WCI_RETIRE_RAW); /* capacity reserved up front */
}

/* Rebuild inner level d with its child slot replaced by u (0, 1 or 2). */
static int rebuild_inner(wcache_cache *c, inner *in, int i, const up *u, up *out, work *w)
{
    ent e[WCI_INNER_MAX + 1];
    int n = inner_ents(in, e), m = 0;
    ent ne[WCI_INNER_MAX + 1];
    for (int j = 0; j < n; j++) {
        if (j != i) {
            ne[m++] = e[j];
            continue;
        }
        for (int k = 0; k < u->cnt; k++) {
            ne[m] = u->e[k];
            if (k == 0) /* the first keeps the old slot's bound */
                ne[m].sep = e[j].sep, ne[m].slen = e[j].slen;
            m++;
        }
    }
    w->old[w->nold++] = &in->h;
    out->cnt = 0;
    if (m == 0)
        return 0;
    int halves = m > WCI_INNER_MAX ? 2 : 1;
    int cut = halves == 2 ? m / 2 : m;
    for (int h = 0; h < halves; h++) {
        const ent *src = h ? ne + cut : ne;
        int cnt = h ? m - cut : cut;
        inner *x = inner_new(c, src, cnt);
        if (!x)
            return -1;
        w->built[w->nbuilt++] = &x->h;
        out->e[out->cnt++] = (ent){&x->h, src[0].sep, src[0].slen};
    }
    return 0;
}

/* Carry u up from the leaf level to the root, publishing at the first
 * level that absorbs it in place. */
static int propagate(wcache_cache *c, path *p, up u, work *w)
{
    for (int d = p->depth - 1; d >= 0; d--) {
        if (u.cnt == 1) {
            publish(c, p, d, u.e[0].node, w);
            return 0;
        }
        up nu;
        if (rebuild_inner(c, p->node[d], p->idx[d], &u, &nu, w) != 0)
            return -1;
        u = nu;
    }
    wci_node *root = NULL;
    if (u.cnt == 1) {
        root = u.e[0].node;
        if (!root->leaf && root->n == 1) {
            /* a root with one child was just built: drop it, unseen */
            wci_node *only = child_at((inner *)root, 0);
            wci_free(&c->al, root);
            w->nbuilt--;
            root = only;
        }
    } else if (u.cnt == 2) {
        inner *r = inner_new(c, u.e, 2);
        if (!r)
            return -1;
        w->built[w->nbuilt++] = &r->h;
        root = &r->h;
    }
    publish(c, p, -1, root, w);
    return 0;
}

/* Retire capacity for every node one change can replace. */
static int reserve_retire(wcache_cache *c)
{
    return wci_retire_reserve(c, WCI_TREE_DEPTH_MAX + 2);
}

static int leaf_with(wcache_cache *c, leaf *lf, int pos, wci_key *k, up *u, work *w)
{
    lent e[WCI_LEAF_MAX + 1];
    int n = lf ? lf->h.n : 0;
    for (int i = 0; i < pos; i++)
        e[i] = lent_at(lf, i);
    e[pos] = lent_of_key(k);
    for (int i = pos; i < n; i++)
        e[i + 1] = lent_at(lf, i);
    n++;
    if (lf)
        w->old[w->nold++] = &lf->h;
    int halves = n > WCI_LEAF_MAX ? 2 : 1;
    int cut = halves == 2 ? n / 2 : n;
    u->cnt = 0;
    for (int h = 0; h < halves; h++) {
        leaf *x = leaf_new(c, h ? e + cut : e, h ? n - cut : cut);
        if (!x)
            return -1;
        w->built[w->nbuilt++] = &x->h;
        wci_key *lo = x->ent[0];
        u->e[u->cnt++] = (ent){&x->h, lo->key, lo->klen};
    }
    return 0;
}

int wci_tree_insert(wcache_cache *c, wci_key *k)
{
    if (reserve_retire(c) != 0)
        return -1;
    path p;
    descend(&c->tree, k->key, k->klen, &p);
    work w = {.nbuilt = 0, .nold = 0};
    int pos = p.lf ? leaf_lower(p.lf, k->key, k->klen) : 0;
    up u;
    if (leaf_with(c, p.lf, pos, k, &u, &w) != 0 || propagate(c, &p, u, &w) != 0) {
        work_fail(c, &w);
        return -1;
    }
    c->tree.nkeys++;
    return 0;
}

int wci_tree_remove(wcache_cache *c, wci_key *k)
{
    if (reserve_retire(c) != 0)
        return -1;
    path p;
    descend(&c->tree, k->key, k->klen, &p);
    if (!p.lf)
        return 0;
    int pos = leaf_lower(p.lf, k->key, k->klen);
    if (pos >= p.lf->h.n || p.lf->ent[pos] != k)
        return 0;
    work w = {.nbuilt = 0, .nold = 0};
    up u = {.cnt = 0};
    w.old[w.nold++] = &p.lf->h;
    if (p.lf->h.n > 1) {
        lent e[WCI_LEAF_MAX];
        int n = 0;
        for (int i = 0; i < p.lf->h.n; i++)
            if (i != pos)
                e[n++] = lent_at(p.lf, i);
        leaf *x = leaf_new(c, e, n);
        if (!x)
            return -1;
        w.built[w.nbuilt++] = &x->h;
        u.cnt = 1;
        u.e[0] = (ent){&x->h, NULL, 0};
    }
    if (propagate(c, &p, u, &w) != 0) {
        work_fail(c, &w);
        return -1;
    }
    c->tree.nkeys--;
    return 0;
}

/* ---- bulk build from sorted keys: O(n) ---- */

/* Replace e[0..n) by the level above it.  On failure everything built so
 * far, below and at this level, is freed (the keys are not). */
static int build_level(wcache_cache *c, ent *e, size_t n, size_t *out_n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i += BUILD_FILL) {
        size_t cnt = n - i < BUILD_FILL ? n - i : BUILD_FILL;
        inner *x = inner_new(c, e + i, (int)cnt);
        if (!x) {
            for (size_t j = 0; j < m; j++)
                free_subtree(c, e[j].node, 0);
            for (size_t j = i; j < n; j++)
                free_subtree(c, e[j].node, 0);
            return -1;
        }
        /* e[i].sep still points into the level below, alive until freed */
        e[m++] = (ent){&x->h, e[i].sep, e[i].slen};
    }
    *out_n = m;
    return 0;
}

static void adopt_all(wci_node *n)
{
    if (n->leaf) {
        leaf_adopt((leaf *)n);
        return;
    }
    for (int i = 0; i < n->n; i++)
        adopt_all(child_at((inner *)n, i));
}

int wci_tree_build(wcache_cache *c, wci_key **keys, size_t n)
{
    if (n == 0)
        return 0;
    size_t nl = (n + BUILD_FILL - 1) / BUILD_FILL;
    ent *e = wci_malloc(&c->al, nl * sizeof *e);
    if (!e)
        return -1;
    for (size_t i = 0; i < nl; i++) {
        size_t cnt = n - i * BUILD_FILL < BUILD_FILL ? n - i * BUILD_FILL : BUILD_FILL;
        lent le[BUILD_FILL];
        for (size_t j = 0; j < cnt; j++)
            le[j] = lent_of_key(keys[i * BUILD_FILL + j]);
        leaf *x = leaf_new(c, le, (int)cnt);
        if (!x) {
            for (size_t j = 0; j < i; j++)
                wci_free(&c->al, e[j].node);
            wci_free(&c->al, e);
            return -1;
        }
        e[i] = (ent){&x->h, x->ent[0]->key, x->ent[0]->klen};
    }
    size_t cnt = nl;
    while (cnt > 1) {
        /* on failure free the whole partial structure from its tops */
        if (build_level(c, e, cnt, &cnt) != 0) {
            wci_free(&c->al, e);
            return -1;
        }
    }
    atomic_store_explicit(&c->tree.root, e[0].node, memory_order_release);
    c->tree.nkeys = n;
    adopt_all(e[0].node);
    wci_free(&c->al, e);
    return 0;
}

/* ---- reader iteration ---- */

static void descend_left(wci_iter *it, const wci_node *n)
{
    while (n && !n->leaf) {
        it->stack[++it->depth] = n;
        it->idx[it->depth] = 0;
        n = child_at((const inner *)n, 0);
    }
    it->stack[++it->depth] = n;
    it->idx[it->depth] = 0;
}

void wci_tree_seek(const wci_tree *t, wci_iter *it, const void *key, size_t len)
{
    const wci_node *n = atomic_load_explicit(&((wci_tree *)t)->root, memory_order_acquire);
    it->depth = -1;
    if (!n)
        return;
    while (!n->leaf) {
        const inner *in = (const inner *)n;
        int i = key ? inner_find(in, key, len) : 0;
        it->stack[++it->depth] = n;
        it->idx[it->depth] = (uint16_t)i;
        n = child_at(in, i);
    }
    it->stack[++it->depth] = n;
    it->idx[it->depth] = (uint16_t)(key ? leaf_lower((const leaf *)n, key, len) : 0);
}

/* The node on top of the stack is done: go up and take the next child. */
static void iter_up(wci_iter *it)
{
    it->depth--;
    while (it->depth >= 0) {
        const inner *in = (const inner *)it->stack[it->depth];
        uint16_t j = (uint16_t)(it->idx[it->depth] + 1);
        if (j < in->h.n) {
            it->idx[it->depth] = j;
            descend_left(it, child_at(in, j));
            return;
        }
        it->depth--;
    }
}

wci_key *wci_iter_next(wci_iter *it)
{
    while (it->depth >= 0) {
        const wci_node *n = it->stack[it->depth];
        uint16_t i = it->idx[it->depth];
        if (n->leaf && i < n->n) {
            it->idx[it->depth] = (uint16_t)(i + 1);
            return ((const leaf *)n)->ent[i];
        }
        iter_up(it);
    }
    return NULL;
}

size_t wci_iter_take(wci_iter *it, wci_ent *out, size_t max)
{
    size_t m = 0;
    while (m < max && it->depth >= 0) {
        const wci_node *n = it->stack[it->depth];
        unsigned i = it->idx[it->depth];
        if (!n->leaf || i >= n->n) {
            iter_up(it);
            continue;
        }
        const leaf *lf = (const leaf *)n;
        unsigned end = n->n - i < max - m ? n->n : i + (unsigned)(max - m);
        for (; i < end; i++, m++) {
            out[m].k = lf->ent[i];
            out[m].v = atomic_load_explicit(&((leaf *)lf)->ver[i], memory_order_acquire);
            out[m].klen = lf->klen[i] != WCI_KLEN_FAR ? lf->klen[i] : lf->ent[i]->klen;
        }
        it->idx[it->depth] = (uint16_t)i;
    }
    return m;
}
