// Package watchcache is a cgo binding of libwatchcache, the embeddable
// revisioned watch cache (see include/watchcache.h and libwatchcache(3)).
//
// Threads: a Cache may be used from any number of goroutines.  Its writes
// (Put, Delete, Apply, Progress, Compact, SnapshotRestore,
// SnapshotRestoreFrom) are serialised by the Cache itself, so the C
// library's single-writer rule holds whichever goroutines call them.  A
// View or a Batch is used by one goroutine at a time and may be handed to
// another (the C contract allows it: a view's pin belongs to the view, not
// to a thread).
//
// Lifetimes: Close is the API.  Views, batches and watches must be closed
// before their cache (Cache.Close fails with ErrBusy while views or batches
// are open, and stops and closes the watches itself).  Finalizers only
// release handles a program forgot; they are a safety net, not a way to
// manage memory: an unreachable pinned view holds memory until the next GC.
package watchcache

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -L${SRCDIR}/../../lib -lwatchcache -Wl,-rpath,${SRCDIR}/../../lib
#include <stdlib.h>
#include <string.h>
#include <watchcache.h>

// The list options carry pointers to the caller's bytes; they are built
// here, on the C stack, so that no Go pointer is ever stored in C memory.
static wcache_code wcgo_list(uintptr_t v, _GoString_ prefix, _GoString_ start,
                             _GoString_ end, _GoString_ token, int count_remaining,
                             uintptr_t items, size_t cap, uintptr_t resp)
{
    wcache_list_result *res = (wcache_list_result *)resp;
    wcache_list_opts o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.prefix = _GoStringPtr(prefix);
    o.prefix_len = _GoStringLen(prefix);
    o.start = _GoStringPtr(start);
    o.start_len = _GoStringLen(start);
    o.end = _GoStringPtr(end);
    o.end_len = _GoStringLen(end);
    o.token = _GoStringPtr(token);
    o.token_len = _GoStringLen(token);
    o.count_remaining = count_remaining;
    memset(res, 0, sizeof *res);
    res->size = sizeof *res;
    return wcache_view_list((wcache_view *)v, &o, (wcache_kv *)items, cap, res);
}

static wcache_code wcgo_snapshot_write(wcache_cache *c, const char *path, int64_t rev,
                                       int level, int workers, wcache_snapshot_info *info,
                                       char *errbuf, size_t errbuf_len)
{
    wcache_snapshot_write_opts o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.revision = rev;
    o.level = level;
    o.workers = workers;
    o.errbuf = errbuf;
    o.errbuf_len = errbuf_len;
    memset(info, 0, sizeof *info);
    info->size = sizeof *info;
    return wcache_snapshot_write(c, path, &o, info);
}

// In restore_from.c, beside the stream restore it shares its options with.
wcache_code wcgo_snapshot_restore(wcache_cache *c, const char *path,
                                  wcache_snapshot_info *info, char *errbuf,
                                  size_t errbuf_len);

// The hot calls take keys as Go strings (_GoString_: no copy, no pointer
// check) and C pointers as uintptr_t.  cgo runs its pointer check
// (cgoCheckPointer) on every pointer-typed argument, even one that points
// into C memory; on a GET that check cost more than the lookup itself (two
// handles: ~110 ns of a ~220 ns call, Go 1.19).  A uintptr carries no Go
// pointer, so skipping the check breaks no cgo rule: only C memory is
// passed this way (the view, the cache and the C scratch of a View).
static wcache_code wcgo_get(uintptr_t v, _GoString_ key, uintptr_t out)
{
    return wcache_view_get((wcache_view *)v, _GoStringPtr(key), _GoStringLen(key),
                           (wcache_kv *)out);
}

static wcache_code wcgo_put(uintptr_t c, _GoString_ key, const void *value, size_t value_len,
                            int64_t rev)
{
    return wcache_ingest_put((wcache_cache *)c, _GoStringPtr(key), _GoStringLen(key), value,
                             value_len, rev);
}

