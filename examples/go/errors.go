package watchcache

/*
#include <watchcache.h>
*/
import "C"

import "fmt"

// Code is a libwatchcache status code (enum wcache_code).  The exported
// values are sentinels for errors.Is: every error this package returns for
// a failed C call is an *Error whose Unwrap gives its Code.
type Code int

// The codes of watchcache.h, in its order (append-only there, so here too).
const (
	ErrInvalid        Code = C.WCACHE_EINVAL
	ErrNoMemory       Code = C.WCACHE_ENOMEM
	ErrNotFound       Code = C.WCACHE_ENOTFOUND
	ErrCompacted      Code = C.WCACHE_ECOMPACTED
	ErrFutureRevision Code = C.WCACHE_EFUTURE
	ErrTimedOut       Code = C.WCACHE_ETIMEDOUT
	ErrNotReady       Code = C.WCACHE_ENOTREADY
	ErrStopped        Code = C.WCACHE_ESTOPPED
	ErrOverflow       Code = C.WCACHE_EOVERFLOW
	ErrOrder          Code = C.WCACHE_EORDER
	ErrCorrupt        Code = C.WCACHE_ECORRUPT
	ErrVersion        Code = C.WCACHE_EVERSION
	ErrZstd           Code = C.WCACHE_EZSTD
	ErrHTTP           Code = C.WCACHE_EHTTP
	ErrCurl           Code = C.WCACHE_ECURL
	ErrSys            Code = C.WCACHE_ESYS
	ErrRecursive      Code = C.WCACHE_ERECURSIVE
	ErrBusy           Code = C.WCACHE_EBUSY
	ErrState          Code = C.WCACHE_ESTATE
	ErrBadToken       Code = C.WCACHE_EBADTOKEN
	ErrTooBig         Code = C.WCACHE_ETOOBIG
	ErrExist          Code = C.WCACHE_EEXIST
	ErrNotSupported   Code = C.WCACHE_ENOTSUP
)

// Error is wcache_strerror's text.
func (c Code) Error() string { return C.GoString(C.wcache_strerror(C.int(c))) }

// Error is a failed call: the operation, its code and, for writer calls and
// snapshots, the library's detail text.
type Error struct {
	Op     string // "put", "view begin", ...
	Code   Code
	Detail string // the cache's errbuf, when the call fills one
}

func (e *Error) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("watchcache: %s: %s (%s)", e.Op, e.Code.Error(), e.Detail)
	}
	return fmt.Sprintf("watchcache: %s: %s", e.Op, e.Code.Error())
}

// Unwrap makes errors.Is(err, ErrCompacted) and the like work.
func (e *Error) Unwrap() error { return e.Code }

func mkerr(op string, rc C.wcache_code) error {
	if rc == C.WCACHE_OK {
		return nil
	}
	return &Error{Op: op, Code: Code(rc)}
}
