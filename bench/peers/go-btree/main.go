// go-btree - the peer of bench/bench_core.c: the same workload over
// github.com/google/btree with a copy-on-write Clone() after every event,
// which is how the Kubernetes watch cache keeps its snapshots (KEP-4988):
// the last RETAIN clones stay readable in a ring, as the C cache keeps
// RETAIN revisions.  GET reads the latest clone; LIST ascends a clone.
//
// Usage: go-btree [-seed S] [-updates U] [-secs T] [N]
//        go-btree -dump COUNT [-seed S]   (podgen output, see podgen_dump.c)
//
// Output: one line per metric, "metric<TAB>N<TAB>value<TAB>unit", the same
// metrics and names as bench_core.

package main

import (
	"bufio"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/btree"
)

const (
	degree  = 16    // the Kubernetes store's btreeDegree
	retain  = 10000 // revisions kept readable below the current one
	chunk   = 1024  // events generated ahead of each timed run
	repeats = 3     // GET and LIST measurements keep the best of this many
	seedWL  = 0x5eed0f10ad
)

type elem struct {
	key                        string
	value                      []byte
	createRev, modRev, version int64
}

func (a *elem) Less(b btree.Item) bool { return a.key < b.(*elem).key }

type snap struct {
	rev int64
	t   *btree.BTree
}

// cache is the live tree plus the ring of clones, one per revision.
type cache struct {
	mu   sync.RWMutex
	live *btree.BTree
	ring []snap // ring[rev % len(ring)] holds rev while it is retained
	rev  int64
}

func newCache() *cache {
	return &cache{live: btree.New(degree), ring: make([]snap, retain+1)}
}

// snapshot publishes the live tree's state at c.rev and drops the clone
// that fell out of the window (it is overwritten in the ring).
func (c *cache) snapshot() {
	t := c.live.Clone()
	c.mu.Lock()
	c.ring[c.rev%int64(len(c.ring))] = snap{c.rev, t}
	c.mu.Unlock()
}

func (c *cache) put(probe *elem, key []byte, value []byte, rev int64) {
	probe.key = string(key) // only converted, not kept, when the key exists
	e := &elem{value: append([]byte(nil), value...), createRev: rev, modRev: rev, version: 1}
	if old, ok := c.live.Get(probe).(*elem); ok {
		e.key, e.createRev, e.version = old.key, old.createRev, old.version+1
	} else {
		e.key = string(key)
	}
	c.live.ReplaceOrInsert(e)
	c.rev = rev
	c.snapshot()
}

// putMany applies events one revision each, as put does (a Clone() per
// event, so every revision stays readable), but publishes the batch's
// clones under one lock: the equivalent of wcache_ingest_changes.
func (c *cache) putMany(probe *elem, keys, vals [][]byte, revs []int64) {
	clones := make([]snap, len(keys))
	for k := range keys {
		probe.key = string(keys[k])
		e := &elem{value: append([]byte(nil), vals[k]...), createRev: revs[k], modRev: revs[k], version: 1}
		if old, ok := c.live.Get(probe).(*elem); ok {
			e.key, e.createRev, e.version = old.key, old.createRev, old.version+1
		} else {
			e.key = string(keys[k])
		}
		c.live.ReplaceOrInsert(e)
		clones[k] = snap{revs[k], c.live.Clone()}
	}
	c.mu.Lock()
	for _, s := range clones {
		c.ring[s.rev%int64(len(c.ring))] = s
	}
	c.rev = revs[len(revs)-1]
	c.mu.Unlock()
}

// at returns the clone at rev, or nil when rev is outside the window.
func (c *cache) at(rev int64) *btree.BTree {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s := c.ring[rev%int64(len(c.ring))]
	if s.rev != rev {
		return nil
	}
	return s.t
}

func (c *cache) latest() *btree.BTree { return c.at(c.rev) }

var nObjects int

func metric(name string, value float64, unit string) {
	fmt.Printf("%s\t%d\t%.3f\t%s\n", name, nObjects, value, unit)
}

// batch holds pre-generated events so that timing excludes the generator.
type batch struct {
	keys, vals [][]byte
	arena      []byte
}

func (b *batch) fill(g *podgen, idx []uint64, gens []uint64, revs []int64) {
	b.arena = b.arena[:0]
	b.keys, b.vals = b.keys[:0], b.vals[:0]
	offs := make([]int, 0, 2*len(idx)+1)
	for k, i := range idx {
		offs = append(offs, len(b.arena))
		b.arena = g.appendKey(b.arena, i)
		offs = append(offs, len(b.arena))
		b.arena = g.appendPod(b.arena, i, gens[k], revs[k])
	}
	offs = append(offs, len(b.arena))
	for k := range idx {
		b.keys = append(b.keys, b.arena[offs[2*k]:offs[2*k+1]])
		b.vals = append(b.vals, b.arena[offs[2*k+1]:offs[2*k+2]])
	}
}

