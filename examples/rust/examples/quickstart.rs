//! The README's Rust example: `cargo run --offline --example quickstart`.
use std::time::Duration;
use watchcache::{Cache, Error, ListOptions, WatchOptions, REV_LATEST};

fn main() -> Result<(), Error> {
    let cache = Cache::new()?;
    let watch = cache.watch(&WatchOptions { prefix: b"/pods/".to_vec(), ..Default::default() })?;
    let mut w = cache.writer()?; // the one writer; reads need only &cache
    w.put(b"/pods/web", b"v1", 10)?;
    w.put(b"/pods/db", b"v1", 11)?;
    w.put(b"/pods/web", b"v2", 12)?;

    let old = cache.view(10)?; // pinned at revision 10
    let kv = old.get(b"/pods/web")?; // borrowed from `old`: no copy
    println!("rev 10: {}", String::from_utf8_lossy(kv.value()));
    let now = cache.view(REV_LATEST)?;
    for kv in now.iter(&ListOptions { prefix: b"/pods/", ..Default::default() }, 1) {
        let kv = kv?; // pages of one, with continue tokens
        println!("{} version {}", String::from_utf8_lossy(kv.key()), kv.version());
    }
    for ev in watch.wait(Duration::from_secs(1))? {
        println!("{:?} {}", ev.event_type(), ev.revision());
    }
    assert_eq!(cache.view(13).err(), Some(Error::Future));
    Ok(())
}
