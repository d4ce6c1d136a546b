//! Raw declarations of include/watchcache.h, written by hand.
//!
//! `tests/header_sync.rs` parses the header and checks that every
//! `WCACHE_API` function is declared here with the same parameter and
//! return types (or is listed there as not bound), and `tests/layout.rs`
//! checks the size of every struct against the C compiler's.
//! Enums are passed as `c_int` (their C type on every ABI we build for).
#![allow(non_camel_case_types)]

use std::marker::{PhantomData, PhantomPinned};
use std::os::raw::{c_char, c_int, c_uint, c_void};

macro_rules! opaque {
    ($($name:ident),*) => {$(
        #[repr(C)]
        pub struct $name {
            _data: [u8; 0],
            _marker: PhantomData<(*mut u8, PhantomPinned)>,
        }
    )*};
}
opaque!(
    wcache_cache,
    wcache_batch,
    wcache_view,
    wcache_watch,
    wcache_event,
    wcache_watchset,
    wcache_snapshot,
    wcache_store,
    wcache_store_upload
);
opaque!(wcache_k8s);

pub type wcache_code = c_int;
pub type wcache_param = c_int;

pub const WCACHE_REV_LATEST: i64 = 0;

pub const WCACHE_OK: c_int = 0;
pub const WCACHE_P_RETAIN_REVISIONS: c_int = 1;
pub const WCACHE_P_RETAIN_SECONDS: c_int = 2;
pub const WCACHE_P_AUTO_COMPACT: c_int = 3;
pub const WCACHE_P_READER_SLOTS: c_int = 4;
pub const WCACHE_P_MAX_KEY_BYTES: c_int = 5;
pub const WCACHE_P_MAX_VALUE_BYTES: c_int = 6;

pub type wcache_log_fn = Option<
    unsafe extern "C" fn(level: c_int, msg: *const c_char, msg_len: usize, userdata: *mut c_void),
>;
pub type wcache_clock_fn = Option<unsafe extern "C" fn(userdata: *mut c_void) -> i64>;
pub type wcache_current_rev_fn =
    Option<unsafe extern "C" fn(rev: *mut i64, userdata: *mut c_void) -> c_int>;
pub type wcache_progress_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;
pub type wcache_index_fn = Option<
    unsafe extern "C" fn(
        key: *const c_void,
        key_len: usize,
        value: *const c_void,
        value_len: usize,
        out: *mut *const c_void,
        out_len: *mut usize,
        userdata: *mut c_void,
    ) -> c_int,
>;
pub type wcache_snap_progress_fn = Option<
    unsafe extern "C" fn(
        step: c_int,
        bytes: u64,
        objects: u64,
        total: u64,
        userdata: *mut c_void,
    ) -> c_int,
>;
pub type wcache_snap_sink_fn =
    Option<unsafe extern "C" fn(buf: *const c_void, len: usize, userdata: *mut c_void) -> c_int>;
pub type wcache_snap_source_fn = Option<
    unsafe extern "C" fn(
        buf: *mut c_void,
        cap: usize,
        got: *mut usize,
        userdata: *mut c_void,
    ) -> c_int,
>;

#[repr(C)]
pub struct wcache_allocator {
    pub size: u32,
    pub alloc: Option<unsafe extern "C" fn(n: usize, userdata: *mut c_void) -> *mut c_void>,
    pub free: Option<unsafe extern "C" fn(p: *mut c_void, userdata: *mut c_void)>,
    pub userdata: *mut c_void,
}

#[repr(C)]
#[derive(Default)]
pub struct wcache_stat {
    pub size: u32,
    pub revision: i64,
    pub compacted_revision: i64,
    pub objects: u64,
    pub versions: u64,
    pub value_bytes: u64,
    pub key_bytes: u64,
    pub events: u64,
    pub history_events: u64,
    pub views_open: u64,
    pub compactions: u64,
}

