//! sizeof() of every header struct, as the C compiler says (build.rs),
//! against the #[repr(C)] declarations of src/sys.rs.
use std::mem::size_of;
use watchcache::sys::*;

include!(concat!(env!("OUT_DIR"), "/c_sizes.rs"));

#[test]
fn struct_sizes_match_c() {
    let rust: &[(&str, usize)] = &[
        ("wcache_allocator", size_of::<wcache_allocator>()),
        ("wcache_stat", size_of::<wcache_stat>()),
        ("wcache_change", size_of::<wcache_change>()),
        ("wcache_kv", size_of::<wcache_kv>()),
        ("wcache_list_opts", size_of::<wcache_list_opts>()),
        ("wcache_list_result", size_of::<wcache_list_result>()),
        ("wcache_watch_opts", size_of::<wcache_watch_opts>()),
        ("wcache_watch_event", size_of::<wcache_watch_event>()),
        ("wcache_wait_stat", size_of::<wcache_wait_stat>()),
        ("wcache_index_stat", size_of::<wcache_index_stat>()),
        ("wcache_snapshot_write_opts", size_of::<wcache_snapshot_write_opts>()),
        ("wcache_snapshot_read_opts", size_of::<wcache_snapshot_read_opts>()),
        ("wcache_snapshot_info", size_of::<wcache_snapshot_info>()),
        ("wcache_snapshot_policy", size_of::<wcache_snapshot_policy>()),
        ("wcache_snapshot_state", size_of::<wcache_snapshot_state>()),
        ("wcache_store_opts", size_of::<wcache_store_opts>()),
        ("wcache_store_object", size_of::<wcache_store_object>()),
        ("wcache_k8s_opts", size_of::<wcache_k8s_opts>()),
        ("wcache_k8s_stats", size_of::<wcache_k8s_stats>()),
    ];
    if C_SIZES.is_empty() {
        eprintln!("no C compiler at build time: skipped");
        return;
    }
    assert_eq!(C_SIZES.len(), rust.len());
    for ((cn, cs), (rn, rs)) in C_SIZES.iter().zip(rust) {
        assert_eq!(cn, rn);
        assert_eq!(cs, rs, "sizeof({})", cn);
    }
}
