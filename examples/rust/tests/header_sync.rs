//! The raw declarations of src/sys.rs against include/watchcache.h: every
//! WCACHE_API function of the header is declared, with the same parameter
//! and return types (C types mapped to Rust's), and nothing else is.
use std::collections::BTreeMap;

/// Header functions deliberately not bound, with the reason.
const NOT_BOUND: &[(&str, &str)] = &[
    ("wcache_etcd_create", "etcd source: fed from C; this binding feeds the cache itself"),
    ("wcache_etcd_start", "etcd source"),
    ("wcache_etcd_stop", "etcd source"),
    ("wcache_etcd_free", "etcd source"),
    ("wcache_etcd_stat", "etcd source"),
    ("wcache_etcd_current_revision", "etcd source"),
    ("wcache_etcd_range", "etcd source"),
    ("wcache_etcd_source_id", "etcd source"),
    ("wcache_snapshot_restore_chain", "delta chains: not bound yet (a const char *const * array)"),
    ("wcache_etcd_start_loop", "etcd source"),
    ("wcache_etcd_fds", "etcd source"),
    ("wcache_etcd_perform", "etcd source"),
];

fn read(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {}", p.display(), e))
}

fn strip_c_comments(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("/*") {
        out += &rest[..i];
        rest = &rest[i + 2..];
        rest = &rest[rest.find("*/").map_or(rest.len(), |j| j + 2)..];
    }
    out += rest;
    out.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

/// A C type (without the parameter name) as the Rust type sys.rs uses.
/// Each `*` is `*const` when a `const` stands between it and the previous
/// `*` (or the start): `const void *const *` is `*const *const c_void`.
fn c_to_rust(t: &str) -> String {
    let t = t.replace('*', " * ");
    let mut base: Vec<&str> = Vec::new();
    let mut ptrs: Vec<bool> = Vec::new(); // constness of each pointee, inside out
    let mut pending_const = false;
    for w in t.split_whitespace() {
        match w {
            "const" => pending_const = true,
            "*" => {
                ptrs.push(pending_const);
                pending_const = false;
            }
            other => base.push(other),
        }
    }
    let mut s = match base.join(" ").as_str() {
        "void" => "c_void".to_string(),
        "char" => "c_char".to_string(),
        "int" => "c_int".to_string(),
        "unsigned" => "c_uint".to_string(),
        "size_t" => "usize".to_string(),
        "int64_t" => "i64".to_string(),
        "uint64_t" => "u64".to_string(),
        "uint32_t" => "u32".to_string(),
        other => other.to_string(),
    };
    for c in ptrs {
        s = format!("*{} {}", if c { "const" } else { "mut" }, s);
    }
    s
}

fn norm(t: &str) -> String {
    let t = t.trim();
    let t = if t == "wcache_code" || t == "wcache_param" { "c_int" } else { t };
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

type Sig = (Vec<String>, String);

fn header_functions() -> BTreeMap<String, Sig> {
    let h = strip_c_comments(&read("../../include/watchcache.h"));
    let mut out = BTreeMap::new();
    for part in h.split("WCACHE_API").skip(1) {
        let proto = part.split(';').next().unwrap().replace("WCACHE_NODISCARD", "");
        if proto.contains("#define") || proto.contains("__attribute__") {
            continue; // the macro's own definition
        }
        let open = proto.find('(').unwrap();
        let head = proto[..open].trim();
        let name_at = head.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let name = head[name_at..].to_string();
        let ret = head[..name_at].trim();
        let ret = if ret == "void" { String::new() } else { norm(&c_to_rust(ret)) };
        let args = &proto[open + 1..proto.rfind(')').unwrap()];
        let mut params = Vec::new();
        if args.trim() != "void" {
            for a in args.split(',') {
                let a = a.trim();
                let cut = a.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap();
                params.push(norm(&c_to_rust(&a[..=cut])));
            }
        }
        out.insert(name, (params, ret));
    }
    out
}

fn rust_functions() -> BTreeMap<String, Sig> {
    let s = read("src/sys.rs");
    let block = &s[s.find("extern \"C\" {").expect("extern block")..];
    let mut out = BTreeMap::new();
    for decl in block.split("pub fn ").skip(1) {
        let decl = decl.split(';').next().unwrap();
        let open = decl.find('(').unwrap();
        let name = decl[..open].trim().to_string();
        let close = decl.rfind(')').unwrap();
        let ret = decl[close + 1..].trim().trim_start_matches("->").trim();
        let mut params = Vec::new();
        for a in decl[open + 1..close].split(',') {
            if let Some((_, ty)) = a.split_once(':') {
                params.push(norm(ty));
            }
        }
        out.insert(name, (params, norm(ret)));
    }
    out
}

#[test]
fn every_header_function_is_declared_alike() {
    let h = header_functions();
    let r = rust_functions();
    assert!(h.len() > 60, "parsed only {} functions from the header", h.len());
    let mut problems = Vec::new();
    for (name, sig) in &h {
        if NOT_BOUND.iter().any(|(n, _)| n == name) {
            continue;
        }
        match r.get(name) {
            None => problems.push(format!("{}: in the header, not in src/sys.rs", name)),
            Some(rs) if rs != sig => {
                problems.push(format!("{}: header {:?}, sys.rs {:?}", name, sig, rs))
            }
            Some(_) => {}
        }
    }
    for name in r.keys() {
        if !h.contains_key(name) {
            problems.push(format!("{}: in src/sys.rs, not in the header", name));
        }
    }
    assert!(
        problems.is_empty(),
        "examples/rust/src/sys.rs is out of sync with include/watchcache.h (declare a new \
         function there, or list it in NOT_BOUND in this file with the reason):\n{}",
        problems.join("\n")
    );
}

#[test]
fn error_enum_mirrors_the_codes() {
    let h = read("../../include/watchcache.h");
    let mut n = 0;
    for line in h.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("WCACHE_E") {
            if let Some((_, v)) = rest.split_once('=') {
                let digits: String = v.trim().chars().take_while(|c| c.is_ascii_digit()).collect();
                let v: i32 = digits.parse().unwrap();
                let e = watchcache::Error::from_code(v).unwrap();
                assert!(
                    !matches!(e, watchcache::Error::Other(_)),
                    "code {} ({}) has no variant",
                    v,
                    l
                );
                assert_eq!(e.code(), v);
                n += 1;
            }
        }
    }
    assert!(n >= 22, "{} codes found", n);
}
