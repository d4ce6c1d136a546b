package watchcache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newCache(t testing.TB) *Cache {
	t.Helper()
	c, err := New(&Options{RetainRevisions: 1000, NoAutoCompact: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestPutGetRevisions(t *testing.T) {
	c := newCache(t)
	must(t, c.Put("/pods/web", []byte("v1"), 10))
	must(t, c.Put("/pods/web", []byte("v2"), 11))
	must(t, c.Delete("/pods/web", 12))

	kv, err := c.Get("/pods/web", 10)
	must(t, err)
	if string(kv.Value) != "v1" || kv.Version != 1 || kv.CreateRevision != 10 {
		t.Fatalf("rev 10: %+v", kv)
	}
	kv, err = c.Get("/pods/web", 11)
	must(t, err)
	if string(kv.Value) != "v2" || kv.Version != 2 || kv.ModRevision != 11 {
		t.Fatalf("rev 11: %+v", kv)
	}
	if _, err = c.Get("/pods/web", RevLatest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("latest: %v", err)
	}
	if _, err = c.Get("/pods/web", 13); !errors.Is(err, ErrFutureRevision) {
		t.Fatalf("future: %v", err)
	}
	if err = c.Put("/pods/x", nil, 12); !errors.Is(err, ErrOrder) {
		t.Fatalf("order: %v", err)
	}
	var we *Error
	if !errors.As(err, &we) || we.Code != ErrOrder || we.Op != "put" {
		t.Fatalf("errors.As: %#v", err)
	}
	if err = c.Delete("/pods/none", 20); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete absent: %v", err)
	}
	must(t, c.Compact(11))
	if _, err = c.Get("/pods/web", 10); !errors.Is(err, ErrCompacted) {
		t.Fatalf("compacted: %v", err)
	}
	if c.Revision() != 12 || c.CompactedRevision() != 11 {
		t.Fatalf("revisions %d %d", c.Revision(), c.CompactedRevision())
	}
}

func TestBatch(t *testing.T) {
	c := newCache(t)
	b, err := c.NewBatch()
	must(t, err)
	defer b.Close()
	for i := 0; i < 10; i++ {
		must(t, b.Put(fmt.Sprintf("/k/%02d", i), []byte{byte(i)}))
	}
	if b.Len() != 10 {
		t.Fatal(b.Len())
	}
	must(t, c.Apply(b, 5))
	b.Clear()
	must(t, b.Put("/k/00", []byte("x")))
	must(t, b.Put("/k/00", []byte("y")))
	err = c.Apply(b, 6)
	if !errors.Is(err, ErrExist) {
		t.Fatalf("dup key: %v", err)
	}
	var we *Error
	if !errors.As(err, &we) || we.Detail == "" {
		t.Fatalf("no detail: %#v", err)
	}
	st, err := c.Stat()
	must(t, err)
	if st.Objects != 10 || st.Revision != 5 {
		t.Fatalf("stat %+v", st)
	}
	if err := c.Close(); !errors.Is(err, ErrBusy) {
		t.Fatalf("close with a batch open: %v", err)
	}
}

func TestListPaging(t *testing.T) {
	c := newCache(t)
	for i := 0; i < 25; i++ {
		must(t, c.Put(fmt.Sprintf("/a/%02d", i), []byte("x"), int64(i+1)))
	}
	must(t, c.Put("/b/0", []byte("y"), 26))
	// Page through at revision 20 while the cache moves on.
	var keys []string
	opts := ListOptions{Prefix: "/a/", Limit: 7}
	page, err := c.List(20, opts)
	must(t, err)
	for {
		for _, kv := range page.Items {
			keys = append(keys, kv.Key)
		}
		if !page.More {
			break
		}
		must(t, c.Put(fmt.Sprintf("/a/z%d", c.Revision()), nil, c.Revision()+1))
		opts.Continue = page.Continue
		page, err = c.List(RevLatest, opts) // pinned at the token's revision
		must(t, err)
		if page.Revision != 20 {
			t.Fatalf("page at %d", page.Revision)
		}
	}
	if len(keys) != 20 || keys[0] != "/a/00" || keys[19] != "/a/19" {
		t.Fatalf("keys %v", keys)
	}
	v, err := c.View(RevLatest)
	must(t, err)
	defer v.Close()
	if _, err = v.List(ListOptions{Prefix: "/b/", Continue: opts.Continue}); !errors.Is(err, ErrBadToken) {
		t.Fatalf("token of another revision/range: %v", err)
	}
	p, err := v.List(ListOptions{Start: "/a/10", End: "/a/13", CountRemaining: true, Limit: 2})
	must(t, err)
	if len(p.Items) != 2 || !p.More || p.Remaining != 1 || p.Items[0].Key != "/a/10" {
		t.Fatalf("range page %+v", p)
	}
}

func TestWatch(t *testing.T) {
	c := newCache(t)
	must(t, c.Put("/w/a", []byte("1"), 1))
	w, err := c.Watch(WatchOptions{Prefix: "/w/", InitialEvents: true, PrevValue: true})
	must(t, err)
	defer w.Close()
	const n = 1000
	go func() {
		for i := 2; i <= n; i++ {
			if err := c.Put("/w/a", []byte(fmt.Sprint(i)), int64(i)); err != nil {
				t.Error(err)
				return
			}
		}
		_ = c.Put("/other", nil, n+1)
		_ = c.Delete("/w/a", n+2)
	}()
	want := []EventType{Added, InitialEnd}
	var got []EventType
	timeout := time.After(20 * time.Second)
	rev := int64(0)
	for len(got) < n+2 {
		select {
		case e, ok := <-w.Events():
			if !ok {
				t.Fatalf("closed early: %v", w.Err())
			}
			got = append(got, e.Type)
			if e.Type == Modified {
				if e.Revision <= rev || e.Prev == nil || string(e.KV.Value) != fmt.Sprint(e.Revision) {
					t.Fatalf("event %+v after %d", e, rev)
				}
				rev = e.Revision
			}
			if e.Type == Deleted && e.Revision != n+2 {
				t.Fatalf("delete %+v", e)
			}
		case <-timeout:
			t.Fatalf("timed out after %d events", len(got))
		}
	}
	if got[0] != want[0] || got[1] != want[1] || got[len(got)-1] != Deleted {
		t.Fatalf("types %v...%v", got[:2], got[len(got)-1])
	}
	w.Close()
	if _, ok := <-w.Events(); ok {
		t.Fatal("channel open after Close")
	}
	if w.Err() != nil {
		t.Fatal(w.Err())
	}
	if _, err := c.Watch(WatchOptions{LabelSelector: "a in ("}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad selector: %v", err)
	}
}

func TestWatchBookmarksAndCompacted(t *testing.T) {
	c := newCache(t)
	must(t, c.Put("/k", nil, 5))
	must(t, c.Put("/k", nil, 6))
	must(t, c.Compact(6))
	if _, err := c.Watch(WatchOptions{StartRevision: 3}); !errors.Is(err, ErrCompacted) {
		t.Fatalf("compacted: %v", err)
	}
	w, err := c.Watch(WatchOptions{BookmarkInterval: 20 * time.Millisecond})
	must(t, err)
	must(t, c.Progress(9)) // no event: only an idle bookmark tells the watcher
	select {
	case e := <-w.Events():
		if e.Type != Bookmark || e.Revision != 9 {
			t.Fatalf("%+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no bookmark")
	}
	// Left open: Cache.Close stops it.
}

func TestWatchOverflow(t *testing.T) {
	c := newCache(t)
	w, err := c.Watch(WatchOptions{QueueSize: 4, ChannelSize: 1})
	must(t, err)
	defer w.Close()
	for i := 1; i <= 100; i++ {
		must(t, c.Put("/k", nil, int64(i)))
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-w.Events():
			if !ok {
				if !errors.Is(w.Err(), ErrOverflow) {
					t.Fatalf("ended with %v", w.Err())
				}
				return
			}
		case <-deadline:
			t.Fatal("no overflow")
		}
	}
}

func TestSnapshot(t *testing.T) {
	c := newCache(t)
	for i := 0; i < 100; i++ {
		must(t, c.Put(fmt.Sprintf("/s/%03d", i), []byte(fmt.Sprint(i)), int64(i+1)))
	}
	path := filepath.Join(t.TempDir(), "a.wcsnap")
	info, err := c.SnapshotWrite(path, &SnapshotOptions{Revision: 50})
	must(t, err)
	if info.Revision != 50 || info.Objects != 50 {
		t.Fatalf("%+v", info)
	}
	d := newCache(t)
	info, err = d.SnapshotRestore(path)
	must(t, err)
	if info.Revision != 50 || d.Revision() != 50 || d.CompactedRevision() != 50 {
		t.Fatalf("restored %+v at %d", info, d.Revision())
	}
	kv, err := d.Get("/s/049", RevLatest)
	must(t, err)
	if string(kv.Value) != "49" {
		t.Fatalf("%+v", kv)
	}
	if _, err = d.SnapshotRestore(path); !errors.Is(err, ErrState) {
		t.Fatalf("restore into a non-empty cache: %v", err)
	}
	if _, err = newCache(t).SnapshotRestore(filepath.Join(t.TempDir(), "none")); !errors.Is(err, ErrSys) {
		t.Fatalf("missing file: %v", err)
	}
}

// Many goroutines read while one writes; each reader's views move between
// goroutines (a view is handed over a channel), which the C contract allows.
func TestReadersVsWriter(t *testing.T) {
	c, err := New(&Options{RetainRevisions: 64})
	must(t, err)
	defer func() { must(t, c.Close()) }()
	const keys = 64
	writes := 3000
	if testing.Short() {
		writes = 500
	}
	for i := 0; i < keys; i++ {
		must(t, c.Put(fmt.Sprintf("/r/%02d", i), []byte("0"), int64(i+1)))
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	handoff := make(chan *View, 4)
	for r := 0; r < 8; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for !stop.Load() {
				v, err := c.View(RevLatest)
				if err != nil {
					t.Error(err)
					return
				}
				// Every key at one revision has a value no newer than it.
				p, err := v.List(ListOptions{Prefix: "/r/", Limit: keys})
				if err != nil || len(p.Items) != keys {
					t.Errorf("list: %v %d", err, len(p.Items))
				}
				for _, kv := range p.Items {
					if kv.ModRevision > v.Revision() {
						t.Errorf("mod %d above view %d", kv.ModRevision, v.Revision())
					}
				}
				if r%2 == 0 {
					handoff <- v // another goroutine reads and closes it
				} else {
					_, err = v.Get("/r/07")
					if err != nil {
						t.Error(err)
					}
					v.Close()
				}
				reads.Add(1)
			}
		}(r)
	}
	var hw sync.WaitGroup
	hw.Add(1)
	go func() {
		defer hw.Done()
		for v := range handoff {
			if _, err := v.Get("/r/00"); err != nil {
				t.Error(err)
			}
			v.Close()
		}
	}()
	rev := int64(keys)
	for i := 0; i < writes; i++ {
		rev++
		must(t, c.Put(fmt.Sprintf("/r/%02d", i%keys), []byte(fmt.Sprint(rev)), rev))
	}
	stop.Store(true)
	wg.Wait()
	close(handoff)
	hw.Wait()
	if reads.Load() == 0 {
		t.Fatal("no reads")
	}
	t.Logf("%d writes, %d reader rounds", writes, reads.Load())
}

func TestErrorsIs(t *testing.T) {
	var err error = &Error{Op: "x", Code: ErrCompacted}
	if !errors.Is(err, ErrCompacted) || errors.Is(err, ErrNotFound) {
		t.Fatal("errors.Is")
	}
	if ErrNotFound.Error() != "key not found" && ErrNotFound.Error() == "" {
		t.Fatal(ErrNotFound.Error())
	}
}

func TestGetManyAndListFunc(t *testing.T) {
	c := newCache(t)
	keys := make([]string, 600)
	for i := range keys {
		keys[i] = fmt.Sprintf("/m/%04d", i)
		if i%3 != 0 {
			must(t, c.Put(keys[i], []byte(keys[i]), int64(i+1)))
		}
	}
	v, err := c.View(RevLatest)
	must(t, err)
	defer v.Close()
	seen := 0
	v.GetMany(keys, func(i int, kv *KV, err error) {
		seen++
		if i%3 == 0 {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("%d: %v", i, err)
			}
			return
		}
		if err != nil || string(kv.Value) != keys[i] {
			t.Fatalf("%d: %v %q", i, err, kv.Value)
		}
	})
	if seen != len(keys) {
		t.Fatal(seen)
	}
	var got []string
	p, err := v.ListFunc(ListOptions{Prefix: "/m/", Limit: 10}, func(key, value []byte, kv *KV) {
		got = append(got, string(key))
		if string(value) != string(key) || kv.Version != 1 {
			t.Fatalf("%s %s %+v", key, value, kv)
		}
	})
	must(t, err)
	if len(got) != 10 || got[0] != "/m/0001" || !p.More || p.Continue == "" {
		t.Fatalf("%v %+v", got, p)
	}
	// Neither allocates per call (their KV is the view's), and a page
	// bigger than the last one reallocates the C items only outside a
	// callback: a List, ListFunc or GetMany on the same view from a
	// callback panics instead of freeing the items the outer call reads;
	// a second view is fine inside.
	present := make([]string, 0, 400)
	for i := range keys {
		if i%3 != 0 {
			present = append(present, keys[i])
		}
	}
	if n := testing.AllocsPerRun(20, func() {
		v.GetMany(present, func(int, *KV, error) {})
		// The whole prefix: no More, so no Continue token (a Go string)
		_, _ = v.ListFunc(ListOptions{Prefix: "/m/", Limit: 500}, func([]byte, []byte, *KV) {})
	}); n != 0 {
		t.Errorf("GetMany + ListFunc: %v allocations per call", n)
	}
	nested := func(name string, outer func(inner func())) {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "same View") {
				t.Errorf("%s: nested call on the same view: recovered %v", name, r)
			}
		}()
		outer(func() { _, _ = v.ListFunc(ListOptions{Prefix: "/m/", Limit: 500}, func([]byte, []byte, *KV) {}) })
	}
	nested("GetMany", func(inner func()) {
		v.GetMany(keys[:2], func(int, *KV, error) { inner() })
	})
	nested("ListFunc", func(inner func()) {
		_, _ = v.ListFunc(ListOptions{Prefix: "/m/", Limit: 2}, func([]byte, []byte, *KV) { inner() })
	})
	nested("List in GetMany", func(func()) {
		v.GetMany(keys[1:2], func(int, *KV, error) { _, _ = v.List(ListOptions{Limit: 1000}) })
	})
	nested("GetMany in ListFunc", func(func()) {
		_, _ = v.ListFunc(ListOptions{Prefix: "/m/", Limit: 2}, func([]byte, []byte, *KV) {
			v.GetMany(keys[1:2], func(int, *KV, error) {})
		})
	})
	// After a panic the view is usable again.
	if _, err := v.Get(keys[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := v.List(ListOptions{Prefix: "/m/", Limit: 2}); err != nil {
		t.Fatal(err)
	}
	v2, err := c.View(RevLatest)
	must(t, err)
	defer v2.Close()
	inner := 0
	v.GetMany(keys[1:3], func(int, *KV, error) {
		v2.GetMany(keys[1:3], func(_ int, kv *KV, err error) { inner += len(kv.Value) })
	})
	if inner != 4*len(keys[1]) {
		t.Errorf("nested GetMany on another view: %d bytes", inner)
	}
}

// A forgotten view is freed by its finalizer (the safety net), after which
// the cache closes.
func TestFinalizerSafetyNet(t *testing.T) {
	c, err := New(nil)
	must(t, err)
	must(t, c.Put("/k", nil, 1))
	func() {
		_, err := c.View(RevLatest) // dropped without Close
		must(t, err)
	}()
	if err := c.Close(); !errors.Is(err, ErrBusy) {
		t.Fatalf("close with a view open: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if err := c.Close(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the finalizer never freed the view")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// oddReader hands out the bytes in chunks of 1, 2, ... 97 bytes, with an
// empty read now and then, and fails with err once at bytes are out.
type oddReader struct {
	b   []byte
	n   int
	at  int
	err error
}

func (r *oddReader) Read(p []byte) (int, error) {
	r.n++
	if r.err != nil && len(r.b) <= r.at {
		return 0, r.err
	}
	if r.n%5 == 0 {
		return 0, nil
	}
	k := r.n%97 + 1
	if k > len(p) {
		k = len(p)
	}
	if k > len(r.b) {
		k = len(r.b)
	}
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	copy(p, r.b[:k])
	r.b = r.b[k:]
	return k, nil
}

func TestSnapshotRestoreFrom(t *testing.T) {
	c := newCache(t)
	for i := 0; i < 300; i++ {
		must(t, c.Put(fmt.Sprintf("/s/%03d", i), []byte(fmt.Sprint(i)), int64(i+1)))
	}
	path := filepath.Join(t.TempDir(), "a.wcsnap")
	_, err := c.SnapshotWrite(path, nil)
	must(t, err)
	data, err := os.ReadFile(path)
	must(t, err)
	d := newCache(t)
	info, err := d.SnapshotRestoreFrom(&oddReader{b: data})
	must(t, err)
	if info.Revision != 300 || info.Objects != 300 || info.FileBytes != uint64(len(data)) ||
		d.Revision() != 300 {
		t.Fatalf("restored %+v at %d", info, d.Revision())
	}
	kv, err := d.Get("/s/299", RevLatest)
	must(t, err)
	if string(kv.Value) != "299" {
		t.Fatalf("%+v", kv)
	}
	// A reader that fails mid-way: its error and ErrSys, the cache empty.
	broken := errors.New("connection reset")
	e := newCache(t)
	_, err = e.SnapshotRestoreFrom(&oddReader{b: data[:len(data)/2], at: 0, err: broken})
	if !errors.Is(err, ErrSys) || !errors.Is(err, broken) || e.Revision() != 0 {
		t.Fatalf("broken reader: %v, revision %d", err, e.Revision())
	}
	// Cut short, or damaged: ErrCorrupt, the cache empty.
	if _, err = e.SnapshotRestoreFrom(bytes.NewReader(data[:len(data)-1])); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}
	bad := append([]byte(nil), data...)
	bad[len(bad)/2] ^= 0x40
	if _, err = e.SnapshotRestoreFrom(bytes.NewReader(bad)); !errors.Is(err, ErrCorrupt) ||
		e.Revision() != 0 {
		t.Fatalf("bit flip: %v", err)
	}
	if _, err = d.SnapshotRestoreFrom(bytes.NewReader(data)); !errors.Is(err, ErrState) {
		t.Fatalf("restore into a non-empty cache: %v", err)
	}
}