// n lookups in one call: keys packed end to end in buf, lens[i] bytes each;
// rcs[i] and out[i] receive each result.
// n <= WCGO_GET_MANY_MAX (Go's getManyBatch): the key pointers and codes
// live on the C stack, so no Go pointer is stored anywhere.
#define WCGO_GET_MANY_MAX 256
static void wcgo_get_many(uintptr_t v, const char *buf, const size_t *lens, size_t n,
                          uintptr_t out, int *rcs)
{
    const void *keys[WCGO_GET_MANY_MAX];
    wcache_code codes[WCGO_GET_MANY_MAX];
    if (n > WCGO_GET_MANY_MAX)
        n = WCGO_GET_MANY_MAX;
    for (size_t i = 0; i < n; i++) {
        keys[i] = buf;
        buf += lens[i];
    }
    wcache_code rc = wcache_view_get_many((wcache_view *)v, keys, lens, n, (wcache_kv *)out, codes);
    for (size_t i = 0; i < n; i++)
        rcs[i] = rc != WCACHE_OK ? (int)rc : (int)codes[i];
}

static wcache_code wcgo_stat(const wcache_cache *c, wcache_stat *st)
{
    memset(st, 0, sizeof *st);
    st->size = sizeof *st;
    return wcache_cache_stat(c, st);
}
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// RevLatest pins a read at the latest revision the cache has applied.
const RevLatest int64 = 0

const errbufSize = 512

// Options configure a cache at creation; zero values keep the C defaults.
type Options struct {
	RetainRevisions int64 // WCACHE_P_RETAIN_REVISIONS
	RetainSeconds   int64 // WCACHE_P_RETAIN_SECONDS (0: the default, 75)
	NoAutoCompact   bool  // WCACHE_P_AUTO_COMPACT = 0
	ReaderSlots     int64 // WCACHE_P_READER_SLOTS
}

// Cache is one libwatchcache cache.
type Cache struct {
	c      *C.wcache_cache
	wmu    sync.Mutex // the single writer; guards errbuf
	errbuf *C.char

	mu      sync.Mutex // guards the fields below
	closed  bool
	views   int
	batches int
	watches map[*Watch]struct{}
}

// KV is one object as read at a revision.  Key and Value are copies owned
// by Go.
type KV struct {
	Key            string
	Value          []byte
	CreateRevision int64
	ModRevision    int64
	Version        int64
}

// New creates and opens a cache.
func New(opts *Options) (*Cache, error) {
	var cc *C.wcache_cache
	if rc := C.wcache_cache_create(&cc, nil); rc != C.WCACHE_OK {
		return nil, mkerr("create", rc)
	}
	if opts != nil {
		params := []struct {
			p   C.wcache_param
			v   int64
			set bool
		}{
			{C.WCACHE_P_RETAIN_REVISIONS, opts.RetainRevisions, opts.RetainRevisions != 0},
			{C.WCACHE_P_RETAIN_SECONDS, opts.RetainSeconds, opts.RetainSeconds != 0},
			{C.WCACHE_P_AUTO_COMPACT, 0, opts.NoAutoCompact},
			{C.WCACHE_P_READER_SLOTS, opts.ReaderSlots, opts.ReaderSlots != 0},
		}
		for _, p := range params {
			if !p.set {
				continue
			}
			if rc := C.wcache_cache_set_param(cc, p.p, C.int64_t(p.v)); rc != C.WCACHE_OK {
				C.wcache_cache_close(cc)
				return nil, mkerr("set param", rc)
			}
		}
	}
	c := &Cache{c: cc, errbuf: (*C.char)(C.calloc(errbufSize, 1)), watches: map[*Watch]struct{}{}}
	if rc := C.wcache_cache_set_errbuf(cc, c.errbuf, errbufSize); rc != C.WCACHE_OK {
		c.free()
		return nil, mkerr("set errbuf", rc)
	}
	if rc := C.wcache_cache_open(cc); rc != C.WCACHE_OK {
		err := c.werr("open", rc)
		c.free()
		return nil, err
	}
	runtime.SetFinalizer(c, func(c *Cache) { _ = c.Close() })
	return c, nil
}

func (c *Cache) free() {
	C.wcache_cache_close(c.c)
	C.free(unsafe.Pointer(c.errbuf))
	c.c, c.errbuf = nil, nil
}

// werr is mkerr with the detail text of the writer's errbuf; call it with
// wmu held.
func (c *Cache) werr(op string, rc C.wcache_code) error {
	if rc == C.WCACHE_OK {
		return nil
	}
	e := &Error{Op: op, Code: Code(rc)}
	if c.errbuf != nil {
		e.Detail = C.GoString(c.errbuf)
		*c.errbuf = 0
	}
	return e
}