// loadPuts applies N creates, one revision each, and returns events/s.
func loadPuts(c *cache, g *podgen, n int) float64 {
	var b batch
	var dur time.Duration
	probe := &elem{}
	idx, gens, revs := make([]uint64, chunk), make([]uint64, chunk), make([]int64, chunk)
	for base := 0; base < n; base += chunk {
		m := min(chunk, n-base)
		for k := 0; k < m; k++ {
			idx[k], gens[k], revs[k] = uint64(base+k), 1, int64(base+k+1)
		}
		b.fill(g, idx[:m], gens[:m], revs[:m])
		t0 := time.Now()
		for k := 0; k < m; k++ {
			c.put(probe, b.keys[k], b.vals[k], revs[k])
		}
		dur += time.Since(t0)
	}
	return float64(n) / dur.Seconds()
}

// updates applies u updates of uniformly random keys and returns events/s;
// per > 0: putMany of per events at a time (bench_core's
// update_rate_batch64), with the key sequence of seed.
func updates(c *cache, g *podgen, n, u, per int, seed uint64) float64 {
	var b batch
	var dur time.Duration
	probe := &elem{}
	r := rng{seed}
	idx, gens, revs := make([]uint64, chunk), make([]uint64, chunk), make([]int64, chunk)
	for done := 0; done < u; done += chunk {
		m := min(chunk, u-done)
		for k := 0; k < m; k++ {
			rev := c.rev + int64(k) + 1
			idx[k], gens[k], revs[k] = r.next()%uint64(n), uint64(rev), rev
		}
		b.fill(g, idx[:m], gens[:m], revs[:m])
		t0 := time.Now()
		for k := 0; k < m && per == 0; k++ {
			c.put(probe, b.keys[k], b.vals[k], revs[k])
		}
		for k := 0; k < m && per > 0; k += per {
			e := min(m, k+per)
			c.putMany(probe, b.keys[k:e], b.vals[k:e], revs[k:e])
		}
		dur += time.Since(t0)
	}
	return float64(u) / dur.Seconds()
}

func peakRSS() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss * 1024
}

// streamKeys is bench_core's STREAM_KEYS: the GET requests of one thread.
const streamKeys = 1 << 20

// requestStream returns streamKeys uniformly random keys whose bytes lie
// one after the other in one string, as bench_core's reqstream: the
// measured loop walks it in order, so it times the cache, not the
// harness's random reads of a key table.
func requestStream(keys []string, seed uint64) []string {
	r := rng{seed}
	var b strings.Builder
	idx := make([]int, streamKeys)
	for q := range idx {
		idx[q] = int(r.next() % uint64(len(keys)))
		b.WriteString(keys[idx[q]])
	}
	all := b.String()
	reqs := make([]string, streamKeys)
	off := 0
	for q, i := range idx {
		reqs[q] = all[off : off+len(keys[i])]
		off += len(keys[i])
	}
	return reqs
}

