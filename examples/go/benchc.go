//go:build wcachebench

package watchcache

// The C side of the same-process comparison in bench_test.go (TestCPUCost,
// built with -tags wcachebench by make bench-cpu, never part of the
// package otherwise): the GET loop of bench/bench_bindings.c, run inside
// the Go test process on the same view and the same request stream, so
// that Go's AppendValue and C's GET are compared on the same memory
// layout, alternating, free of the 2x spread between processes at 100k
// keys and more.

/*
#include <stdint.h>
#include <string.h>
#include <watchcache.h>

// count GETs of keys start, start+1, ... (mod n) of the stream: key q is
// all[q ? ends[q-1] : 0 .. ends[q]].  Values are copied out, as in C's
// op_get.  The stream is Go memory without Go pointers, read only during
// the call.
static uint64_t wcgo_bench_get_loop(uintptr_t v, const char *all, const uint32_t *ends,
                                    size_t n, size_t start, size_t count)
{
    static char buf[65536];
    uint64_t sum = 0;
    for (size_t i = start; i < start + count; i++) {
        size_t q = i % n, b = q ? ends[q - 1] : 0;
        wcache_kv kv;
        if (wcache_view_get((wcache_view *)v, all + b, ends[q] - b, &kv) != WCACHE_OK)
            return UINT64_MAX;
        size_t len = kv.value_len < sizeof buf ? kv.value_len : sizeof buf;
        memcpy(buf, kv.value, len);
        sum += (unsigned char)buf[i % (len ? len : 1)];
    }
    return sum;
}
*/
import "C"

import "unsafe"

func init() { cGetLoop = benchCGetLoop }

// benchCGetLoop runs count C GETs of the stream (all, ends) from key start;
// false when one failed.
func benchCGetLoop(v *View, all string, ends []uint32, start, count int) bool {
	return C.wcgo_bench_get_loop(cptr(unsafe.Pointer(v.v)), (*C.char)(strptr(all)),
		(*C.uint32_t)(unsafe.Pointer(&ends[0])), C.size_t(len(ends)), C.size_t(start),
		C.size_t(count)) != C.UINT64_MAX
}