// Close stops and closes the cache's watches, then frees the cache.  It
// fails with ErrBusy while views or batches are open.  Closing twice is a
// no-op.  As in C, no other call on the cache may run concurrently with
// Close or follow it.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	if c.views > 0 || c.batches > 0 {
		c.mu.Unlock()
		return &Error{Op: "close", Code: ErrBusy, Detail: "views or batches still open"}
	}
	ws := make([]*Watch, 0, len(c.watches))
	for w := range c.watches {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	for _, w := range ws {
		w.Close()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.views > 0 || c.batches > 0 || len(c.watches) > 0 {
		return &Error{Op: "close", Code: ErrBusy, Detail: "handles opened while closing"}
	}
	c.closed = true
	c.wmu.Lock()
	c.free()
	c.wmu.Unlock()
	runtime.SetFinalizer(c, nil)
	return nil
}

// ptr returns the address of a string's bytes for a C call (nil when
// empty).  The call must not keep it: the string is Go memory.
func strptr(s string) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return *(*unsafe.Pointer)(unsafe.Pointer(&s))
}

// cptr passes a pointer to C memory (never Go memory) as a uintptr, out of
// reach of cgo's per-argument pointer check (see wcgo_get).
func cptr(p unsafe.Pointer) C.uintptr_t { return C.uintptr_t(uintptr(p)) }

func bytesptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// Put applies a put of key at revision rev (above the current revision).
func (c *Cache) Put(key string, value []byte, rev int64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	rc := C.wcgo_put(cptr(unsafe.Pointer(c.c)), key, bytesptr(value), C.size_t(len(value)), C.int64_t(rev))
	runtime.KeepAlive(value)
	return c.werr("put", rc)
}

// Delete applies a delete of key at revision rev; ErrNotFound when the key
// is not live (nothing changes).
func (c *Cache) Delete(key string, rev int64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	rc := C.wcache_ingest_delete(c.c, strptr(key), C.size_t(len(key)), C.int64_t(rev))
	runtime.KeepAlive(key)
	return c.werr("delete", rc)
}

// Progress advances the current revision without a change (a bookmark).
func (c *Cache) Progress(rev int64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.werr("progress", C.wcache_ingest_progress(c.c, C.int64_t(rev)))
}

// Compact makes revisions below rev unreadable.
func (c *Cache) Compact(rev int64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.werr("compact", C.wcache_cache_compact(c.c, C.int64_t(rev)))
}

// Revision is the latest revision applied.
func (c *Cache) Revision() int64 { return int64(C.wcache_cache_revision(c.c)) }

// CompactedRevision is the oldest readable revision.
func (c *Cache) CompactedRevision() int64 {
	return int64(C.wcache_cache_compacted_revision(c.c))
}

// Stat is a subset of wcache_stat.
type Stat struct {
	Revision, CompactedRevision          int64
	Objects, Versions, Events, ViewsOpen uint64
}

// Stat reads the cache's counters.
func (c *Cache) Stat() (Stat, error) {
	var st C.wcache_stat
	if rc := C.wcgo_stat(c.c, &st); rc != C.WCACHE_OK {
		return Stat{}, mkerr("stat", rc)
	}
	return Stat{int64(st.revision), int64(st.compacted_revision), uint64(st.objects),
		uint64(st.versions), uint64(st.events), uint64(st.views_open)}, nil
}

// Batch is a set of puts and deletes applied at one revision, all or
// nothing.  One goroutine at a time.
type Batch struct {
	c *Cache
	b *C.wcache_batch
}

// NewBatch creates an empty batch; Close it before the cache.
func (c *Cache) NewBatch() (*Batch, error) {
	var b *C.wcache_batch
	if rc := C.wcache_batch_create(c.c, &b); rc != C.WCACHE_OK {
		return nil, mkerr("batch create", rc)
	}
	c.mu.Lock()
	c.batches++
	c.mu.Unlock()
	bt := &Batch{c: c, b: b}
	runtime.SetFinalizer(bt, (*Batch).Close)
	return bt, nil
}

