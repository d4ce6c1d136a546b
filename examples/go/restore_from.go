package watchcache

/*
#include <stdint.h>
#include <stdlib.h>
#include <watchcache.h>

wcache_code wcgo_snapshot_restore_from(wcache_cache *c, uintptr_t handle,
                                       wcache_snapshot_info *info, char *errbuf,
                                       size_t errbuf_len);
*/
import "C"

import (
	"errors"
	"io"
	"runtime/cgo"
	"unsafe"
)

// streamSrc is what the C read callback reaches through a cgo.Handle: the
// reader, and the first error it gave that was not io.EOF.
type streamSrc struct {
	r   io.Reader
	err error
}

//export wcgoStreamRead
func wcgoStreamRead(buf unsafe.Pointer, capacity C.size_t, got *C.size_t, h C.uintptr_t) C.int {
	s := cgo.Handle(h).Value().(*streamSrc)
	p := unsafe.Slice((*byte)(buf), int(capacity))
	// io.Reader may return 0, nil: ask again; the C side wants bytes or the
	// end.
	for empty := 0; ; empty++ {
		n, err := s.r.Read(p)
		if n > 0 {
			*got = C.size_t(n)
			return C.WCACHE_OK
		}
		if errors.Is(err, io.EOF) {
			*got = 0
			return C.WCACHE_OK
		}
		if err != nil {
			s.err = err
			return C.WCACHE_ESYS
		}
		if empty == 100 {
			s.err = io.ErrNoProgress
			return C.WCACHE_ESYS
		}
	}
}

// SnapshotRestoreFrom loads a full snapshot read from r (a download, a
// pipe, a socket) into the cache, which must be empty, with every check of
// SnapshotRestore: the cache changes only after the whole stream, its
// trailer and whole-file checksum have verified, and is left as it was by
// any error.  r is read from a thread of the library's own (one Read at a
// time) and never after the call returns; memory stays a few blocks beside
// the cache, whatever the stream's size.  An error of r itself comes back
// as an *Error with Code ErrSys that wraps it.  A writer call.
func (c *Cache) SnapshotRestoreFrom(r io.Reader) (SnapshotInfo, error) {
	src := &streamSrc{r: r}
	h := cgo.NewHandle(src)
	defer h.Delete()
	eb := (*C.char)(C.calloc(errbufSize, 1))
	defer C.free(unsafe.Pointer(eb))
	var info C.wcache_snapshot_info
	c.wmu.Lock()
	rc := C.wcgo_snapshot_restore_from(c.c, C.uintptr_t(h), &info, eb, errbufSize)
	c.wmu.Unlock()
	if rc != C.WCACHE_OK {
		e := &Error{Op: "snapshot restore from", Code: Code(rc), Detail: C.GoString(eb)}
		if src.err != nil {
			return SnapshotInfo{}, &readError{e, src.err}
		}
		return SnapshotInfo{}, e
	}
	return goInfo(&info), nil
}

// readError is a restore that failed because its reader did: errors.Is
// finds both the code and the reader's own error.
type readError struct {
	lib   *Error
	cause error
}

func (e *readError) Error() string { return e.lib.Error() + ": " + e.cause.Error() }

// Is matches the code (ErrSys); Unwrap leads on to the reader's error.
func (e *readError) Is(target error) bool { return errors.Is(e.lib, target) }
func (e *readError) Unwrap() error        { return e.cause }

// As gives the library's *Error, as for every other failed call.
func (e *readError) As(target interface{}) bool {
	if p, ok := target.(**Error); ok {
		*p = e.lib
		return true
	}
	return false
}