pub const WCACHE_CHANGE_PUT: u32 = 1;
pub const WCACHE_CHANGE_DELETE: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct wcache_change {
    pub type_: u32,
    pub key: *const c_void,
    pub key_len: usize,
    pub value: *const c_void,
    pub value_len: usize,
    pub rev: i64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct wcache_kv {
    pub key: *const c_void,
    pub key_len: usize,
    pub value: *const c_void,
    pub value_len: usize,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

#[repr(C)]
pub struct wcache_list_opts {
    pub size: u32,
    pub start: *const c_void,
    pub start_len: usize,
    pub end: *const c_void,
    pub end_len: usize,
    pub prefix: *const c_void,
    pub prefix_len: usize,
    pub token: *const c_char,
    pub token_len: usize,
    pub count_remaining: c_int,
}

#[repr(C)]
pub struct wcache_list_result {
    pub size: u32,
    pub count: usize,
    pub more: c_int,
    pub remaining: i64,
    pub revision: i64,
    pub token: *const c_char,
    pub token_len: usize,
}

pub const WCACHE_EV_ADDED: c_int = 1;
pub const WCACHE_EV_MODIFIED: c_int = 2;
pub const WCACHE_EV_DELETED: c_int = 3;
pub const WCACHE_EV_BOOKMARK: c_int = 4;
pub const WCACHE_EV_INITIAL_END: c_int = 5;

#[repr(C)]
pub struct wcache_watch_opts {
    pub size: u32,
    pub start_revision: i64,
    pub start: *const c_void,
    pub start_len: usize,
    pub end: *const c_void,
    pub end_len: usize,
    pub prefix: *const c_void,
    pub prefix_len: usize,
    pub label_selector: *const c_char,
    pub label_selector_len: usize,
    pub initial_events: c_int,
    pub prev_value: c_int,
    pub bookmark_interval_ms: i64,
    pub queue_size: u32,
    pub index_id: c_int,
    pub index_value: *const c_void,
    pub index_value_len: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct wcache_watch_event {
    pub type_: c_int,
    pub revision: i64,
    pub kv: wcache_kv,
    pub prev: wcache_kv,
    pub ev: *mut wcache_event,
}

#[repr(C)]
#[derive(Default)]
pub struct wcache_wait_stat {
    pub size: u32,
    pub reads: u64,
    pub waits: u64,
    pub timeouts: u64,
    pub wait_ns: u64,
    pub max_wait_ns: u64,
    pub watchers: u64,
    pub deliveries: u64,
    pub overflows: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct wcache_index_stat {
    pub size: u32,
    pub values: u64,
    pub postings: u64,
    pub current: u64,
}

#[repr(C)]
pub struct wcache_snapshot_write_opts {
    pub size: u32,
    pub revision: i64,
    pub level: c_int,
    pub workers: c_int,
    pub block_bytes: u32,
    pub source_id: *const c_void,
    pub source_id_len: usize,
    pub compacted_revision: i64,
    pub created_unix_ns: i64,
    pub progress: wcache_snap_progress_fn,
    pub userdata: *mut c_void,
    pub errbuf: *mut c_char,
    pub errbuf_len: usize,
    pub base: *const wcache_snapshot,
}

#[repr(C)]
pub struct wcache_snapshot_read_opts {
    pub size: u32,
    pub max_block_bytes: u32,
    pub expect_source_id: *const c_void,
    pub expect_source_id_len: usize,
    pub alloc: *const wcache_allocator,
    pub errbuf: *mut c_char,
    pub errbuf_len: usize,
}

#[repr(C)]
pub struct wcache_snapshot_info {
    pub size: u32,
    pub format_major: u32,
    pub format_minor: u32,
    pub flags: u32,
    pub revision: i64,
    pub compacted_revision: i64,
    pub objects: u64,
    pub created_unix_ns: i64,
    pub source_id: *const c_void,
    pub source_id_len: usize,
    pub blocks: u64,
    pub kv_bytes: u64,
    pub raw_bytes: u64,
    pub file_bytes: u64,
    pub base_revision: i64,
    pub base_file_hash: u64,
    pub tombstones: u64,
    pub file_hash: u64,
}

#[repr(C)]
pub struct wcache_snapshot_policy {
    pub size: u32,
    pub dir: *const c_char,
    pub name_prefix: *const c_char,
    pub keep: usize,
    pub interval_ms: i64,
    pub every_revisions: i64,
    pub write: *const wcache_snapshot_write_opts,
}

#[repr(C)]
#[derive(Default)]
pub struct wcache_snapshot_state {
    pub size: u32,
    pub last_revision: i64,
    pub last_ms: i64,
}

pub type wcache_store_progress_fn =
    Option<unsafe extern "C" fn(done: u64, total: u64, userdata: *mut c_void) -> c_int>;
pub type wcache_store_list_fn =
    Option<unsafe extern "C" fn(obj: *const wcache_store_object, userdata: *mut c_void) -> c_int>;

pub const WCACHE_STORE_STYLE_AUTO: c_int = 0;
pub const WCACHE_STORE_STYLE_PATH: c_int = 1;
pub const WCACHE_STORE_STYLE_VIRTUAL: c_int = 2;

#[repr(C)]
pub struct wcache_store_opts {
    pub size: u32,
    pub endpoint: *const c_char,
    pub region: *const c_char,
    pub style: c_int,
    pub access_key_id: *const c_char,
    pub secret_access_key: *const c_char,
    pub session_token: *const c_char,
    pub credentials_file: *const c_char,
    pub profile: *const c_char,
    pub gcs_token_file: *const c_char,
    pub gcs_hmac_access_id: *const c_char,
    pub gcs_hmac_secret: *const c_char,
    pub ca_file: *const c_char,
    pub ca_path: *const c_char,
    pub tls_insecure: c_int,
    pub max_retries: c_int,
    pub backoff_ms: i64,
    pub backoff_max_ms: i64,
    pub timeout_ms: i64,
    pub connect_timeout_ms: i64,
    pub part_bytes: u64,
    pub parallel_parts: c_int,
    pub allow_small_parts: c_int,
    pub tmp_dir: *const c_char,
    pub progress: wcache_store_progress_fn,
    pub progress_userdata: *mut c_void,
    pub log: wcache_log_fn,
    pub log_userdata: *mut c_void,
    pub alloc: *const wcache_allocator,
    pub errbuf: *mut c_char,
    pub errbuf_len: usize,
}

#[repr(C)]
pub struct wcache_store_object {
    pub size: u32,
    pub key: *const c_char,
    pub key_len: usize,
    pub bytes: u64,
    pub mtime_unix_ns: i64,
    pub etag: *const c_char,
    pub revision: i64,
}

pub const WCACHE_K8S_INPUT_FD: c_int = 1;
pub const WCACHE_K8S_INPUT_FILE: c_int = 2;
pub const WCACHE_K8S_INPUT_URL: c_int = 3;
pub const WCACHE_K8S_INPUT_SYNTHETIC: c_int = 4;
pub const WCACHE_K8S_PODS: c_int = 1;
pub const WCACHE_K8S_CONFIGMAPS: c_int = 2;

#[repr(C)]
pub struct wcache_k8s_opts {
    pub size: u32,
    pub name: *const c_char,
    pub input: c_int,
    pub fd: c_int,
    pub path: *const c_char,
    pub url: *const c_char,
    pub list_url: *const c_char,
    pub prefix: *const c_void,
    pub prefix_len: usize,
    pub bearer_token: *const c_char,
    pub ca_file: *const c_char,
    pub insecure: c_int,
    pub connect_timeout_ms: i64,
    pub request_timeout_ms: i64,
    pub backoff_min_ms: i64,
    pub backoff_max_ms: i64,
    pub page_limit: u32,
    pub max_line_bytes: u64,
    pub max_list_bytes: u64,
    pub seed: u64,
    pub resources: c_int,
}

#[repr(C)]
#[derive(Default)]
pub struct wcache_k8s_stats {
    pub size: u32,
    pub synced: c_int,
    pub running: c_int,
    pub ended: c_int,
    pub last_error: c_int,
    pub revision: i64,
    pub list_revision: i64,
    pub lists: u64,
    pub relists: u64,
    pub connects: u64,
    pub reconnects: u64,
    pub errors: u64,
    pub lines: u64,
    pub bytes: u64,
    pub events: u64,
    pub bookmarks: u64,
    pub skipped: u64,
    pub relist_changes: u64,
}

extern "C" {
    pub fn wcache_strerror(code: c_int) -> *const c_char;
    pub fn wcache_version_number() -> c_uint;
    pub fn wcache_version_string() -> *const c_char;

    pub fn wcache_cache_create(
        out: *mut *mut wcache_cache,
        alloc: *const wcache_allocator,
    ) -> wcache_code;
    pub fn wcache_cache_set_param(c: *mut wcache_cache, p: wcache_param, value: i64)
        -> wcache_code;
    pub fn wcache_cache_get_param(
        c: *const wcache_cache,
        p: wcache_param,
        value: *mut i64,
    ) -> wcache_code;
    pub fn wcache_param_bounds(
        p: wcache_param,
        lo: *mut i64,
        hi: *mut i64,
        dflt: *mut i64,
    ) -> wcache_code;
    pub fn wcache_cache_set_log(
        c: *mut wcache_cache,
        fn_: wcache_log_fn,
        max_level: c_int,
        userdata: *mut c_void,
    ) -> wcache_code;
    pub fn wcache_cache_set_clock(
        c: *mut wcache_cache,
        fn_: wcache_clock_fn,
        userdata: *mut c_void,
    ) -> wcache_code;
    pub fn wcache_cache_set_errbuf(
        c: *mut wcache_cache,
        buf: *mut c_char,
        len: usize,
    ) -> wcache_code;
    pub fn wcache_cache_open(c: *mut wcache_cache) -> wcache_code;
    pub fn wcache_cache_close(c: *mut wcache_cache);
    pub fn wcache_cache_last_errno(c: *const wcache_cache) -> c_int;

    pub fn wcache_cache_revision(c: *const wcache_cache) -> i64;
    pub fn wcache_cache_compacted_revision(c: *const wcache_cache) -> i64;
    pub fn wcache_cache_compact(c: *mut wcache_cache, rev: i64) -> wcache_code;
    pub fn wcache_cache_stat(c: *const wcache_cache, st: *mut wcache_stat) -> wcache_code;

    pub fn wcache_ingest_put(
        c: *mut wcache_cache,
        key: *const c_void,
        key_len: usize,
        value: *const c_void,
        value_len: usize,
        rev: i64,
    ) -> wcache_code;
    pub fn wcache_ingest_delete(
        c: *mut wcache_cache,
        key: *const c_void,
        key_len: usize,
        rev: i64,
    ) -> wcache_code;
    pub fn wcache_ingest_progress(c: *mut wcache_cache, rev: i64) -> wcache_code;
    pub fn wcache_ingest_changes(
        c: *mut wcache_cache,
        ch: *const wcache_change,
        n: usize,
        applied: *mut usize,
    ) -> wcache_code;
    pub fn wcache_batch_create(c: *mut wcache_cache, out: *mut *mut wcache_batch) -> wcache_code;
    pub fn wcache_batch_free(b: *mut wcache_batch);
    pub fn wcache_batch_clear(b: *mut wcache_batch);
    pub fn wcache_batch_count(b: *const wcache_batch) -> usize;
    pub fn wcache_batch_put(
        b: *mut wcache_batch,
        key: *const c_void,
        key_len: usize,
        value: *const c_void,
        value_len: usize,
    ) -> wcache_code;
    pub fn wcache_batch_delete(
        b: *mut wcache_batch,
        key: *const c_void,
        key_len: usize,
    ) -> wcache_code;
    pub fn wcache_batch_put_meta(
        b: *mut wcache_batch,
        key: *const c_void,
        key_len: usize,
        value: *const c_void,
        value_len: usize,
        create_rev: i64,
        mod_rev: i64,
        version: i64,
    ) -> wcache_code;
    pub fn wcache_ingest_batch(
        c: *mut wcache_cache,
        b: *const wcache_batch,
        rev: i64,
    ) -> wcache_code;
    pub fn wcache_ingest_load(c: *mut wcache_cache, b: *mut wcache_batch, rev: i64) -> wcache_code;
    pub fn wcache_ingest_relist(
        c: *mut wcache_cache,
        b: *const wcache_batch,
        rev: i64,
    ) -> wcache_code;

    pub fn wcache_view_create(c: *mut wcache_cache, out: *mut *mut wcache_view) -> wcache_code;
    pub fn wcache_view_begin(v: *mut wcache_view, rev: i64) -> wcache_code;
    pub fn wcache_view_revision(v: *const wcache_view) -> i64;
    pub fn wcache_view_end(v: *mut wcache_view);
    pub fn wcache_view_free(v: *mut wcache_view);
    pub fn wcache_view_get(
        v: *mut wcache_view,
        key: *const c_void,
        key_len: usize,
        out: *mut wcache_kv,
    ) -> wcache_code;
    pub fn wcache_view_get_many(
        v: *mut wcache_view,
        keys: *const *const c_void,
        key_lens: *const usize,
        n: usize,
        out: *mut wcache_kv,
        codes: *mut wcache_code,
    ) -> wcache_code;
    pub fn wcache_view_list(
        v: *mut wcache_view,
        opts: *const wcache_list_opts,
        items: *mut wcache_kv,
        cap: usize,
        res: *mut wcache_list_result,
    ) -> wcache_code;
    pub fn wcache_view_count(
        v: *mut wcache_view,
        opts: *const wcache_list_opts,
        count: *mut u64,
    ) -> wcache_code;
    pub fn wcache_token_revision(
        token: *const c_char,
        token_len: usize,
        rev: *mut i64,
    ) -> wcache_code;

    pub fn wcache_watch_open(
        c: *mut wcache_cache,
        opts: *const wcache_watch_opts,
        out: *mut *mut wcache_watch,
    ) -> wcache_code;
    pub fn wcache_watch_next(
        w: *mut wcache_watch,
        evs: *mut wcache_watch_event,
        cap: usize,
        n: *mut usize,
    ) -> wcache_code;
    pub fn wcache_watch_next_borrowed(
        w: *mut wcache_watch,
        evs: *mut wcache_watch_event,
        cap: usize,
        n: *mut usize,
    ) -> wcache_code;
    pub fn wcache_watch_wait(
        w: *mut wcache_watch,
        evs: *mut wcache_watch_event,
        cap: usize,
        n: *mut usize,
        timeout_ms: i64,
    ) -> wcache_code;
    pub fn wcache_watch_fd(w: *const wcache_watch) -> c_int;
    pub fn wcache_watch_stop(w: *mut wcache_watch);
    pub fn wcache_watch_close(w: *mut wcache_watch);
    pub fn wcache_event_unref(ev: *mut wcache_event);
    pub fn wcache_watchset_create(
        c: *mut wcache_cache,
        out: *mut *mut wcache_watchset,
    ) -> wcache_code;
    pub fn wcache_watchset_add(
        s: *mut wcache_watchset,
        w: *mut wcache_watch,
        userdata: *mut c_void,
    ) -> wcache_code;
    pub fn wcache_watchset_remove(s: *mut wcache_watchset, w: *mut wcache_watch) -> wcache_code;
    pub fn wcache_watchset_fd(s: *const wcache_watchset) -> c_int;
    pub fn wcache_watchset_next(
        s: *mut wcache_watchset,
        w: *mut *mut wcache_watch,
        userdata: *mut *mut c_void,
    ) -> wcache_code;
    pub fn wcache_watchset_free(s: *mut wcache_watchset);

    pub fn wcache_cache_set_source(
        c: *mut wcache_cache,
        current: wcache_current_rev_fn,
        progress: wcache_progress_fn,
        userdata: *mut c_void,
    ) -> wcache_code;
    pub fn wcache_view_begin_fresh(
        v: *mut wcache_view,
        min_rev: i64,
        timeout_ms: i64,
    ) -> wcache_code;
    pub fn wcache_cache_wait_stat(c: *const wcache_cache, st: *mut wcache_wait_stat)
        -> wcache_code;

    pub fn wcache_cache_add_index(
        c: *mut wcache_cache,
        name: *const c_char,
        name_len: usize,
        fn_: wcache_index_fn,
        userdata: *mut c_void,
        id: *mut c_int,
    ) -> wcache_code;
    pub fn wcache_cache_add_index_json(
        c: *mut wcache_cache,
        name: *const c_char,
        name_len: usize,
        path: *const c_char,
        path_len: usize,
        id: *mut c_int,
    ) -> wcache_code;
    pub fn wcache_view_list_index(
        v: *mut wcache_view,
        id: c_int,
        value: *const c_void,
        value_len: usize,
        opts: *const wcache_list_opts,
        items: *mut wcache_kv,
        cap: usize,
        res: *mut wcache_list_result,
    ) -> wcache_code;
    pub fn wcache_view_count_index(
        v: *mut wcache_view,
        id: c_int,
        value: *const c_void,
        value_len: usize,
        count: *mut u64,
    ) -> wcache_code;
    pub fn wcache_cache_index_stat(
        c: *const wcache_cache,
        id: c_int,
        st: *mut wcache_index_stat,
    ) -> wcache_code;

    pub fn wcache_snapshot_write(
        c: *mut wcache_cache,
        path: *const c_char,
        opts: *const wcache_snapshot_write_opts,
        info: *mut wcache_snapshot_info,
    ) -> wcache_code;
    pub fn wcache_snapshot_write_to(
        c: *mut wcache_cache,
        sink: wcache_snap_sink_fn,
        sink_userdata: *mut c_void,
        opts: *const wcache_snapshot_write_opts,
        info: *mut wcache_snapshot_info,
    ) -> wcache_code;
    pub fn wcache_snapshot_prune(
        dir: *const c_char,
        name_prefix: *const c_char,
        keep: usize,
        removed: *mut usize,
    ) -> wcache_code;
    pub fn wcache_snapshot_open(
        out: *mut *mut wcache_snapshot,
        path: *const c_char,
        opts: *const wcache_snapshot_read_opts,
    ) -> wcache_code;
    pub fn wcache_snapshot_open_mem(
        out: *mut *mut wcache_snapshot,
        buf: *const c_void,
        len: usize,
        opts: *const wcache_snapshot_read_opts,
    ) -> wcache_code;
    pub fn wcache_snapshot_get_info(
        s: *const wcache_snapshot,
        info: *mut wcache_snapshot_info,
    ) -> wcache_code;
    pub fn wcache_snapshot_next(s: *mut wcache_snapshot, out: *mut wcache_kv) -> wcache_code;
    pub fn wcache_snapshot_verify(s: *mut wcache_snapshot) -> wcache_code;
    pub fn wcache_snapshot_close(s: *mut wcache_snapshot);
    pub fn wcache_snapshot_restore(
        c: *mut wcache_cache,
        path: *const c_char,
        opts: *const wcache_snapshot_read_opts,
        info: *mut wcache_snapshot_info,
    ) -> wcache_code;
    pub fn wcache_snapshot_restore_from(
        c: *mut wcache_cache,
        read: wcache_snap_source_fn,
        userdata: *mut c_void,
        opts: *const wcache_snapshot_read_opts,
        info: *mut wcache_snapshot_info,
    ) -> wcache_code;
    pub fn wcache_snapshot_tick(
        c: *mut wcache_cache,
        policy: *const wcache_snapshot_policy,
        st: *mut wcache_snapshot_state,
        now_ms: i64,
        written: *mut c_int,
    ) -> wcache_code;
    pub fn wcache_store_open(
        out: *mut *mut wcache_store,
        url: *const c_char,
        opts: *const wcache_store_opts,
    ) -> wcache_code;
    pub fn wcache_store_close(st: *mut wcache_store);
    pub fn wcache_store_upload_begin(
        st: *mut wcache_store,
        key: *const c_char,
        out: *mut *mut wcache_store_upload,
    ) -> wcache_code;
    pub fn wcache_store_upload_sink(buf: *const c_void, len: usize, upload: *mut c_void) -> c_int;
    pub fn wcache_store_upload_commit(
        up: *mut wcache_store_upload,
        obj: *mut wcache_store_object,
    ) -> wcache_code;
    pub fn wcache_store_upload_abort(up: *mut wcache_store_upload);
    pub fn wcache_store_put_file(
        st: *mut wcache_store,
        key: *const c_char,
        path: *const c_char,
        obj: *mut wcache_store_object,
    ) -> wcache_code;
    pub fn wcache_store_put_snapshot(
        st: *mut wcache_store,
        key: *const c_char,
        c: *mut wcache_cache,
        wopts: *const wcache_snapshot_write_opts,
        keep: usize,
        info: *mut wcache_snapshot_info,
    ) -> wcache_code;
    pub fn wcache_store_get(
        st: *mut wcache_store,
        key: *const c_char,
        sink: wcache_snap_sink_fn,
        sink_userdata: *mut c_void,
        obj: *mut wcache_store_object,
    ) -> wcache_code;
    pub fn wcache_store_get_file(
        st: *mut wcache_store,
        key: *const c_char,
        path: *const c_char,
        verify_snapshot: c_int,
        obj: *mut wcache_store_object,
    ) -> wcache_code;
    pub fn wcache_store_restore(
        st: *mut wcache_store,
        key: *const c_char,
        c: *mut wcache_cache,
        ropts: *const wcache_snapshot_read_opts,
        info: *mut wcache_snapshot_info,
    ) -> wcache_code;
    pub fn wcache_store_list(
        st: *mut wcache_store,
        prefix: *const c_char,
        fn_: wcache_store_list_fn,
        userdata: *mut c_void,
    ) -> wcache_code;
    pub fn wcache_store_delete(st: *mut wcache_store, key: *const c_char) -> wcache_code;
    pub fn wcache_store_snapshot_key(
        source_id: *const c_void,
        source_id_len: usize,
        revision: i64,
        out: *mut c_char,
        out_len: usize,
    ) -> wcache_code;
    pub fn wcache_store_newest(
        st: *mut wcache_store,
        source_id: *const c_void,
        source_id_len: usize,
        key: *mut c_char,
        key_len: usize,
        revision: *mut i64,
    ) -> wcache_code;
    pub fn wcache_store_retain(
        st: *mut wcache_store,
        source_id: *const c_void,
        source_id_len: usize,
        keep: usize,
        removed: *mut usize,
    ) -> wcache_code;
    pub fn wcache_k8s_create(
        out: *mut *mut wcache_k8s,
        c: *mut wcache_cache,
        opts: *const wcache_k8s_opts,
    ) -> wcache_code;
    pub fn wcache_k8s_start(src: *mut wcache_k8s) -> wcache_code;
    pub fn wcache_k8s_stop(src: *mut wcache_k8s) -> wcache_code;
    pub fn wcache_k8s_free(src: *mut wcache_k8s);
    pub fn wcache_k8s_stat(src: *const wcache_k8s, st: *mut wcache_k8s_stats) -> wcache_code;
    pub fn wcache_k8s_current_revision(src: *mut wcache_k8s, rev: *mut i64) -> wcache_code;
    pub fn wcache_k8s_source_id(src: *const wcache_k8s, len: *mut usize) -> *const c_char;
    pub fn wcache_k8s_synthetic_write(
        fd: c_int,
        seed: u64,
        resources: c_int,
        after_rev: i64,
        last_rev: *mut i64,
    ) -> wcache_code;
}
