//! Safe Rust binding of libwatchcache, the embeddable revisioned watch
//! cache (include/watchcache.h, libwatchcache(3)).
//!
//! The C threads contract maps onto Rust's types:
//!
//! - [`Cache`] is `Send + Sync`: any number of threads read through it.
//!   Writes go through the one [`Writer`] a cache hands out at a time
//!   (`Send`, not `Sync`, methods on `&mut self`): the C rule "exactly one
//!   feed thread" is then checked by the compiler and by [`Cache::writer`].
//! - A [`View`] pins one revision.  It is `Send` (its pin belongs to the
//!   view, not to a thread) but not `Sync` (one thread at a time).  What it
//!   reads ([`Kv`]) borrows from it: the borrow checker enforces "valid
//!   until wcache_view_end()".
//! - [`Watch`] is `Send`, not `Sync`; its [`Event`]s own a reference each
//!   and are `Send + Sync`.
//! - Handles borrow their cache, so none can outlive it, and every handle
//!   is freed by `Drop`.
//!
//! Errors are [`Error`], an enum mirroring the C codes.
//!
//! ```
//! use watchcache::{Cache, Error, REV_LATEST};
//!
//! let cache = Cache::new().unwrap();
//! let mut w = cache.writer().unwrap();
//! w.put(b"/pods/web", b"v1", 10).unwrap();
//! w.put(b"/pods/web", b"v2", 11).unwrap();
//! let old = cache.view(10).unwrap();
//! assert_eq!(old.get(b"/pods/web").unwrap().value(), b"v1");
//! let now = cache.view(REV_LATEST).unwrap();
//! assert_eq!(now.get(b"/pods/web").unwrap().version(), 2);
//! assert_eq!(cache.view(12).err(), Some(Error::Future));
//! ```
//!
//! What the types forbid (each of these fails to compile):
//!
//! ```compile_fail
//! // A view is not Sync: two threads cannot read through one view at once.
//! fn is_sync<T: Sync>() {}
//! is_sync::<watchcache::View<'static>>();
//! ```
//!
//! ```compile_fail
//! // A read borrows its view: it cannot outlive it.
//! let cache = watchcache::Cache::new().unwrap();
//! let kv = {
//!     let v = cache.view(0).unwrap();
//!     v.get(b"k").unwrap()
//! };
//! ```
//!
//! ```compile_fail
//! // The writer is not Sync either, and ingest needs &mut.
//! fn is_sync<T: Sync>() {}
//! is_sync::<watchcache::Writer<'static>>();
//! ```
//!
//! ```compile_fail
//! // No handle outlives its cache.
//! let v = {
//!     let cache = watchcache::Cache::new().unwrap();
//!     cache.view(0).unwrap()
//! };
//! ```

pub mod sys;

use std::ffi::{CStr, CString};
use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Read at the latest revision the cache has applied.
pub const REV_LATEST: i64 = sys::WCACHE_REV_LATEST;

/// A libwatchcache status code other than `WCACHE_OK`, in the header's
/// order (append-only there, so here too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    Invalid,
    NoMemory,
    NotFound,
    Compacted,
    Future,
    TimedOut,
    NotReady,
    Stopped,
    Overflow,
    Order,
    Corrupt,
    Version,
    Zstd,
    Http,
    Curl,
    Sys,
    Recursive,
    Busy,
    State,
    BadToken,
    TooBig,
    Exist,
    NotSupported,
    /// A code this binding does not know (a newer library).
    Other(i32),
}

const ERRORS: [Error; 23] = [
    Error::Invalid,
    Error::NoMemory,
    Error::NotFound,
    Error::Compacted,
    Error::Future,
    Error::TimedOut,
    Error::NotReady,
    Error::Stopped,
    Error::Overflow,
    Error::Order,
    Error::Corrupt,
    Error::Version,
    Error::Zstd,
    Error::Http,
    Error::Curl,
    Error::Sys,
    Error::Recursive,
    Error::Busy,
    Error::State,
    Error::BadToken,
    Error::TooBig,
    Error::Exist,
    Error::NotSupported,
];