// Put adds a put (the bytes are copied).
func (b *Batch) Put(key string, value []byte) error {
	rc := C.wcache_batch_put(b.b, strptr(key), C.size_t(len(key)), bytesptr(value),
		C.size_t(len(value)))
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	return mkerr("batch put", rc)
}

// Delete adds a delete.
func (b *Batch) Delete(key string) error {
	rc := C.wcache_batch_delete(b.b, strptr(key), C.size_t(len(key)))
	runtime.KeepAlive(key)
	return mkerr("batch delete", rc)
}

// Len is the number of operations.
func (b *Batch) Len() int { return int(C.wcache_batch_count(b.b)) }

// Clear empties the batch for reuse.
func (b *Batch) Clear() { C.wcache_batch_clear(b.b) }

// Close frees the batch; closing twice is a no-op.
func (b *Batch) Close() {
	if b.b == nil {
		return
	}
	C.wcache_batch_free(b.b)
	b.b = nil
	runtime.SetFinalizer(b, nil)
	b.c.mu.Lock()
	b.c.batches--
	b.c.mu.Unlock()
}

// Apply applies every operation of b at revision rev, all or nothing.  b
// is left as it was.
func (c *Cache) Apply(b *Batch, rev int64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	rc := C.wcache_ingest_batch(c.c, b.b, C.int64_t(rev))
	runtime.KeepAlive(b)
	return c.werr("batch", rc)
}

// Get reads key at revision rev (RevLatest for the latest).
func (c *Cache) Get(key string, rev int64) (KV, error) {
	v, err := c.View(rev)
	if err != nil {
		return KV{}, err
	}
	defer v.Close()
	return v.Get(key)
}

// List reads one page at revision rev.  With a continue token and
// RevLatest, the page is read at the token's revision.
func (c *Cache) List(rev int64, opts ListOptions) (Page, error) {
	if rev == RevLatest && opts.Continue != "" {
		r, err := TokenRevision(opts.Continue)
		if err != nil {
			return Page{}, err
		}
		rev = r
	}
	v, err := c.View(rev)
	if err != nil {
		return Page{}, err
	}
	defer v.Close()
	return v.List(opts)
}

// TokenRevision decodes the revision a continue token was issued at.
func TokenRevision(token string) (int64, error) {
	var rev C.int64_t
	rc := C.wcache_token_revision((*C.char)(strptr(token)), C.size_t(len(token)), &rev)
	runtime.KeepAlive(token)
	return int64(rev), mkerr("token revision", rc)
}

// View is a read view pinned at one revision.  One goroutine at a time;
// it may move between goroutines.  Everything it returns is copied into Go
// memory, so results outlive Close.
type View struct {
	c     *Cache
	v     *C.wcache_view
	kv    *C.wcache_kv // C scratch for Get: no Go allocation per call
	items *C.wcache_kv // C array for List pages
	icap  int
	res   *C.wcache_list_result
	// GetMany's scratch (Go memory without Go pointers: fine to pass to C)
	keybuf []byte
	lens   []C.size_t
	rcs    []C.int
	// The KV GetMany and ListFunc hand their callbacks: a local would
	// escape (the callback is unknown) and cost an allocation per call.
	meta KV
	// Set while GetMany or ListFunc run their callback: a List, ListFunc
	// or GetMany of the same view from there would overwrite (or free,
	// when it grows them) the C items the outer call is still reading.
	inCallback bool
}

// View pins a new view at revision rev (RevLatest: the latest).  Errors:
// ErrCompacted, ErrFutureRevision, ErrBusy (no reader slot).
func (c *Cache) View(rev int64) (*View, error) {
	var cv *C.wcache_view
	if rc := C.wcache_view_create(c.c, &cv); rc != C.WCACHE_OK {
		return nil, mkerr("view create", rc)
	}
	if rc := C.wcache_view_begin(cv, C.int64_t(rev)); rc != C.WCACHE_OK {
		C.wcache_view_free(cv)
		return nil, mkerr("view begin", rc)
	}
	c.mu.Lock()
	c.views++
	c.mu.Unlock()
	v := &View{c: c, v: cv, kv: (*C.wcache_kv)(C.calloc(1, C.sizeof_wcache_kv)),
		res: (*C.wcache_list_result)(C.calloc(1, C.sizeof_wcache_list_result))}
	runtime.SetFinalizer(v, (*View).Close)
	return v, nil
}

