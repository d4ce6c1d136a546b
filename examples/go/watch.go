package watchcache

/*
#include <stdlib.h>
#include <string.h>
#include <watchcache.h>

// The options are copied into C memory by the Go side (C.CBytes), so this
// only lays them out.
static wcache_code wcgo_watch_open(wcache_cache *c, int64_t start_rev, const void *prefix,
                                   size_t prefix_len, const void *start, size_t start_len,
                                   const void *end, size_t end_len, const char *selector,
                                   size_t selector_len, int initial, int prev,
                                   int64_t bookmark_ms, uint32_t queue, wcache_watch **out)
{
    wcache_watch_opts o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.start_revision = start_rev;
    o.prefix = prefix;
    o.prefix_len = prefix_len;
    o.start = start;
    o.start_len = start_len;
    o.end = end;
    o.end_len = end_len;
    o.label_selector = selector;
    o.label_selector_len = selector_len;
    o.initial_events = initial;
    o.prev_value = prev;
    o.bookmark_interval_ms = bookmark_ms;
    o.queue_size = queue;
    return wcache_watch_open(c, &o, out);
}

static void wcgo_unref_all(wcache_watch_event *evs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        wcache_event_unref(evs[i].ev);
}
*/
import "C"

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// EventType is the kind of a watch event.
type EventType int

// The event types of wcache_event_type.
const (
	Added      EventType = C.WCACHE_EV_ADDED
	Modified   EventType = C.WCACHE_EV_MODIFIED
	Deleted    EventType = C.WCACHE_EV_DELETED
	Bookmark   EventType = C.WCACHE_EV_BOOKMARK
	InitialEnd EventType = C.WCACHE_EV_INITIAL_END
)

func (t EventType) String() string {
	switch t {
	case Added:
		return "ADDED"
	case Modified:
		return "MODIFIED"
	case Deleted:
		return "DELETED"
	case Bookmark:
		return "BOOKMARK"
	case InitialEnd:
		return "INITIAL_END"
	}
	return "UNKNOWN"
}

// Event is one delivery, copied into Go memory.
type Event struct {
	Type     EventType
	Revision int64
	KV       KV  // the object; for Deleted its last state
	Prev     *KV // the previous object when PrevValue was asked and it exists
}

// WatchOptions select what a watch delivers; zero values are the defaults
// of wcache_watch_opts.
type WatchOptions struct {
	StartRevision      int64 // deliver events above it; 0: from now
	Prefix, Start, End string
	LabelSelector      string
	InitialEvents      bool
	PrevValue          bool
	BookmarkInterval   time.Duration
	QueueSize          uint32
	// ChannelSize is the capacity of Events (default 256).
	ChannelSize int
}

// batchSize is how many deliveries one wcache_watch_next call takes.
const batchSize = 128

// Watch is a subscription.  Its events arrive on Events(), which is closed
// when the watch ends; Err then says why (nil after Close).
type Watch struct {
	c      *Cache
	w      *C.wcache_watch
	f      *os.File // a dup of the watch fd, registered with Go's poller
	ch     chan Event
	done   chan struct{}
	exited chan struct{}
	cmem   []unsafe.Pointer
	evs    *C.wcache_watch_event
	bm     time.Duration

	once sync.Once
	mu   sync.Mutex
	err  error
}