impl Error {
    /// The C code (`WCACHE_EINVAL` is 1, ...).
    pub fn code(self) -> i32 {
        match self {
            Error::Other(c) => c,
            e => ERRORS.iter().position(|x| *x == e).unwrap() as i32 + 1,
        }
    }

    /// The error of a C code; `None` for `WCACHE_OK`.
    pub fn from_code(code: i32) -> Option<Error> {
        match code {
            0 => None,
            c if c >= 1 && (c as usize) <= ERRORS.len() => Some(ERRORS[c as usize - 1]),
            c => Some(Error::Other(c)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: wcache_strerror returns a static NUL-terminated string.
        let s = unsafe { CStr::from_ptr(sys::wcache_strerror(self.code())) };
        f.write_str(&s.to_string_lossy())
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn rc(code: c_int) -> Result<()> {
    match Error::from_code(code) {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

fn ptr_len(b: &[u8]) -> (*const c_void, usize) {
    if b.is_empty() {
        (ptr::null(), 0)
    } else {
        (b.as_ptr().cast(), b.len())
    }
}

/// Parameters of a cache; `None` keeps the C default.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub retain_revisions: Option<i64>,
    pub retain_seconds: Option<i64>,
    pub auto_compact: Option<bool>,
    pub reader_slots: Option<i64>,
    pub max_key_bytes: Option<i64>,
    pub max_value_bytes: Option<i64>,
}

const ERRBUF: usize = 512;

/// One cache.  `Send + Sync`: reads from any thread; writes through its
/// [`Writer`].
pub struct Cache {
    c: NonNull<sys::wcache_cache>,
    writer_taken: AtomicBool,
    errbuf: Box<[u8; ERRBUF]>,
}

// SAFETY: the C contract: every call on &Cache here is "any thread";
// "writer" calls are only reachable through the single Writer.
unsafe impl Send for Cache {}
unsafe impl Sync for Cache {}

impl Cache {
    /// Create and open a cache with the default parameters.
    pub fn new() -> Result<Cache> {
        Cache::with_options(&Options::default())
    }

    /// Create a cache, set its parameters and open it.
    pub fn with_options(o: &Options) -> Result<Cache> {
        let mut raw = ptr::null_mut();
        // SAFETY: out-pointer to a local; NULL allocator means malloc.
        rc(unsafe { sys::wcache_cache_create(&mut raw, ptr::null()) })?;
        let mut c = Cache {
            c: NonNull::new(raw).ok_or(Error::NoMemory)?,
            writer_taken: AtomicBool::new(false),
            errbuf: Box::new([0; ERRBUF]),
        };
        let params = [
            (sys::WCACHE_P_RETAIN_REVISIONS, o.retain_revisions),
            (sys::WCACHE_P_RETAIN_SECONDS, o.retain_seconds),
            (sys::WCACHE_P_AUTO_COMPACT, o.auto_compact.map(i64::from)),
            (sys::WCACHE_P_READER_SLOTS, o.reader_slots),
            (sys::WCACHE_P_MAX_KEY_BYTES, o.max_key_bytes),
            (sys::WCACHE_P_MAX_VALUE_BYTES, o.max_value_bytes),
        ];
        for (p, v) in params {
            if let Some(v) = v {
                // SAFETY: configuration state, c exclusively ours.
                rc(unsafe { sys::wcache_cache_set_param(c.c.as_ptr(), p, v) })?;
            }
        }
        let buf = c.errbuf.as_mut_ptr().cast::<c_char>();
        // SAFETY: the buffer is boxed, so it stays put and outlives the cache.
        unsafe {
            rc(sys::wcache_cache_set_errbuf(c.c.as_ptr(), buf, ERRBUF))?;
            rc(sys::wcache_cache_open(c.c.as_ptr()))?;
        }
        Ok(c)
    }

    fn raw(&self) -> *mut sys::wcache_cache {
        self.c.as_ptr()
    }

    /// The cache's writer, the one handle that may ingest.  `Err(Busy)`
    /// while another is alive.
    pub fn writer(&self) -> Result<Writer<'_>> {
        if self.writer_taken.swap(true, Ordering::Acquire) {
            return Err(Error::Busy);
        }
        Ok(Writer { cache: self, _not_sync: PhantomData })
    }

    /// The latest revision applied.
    pub fn revision(&self) -> i64 {
        // SAFETY: any thread.
        unsafe { sys::wcache_cache_revision(self.raw()) }
    }

    /// The oldest readable revision.
    pub fn compacted_revision(&self) -> i64 {
        // SAFETY: any thread.
        unsafe { sys::wcache_cache_compacted_revision(self.raw()) }
    }

    /// The cache's counters.
    pub fn stat(&self) -> Result<sys::wcache_stat> {
        let mut st = sys::wcache_stat {
            size: std::mem::size_of::<sys::wcache_stat>() as u32,
            ..Default::default()
        };
        // SAFETY: any thread; st sized.
        rc(unsafe { sys::wcache_cache_stat(self.raw(), &mut st) })?;
        Ok(st)
    }

    /// A view pinned at `rev` ([`REV_LATEST`] for the latest).
    pub fn view(&self, rev: i64) -> Result<View<'_>> {
        let mut raw = ptr::null_mut();
        // SAFETY: any thread.
        rc(unsafe { sys::wcache_view_create(self.raw(), &mut raw) })?;
        let v = View {
            v: NonNull::new(raw).ok_or(Error::NoMemory)?,
            _cache: PhantomData,
            _not_sync: PhantomData,
        };
        v.begin_raw(rev)?;
        Ok(v)
    }

    /// Open a watch (see [`WatchOptions`]).
    pub fn watch(&self, o: &WatchOptions) -> Result<Watch<'_>> {
        Watch::open(self, o)
    }

    /// Write the cache at one revision to `path`, atomically
    /// (wcache_snapshot_write).  Any thread; ingest goes on meanwhile.
    pub fn snapshot_write(&self, path: &Path, o: &SnapshotOptions) -> Result<SnapshotInfo> {
        let cpath = cpath(path)?;
        // SAFETY: zeroed is a valid "all defaults" value of the C struct.
        let mut opts: sys::wcache_snapshot_write_opts = unsafe { std::mem::zeroed() };
        opts.size = std::mem::size_of_val(&opts) as u32;
        opts.revision = o.revision;
        opts.level = o.level;
        opts.workers = o.workers;
        let mut info = new_info();
        // SAFETY: any thread; every pointer is valid for the call.
        rc(unsafe { sys::wcache_snapshot_write(self.raw(), cpath.as_ptr(), &opts, &mut info) })?;
        Ok(SnapshotInfo::from(&info))
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Invalid)
}

fn new_info() -> sys::wcache_snapshot_info {
    // SAFETY: an all-zero info is valid (plain integers and a null pointer).
    let mut info: sys::wcache_snapshot_info = unsafe { std::mem::zeroed() };
    info.size = std::mem::size_of_val(&info) as u32;
    info
}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: every handle borrows the cache, so none is left.
        unsafe { sys::wcache_cache_close(self.raw()) }
    }
}

