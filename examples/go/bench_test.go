package watchcache

import (
	"fmt"
	"testing"
)

// The per-call overhead of the binding, against bench/bench_bindings.c,
// which runs the same workload in C: benchN keys of benchValue bytes, GET
// of keys in a fixed pseudo-random order from one pinned view, LIST of
// pages of 100 from a random start key.
const (
	benchN     = 10000
	benchValue = 256
	benchPage  = 100
)

func benchKey(i int) string { return fmt.Sprintf("/registry/pods/ns-%02d/pod-%06d", i%50, i) }

func benchCache(b *testing.B) (*Cache, *View, []string) {
	c, err := New(nil)
	if err != nil {
		b.Fatal(err)
	}
	val := make([]byte, benchValue)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	keys := make([]string, benchN)
	for i := range keys {
		keys[i] = benchKey(i)
		if err := c.Put(keys[i], val, int64(i+1)); err != nil {
			b.Fatal(err)
		}
	}
	// The same order as the C side: x = x * 6364136223846793005 + 1442695040888963407.
	order := make([]string, benchN)
	x := uint64(1)
	for i := range order {
		x = x*6364136223846793005 + 1442695040888963407
		order[i] = keys[(x>>33)%benchN]
	}
	v, err := c.View(RevLatest)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		v.Close()
		_ = c.Close()
	})
	return c, v, order
}

// BenchmarkGet: View.Get, which copies the value into a new Go slice.
func BenchmarkGet(b *testing.B) {
	_, v, order := benchCache(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Get(order[i%benchN]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetAppend: View.AppendValue into a reused buffer (no allocation).
func BenchmarkGetAppend(b *testing.B) {
	_, v, order := benchCache(b)
	buf := make([]byte, 0, benchValue)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var err error
		if buf, err = v.AppendValue(buf[:0], order[i%benchN]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList100: one page of 100 (keys and values copied to Go).
func BenchmarkList100(b *testing.B) {
	_, v, order := benchCache(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := v.List(ListOptions{Start: order[i%benchN], Limit: benchPage})
		if err != nil || len(p.Items) == 0 {
			b.Fatal(err)
		}
	}
}

// BenchmarkList100Func: the same page through ListFunc (nothing copied).
func BenchmarkList100Func(b *testing.B) {
	_, v, order := benchCache(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := 0
		_, err := v.ListFunc(ListOptions{Start: order[i%benchN], Limit: benchPage},
			func(key, value []byte, kv *KV) { n += len(value) })
		if err != nil || n == 0 {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetMany: GET through GetMany, 256 keys per cgo call; ns/op is
// per key.
func BenchmarkGetMany(b *testing.B) {
	_, v, order := benchCache(b)
	buf := make([]byte, 0, benchValue)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := b.N - done
		if n > 256 {
			n = 256
		}
		off := done % benchN
		if off+n > benchN {
			n = benchN - off
		}
		v.GetMany(order[off:off+n], func(i int, kv *KV, err error) {
			if err != nil {
				b.Fatal(err)
			}
			buf = append(buf[:0], kv.Value...)
		})
		done += n
	}
}
