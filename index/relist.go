package index

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A re-list merges one folder's listing into its stored entries while S3's
// answer is still arriving, a page at a time, so that what it holds in
// memory does not grow with the folder: a million-key folder costs a page
// of S3's answer, at most maxWritesPerTx changes waiting to be written, and
// the folder's subfolder names.
//
// S3 sends keys in byte order, which for the files of one folder is name
// order, the order the stored entries are in; so files are merged with the
// stored entries as they come. A subfolder comes as a common prefix
// ("name/"), which sorts after names that extend name with a byte below
// '/' ("name-1", "name.txt"), so folders cannot be placed as they come: the
// merge of files passes the stored folders by, and the folders are merged
// at the end, from the names S3 sent. A file that has a folder's name is
// skipped (see toListing): one that meets a stored folder is held back
// until the folders are known; one queued for writing gives its place to
// the folder; one already written by an earlier batch of the same re-list
// is replaced by the folder (and reported to OnGone, harmlessly: no reader
// saw it, the folder being marked as re-listed meanwhile).
//
// A server that sends keys out of S3's order is found out when a key comes
// below the one before (errUnsorted); the Catalog then lists that folder
// again whole, and every folder whole from then on. Batches written before
// the disorder showed may have dropped files the server had not sent yet,
// and the cache their data, once.
//
// Changes are written maxWritesPerTx at a time. Each write but the last
// stores ListedAt as zero, so that a reader or a crash in between sees the
// folder invalidated, never fresh with half of a re-list; a re-list that
// changes fewer entries than that writes once, at the end, so a LIST that
// fails midway leaves the stored listing as it was.

// errUnsorted reports that a Lister sent a folder's keys out of S3's
// order; the Catalog then lists that folder whole (toListing sorts).
var errUnsorted = errors.New("keys not in S3's order")

// relist is one listing of a folder being merged into the store. It holds
// the folder's listing lock from beginRelist to close. Not safe for
// concurrent use.
type relist struct {
	db            *DB
	prefix        string
	listedAt      time.Time // when S3 was asked; set before the first add
	log           *slog.Logger
	onGone        func([]Object)
	unlock        func() // nil once closed
	invalidations uint64 // the folder's Invalidates when the lock was taken

	// What S3 sent that is not merged yet.
	in   []Object        // files, sorted by key, unique; in[next:] not merged
	next int             // the first file of in not merged
	last Object          // the file received last: held back, a duplicate of it may follow
	held bool            // last is set
	dirs map[string]bool // folder names S3 sent

	// The merge so far.
	after      []byte          // stored names up to after are merged; nil: none yet
	storedDirs []string        // stored folders the merge went past, in name order
	deferred   []Object        // files S3 sent under a stored folder's name, in name order
	pending    []listingChange // changes not written yet; in name order until the folders are merged
	changed    bool            // some change was written
}

// beginRelist takes the listing lock of prefix, waiting for a re-list of
// it under way, and starts a re-list; set listedAt before the first add.
// log receives the skipped keys (nil discards); onGone, if set, hears after
// each write of the files it removed (see CatalogOptions.OnGone). Call
// close when done.
func (db *DB) beginRelist(prefix string, log *slog.Logger, onGone func([]Object)) *relist {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &relist{db: db, prefix: prefix, log: log, onGone: onGone, unlock: db.listings.lock(prefix)}
	r.invalidations = db.listings.invalidations(prefix)
	r.reset()
	return r
}

// reset drops what the re-list received and merged, keeping its lock, to
// merge another answer (a whole listing after an unsorted one). What it
// wrote stays written.
func (r *relist) reset() {
	r.in, r.next, r.held = nil, 0, false
	r.dirs = make(map[string]bool)
	r.after, r.storedDirs, r.deferred, r.pending = nil, nil, nil, nil
}

// addWhole takes a whole listing that toListing (or a caller keeping its
// rules) made: sorted, unique, the name rules applied.
func (r *relist) addWhole(l Listing) {
	r.in = l.Files
	for _, d := range l.Dirs {
		r.dirs[d] = true
	}
}