/// The one thread feeding a cache.  `Send` (hand it to the feed thread),
/// not `Sync`.
pub struct Writer<'c> {
    cache: &'c Cache,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl<'c> Writer<'c> {
    fn raw(&self) -> *mut sys::wcache_cache {
        self.cache.raw()
    }

    /// The detail text of the last failed call (which key of a batch...),
    /// empty when none.
    pub fn error_detail(&self) -> String {
        let b = &self.cache.errbuf[..];
        let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..n]).into_owned()
    }

    /// Put `key` = `value` at revision `rev` (above the current one).
    pub fn put(&mut self, key: &[u8], value: &[u8], rev: i64) -> Result<()> {
        let (k, kl) = ptr_len(key);
        let (v, vl) = ptr_len(value);
        // SAFETY: writer; the bytes are copied.
        rc(unsafe { sys::wcache_ingest_put(self.raw(), k, kl, v, vl, rev) })
    }

    /// Delete `key` at `rev`; `Err(NotFound)` when it is not live.
    pub fn delete(&mut self, key: &[u8], rev: i64) -> Result<()> {
        let (k, kl) = ptr_len(key);
        // SAFETY: writer.
        rc(unsafe { sys::wcache_ingest_delete(self.raw(), k, kl, rev) })
    }

    /// Advance the revision without a change (a bookmark).
    pub fn progress(&mut self, rev: i64) -> Result<()> {
        // SAFETY: writer.
        rc(unsafe { sys::wcache_ingest_progress(self.raw(), rev) })
    }

    /// Make revisions below `rev` unreadable.
    pub fn compact(&mut self, rev: i64) -> Result<()> {
        // SAFETY: writer.
        rc(unsafe { sys::wcache_cache_compact(self.raw(), rev) })
    }

    /// An empty batch.
    pub fn batch(&self) -> Result<Batch<'c>> {
        let mut raw = ptr::null_mut();
        // SAFETY: any thread.
        rc(unsafe { sys::wcache_batch_create(self.raw(), &mut raw) })?;
        Ok(Batch { b: NonNull::new(raw).ok_or(Error::NoMemory)?, _cache: PhantomData })
    }

    /// Apply every operation of `b` at `rev`, all or nothing.
    pub fn apply(&mut self, b: &Batch<'c>, rev: i64) -> Result<()> {
        // SAFETY: writer; b is ours.
        rc(unsafe { sys::wcache_ingest_batch(self.raw(), b.b.as_ptr(), rev) })
    }

    /// Restore the snapshot at `path` into the (empty) cache.
    pub fn snapshot_restore(&mut self, path: &Path) -> Result<SnapshotInfo> {
        let cpath = cpath(path)?;
        let mut info = new_info();
        // SAFETY: writer; NULL opts are the defaults.
        rc(unsafe {
            sys::wcache_snapshot_restore(self.raw(), cpath.as_ptr(), ptr::null(), &mut info)
        })?;
        Ok(SnapshotInfo::from(&info))
    }

    /// Restore a full snapshot read from `r` (a download, a pipe, a socket)
    /// into the (empty) cache, with every check of `snapshot_restore`: the
    /// cache changes only after the whole stream, its trailer and
    /// whole-file checksum have verified, and stays as it was on any error.
    /// `r` is read on a thread of the library's own, one read at a time,
    /// never after the call returns (hence `Send`); memory stays a few
    /// blocks beside the cache.  An error of `r` is `Error::Sys`; a panic
    /// in it fails the restore and is resumed here.
    pub fn snapshot_restore_from<R: Read + Send>(&mut self, r: &mut R) -> Result<SnapshotInfo> {
        let mut src = Source { r, buf: vec![0; 64 << 10], panic: None };
        let mut info = new_info();
        // SAFETY: writer; src outlives the call and the callback is never
        // called after it returns.
        let code = unsafe {
            sys::wcache_snapshot_restore_from(
                self.raw(),
                Some(read_source::<R>),
                (&mut src as *mut Source<R>).cast(),
                ptr::null(),
                &mut info,
            )
        };
        if let Some(p) = src.panic {
            std::panic::resume_unwind(p);
        }
        rc(code)?;
        Ok(SnapshotInfo::from(&info))
    }
}

