//! The Rust side of the binding overhead benchmark: the workload of
//! bench/bench_bindings.c (10000 keys of 256-byte values, GET in a fixed
//! pseudo-random order with the value copied out, LIST pages of 100), best
//! of 3 runs per metric.
//!
//!   cargo run --release --offline --example bench_bindings [SECONDS]
use std::time::Instant;
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

fn measure(secs: f64, mut op: impl FnMut(usize)) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        let mut calls = 0usize;
        loop {
            for _ in 0..1000 {
                op(calls);
                calls += 1;
            }
            if t0.elapsed().as_secs_f64() >= secs {
                break;
            }
        }
        best = best.min(t0.elapsed().as_secs_f64() * 1e9 / calls as f64);
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
    let list = measure(secs, |i| {
        let o = ListOptions { start: &keys[order[i % N]], ..Default::default() };
        black_box(v.list(&o, PAGE).unwrap().items.len());
    });
    println!("list100\t{:.1}", list);
}
