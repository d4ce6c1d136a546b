//! The Rust side of the binding overhead benchmark: the workload of
//! bench/bench_bindings.c (10000 keys of 256-byte values, GET in a fixed
//! pseudo-random order with the value copied out, LIST pages of 100), best
//! of 3 runs per metric, in process CPU time per call.
//!
//!   cargo run --release --offline --example bench_bindings [SECONDS]
use watchcache::{Cache, ListOptions, View, REV_LATEST};

const N: usize = 10000;
const VALUE: usize = 256;
const PAGE: usize = 100;

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

fn main() {
    let secs: f64 = std::env::args().nth(1).map_or(1.0, |s| s.parse().unwrap());
    let cache = Cache::new().unwrap();
    let value: Vec<u8> = (0..VALUE).map(|i| b'a' + (i % 26) as u8).collect();
    let keys: Vec<Vec<u8>> = (0..N)
        .map(|i| format!("/registry/pods/ns-{:02}/pod-{:06}", i % 50, i).into_bytes())
        .collect();
    {
        let mut w = cache.writer().unwrap();
        for (i, k) in keys.iter().enumerate() {
            w.put(k, &value, i as i64 + 1).unwrap();
        }
    }
    let mut x: u64 = 1;
    let order: Vec<usize> = (0..N)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % N as u64) as usize
        })
        .collect();
    let v: View<'_> = cache.view(REV_LATEST).unwrap();
    let mut buf = [0u8; VALUE];
    let get = measure(secs, |i| {
        let kv = v.get(&keys[order[i % N]]).unwrap();
        let val = kv.value();
        buf[..val.len()].copy_from_slice(val);
        black_box(buf[i % VALUE] as usize);
    });
    println!("get\t{:.1}", get);
    let get_b = measure(secs, |i| {
        black_box(v.get(&keys[order[i % N]]).unwrap().value().len());
    });
    println!("get_borrowed\t{:.1}", get_b);
    // The same GET through the raw declaration, in this process, runs
    // alternating with the safe one: the safe layer's own cost, free of
    // the noise between processes.
    let (mut safe, mut raw) = (f64::MAX, f64::MAX);
    let raw_view = v.as_ptr();
    for _ in 0..5 {
        safe = safe.min(measure(secs / 5.0, |i| {
            black_box(v.get(&keys[order[i % N]]).unwrap().value().len());
        }));
        raw = raw.min(measure(secs / 5.0, |i| {
            let k = &keys[order[i % N]];
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
    println!("get_raw_ffi\t{:.1}", raw);
    println!("get_safe_same_run\t{:.1}", safe);
    let list = measure(secs, |i| {
        let o = ListOptions { start: &keys[order[i % N]], ..Default::default() };
        black_box(v.list(&o, PAGE).unwrap().items.len());
    });
    println!("list100\t{:.1}", list);
}