/// What the read callback of `snapshot_restore_from` reaches: the reader
/// and a buffer of its own (the C buffer may be uninitialised, which a
/// `&mut [u8]` must not be).
struct Source<'r, R> {
    r: &'r mut R,
    buf: Vec<u8>,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

unsafe extern "C" fn read_source<R: Read>(
    buf: *mut c_void,
    cap: usize,
    got: *mut usize,
    ud: *mut c_void,
) -> c_int {
    // SAFETY: ud is the Source that snapshot_restore_from passed, alive
    // and used by one call at a time.
    let s = &mut *(ud as *mut Source<R>);
    let want = cap.min(s.buf.len());
    loop {
        let (r, b) = (&mut *s.r, &mut s.buf[..want]);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.read(b))) {
            Ok(Ok(n)) => {
                // SAFETY: buf has room for cap >= want >= n bytes.
                ptr::copy_nonoverlapping(s.buf.as_ptr(), buf.cast::<u8>(), n);
                *got = n;
                return sys::WCACHE_OK;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(Err(_)) => return Error::Sys.code(),
            Err(p) => {
                s.panic = Some(p);
                return Error::Sys.code();
            }
        }
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        self.cache.writer_taken.store(false, Ordering::Release);
    }
}

/// A set of writes applied at one revision.  `Send`, not `Sync`.
pub struct Batch<'c> {
    b: NonNull<sys::wcache_batch>,
    _cache: PhantomData<(&'c Cache, std::cell::Cell<()>)>,
}