// close releases the folder's lock; what was not written is dropped.
func (r *relist) close() {
	if r.unlock != nil {
		r.unlock()
		r.unlock = nil
	}
}

// add takes one page of S3's answer, applying the name rules as toListing
// does, and merges the files it can. A key below the one before it fails
// with errUnsorted.
func (r *relist) add(page ListResult) error {
	for _, p := range page.Prefixes {
		name, ok := childName(r.prefix, p, true, r.log)
		if !ok {
			continue
		}
		if r.dirs[name] {
			r.log.Warn("skipping duplicate S3 folder", "prefix", p)
			continue
		}
		r.dirs[name] = true
	}
	for _, o := range page.Objects {
		if strings.HasSuffix(o.Key, "/") {
			r.log.Debug("skipping S3 folder marker", "key", o.Key)
			continue
		}
		if _, ok := childName(r.prefix, o.Key, false, r.log); !ok {
			continue
		}
		if r.held {
			switch c := strings.Compare(o.Key, r.last.Key); {
			case c < 0:
				return fmt.Errorf("list %q: %q after %q: %w", r.prefix, o.Key, r.last.Key, errUnsorted)
			case c == 0:
				r.log.Warn("skipping duplicate S3 key", "key", o.Key)
				if objectOrder(o, r.last) < 0 {
					r.last = o
				}
				continue
			}
			r.in = append(r.in, r.last)
		}
		r.last, r.held = o, true
	}
	return r.merge(false)
}

// finish merges the rest (the stored entries past S3's last key are
// deleted), then the folders, and writes what is left with the listing's
// ListedAt. It reports whether any entry changed.
func (r *relist) finish() (changed bool, err error) {
	if r.held {
		r.in = append(r.in, r.last)
		r.held = false
	}
	if err := r.merge(true); err != nil {
		return r.changed, err
	}
	if err := r.mergeDirs(); err != nil {
		return r.changed, err
	}
	limit := r.db.listings.limit()
	for len(r.pending) > limit {
		if err := r.write(limit, false); err != nil {
			return r.changed, err
		}
	}
	err = r.write(len(r.pending), true)
	return r.changed, err
}

