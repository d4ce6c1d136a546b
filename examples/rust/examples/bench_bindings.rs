//! The Rust side of the binding overhead benchmark: the workloads of
//! bench/bench_bindings.c, in process CPU time per call, best of 3 runs per
//! metric.  "hot": 10000 keys of 256-byte values, GET in a fixed
//! pseudo-random order with the value copied out, LIST pages of 100.  With
//! a pods file (`podgen_dump 1 COUNT 1`, "key TAB pod" lines) and sizes,
//! the pods workload at each size: the first N lines loaded (the cache
//! grows from one size to the next), GETs walking a stream of 2^20 keys
//! picked with the same LCG as the C and Go sides.  Output lines are
//! "workload TAB metric TAB ns"; "check" is the FNV-1a hash of the data
//! and the stream, which bench/bindings.sh compares across the sides.
//!
//!   cargo run --release --offline --example bench_bindings SECONDS [PODS N...]
use std::io::BufRead;
use watchcache::{Cache, ListOptions, View, REV_LATEST};

const HOT_N: usize = 10000;
const HOT_VALUE: usize = 256;
const PAGE: usize = 100;
const STREAM_KEYS: usize = 1 << 20;
/// Keeps a result alive without std::hint::black_box (Rust 1.66; the
/// crate builds with Debian 12's 1.63).
fn black_box(x: usize) {
    // SAFETY: a volatile read of a local.
    unsafe { std::ptr::read_volatile(&x) };
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// Process CPU time in seconds (CLOCK_PROCESS_CPUTIME_ID, as the C side:
/// other processes' load stays out of the figures).
fn cpu_now() -> f64 {
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer; clock 2 is CLOCK_PROCESS_CPUTIME_ID on Linux.
    unsafe { clock_gettime(2, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn measure(secs: f64, mut op: impl FnMut(usize)) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t0 = cpu_now();
        let mut calls = 0usize;
        let mut t;
        loop {
            for _ in 0..1000 {
                op(calls);
                calls += 1;
            }
            t = cpu_now();
            if t - t0 >= secs {
                break;
            }
        }
        best = best.min((t - t0) * 1e9 / calls as f64);
    }
    best
}

fn fnv(mut h: u64, b: &[u8]) -> u64 {
    for &c in b {
        h = (h ^ c as u64).wrapping_mul(0x100000001b3);
    }
    h
}

/// The request stream of bench_bindings.c: `nq` keys picked with the LCG,
/// copied end to end into one buffer; returns it and the end offsets.
fn stream_of(keys: &[Vec<u8>], nq: usize) -> (Vec<u8>, Vec<usize>) {
    let mut buf = Vec::with_capacity(nq * 64);
    let mut ends = Vec::with_capacity(nq);
    let mut x: u64 = 1;
    for _ in 0..nq {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        buf.extend_from_slice(&keys[((x >> 33) % keys.len() as u64) as usize]);
        ends.push(buf.len());
    }
    (buf, ends)
}

/// The figures of one workload over `stream` (its keys, borrowed).
fn rows(label: &str, v: &View<'_>, stream: &[&[u8]], secs: f64) {
    let n = stream.len();
    let mut buf = vec![0u8; 4096];
    let get = measure(secs, |i| {
        let kv = v.get(stream[i % n]).unwrap();
        let val = kv.value();
        buf[..val.len()].copy_from_slice(val);
        black_box(buf[i % val.len()] as usize);
    });
    println!("{}\tget\t{:.1}", label, get);
    let get_b = measure(secs, |i| {
        black_box(v.get(stream[i % n]).unwrap().value().len());
    });
    println!("{}\tget_borrowed\t{:.1}", label, get_b);
    // The same GET through the raw declaration, in this process, runs
    // alternating with the safe one: the safe layer's own cost, free of
    // the noise between processes.
    let (mut safe, mut raw) = (f64::MAX, f64::MAX);
    let raw_view = v.as_ptr();
    for _ in 0..5 {
        safe = safe.min(measure(secs / 5.0, |i| {
            black_box(v.get(stream[i % n]).unwrap().value().len());
        }));
        raw = raw.min(measure(secs / 5.0, |i| {
            let k = stream[i % n];
            let mut kv = std::mem::MaybeUninit::<watchcache::sys::wcache_kv>::uninit();
            // SAFETY: the view is pinned and used by this thread only.
            let rc = unsafe {
                watchcache::sys::wcache_view_get(
                    raw_view,
                    k.as_ptr().cast(),
                    k.len(),
                    kv.as_mut_ptr(),
                )
            };
            assert_eq!(rc, 0);
            // SAFETY: written by the successful call.
            black_box(unsafe { kv.assume_init() }.value_len);
        }));
    }
    println!("{}\tget_raw_ffi\t{:.1}", label, raw);
    println!("{}\tget_safe_same_run\t{:.1}", label, safe);
    let list = measure(secs, |i| {
        let o = ListOptions { start: stream[i % n], ..Default::default() };
        black_box(v.list(&o, PAGE).unwrap().items.len());
    });
    println!("{}\tlist100\t{:.1}", label, list);
}

fn slices<'a>(buf: &'a [u8], ends: &[usize]) -> Vec<&'a [u8]> {
    let mut start = 0;
    ends.iter()
        .map(|&e| {
            let s = &buf[start..e];
            start = e;
            s
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).map_or(1.0, |s| s.parse().unwrap());
    {
        let cache = Cache::new().unwrap();
        let value: Vec<u8> = (0..HOT_VALUE).map(|i| b'a' + (i % 26) as u8).collect();
        let keys: Vec<Vec<u8>> = (0..HOT_N)
            .map(|i| format!("/registry/pods/ns-{:02}/pod-{:06}", i % 50, i).into_bytes())
            .collect();
        {
            let mut w = cache.writer().unwrap();
            for (i, k) in keys.iter().enumerate() {
                w.put(k, &value, i as i64 + 1).unwrap();
            }
        }
        let (buf, ends) = stream_of(&keys, HOT_N);
        let v: View<'_> = cache.view(REV_LATEST).unwrap();
        rows("hot", &v, &slices(&buf, &ends), secs);
    }
    // No let-else: the crate builds with Debian 12's Rust 1.63.
    let path = match args.get(2) {
        Some(p) => p,
        None => return,
    };
    let mut rd = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap());
    let cache = Cache::new().unwrap();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut h: u64 = 0xcbf29ce484222325;
    let mut line = Vec::new();
    for ns in &args[3..] {
        let n: usize = ns.parse().unwrap();
        {
            let mut w = cache.writer().unwrap();
            while keys.len() < n {
                line.clear();
                rd.read_until(b'\n', &mut line).unwrap();
                let tab = match (line.iter().position(|&c| c == b'\t'), line.last()) {
                    (Some(tab), Some(b'\n')) => tab,
                    _ => panic!("{}: line {}: not key TAB value", path, keys.len() + 1),
                };
                let (key, value) = (&line[..tab], &line[tab + 1..line.len() - 1]);
                h = fnv(fnv(h, key), value);
                w.put(key, value, keys.len() as i64 + 1).unwrap();
                keys.push(key.to_vec());
            }
        }
        let (buf, ends) = stream_of(&keys, STREAM_KEYS);
        println!("{}\tcheck\t{:016x}", n, fnv(h, &buf));
        let v: View<'_> = cache.view(REV_LATEST).unwrap();
        rows(ns, &v, &slices(&buf, &ends), secs);
    }
}