// SAFETY: a batch is used by one thread at a time and may move.
unsafe impl Send for Batch<'_> {}

impl Batch<'_> {
    /// Add a put (bytes copied).
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let (k, kl) = ptr_len(key);
        let (v, vl) = ptr_len(value);
        // SAFETY: the batch's thread.
        rc(unsafe { sys::wcache_batch_put(self.b.as_ptr(), k, kl, v, vl) })
    }

    /// Add a delete.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        let (k, kl) = ptr_len(key);
        // SAFETY: the batch's thread.
        rc(unsafe { sys::wcache_batch_delete(self.b.as_ptr(), k, kl) })
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        // SAFETY: the batch's thread.
        unsafe { sys::wcache_batch_count(self.b.as_ptr()) }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empty it for reuse.
    pub fn clear(&mut self) {
        // SAFETY: the batch's thread.
        unsafe { sys::wcache_batch_clear(self.b.as_ptr()) }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // SAFETY: ours, freed once.
        unsafe { sys::wcache_batch_free(self.b.as_ptr()) }
    }
}

/// A read view pinned at one revision.  `Send`, not `Sync`.
pub struct View<'c> {
    v: NonNull<sys::wcache_view>,
    _cache: PhantomData<&'c Cache>,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: "the pin belongs to the view, not the thread": a view may move.
unsafe impl Send for View<'_> {}

/// One object read through a view; its bytes borrow the view.
#[derive(Clone, Copy)]
pub struct Kv<'v> {
    raw: sys::wcache_kv,
    _view: PhantomData<&'v ()>,
}

// SAFETY: the bytes are immutable and pinned while 'v lasts.
unsafe impl Send for Kv<'_> {}
unsafe impl Sync for Kv<'_> {}

fn slice<'a>(p: *const c_void, n: usize) -> &'a [u8] {
    if n == 0 {
        &[]
    } else {
        // SAFETY: the caller ties 'a to the memory's owner (view or event).
        unsafe { std::slice::from_raw_parts(p.cast(), n) }
    }
}

impl<'v> Kv<'v> {
    pub fn key(&self) -> &'v [u8] {
        slice(self.raw.key, self.raw.key_len)
    }
    pub fn value(&self) -> &'v [u8] {
        slice(self.raw.value, self.raw.value_len)
    }
    pub fn create_revision(&self) -> i64 {
        self.raw.create_revision
    }
    pub fn mod_revision(&self) -> i64 {
        self.raw.mod_revision
    }
    pub fn version(&self) -> i64 {
        self.raw.version
    }
}

impl fmt::Debug for Kv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kv")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value_len", &self.raw.value_len)
            .field("mod_revision", &self.raw.mod_revision)
            .field("version", &self.raw.version)
            .finish()
    }
}

/// Which keys a LIST reads: a prefix, or the range [start, end) (empty:
/// unbounded).
#[derive(Debug, Clone, Default)]
pub struct ListOptions<'a> {
    pub prefix: &'a [u8],
    pub start: &'a [u8],
    pub end: &'a [u8],
    /// Resume after this token's key (from [`Page::token`]).
    pub token: Option<&'a str>,
    pub count_remaining: bool,
}

/// One page of a LIST.
#[derive(Debug)]
pub struct Page<'v> {
    pub items: Vec<Kv<'v>>,
    pub more: bool,
    pub remaining: i64,
    pub revision: i64,
    /// The continue token when `more`.
    pub token: Option<String>,
}

impl<'c> View<'c> {
    fn begin_raw(&self, rev: i64) -> Result<()> {
        // SAFETY: the view's thread (self is !Sync).
        rc(unsafe { sys::wcache_view_begin(self.v.as_ptr(), rev) })
    }