// Revision is the revision the view is pinned at.
func (v *View) Revision() int64 { return int64(C.wcache_view_revision(v.v)) }

// Begin re-pins the view at rev (RevLatest: the latest).
func (v *View) Begin(rev int64) error {
	return mkerr("view begin", C.wcache_view_begin(v.v, C.int64_t(rev)))
}

// Close unpins and frees the view; closing twice is a no-op.
func (v *View) Close() {
	if v.v == nil {
		return
	}
	C.wcache_view_free(v.v)
	C.free(unsafe.Pointer(v.kv))
	C.free(unsafe.Pointer(v.items))
	C.free(unsafe.Pointer(v.res))
	v.v, v.kv, v.items, v.res = nil, nil, nil, nil
	runtime.SetFinalizer(v, nil)
	v.c.mu.Lock()
	v.c.views--
	v.c.mu.Unlock()
}

// cbytes copies n bytes of C memory into a new Go slice.  C.GoBytes does
// the same but passes its pointer through cgo's pointer check first.
// append rather than make+copy: growslice leaves the bytes the copy
// overwrites uncleared, make zeroes them first (Go 1.19 elides that only
// for make([]T, len(s)) followed by copy from that same s).
func cbytes(p unsafe.Pointer, n C.size_t) []byte {
	if n == 0 {
		return []byte{}
	}
	return append([]byte(nil), unsafe.Slice((*byte)(p), int(n))...)
}

func goKV(kv *C.wcache_kv) KV {
	return KV{
		Key:            C.GoStringN((*C.char)(kv.key), C.int(kv.key_len)),
		Value:          cbytes(kv.value, kv.value_len),
		CreateRevision: int64(kv.create_revision),
		ModRevision:    int64(kv.mod_revision),
		Version:        int64(kv.version),
	}
}

// copyKVs copies a page out of C memory with four allocations whatever its
// length: the keys share one string and the values one array (each Value
// is capped, so an append to one cannot overwrite the next).
func copyKVs(items []C.wcache_kv) []KV {
	kb, vb := 0, 0
	for i := range items {
		kb += int(items[i].key_len)
		vb += int(items[i].value_len)
	}
	keys := make([]byte, 0, kb)
	vals := make([]byte, 0, vb)
	for i := range items {
		if n := int(items[i].key_len); n > 0 {
			keys = append(keys, unsafe.Slice((*byte)(items[i].key), n)...)
		}
		if n := int(items[i].value_len); n > 0 {
			vals = append(vals, unsafe.Slice((*byte)(items[i].value), n)...)
		}
	}
	ks := string(keys)
	out := make([]KV, len(items))
	ko, vo := 0, 0
	for i := range items {
		kn, vn := int(items[i].key_len), int(items[i].value_len)
		out[i] = KV{Key: ks[ko : ko+kn], Value: vals[vo : vo+vn : vo+vn],
			CreateRevision: int64(items[i].create_revision),
			ModRevision:    int64(items[i].mod_revision), Version: int64(items[i].version)}
		ko += kn
		vo += vn
	}
	return out
}

// Get reads key at the view's revision; ErrNotFound when absent.
func (v *View) Get(key string) (KV, error) {
	rc := C.wcgo_get(cptr(unsafe.Pointer(v.v)), key, cptr(unsafe.Pointer(v.kv)))
	if rc != C.WCACHE_OK {
		return KV{}, mkerr("get", rc)
	}
	kv := KV{
		Key:            key,
		Value:          cbytes(v.kv.value, v.kv.value_len),
		CreateRevision: int64(v.kv.create_revision),
		ModRevision:    int64(v.kv.mod_revision),
		Version:        int64(v.kv.version),
	}
	return kv, nil
}

// AppendValue reads key at the view's revision and appends its value to
// dst, allocating nothing when dst has room: the call for hot loops.
func (v *View) AppendValue(dst []byte, key string) ([]byte, error) {
	rc := C.wcgo_get(cptr(unsafe.Pointer(v.v)), key, cptr(unsafe.Pointer(v.kv)))
	if rc != C.WCACHE_OK {
		return dst, mkerr("get", rc)
	}
	n := int(v.kv.value_len)
	if n == 0 {
		return dst, nil
	}
	return append(dst, unsafe.Slice((*byte)(v.kv.value), n)...), nil
}