// merge compares the files not merged yet with the stored entries,
// writing a batch whenever maxWritesPerTx changes wait. Unless final it
// stops at the last file received (what is stored after it may still
// come); final goes on to the end of the stored entries.
func (r *relist) merge(final bool) error {
	limit := r.db.listings.limit()
	for {
		done, err := r.diff(final, limit)
		if err != nil {
			return err
		}
		if len(r.pending) >= limit {
			if err := r.write(limit, false); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
	}
}

// diff walks the stored entries after r.after beside the files not merged
// yet, in one read transaction, until limit changes wait or the walk is
// done (see merge), and queues the changes: a stored file S3 did not send
// is deleted; a file S3 sent is written if it is new or differs. Stored
// folders are passed by (mergeDirs decides them), and a file S3 sent under
// a stored folder's name is held back for it.
func (r *relist) diff(final bool, limit int) (done bool, err error) {
	err = r.db.bolt.View(func(tx *bolt.Tx) error {
		var cur *bolt.Cursor
		if fb := tx.Bucket(bucketListings).Bucket(listingKey(r.prefix)); fb != nil {
			cur = fb.Cursor()
		}
		k, v := seekAfter(cur, r.after)
		var buf []byte // the encoding of the file compared now
		for len(r.pending) < limit {
			more := r.next < len(r.in)
			var name string
			if more {
				name = r.in[r.next].Key[len(r.prefix):]
			}
			switch {
			case !more && (k == nil || !final):
				done = true
				return nil
			case k != nil && (!more || string(k) < name):
				if entryIsDir(v) {
					r.storedDirs = append(r.storedDirs, string(k))
				} else {
					r.pending = append(r.pending, listingChange{name: bytes.Clone(k)})
				}
				r.after = bytes.Clone(k)
				k, v = next(cur)
			default:
				o := r.in[r.next]
				r.next++
				r.after = []byte(name)
				buf = appendEntry(buf[:0], Entry{Object: o})
				switch {
				case k == nil || string(k) != name:
					r.pending = append(r.pending, listingChange{name: []byte(name), value: bytes.Clone(buf)})
					continue
				case entryIsDir(v):
					r.storedDirs = append(r.storedDirs, name)
					r.deferred = append(r.deferred, o)
				case !bytes.Equal(v, buf):
					r.pending = append(r.pending, listingChange{name: []byte(name), value: bytes.Clone(buf)})
				}
				k, v = next(cur)
			}
		}
		return nil
	})
	if r.next == len(r.in) {
		r.in, r.next = r.in[:0], 0
	}
	if err != nil {
		return false, fmt.Errorf("put listing %q: %w", r.prefix, err)
	}
	return done, nil
}

// mergeDirs queues the folders' changes once every file is merged: a
// folder S3 sent is written unless it is stored; a stored folder S3 did
// not send is deleted, or becomes the file S3 sent under its name. A file
// S3 sent under a folder's name is skipped (the folder wins), with a
// warning, whether it is stored, queued or held back: a queued change of
// that name becomes the folder's, so that a file first seen in this
// re-list is not written and then reported gone (it still is if an
// earlier batch of this re-list wrote it).
func (r *relist) mergeDirs() error {
	sent := slices.Sorted(maps.Keys(r.dirs))
	files := len(r.pending) // the files merge's changes, in name order
	folder := encodeEntry(Entry{IsDir: true})
	err := r.db.bolt.View(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketListings).Bucket(listingKey(r.prefix))
		for _, d := range sent {
			if _, stored := slices.BinarySearch(r.storedDirs, d); stored {
				continue
			}
			i := sort.Search(files, func(i int) bool { return string(r.pending[i].name) >= d })
			if i < files && string(r.pending[i].name) == d {
				if v := r.pending[i].value; v != nil && !entryIsDir(v) {
					r.log.Warn("skipping S3 key: a folder has the same name", "key", r.prefix+d)
				}
				r.pending[i].value = folder
				continue
			}
			if fb != nil {
				if v := fb.Get([]byte(d)); v != nil && !entryIsDir(v) {
					r.log.Warn("skipping S3 key: a folder has the same name", "key", r.prefix+d)
				}
			}
			r.pending = append(r.pending, listingChange{name: []byte(d), value: folder})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put listing %q: %w", r.prefix, err)
	}
	for _, o := range r.deferred {
		if r.dirs[o.Key[len(r.prefix):]] {
			r.log.Warn("skipping S3 key: a folder has the same name", "key", o.Key)
		}
	}
	for _, d := range r.storedDirs {
		if r.dirs[d] {
			continue
		}
		change := listingChange{name: []byte(d)}
		if i, ok := slices.BinarySearchFunc(r.deferred, d, func(o Object, d string) int {
			return strings.Compare(o.Key[len(r.prefix):], d)
		}); ok {
			change.value = encodeEntry(Entry{Object: r.deferred[i]})
		}
		r.pending = append(r.pending, change)
	}
	return nil
}

// write writes the first n queued changes in one transaction, and tells
// onGone what they removed. The last write stores the listing's ListedAt,
// unless the folder was invalidated since the lock was taken (decided in
// the transaction, so that an Invalidate lands either before it and is
// seen, or after it and writes zero itself); the others store zero.
func (r *relist) write(n int, last bool) error {
	changes := r.pending[:n]
	stamp := func() time.Time {
		if !last || r.db.listings.invalidations(r.prefix) != r.invalidations {
			return time.Time{}
		}
		return r.listedAt
	}
	gone, err := r.db.applyListing(r.prefix, changes, stamp)
	if err != nil {
		return err
	}
	r.changed = r.changed || n > 0
	r.pending = slices.Delete(r.pending, 0, n)
	if len(gone) > 0 && r.onGone != nil {
		r.onGone(gone)
	}
	return nil
}