    /// Re-pin at `rev`.  `&mut`: nothing read before may be alive.
    pub fn begin(&mut self, rev: i64) -> Result<()> {
        self.begin_raw(rev)
    }

    /// The C handle, for calls this binding does not wrap.  It stays owned
    /// by the view; the C rules of wcache_view apply to its use.
    pub fn as_ptr(&self) -> *mut sys::wcache_view {
        self.v.as_ptr()
    }

    /// The revision the view is pinned at.
    pub fn revision(&self) -> i64 {
        // SAFETY: the view's thread.
        unsafe { sys::wcache_view_revision(self.v.as_ptr()) }
    }

    /// Read `key`; `Err(NotFound)` when absent.  Nothing is copied.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Result<Kv<'_>> {
        let (k, kl) = ptr_len(key);
        let mut raw = std::mem::MaybeUninit::<sys::wcache_kv>::uninit();
        // SAFETY: the view's thread; raw is written on success.
        rc(unsafe { sys::wcache_view_get(self.v.as_ptr(), k, kl, raw.as_mut_ptr()) })?;
        // SAFETY: initialised by the successful call.
        Ok(Kv { raw: unsafe { raw.assume_init() }, _view: PhantomData })
    }

    /// One page of at most `limit` items (>= 1).
    pub fn list(&self, o: &ListOptions<'_>, limit: usize) -> Result<Page<'_>> {
        let mut items: Vec<sys::wcache_kv> = Vec::with_capacity(limit.max(1));
        let (opts, _keep) = list_opts(o);
        // SAFETY: an all-zero result is valid.
        let mut res: sys::wcache_list_result = unsafe { std::mem::zeroed() };
        res.size = std::mem::size_of_val(&res) as u32;
        // SAFETY: items has room for `limit`; the view's thread.
        rc(unsafe {
            sys::wcache_view_list(
                self.v.as_ptr(),
                &opts,
                items.as_mut_ptr(),
                limit.max(1),
                &mut res,
            )
        })?;
        // SAFETY: the call wrote res.count items.
        unsafe { items.set_len(res.count) };
        let token = if res.more != 0 && !res.token.is_null() {
            Some(String::from_utf8_lossy(slice(res.token.cast(), res.token_len)).into_owned())
        } else {
            None
        };
        Ok(Page {
            items: items.into_iter().map(|raw| Kv { raw, _view: PhantomData }).collect(),
            more: res.more != 0,
            remaining: res.remaining,
            revision: res.revision,
            token,
        })
    }

    /// Every key of the range, fetched `page` at a time: an iterator.
    pub fn iter<'v>(&'v self, o: &ListOptions<'v>, page: usize) -> ListIter<'v, 'c> {
        ListIter {
            view: self,
            opts: o.clone(),
            page,
            buf: Vec::new().into_iter(),
            token: None,
            done: false,
        }
    }
}

/// The C options of a LIST; the token's bytes are borrowed from `o`.
fn list_opts(o: &ListOptions<'_>) -> (sys::wcache_list_opts, ()) {
    let (p, pl) = ptr_len(o.prefix);
    let (s, sl) = ptr_len(o.start);
    let (e, el) = ptr_len(o.end);
    let (t, tl) = match o.token {
        Some(t) => (t.as_ptr().cast::<c_char>(), t.len()),
        None => (ptr::null(), 0),
    };
    (
        sys::wcache_list_opts {
            size: std::mem::size_of::<sys::wcache_list_opts>() as u32,
            start: s,
            start_len: sl,
            end: e,
            end_len: el,
            prefix: p,
            prefix_len: pl,
            token: t,
            token_len: tl,
            count_remaining: o.count_remaining as c_int,
        },
        (),
    )
}

impl Drop for View<'_> {
    fn drop(&mut self) {
        // SAFETY: ours; every Kv borrowing it is gone.
        unsafe { sys::wcache_view_free(self.v.as_ptr()) }
    }
}

/// Pages through a LIST with continue tokens (see [`View::iter`]).
pub struct ListIter<'v, 'c> {
    view: &'v View<'c>,
    opts: ListOptions<'v>,
    page: usize,
    buf: std::vec::IntoIter<Kv<'v>>,
    token: Option<String>,
    done: bool,
}