// GetMany looks up many keys in one cgo call, which spreads the cost of
// the call over them: fn(i, kv, err) is called for keys[i] in order, with
// kv.Value a slice of the cache's memory valid only during the call (copy
// it to keep it) and kv.Key empty; err is ErrNotFound for a missing key.
// kv itself is reused for every key.  fn must not call List, ListFunc or
// GetMany on the same view (they panic: the outer call's results would be
// overwritten); Get, AppendValue and other views are fine.
func (v *View) GetMany(keys []string, fn func(i int, kv *KV, err error)) {
	v.notInCallback()
	v.inCallback = true
	defer v.leaveCallback()
	for base := 0; len(keys) > 0; {
		n := len(keys)
		if n > getManyBatch {
			n = getManyBatch
		}
		v.keybuf = v.keybuf[:0]
		if cap(v.lens) < n {
			v.lens = make([]C.size_t, n)
			v.rcs = make([]C.int, n)
		}
		lens, rcs := v.lens[:n], v.rcs[:n]
		for i, k := range keys[:n] {
			v.keybuf = append(v.keybuf, k...)
			lens[i] = C.size_t(len(k))
		}
		v.ensureItems(n)
		var kb *C.char
		if len(v.keybuf) > 0 {
			kb = (*C.char)(unsafe.Pointer(&v.keybuf[0]))
		}
		C.wcgo_get_many(cptr(unsafe.Pointer(v.v)), kb, &lens[0], C.size_t(n),
			cptr(unsafe.Pointer(v.items)), &rcs[0])
		items := unsafe.Slice(v.items, n)
		kv := &v.meta
		kv.Key = ""
		for i := range items {
			if rcs[i] != C.WCACHE_OK {
				fn(base+i, nil, mkerr("get", C.wcache_code(rcs[i])))
				continue
			}
			it := &items[i]
			kv.Value = unsafe.Slice((*byte)(it.value), int(it.value_len))
			kv.CreateRevision = int64(it.create_revision)
			kv.ModRevision = int64(it.mod_revision)
			kv.Version = int64(it.version)
			fn(base+i, kv, nil)
		}
		keys = keys[n:]
		base += n
	}
	v.meta = KV{} // drop the last value's reference to C memory
}

const getManyBatch = 256

func (v *View) notInCallback() {
	if v.inCallback {
		panic("watchcache: List, ListFunc or GetMany called from a callback of the same View")
	}
}

func (v *View) leaveCallback() { v.inCallback = false }

func (v *View) ensureItems(n int) {
	if n > v.icap {
		C.free(unsafe.Pointer(v.items))
		v.items = (*C.wcache_kv)(C.calloc(C.size_t(n), C.sizeof_wcache_kv))
		v.icap = n
	}
}

// ListOptions select a page: a prefix, or the range [Start, End) (empty:
// unbounded), at most Limit items (0: 500), resuming after Continue.
type ListOptions struct {
	Prefix, Start, End string
	Limit              int
	Continue           string
	CountRemaining     bool
}

// Page is one page of a LIST.
type Page struct {
	Items     []KV
	More      bool   // more keys follow in the range
	Remaining int64  // keys after this page, -1 when not counted
	Revision  int64  // the revision the page was read at
	Continue  string // the token for the next page when More
}

const defaultLimit = 500

// List reads one page at the view's revision.  Everything is copied into
// Go memory; ListFunc avoids the copy.  A Continue token must come
// from a page of the same revision and range (ErrBadToken otherwise).
func (v *View) List(o ListOptions) (Page, error) {
	n, err := v.list(o)
	if err != nil {
		return Page{}, err
	}
	p := Page{Items: copyKVs(unsafe.Slice(v.items, n))}
	v.pageMeta(&p)
	return p, nil
}

func (v *View) list(o ListOptions) (int, error) {
	v.notInCallback()
	limit := o.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	v.ensureItems(limit)
	cr := C.int(0)
	if o.CountRemaining {
		cr = 1
	}
	rc := C.wcgo_list(cptr(unsafe.Pointer(v.v)), o.Prefix, o.Start, o.End, o.Continue, cr,
		cptr(unsafe.Pointer(v.items)), C.size_t(limit), cptr(unsafe.Pointer(v.res)))
	if rc != C.WCACHE_OK {
		return 0, mkerr("list", rc)
	}
	return int(v.res.count), nil
}

