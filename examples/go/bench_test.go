package watchcache

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"syscall"
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

// cpuNow is the process's CPU time (user + system, all threads, so the
// garbage collector's work counts) in seconds: the measure of
// bench/bench_bindings.c and the Rust bench, which other processes' load
// leaves out.
func cpuNow() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)*1e-6
}

// cpuMeasure: best of 3 runs of secs CPU seconds, in CPU ns per call.
func cpuMeasure(secs float64, op func(i int)) float64 {
	best := math.MaxFloat64
	for r := 0; r < 3; r++ {
		t0 := cpuNow()
		calls := 0
		var t float64
		for {
			for j := 0; j < 1000; j++ {
				op(calls)
				calls++
			}
			if t = cpuNow(); t-t0 >= secs {
				break
			}
		}
		best = math.Min(best, (t-t0)*1e9/float64(calls))
	}
	return best
}

// TestCPUCost prints the figures of bench/bench_bindings.c for Go, in CPU
// time (make bench-cpu; skipped unless WCACHE_BENCH_SECS is set).
func TestCPUCost(t *testing.T) {
	s := os.Getenv("WCACHE_BENCH_SECS")
	if s == "" {
		t.Skip("set WCACHE_BENCH_SECS")
	}
	secs, err := strconv.ParseFloat(s, 64)
	must(t, err)
	c, err := New(nil)
	must(t, err)
	defer c.Close()
	val := make([]byte, benchValue)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	keys := make([]string, benchN)
	for i := range keys {
		keys[i] = benchKey(i)
		must(t, c.Put(keys[i], val, int64(i+1)))
	}
	order := make([]string, benchN)
	x := uint64(1)
	for i := range order {
		x = x*6364136223846793005 + 1442695040888963407
		order[i] = keys[(x>>33)%benchN]
	}
	v, err := c.View(RevLatest)
	must(t, err)
	defer v.Close()
	buf := make([]byte, 0, benchValue)
	fmt.Printf("cgo_call\t%.1f\n", cpuMeasure(secs, func(i int) {
		if versionNumber() == 0 {
			t.Fatal("version")
		}
	}))
	fmt.Printf("get\t%.1f\n", cpuMeasure(secs, func(i int) {
		kv, err := v.Get(order[i%benchN])
		if err != nil || len(kv.Value) != benchValue {
			t.Fatal(err)
		}
	}))
	fmt.Printf("get_append\t%.1f\n", cpuMeasure(secs, func(i int) {
		if buf, err = v.AppendValue(buf[:0], order[i%benchN]); err != nil {
			t.Fatal(err)
		}
	}))
	fmt.Printf("get_many\t%.1f\n", cpuMeasure(secs, func(i int) {
		if i%256 != 0 {
			return
		}
		off := i % benchN
		n := 256
		if off+n > benchN {
			n = benchN - off
		}
		v.GetMany(order[off:off+n], func(_ int, kv *KV, err error) {
			buf = append(buf[:0], kv.Value...)
		})
	}))
	fmt.Printf("list100\t%.1f\n", cpuMeasure(secs, func(i int) {
		p, err := v.List(ListOptions{Start: order[i%benchN], Limit: benchPage})
		if err != nil || len(p.Items) == 0 {
			t.Fatal(err)
		}
	}))
	fmt.Printf("list100_func\t%.1f\n", cpuMeasure(secs, func(i int) {
		n := 0
		_, err := v.ListFunc(ListOptions{Start: order[i%benchN], Limit: benchPage},
			func(key, value []byte, kv *KV) { n += len(value) })
		if err != nil || n == 0 {
			t.Fatal(err)
		}
	}))
}