impl<'v> Iterator for ListIter<'v, '_> {
    type Item = Result<Kv<'v>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(kv) = self.buf.next() {
                return Some(Ok(kv));
            }
            if self.done {
                return None;
            }
            let mut o = self.opts.clone();
            o.token = self.token.as_deref();
            let r = self.view.list(&o, self.page);
            match r {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(p) => {
                    self.done = !p.more;
                    self.token = p.token;
                    self.buf = p.items.into_iter();
                }
            }
        }
    }
}

/// The revision a continue token was issued at.
pub fn token_revision(token: &str) -> Result<i64> {
    let mut rev = 0;
    // SAFETY: any thread.
    rc(unsafe { sys::wcache_token_revision(token.as_ptr().cast(), token.len(), &mut rev) })?;
    Ok(rev)
}

/// What a snapshot write takes; zeros are the C defaults.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    pub revision: i64,
    pub level: i32,
    pub workers: i32,
}

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub revision: i64,
    pub compacted_revision: i64,
    pub objects: u64,
    pub file_bytes: u64,
}

impl From<&sys::wcache_snapshot_info> for SnapshotInfo {
    fn from(i: &sys::wcache_snapshot_info) -> Self {
        SnapshotInfo {
            revision: i.revision,
            compacted_revision: i.compacted_revision,
            objects: i.objects,
            file_bytes: i.file_bytes,
        }
    }
}

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    InitialEnd,
    Other(i32),
}

/// Which changes a watch delivers; defaults as in wcache_watch_opts.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    pub start_revision: i64,
    pub prefix: Vec<u8>,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub label_selector: String,
    pub initial_events: bool,
    pub prev_value: bool,
    pub bookmark_interval: Option<Duration>,
    pub queue_size: u32,
}

/// A subscription.  `Send`, not `Sync`.
pub struct Watch<'c> {
    w: NonNull<sys::wcache_watch>,
    // Scratch for wcache_watch_next; a RefCell since the reads take &self
    // (so that a Stopper can borrow the watch meanwhile); Watch is !Sync.
    evs: std::cell::RefCell<Vec<sys::wcache_watch_event>>,
    _cache: PhantomData<(&'c Cache, std::cell::Cell<()>)>,
}

// SAFETY: one thread at a time, may move.
unsafe impl Send for Watch<'_> {}

/// One delivery; holds a reference to the shared event (released on drop).
pub struct Event {
    raw: sys::wcache_watch_event,
}

// SAFETY: events are immutable and refcounted; unref is any thread.
unsafe impl Send for Event {}
unsafe impl Sync for Event {}

impl Event {
    pub fn event_type(&self) -> EventType {
        match self.raw.type_ {
            sys::WCACHE_EV_ADDED => EventType::Added,
            sys::WCACHE_EV_MODIFIED => EventType::Modified,
            sys::WCACHE_EV_DELETED => EventType::Deleted,
            sys::WCACHE_EV_BOOKMARK => EventType::Bookmark,
            sys::WCACHE_EV_INITIAL_END => EventType::InitialEnd,
            t => EventType::Other(t),
        }
    }
    pub fn revision(&self) -> i64 {
        self.raw.revision
    }
    /// The object (for Deleted its last state), borrowed from the event.
    pub fn kv(&self) -> Kv<'_> {
        Kv { raw: self.raw.kv, _view: PhantomData }
    }
    /// The previous object when asked for and present.
    pub fn prev(&self) -> Option<Kv<'_>> {
        if self.raw.prev.key.is_null() {
            None
        } else {
            Some(Kv { raw: self.raw.prev, _view: PhantomData })
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: the reference this delivery holds, released once.
        unsafe { sys::wcache_event_unref(self.raw.ev) }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Event({:?} @{} {:?})",
            self.event_type(),
            self.revision(),
            String::from_utf8_lossy(self.kv().key())
        )
    }
}

/// Ends a watch from any thread (wcache_watch_stop).
#[derive(Clone, Copy)]
pub struct Stopper<'w> {
    w: NonNull<sys::wcache_watch>,
    _watch: PhantomData<&'w ()>,
}

