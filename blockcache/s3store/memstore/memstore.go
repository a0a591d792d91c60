// Package memstore is an in-memory object store with the List and GetRange
// semantics of s3store.Store, for tests of the packages above it. It passes
// the same conformance suite (storetest) as the real store.
//
// Objects get S3-style ETags (hex MD5 of the data). Faults are injected
// with SetFault: a hook sees every operation and may fail it, cut a body
// short, or break a body mid-read.
package memstore

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"s3cachefs/index"
)

// Operations passed to a fault hook.
const (
	OpList = "list" // List; key is the prefix
	OpGet  = "get"  // GetRange, before anything is checked
	OpRead = "read" // each Read of a GetRange body
)

var (
	// ErrNoBucket is returned by every call after RemoveBucket. It wraps
	// io/fs.ErrNotExist, as s3store.ErrNoBucket does.
	ErrNoBucket = fmt.Errorf("bucket does not exist: %w", fs.ErrNotExist)

	// ErrShortBody, returned by a fault hook for OpGet, makes GetRange
	// succeed with a body that ends after half the range, as a response
	// cut off by the network would. The reader then fails with
	// io.ErrUnexpectedEOF.
	ErrShortBody = errors.New("memstore: cut the body short")
)

// Fault is a hook called at each operation; a non-nil error fails that
// operation with it (wrapped), except ErrShortBody, see there. It may be
// called concurrently.
type Fault func(op, key string) error

// Stats count calls since New.
type Stats struct {
	Gets      int64 // GetRange calls with n > 0
	Lists     int64 // List calls
	BytesRead int64 // body bytes handed to readers
}

// Store is the in-memory store. The zero value is not usable; call New.
// All methods may be called concurrently.
type Store struct {
	mu       sync.RWMutex
	objects  map[string]object // guarded by mu
	noBucket bool              // guarded by mu
	fault    Fault             // guarded by mu

	gets, lists, bytesRead atomic.Int64
}

// object is one stored version. data is never modified after Put, so
// readers may keep it after the lock is released.
type object struct {
	data []byte
	meta index.Object
}

// New returns an empty store.
func New() *Store {
	return &Store{objects: make(map[string]object)}
}

// Put stores a copy of data under key, replacing any earlier version, and
// returns the object as a listing will show it.
func (s *Store) Put(key string, data []byte) index.Object {
	sum := md5.Sum(data)
	o := object{data: slices.Clone(data), meta: index.Object{
		Key:          key,
		Size:         int64(len(data)),
		ETag:         hex.EncodeToString(sum[:]),
		LastModified: time.Now().UTC().Truncate(time.Millisecond),
	}}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[key] = o
	return o.meta
}

// Replace stores a new version of an existing key. Readers pinned to the
// old ETag get index.ErrStale from then on (if data differs). A missing key
// gives an error wrapping io/fs.ErrNotExist.
func (s *Store) Replace(key string, data []byte) (index.Object, error) {
	s.mu.RLock()
	_, ok := s.objects[key]
	s.mu.RUnlock()
	if !ok {
		return index.Object{}, fmt.Errorf("replace %s: %w", key, fs.ErrNotExist)
	}
	return s.Put(key, data), nil
}

// Delete removes key; deleting a missing key is no error, as in S3.
func (s *Store) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objects, key)
}

// RemoveBucket makes every later call fail with ErrNoBucket.
func (s *Store) RemoveBucket() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noBucket = true
}

// SetFault installs f as the fault hook; nil removes it.
func (s *Store) SetFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Stats returns the call counters.
func (s *Store) Stats() Stats {
	return Stats{Gets: s.gets.Load(), Lists: s.lists.Load(), BytesRead: s.bytesRead.Load()}
}

// injected calls the fault hook, if any, outside the lock so that a hook
// may call back into the store.
func (s *Store) injected(op, key string) error {
	s.mu.RLock()
	f := s.fault
	s.mu.RUnlock()
	if f == nil {
		return nil
	}
	return f(op, key)
}

// ListPageSize is how many objects and common prefixes one page of
// ListPages holds, as S3's ListObjectsV2 by default.
const ListPageSize = 1000

// List returns one level of prefix with delimiter "/", as S3's
// ListObjectsV2 does: objects directly under prefix (a key equal to prefix
// included) and the common prefixes below it, each sorted by bytes.
func (s *Store) List(ctx context.Context, prefix string) (index.ListResult, error) {
	var res index.ListResult
	err := s.ListPages(ctx, prefix, func(page index.ListResult) error {
		res.Objects = append(res.Objects, page.Objects...)
		res.Prefixes = append(res.Prefixes, page.Prefixes...)
		return nil
	})
	return res, err
}

// ListPages is List in pages of ListPageSize objects and prefixes, cut
// where S3 cuts them (objects and prefixes in one key order), each counted
// as a LIST request (index.PageLister). The level is taken at once; page
// is called without the store's lock.
func (s *Store) ListPages(ctx context.Context, prefix string, page func(index.ListResult) error) error {
	type item struct {
		key    string
		object *index.Object // nil for a common prefix
	}
	items, err := func() ([]item, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := s.injected(OpList, prefix); err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		s.mu.RLock()
		defer s.mu.RUnlock()
		if s.noBucket {
			return nil, fmt.Errorf("list %s: %w", prefix, ErrNoBucket)
		}
		var items []item
		seen := make(map[string]bool)
		for key, o := range s.objects {
			rest, ok := strings.CutPrefix(key, prefix)
			if !ok {
				continue
			}
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				if p := prefix + rest[:i+1]; !seen[p] {
					seen[p] = true
					items = append(items, item{key: p})
				}
				continue
			}
			items = append(items, item{key: key, object: &o.meta})
		}
		slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.key, b.key) })
		return items, nil
	}()
	s.lists.Add(1)
	if err != nil {
		return err
	}
	for first := true; first || len(items) > 0; first = false {
		if !first {
			s.lists.Add(1)
		}
		n := min(len(items), ListPageSize)
		var res index.ListResult
		for _, it := range items[:n] {
			if it.object != nil {
				res.Objects = append(res.Objects, *it.object)
			} else {
				res.Prefixes = append(res.Prefixes, it.key)
			}
		}
		items = items[n:]
		if err := page(res); err != nil {
			return err
		}
	}
	return nil
}
