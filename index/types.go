package index

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrStale reports that S3 now holds another version of an object than the
// one a listing recorded (its ETag changed). Object stores return an error
// wrapping it; callers re-list and retry, and never mix the two versions.
var ErrStale = errors.New("object changed in S3")

// Object is one S3 object version as a listing saw it. Objects are
// identified by (Key, ETag, Size); an object without an ETag falls back to
// (Key, Size, LastModified), see Version.
type Object struct {
	Key          string    // full S3 key, including the mount's prefix
	Size         int64     // bytes
	ETag         string    // as S3 sent it, surrounding quotes removed; may be empty
	LastModified time.Time // UTC
}

// Version names the version of o that cached bytes belong to: the ETag, or
// "size-mtime" when S3 gave no ETag.
func (o Object) Version() string {
	if o.ETag != "" {
		return o.ETag
	}
	return fmt.Sprintf("%d-%d", o.Size, o.LastModified.UnixNano())
}

// ListResult is one level of an S3 prefix as S3 returned it: all its pages
// (Lister.List) or one (PageLister.ListPages).
type ListResult struct {
	Objects  []Object // keys directly under the prefix
	Prefixes []string // common prefixes (full, ending in "/")
}

// Lister lists one level of an S3 prefix. It is what the Catalog needs from
// the object store.
//
// List returns every object directly under prefix and every common prefix
// with delimiter "/", following all pages. prefix is "" or ends in "/".
// A missing bucket yields an error wrapping io/fs.ErrNotExist. List may be
// called concurrently.
type Lister interface {
	List(ctx context.Context, prefix string) (ListResult, error)
}

// PageLister is a Lister that can also hand over a listing a page at a
// time, as S3 answers it; the Catalog then merges each page into the index
// as it arrives and never holds a whole folder's answer (see relist.go).
//
// ListPages lists what List does and calls page with each part of it, in
// order: objects in S3's key order across pages, each page's slices the
// callee's to keep. It stops at page's first error and returns it, and
// returns List's errors otherwise. It may be called concurrently.
type PageLister interface {
	Lister
	ListPages(ctx context.Context, prefix string, page func(ListResult) error) error
}