// SAFETY: wcache_watch_stop is "any thread"; the lifetime keeps the watch open.
unsafe impl Send for Stopper<'_> {}
unsafe impl Sync for Stopper<'_> {}

impl Stopper<'_> {
    pub fn stop(&self) {
        // SAFETY: any thread, the watch is alive for 'w.
        unsafe { sys::wcache_watch_stop(self.w.as_ptr()) }
    }
}

const WATCH_BATCH: usize = 128;

impl<'c> Watch<'c> {
    fn open(cache: &'c Cache, o: &WatchOptions) -> Result<Self> {
        // SAFETY: zeroed options are the defaults.
        let mut opts: sys::wcache_watch_opts = unsafe { std::mem::zeroed() };
        opts.size = std::mem::size_of_val(&opts) as u32;
        opts.start_revision = o.start_revision;
        (opts.prefix, opts.prefix_len) = ptr_len(&o.prefix);
        (opts.start, opts.start_len) = ptr_len(&o.start);
        (opts.end, opts.end_len) = ptr_len(&o.end);
        let (l, ll) = ptr_len(o.label_selector.as_bytes());
        opts.label_selector = l.cast();
        opts.label_selector_len = ll;
        opts.initial_events = o.initial_events as c_int;
        opts.prev_value = o.prev_value as c_int;
        opts.bookmark_interval_ms = o.bookmark_interval.map_or(0, |d| d.as_millis() as i64);
        opts.queue_size = o.queue_size;
        let mut raw = ptr::null_mut();
        // SAFETY: any thread; the options are copied by the open.
        rc(unsafe { sys::wcache_watch_open(cache.raw(), &opts, &mut raw) })?;
        Ok(Watch {
            w: NonNull::new(raw).ok_or(Error::NoMemory)?,
            evs: std::cell::RefCell::new(Vec::with_capacity(WATCH_BATCH)),
            _cache: PhantomData,
        })
    }

    /// The fd that polls readable when [`Watch::next_batch`] may have
    /// something (do not read or close it).  Made by the first call; -1
    /// when no fd could be made (errno, e.g. EMFILE), and the watch may
    /// ask again.
    pub fn fd(&self) -> i32 {
        // SAFETY: any thread.
        unsafe { sys::wcache_watch_fd(self.w.as_ptr()) }
    }

    /// A handle that stops the watch from another thread.
    pub fn stopper(&self) -> Stopper<'_> {
        Stopper { w: self.w, _watch: PhantomData }
    }

    fn take(&self, timeout: Option<Duration>) -> Result<Vec<Event>> {
        let mut n = 0usize;
        let w = self.w.as_ptr();
        let mut buf = self.evs.borrow_mut();
        let evs = buf.as_mut_ptr();
        // SAFETY: the watch's thread (&mut self); evs has WATCH_BATCH room.
        let code = unsafe {
            match timeout {
                None => sys::wcache_watch_next(w, evs, WATCH_BATCH, &mut n),
                Some(t) => {
                    sys::wcache_watch_wait(w, evs, WATCH_BATCH, &mut n, t.as_millis() as i64)
                }
            }
        };
        // SAFETY: n deliveries were written; each becomes an owning Event.
        let out = (0..n).map(|i| Event { raw: unsafe { *evs.add(i) } }).collect::<Vec<_>>();
        match rc(code) {
            Err(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// Up to 128 deliveries without blocking (empty when none is ready).
    /// Once the watch has ended and its queue is drained, the reason:
    /// `Overflow`, `Compacted`, `Stopped`.
    pub fn next_batch(&self) -> Result<Vec<Event>> {
        self.take(None)
    }

    /// As `next_batch`, waiting up to `timeout` for one delivery.
    pub fn wait(&self, timeout: Duration) -> Result<Vec<Event>> {
        self.take(Some(timeout))
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        // SAFETY: ours; no Stopper outlives the borrow of self.
        unsafe { sys::wcache_watch_close(self.w.as_ptr()) }
    }
}

/// The library's version string.
pub fn version() -> &'static str {
    // SAFETY: static storage.
    unsafe { CStr::from_ptr(sys::wcache_version_string()) }.to_str().unwrap_or("?")
}
