//! Links libwatchcache: from the tree's lib/ (with an rpath, so tests run
//! without an install) when it has been built there, else through
//! pkg-config (an installed libwatchcache).  Also compiles a small C
//! program that prints sizeof() of the header's structs, for tests/layout.rs.
use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

const STRUCTS: &[&str] = &[
    "wcache_allocator",
    "wcache_stat",
    "wcache_change",
    "wcache_kv",
    "wcache_list_opts",
    "wcache_list_result",
    "wcache_watch_opts",
    "wcache_watch_event",
    "wcache_wait_stat",
    "wcache_index_stat",
    "wcache_snapshot_write_opts",
    "wcache_snapshot_read_opts",
    "wcache_snapshot_info",
    "wcache_snapshot_policy",
    "wcache_snapshot_state",
    "wcache_store_opts",
    "wcache_store_object",
    "wcache_k8s_opts",
    "wcache_k8s_stats",
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../..").canonicalize().unwrap();
    let lib = root.join("lib");
    let mut include = root.join("include");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WATCHCACHE_LIB_DIR");
    if let Ok(dir) = env::var("WATCHCACHE_LIB_DIR") {
        println!("cargo:rustc-link-search=native={}", dir);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir);
    } else if lib.join("libwatchcache.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    } else {
        let out = Command::new("pkg-config")
            .args(["--libs-only-L", "--cflags-only-I", "watchcache"])
            .output()
            .expect("libwatchcache: build it with make in the tree, or install it (pkg-config)");
        assert!(out.status.success(), "pkg-config cannot find watchcache");
        for flag in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Some(dir) = flag.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={}", dir);
            } else if let Some(dir) = flag.strip_prefix("-I") {
                include = PathBuf::from(dir);
            }
        }
    }
    println!("cargo:rustc-link-lib=dylib=watchcache");
    println!("cargo:rerun-if-changed={}", include.join("watchcache.h").display());
    println!("cargo:rerun-if-changed={}", lib.join("libwatchcache.so").display());
    println!("cargo:include={}", include.display());
    sizes(&include);
}

/// Writes $OUT_DIR/c_sizes.rs: `pub const C_SIZES: &[(&str, usize)]`.
fn sizes(include: &std::path::Path) {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let mut c = String::from("#include <stdio.h>\n#include <watchcache.h>\nint main(void){\n");
    for s in STRUCTS {
        c += &format!("printf(\"(\\\"{0}\\\", %zu),\\n\", sizeof({0}));\n", s);
    }
    c += "return 0;}\n";
    let src = out.join("sizes.c");
    let exe = out.join("sizes");
    fs::write(&src, c).unwrap();
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let ok = Command::new(&cc)
        .arg("-I")
        .arg(include)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let body = if ok {
        let o = Command::new(&exe).output().expect("run sizes");
        String::from_utf8(o.stdout).unwrap()
    } else {
        println!("cargo:warning=no C compiler: layout test skipped");
        String::new()
    };
    fs::write(
        out.join("c_sizes.rs"),
        format!("pub const C_SIZES: &[(&str, usize)] = &[\n{}];\n", body),
    )
    .unwrap();
}