// Watch opens a subscription.  Errors: ErrCompacted (StartRevision below
// the compacted revision), ErrFutureRevision, ErrInvalid (bad selector).
func (c *Cache) Watch(o WatchOptions) (*Watch, error) {
	w := &Watch{c: c, done: make(chan struct{}), exited: make(chan struct{}), bm: o.BookmarkInterval}
	cb := func(s string) (unsafe.Pointer, C.size_t) {
		if s == "" {
			return nil, 0
		}
		p := C.CBytes([]byte(s))
		w.cmem = append(w.cmem, p)
		return p, C.size_t(len(s))
	}
	pp, pl := cb(o.Prefix)
	sp, sl := cb(o.Start)
	ep, el := cb(o.End)
	lp, ll := cb(o.LabelSelector)
	b2i := func(b bool) C.int {
		if b {
			return 1
		}
		return 0
	}
	rc := C.wcgo_watch_open(c.c, C.int64_t(o.StartRevision), pp, pl, sp, sl, ep, el,
		(*C.char)(lp), ll, b2i(o.InitialEvents), b2i(o.PrevValue),
		C.int64_t(o.BookmarkInterval/time.Millisecond), C.uint32_t(o.QueueSize), &w.w)
	if rc != C.WCACHE_OK {
		w.freeMem()
		return nil, mkerr("watch open", rc)
	}
	fd, err := syscall.Dup(int(C.wcache_watch_fd(w.w)))
	if err != nil {
		C.wcache_watch_close(w.w)
		w.freeMem()
		return nil, &Error{Op: "watch dup fd", Code: ErrSys, Detail: err.Error()}
	}
	// The eventfd is non-blocking already, so os.NewFile registers the dup
	// with the runtime's poller: waiting for it parks the goroutine, not a
	// thread.  Only the dup is ever closed; it is never read.
	w.f = os.NewFile(uintptr(fd), "wcache-watch")
	n := o.ChannelSize
	if n <= 0 {
		n = 256
	}
	w.ch = make(chan Event, n)
	w.evs = (*C.wcache_watch_event)(C.calloc(batchSize, C.sizeof_wcache_watch_event))
	c.mu.Lock()
	c.watches[w] = struct{}{}
	c.mu.Unlock()
	go w.run()
	return w, nil
}

func (w *Watch) freeMem() {
	for _, p := range w.cmem {
		C.free(p)
	}
	w.cmem = nil
}

// Events is the channel of deliveries, closed when the watch ends.
func (w *Watch) Events() <-chan Event { return w.ch }

// Err is why the watch ended: ErrOverflow (the consumer fell behind; re-list),
// ErrCompacted, or nil when it was closed.  Valid once Events is closed.
func (w *Watch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// run drains the watch whenever its fd polls readable: one cgo call takes
// up to batchSize deliveries, one more releases them.
func (w *Watch) run() {
	defer close(w.exited)
	defer close(w.ch)
	rc, err := w.f.SyscallConn()
	if err != nil {
		w.setErr(err)
		return
	}
	var ended error
	for ended == nil {
		if w.bm > 0 {
			_ = w.f.SetReadDeadline(time.Now().Add(w.bm))
		}
		// Read resets the poller's readiness, then calls the function; it
		// returns false to park until the fd becomes readable again.  An
		// event arriving after the drain found nothing makes the fd readable
		// (an edge the poller records), so no wakeup is lost.
		err := rc.Read(func(uintptr) bool {
			ended = w.drain()
			return ended != nil
		})
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			ended = err
		}
		select {
		case <-w.done:
			return
		default:
		}
	}
	if !errors.Is(ended, ErrStopped) {
		w.setErr(ended)
	}
}

func (w *Watch) setErr(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// drain hands out everything queued; nil when the queue is empty and the
// watch goes on, the reason when it ended or Close was called.
func (w *Watch) drain() error {
	for {
		var n C.size_t
		rc := C.wcache_watch_next(w.w, w.evs, batchSize, &n)
		evs := unsafe.Slice(w.evs, int(n))
		out := make([]Event, len(evs))
		for i := range evs {
			out[i] = goEvent(&evs[i])
		}
		if n > 0 {
			C.wcgo_unref_all(w.evs, n)
		}
		for _, e := range out {
			select {
			case w.ch <- e:
			case <-w.done:
				return ErrStopped
			}
		}
		if rc != C.WCACHE_OK {
			return mkerr("watch", rc)
		}
		if n == 0 {
			return nil
		}
	}
}

func goEvent(e *C.wcache_watch_event) Event {
	ev := Event{Type: EventType(e._type), Revision: int64(e.revision)}
	if e.kv.key != nil {
		ev.KV = goKV(&e.kv)
	}
	if e.prev.key != nil {
		p := goKV(&e.prev)
		ev.Prev = &p
	}
	return ev
}

// Close ends the watch, waits for its goroutine and frees it.  Events is
// closed; a consumer still ranging over it sees the end.  Idempotent.
func (w *Watch) Close() {
	w.once.Do(func() {
		close(w.done)
		C.wcache_watch_stop(w.w) // wakes the fd
		<-w.exited
		C.wcache_watch_close(w.w)
		_ = w.f.Close()
		C.free(unsafe.Pointer(w.evs))
		w.freeMem()
		w.c.mu.Lock()
		delete(w.c.watches, w)
		w.c.mu.Unlock()
	})
	runtime.KeepAlive(w)
}
