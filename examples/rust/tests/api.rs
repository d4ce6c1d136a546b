use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use watchcache::*;

fn cache() -> Cache {
    Cache::with_options(&Options {
        retain_revisions: Some(1000),
        auto_compact: Some(false),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn put_get_at_revisions() {
    let c = cache();
    let mut w = c.writer().unwrap();
    assert_eq!(c.writer().err(), Some(Error::Busy), "one writer at a time");
    w.put(b"/pods/web", b"v1", 10).unwrap();
    w.put(b"/pods/web", b"v2", 11).unwrap();
    w.delete(b"/pods/web", 12).unwrap();
    {
        let v = c.view(10).unwrap();
        let kv = v.get(b"/pods/web").unwrap();
        assert_eq!((kv.value(), kv.version(), kv.create_revision()), (&b"v1"[..], 1, 10));
    }
    let mut v = c.view(11).unwrap();
    assert_eq!(v.get(b"/pods/web").unwrap().value(), b"v2");
    v.begin(REV_LATEST).unwrap();
    assert_eq!(v.get(b"/pods/web").err(), Some(Error::NotFound));
    assert_eq!(c.view(13).err(), Some(Error::Future));
    assert_eq!(w.put(b"/x", b"", 12), Err(Error::Order));
    assert_eq!(w.delete(b"/none", 20), Err(Error::NotFound));
    w.compact(11).unwrap();
    assert_eq!(c.view(10).err(), Some(Error::Compacted));
    assert_eq!((c.revision(), c.compacted_revision()), (12, 11));
    assert_eq!(Error::Compacted.to_string(), Error::from_code(4).unwrap().to_string());
    drop(w);
    assert!(c.writer().is_ok(), "the writer is free again");
}

#[test]
fn batch_all_or_nothing() {
    let c = cache();
    let mut w = c.writer().unwrap();
    let mut b = w.batch().unwrap();
    for i in 0..10 {
        b.put(format!("/k/{:02}", i).as_bytes(), &[i as u8]).unwrap();
    }
    assert_eq!(b.len(), 10);
    w.apply(&b, 5).unwrap();
    b.clear();
    b.put(b"/k/00", b"x").unwrap();
    b.put(b"/k/00", b"y").unwrap();
    assert_eq!(w.apply(&b, 6), Err(Error::Exist));
    assert!(!w.error_detail().is_empty());
    let st = c.stat().unwrap();
    assert_eq!((st.objects, st.revision), (10, 5));
}

#[test]
fn list_pages_and_iterator() {
    let c = cache();
    let mut w = c.writer().unwrap();
    for i in 0..25 {
        w.put(format!("/a/{:02}", i).as_bytes(), b"x", i + 1).unwrap();
    }
    w.put(b"/b/0", b"y", 26).unwrap();
    let v = c.view(20).unwrap();
    let o = ListOptions { prefix: b"/a/", ..Default::default() };
    let p = v.list(&o, 7).unwrap();
    assert!(p.more && p.items.len() == 7 && p.revision == 20);
    let tok = p.token.clone().unwrap();
    assert_eq!(token_revision(&tok), Ok(20));
    // The writer goes on; the view and its pages stay at 20.
    w.put(b"/a/zz", b"", 27).unwrap();
    let keys: Vec<Vec<u8>> = v.iter(&o, 7).map(|kv| kv.unwrap().key().to_vec()).collect();
    assert_eq!(keys.len(), 20);
    assert_eq!(keys[19], b"/a/19");
    let o2 = ListOptions { prefix: b"/b/", token: Some(&tok), ..Default::default() };
    assert_eq!(v.list(&o2, 5).err(), Some(Error::BadToken));
    let r =
        ListOptions { start: b"/a/10", end: b"/a/13", count_remaining: true, ..Default::default() };
    let p = v.list(&r, 2).unwrap();
    assert_eq!((p.items.len(), p.more, p.remaining), (2, true, 1));
    // Borrowed: items live as long as the view (not beyond: a compile error).
    assert_eq!(p.items[0].key(), b"/a/10");
}

#[test]
fn watch_events_and_stop() {
    let c = cache();
    let mut w = c.writer().unwrap();
    w.put(b"/w/a", b"1", 1).unwrap();
    let watch = c
        .watch(&WatchOptions {
            prefix: b"/w/".to_vec(),
            initial_events: true,
            prev_value: true,
            ..Default::default()
        })
        .unwrap();
    for i in 2..=100 {
        w.put(b"/w/a", i.to_string().as_bytes(), i).unwrap();
    }
    w.delete(b"/w/a", 101).unwrap();
    let mut got = Vec::new();
    while got.len() < 102 {
        let evs = watch.wait(Duration::from_secs(5)).unwrap();
        assert!(!evs.is_empty(), "timed out after {}", got.len());
        got.extend(evs);
    }
    assert_eq!(got[0].event_type(), EventType::Added);
    assert_eq!(got[1].event_type(), EventType::InitialEnd);
    assert_eq!(got[2].event_type(), EventType::Modified);
    assert_eq!(got[2].prev().unwrap().value(), b"1");
    assert_eq!(got[101].event_type(), EventType::Deleted);
    // Events own their reference: they may outlive the batch and move.
    let last = got.pop().unwrap();
    std::thread::spawn(move || assert_eq!(last.revision(), 101)).join().unwrap();
    // Another thread stops the watch while this one waits on it.
    let s = watch.stopper();
    std::thread::scope(|sc| {
        sc.spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            s.stop()
        });
        assert_eq!(watch.wait(Duration::from_secs(10)).err(), Some(Error::Stopped));
    });
    assert!(watch.fd() >= 0);
}

#[test]
fn watch_overflow() {
    let c = cache();
    let mut w = c.writer().unwrap();
    let watch = c.watch(&WatchOptions { queue_size: 4, ..Default::default() }).unwrap();
    for i in 1..=100 {
        w.put(b"/k", b"", i).unwrap();
    }
    let mut end = None;
    for _ in 0..100 {
        match watch.next_batch() {
            Ok(_) => continue,
            Err(e) => {
                end = Some(e);
                break;
            }
        }
    }
    assert_eq!(end, Some(Error::Overflow));
}

#[test]
fn snapshot_write_restore() {
    let c = cache();
    let mut w = c.writer().unwrap();
    for i in 0..100 {
        w.put(format!("/s/{:03}", i).as_bytes(), i.to_string().as_bytes(), i + 1).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("wcache-rust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.wcsnap");
    let info =
        c.snapshot_write(&path, &SnapshotOptions { revision: 50, ..Default::default() }).unwrap();
    assert_eq!((info.revision, info.objects), (50, 50));
    let d = cache();
    let mut dw = d.writer().unwrap();
    let info = dw.snapshot_restore(&path).unwrap();
    assert_eq!((info.revision, d.revision(), d.compacted_revision()), (50, 50, 50));
    assert_eq!(d.view(REV_LATEST).unwrap().get(b"/s/049").unwrap().value(), b"49");
    assert_eq!(dw.snapshot_restore(&path).err(), Some(Error::State));
    assert_eq!(
        cache().writer().unwrap().snapshot_restore(&dir.join("none")).err(),
        Some(Error::Sys)
    );
    // The same bytes as a stream, cut in odd chunks; cut short, broken.
    let bytes = std::fs::read(&path).unwrap();
    let e = cache();
    let mut ew = e.writer().unwrap();
    let info = ew.snapshot_restore_from(&mut Odd { b: &bytes, n: 0, fail: false }).unwrap();
    assert_eq!((info.revision, info.file_bytes, e.revision()), (50, bytes.len() as u64, 50));
    assert_eq!(e.view(REV_LATEST).unwrap().get(b"/s/049").unwrap().value(), b"49");
    let f = cache();
    let mut fw = f.writer().unwrap();
    let half = &bytes[..bytes.len() / 2];
    assert_eq!(
        fw.snapshot_restore_from(&mut Odd { b: half, n: 0, fail: false }).err(),
        Some(Error::Corrupt)
    );
    assert_eq!(
        fw.snapshot_restore_from(&mut Odd { b: half, n: 0, fail: true }).err(),
        Some(Error::Sys)
    );
    assert_eq!(f.revision(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A reader that hands out 1, 2, ... 97 bytes at a time, then fails or ends.
struct Odd<'a> {
    b: &'a [u8],
    n: usize,
    fail: bool,
}

impl std::io::Read for Odd<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.b.is_empty() && self.fail {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        }
        self.n += 1;
        let k = (self.n % 97 + 1).min(out.len()).min(self.b.len());
        out[..k].copy_from_slice(&self.b[..k]);
        self.b = &self.b[k..];
        Ok(k)
    }
}

/// Readers on many threads while one writer feeds; views move between
/// threads (Send) and every read is consistent with its revision.
#[test]
fn readers_vs_writer() {
    const KEYS: i64 = 64;
    let c =
        Cache::with_options(&Options { retain_revisions: Some(64), ..Default::default() }).unwrap();
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let mut w = c.writer().unwrap();
    for i in 0..KEYS {
        w.put(format!("/r/{:02}", i).as_bytes(), b"0", i + 1).unwrap();
    }
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<View<'_>>(4);
        for r in 0..6 {
            let tx = tx.clone();
            let (c, stop, rounds) = (&c, &stop, &rounds);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let v = c.view(REV_LATEST).unwrap();
                    let rev = v.revision();
                    let mut n = 0;
                    for kv in v.iter(&ListOptions { prefix: b"/r/", ..Default::default() }, 10) {
                        let kv = kv.unwrap();
                        assert!(kv.mod_revision() <= rev);
                        if kv.version() > 1 {
                            assert_eq!(kv.value(), kv.mod_revision().to_string().as_bytes());
                        }
                        n += 1;
                    }
                    assert_eq!(n, KEYS);
                    if r % 2 == 0 {
                        tx.send(v).unwrap(); // read and dropped on another thread
                    }
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        drop(tx);
        s.spawn(move || {
            for v in rx {
                assert!(v.get(b"/r/00").is_ok());
            }
        });
        // The writer moves to a thread of its own (Writer: Send).
        let stop = &stop;
        s.spawn(move || {
            let mut rev = KEYS;
            for i in 0..5000 {
                rev += 1;
                w.put(format!("/r/{:02}", i % KEYS).as_bytes(), rev.to_string().as_bytes(), rev)
                    .unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    assert!(rounds.load(Ordering::Relaxed) > 0);
    assert_eq!(c.revision(), KEYS + 5000);
}