// gets runs GETs of the keys of streams[th] on threads goroutines for
// secs seconds.  pinned: take the latest clone once (a view kept open);
// else take it for every GET (a view begun and ended per GET).
func gets(c *cache, streams [][]string, threads int, secs float64, pinned bool) float64 {
	var wg sync.WaitGroup
	counts := make([]int, threads)
	start := make(chan struct{})
	deadline := time.Duration(secs * float64(time.Second))
	for th := 0; th < threads; th++ {
		wg.Add(1)
		go func(th int) {
			defer wg.Done()
			reqs := streams[th]
			q := 0
			probe := &elem{}
			t := c.latest()
			sum := 0
			<-start
			t0 := time.Now()
			for time.Since(t0) < deadline {
				for k := 0; k < 4096; k++ {
					if !pinned {
						t = c.latest()
					}
					probe.key = reqs[q]
					if q++; q == len(reqs) {
						q = 0
					}
					sum += len(t.Get(probe).(*elem).value)
				}
				counts[th] += 4096
			}
			if sum == 0 {
				panic("no value read")
			}
		}(th)
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	el := time.Since(t0).Seconds()
	total := 0
	for _, n := range counts {
		total += n
	}
	return float64(total) / el
}

// list ascends the whole clone into out, repeatedly for secs seconds (at
// least 3 times), and returns ns per item.  Each item is copied out, as
// bench_core's wcache_view_list fills a wcache_kv (key, value, revisions)
// per item: a LIST that did not read its items would not be a LIST.
func list(t *btree.BTree, out []elem, secs float64) float64 {
	items, runs := 0, 0
	t0 := time.Now()
	for runs < 3 || time.Since(t0).Seconds() < secs {
		out = out[:0]
		t.Ascend(func(i btree.Item) bool {
			out = append(out, *i.(*elem))
			return true
		})
		items += len(out)
		runs++
	}
	return float64(time.Since(t0).Nanoseconds()) / float64(items)
}

// bulkLoad is the Replace of a relist: sorted objects inserted into a new
// tree, then one snapshot.  Returns objects/s.
func bulkLoad(g *podgen, n int) float64 {
	type kv struct{ key, val []byte }
	all := make([]kv, n)
	for i := 0; i < n; i++ {
		all[i].key = g.appendKey(nil, uint64(i))
		all[i].val = g.appendPod(nil, uint64(i), 1, int64(i+1))
	}
	sort.Slice(all, func(a, b int) bool { return string(all[a].key) < string(all[b].key) })
	c := newCache()
	rev := int64(n)
	t0 := time.Now()
	for _, o := range all {
		c.live.ReplaceOrInsert(&elem{key: string(o.key), value: append([]byte(nil), o.val...),
			createRev: rev, modRev: rev, version: 1})
	}
	c.rev = rev
	c.snapshot()
	el := time.Since(t0).Seconds()
	if c.latest().Len() != n {
		panic("bulk load lost objects")
	}
	return float64(n) / el
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func dump(g *podgen, count uint64) {
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	var b []byte
	for i := uint64(0); i < count; i++ {
		b = g.appendKey(b[:0], i)
		b = append(b, '\t')
		b = g.appendPod(b, i, 1, int64(i)+1)
		b = append(b, '\n')
		b = g.appendPod(b, i, i%7+2, 1000000+int64(i))
		b = append(b, '\n')
		w.Write(b)
	}
}

func main() {
	seed := flag.Uint64("seed", 42, "podgen seed")
	dumpN := flag.Uint64("dump", 0, "print this many pods (podgen_dump format) and exit")
	upd := flag.Int("updates", 0, "update events (default max(N, 50000))")
	secs := flag.Float64("secs", 0.5, "seconds per GET and LIST measurement (best of 3)")
	flag.Parse()
	g := &podgen{*seed}
	if *dumpN > 0 {
		dump(g, *dumpN)
		return
	}
	nObjects = 1000000
	if flag.NArg() > 0 {
		fmt.Sscan(flag.Arg(0), &nObjects)
	}
	n := nObjects
	u := *upd
	if u == 0 {
		u = n
		if u < 50000 {
			u = 50000
		}
	}

	c := newCache()
	metric("load_put_rate", loadPuts(c, g, n), "events/s")
	metric("update_rate", updates(c, g, n, u, 0, seedWL), "events/s")
	metric("update_rate_batch64", updates(c, g, n, u, 64, seedWL+1), "events/s")
	rss := peakRSS()

	keys := make([]string, 0, n)
	raw := 0
	c.latest().Ascend(func(i btree.Item) bool {
		e := i.(*elem)
		keys = append(keys, e.key)
		raw += len(e.key) + len(e.value)
		return true
	})
	metric("rss_peak", float64(rss), "bytes")
	metric("raw_bytes", float64(raw), "bytes")
	metric("rss_per_object", float64(rss)/float64(n), "bytes")
	metric("rss_over_raw", float64(rss)/float64(raw), "ratio")

	// Reads are measured on a settled heap: without this, the collection
	// that the updates started marks the whole heap during the GETs and
	// takes one of the two cores.
	streams := [][]string{requestStream(keys, seedWL), requestStream(keys, seedWL+7919)}
	runtime.GC()
	// Best of `repeats`: the machine may be shared, and interference only
	// ever makes a run slower.
	bestGets := func(threads int, pinned bool) float64 {
		best := 0.0
		for k := 0; k < repeats; k++ {
			best = math.Max(best, gets(c, streams, threads, *secs, pinned))
		}
		return best
	}
	metric("get_1t_view_open", bestGets(1, true), "gets/s")
	metric("get_1t_view_per_get", bestGets(1, false), "gets/s")
	metric("get_2t_view_open", bestGets(2, true), "gets/s")
	metric("get_2t_view_per_get", bestGets(2, false), "gets/s")
	// bench_core's get_*_many64 (wcache_view_get_many of 64 keys on one
	// view): the btree has no multi-key Get, so 64 Gets on one clone,
	// which is what get_*_view_open measures already.
	metric("get_1t_many64", bestGets(1, true), "gets/s")
	metric("get_2t_many64", bestGets(2, true), "gets/s")

	out := make([]elem, 0, n)
	bestList := func(t *btree.BTree) float64 {
		best := math.Inf(1)
		for k := 0; k < repeats; k++ {
			best = math.Min(best, list(t, out, *secs))
		}
		return best
	}
	metric("list_latest", bestList(c.latest()), "ns/item")
	old := c.at(c.rev - retain/2)
	if old == nil {
		panic("old revision not retained")
	}
	metric("list_old_rev", bestList(old), "ns/item")

	keys, out, c = nil, nil, nil
	runtime.GC()
	metric("load_bulk_rate", bulkLoad(g, n), "objects/s")
}