func (v *View) pageMeta(p *Page) {
	p.More = v.res.more != 0
	p.Remaining = int64(v.res.remaining)
	p.Revision = int64(v.res.revision)
	if p.More && v.res.token != nil {
		p.Continue = C.GoStringN(v.res.token, C.int(v.res.token_len))
	}
}

// ListFunc reads one page like List but copies nothing: fn sees each item's
// key and value as slices of the cache's memory, valid only during the call
// (they must not be kept or modified), and kv (revisions only) is reused
// for every item.  fn must not call List, ListFunc or GetMany on the same
// view (they panic).  The returned Page has no Items.
func (v *View) ListFunc(o ListOptions, fn func(key, value []byte, kv *KV)) (Page, error) {
	n, err := v.list(o)
	if err != nil {
		return Page{}, err
	}
	v.inCallback = true
	defer v.leaveCallback()
	meta := &v.meta
	*meta = KV{}
	for i := range unsafe.Slice(v.items, n) {
		it := &unsafe.Slice(v.items, n)[i]
		meta.CreateRevision = int64(it.create_revision)
		meta.ModRevision = int64(it.mod_revision)
		meta.Version = int64(it.version)
		fn(unsafe.Slice((*byte)(it.key), int(it.key_len)),
			unsafe.Slice((*byte)(it.value), int(it.value_len)), meta)
	}
	var p Page
	v.pageMeta(&p)
	return p, nil
}

// SnapshotInfo is what a snapshot holds.
type SnapshotInfo struct {
	Revision, CompactedRevision int64
	Objects, FileBytes          uint64
}

func goInfo(i *C.wcache_snapshot_info) SnapshotInfo {
	return SnapshotInfo{int64(i.revision), int64(i.compacted_revision), uint64(i.objects),
		uint64(i.file_bytes)}
}

// SnapshotOptions of a write; zero values are the C defaults.
type SnapshotOptions struct {
	Revision int64 // RevLatest: the latest
	Level    int   // zstd level, 1..19
	Workers  int   // compression threads beside the caller
}

// SnapshotWrite writes the cache at one revision to path, atomically
// (wcache_snapshot_write).  Any goroutine; ingest goes on meanwhile.
func (c *Cache) SnapshotWrite(path string, o *SnapshotOptions) (SnapshotInfo, error) {
	if o == nil {
		o = &SnapshotOptions{}
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	eb := (*C.char)(C.calloc(errbufSize, 1))
	defer C.free(unsafe.Pointer(eb))
	var info C.wcache_snapshot_info
	rc := C.wcgo_snapshot_write(c.c, cpath, C.int64_t(o.Revision), C.int(o.Level),
		C.int(o.Workers), &info, eb, errbufSize)
	if rc != C.WCACHE_OK {
		return SnapshotInfo{}, &Error{Op: "snapshot write", Code: Code(rc), Detail: C.GoString(eb)}
	}
	return goInfo(&info), nil
}

// SnapshotRestore loads the snapshot at path into the cache, which must be
// empty (revision 0); afterwards its current and compacted revision are
// the snapshot's.  A writer call.
func (c *Cache) SnapshotRestore(path string) (SnapshotInfo, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	eb := (*C.char)(C.calloc(errbufSize, 1))
	defer C.free(unsafe.Pointer(eb))
	var info C.wcache_snapshot_info
	c.wmu.Lock()
	rc := C.wcgo_snapshot_restore(c.c, cpath, &info, eb, errbufSize)
	c.wmu.Unlock()
	if rc != C.WCACHE_OK {
		return SnapshotInfo{}, &Error{Op: "snapshot restore", Code: Code(rc), Detail: C.GoString(eb)}
	}
	return goInfo(&info), nil
}

// Version is the library's version string (wcache_version_string).
func Version() string { return C.GoString(C.wcache_version_string()) }

// versionNumber is one bare cgo call: the benchmark's floor.
func versionNumber() uint { return uint(C.wcache_version_number()) }
