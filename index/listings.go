package index

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Listing is one folder level of S3 as a listing saw it, stored under its
// full S3 prefix.
type Listing struct {
	Prefix   string    // full S3 prefix: "" or ending in "/"
	ListedAt time.Time // when S3 was asked
	Dirs     []string  // child folder names (not full prefixes), sorted, unique
	Files    []Object  // sorted by Key, unique; only files that pass the name rules
}

// clone returns a copy of l that shares no slice with it.
func (l Listing) clone() Listing {
	l.Dirs = slices.Clone(l.Dirs)
	l.Files = slices.Clone(l.Files)
	return l
}

// listingKey is the bbolt key of prefix: "/" + prefix, because bbolt
// refuses empty keys and the root prefix is "". Keys are never parsed back.
func listingKey(prefix string) []byte { return []byte("/" + prefix) }

// maxCachedEntries bounds the decoded listings kept in memory, counted in
// folder and file entries (roughly 150 bytes each).
const maxCachedEntries = 1 << 18

// listingCache keeps decoded listings, so that a Lookup in a folder of
// thousands of files is a binary search, not a decode of the whole folder.
// It is coherent with the file because only this DB writes it (the file is
// locked) and every write goes through PutListing (and, in tests, DeleteListing).
//
// Lock order: writeMu before mu. writeMu is held across the bbolt write so
// that two writers of one prefix cannot commit in one order and fill the
// cache in the other; bbolt serialises writers anyway. mu is never held
// across I/O: a reader that decoded from the file keeps its result only if
// no write ended meanwhile (gen unchanged).
type listingCache struct {
	writeMu sync.Mutex

	mu      sync.Mutex
	m       map[string]Listing // guarded by mu; values are never modified
	entries int                // guarded by mu; Dirs+Files over m
	gen     uint64             // guarded by mu; bumped by every write
	limit   int                // entries to keep; 0 means maxCachedEntries (tests lower it)
}

// getOrGen returns the cached listing of prefix, or the generation a reader
// must pass to fill.
func (c *listingCache) getOrGen(prefix string) (Listing, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.m[prefix]
	return l, ok, c.gen
}

// fill caches l, read from the file at generation gen, unless a write has
// ended since.
func (c *listingCache) fill(l Listing, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		c.setLocked(l.Prefix, l, true)
	}
}

// wrote records that prefix now holds l (ok) or nothing (!ok) in the file.
func (c *listingCache) wrote(prefix string, l Listing, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.setLocked(prefix, l, ok)
}

func (c *listingCache) setLocked(prefix string, l Listing, ok bool) {
	if old, had := c.m[prefix]; had {
		c.entries -= len(old.Dirs) + len(old.Files)
		delete(c.m, prefix)
	}
	limit := cmp.Or(c.limit, maxCachedEntries)
	size := len(l.Dirs) + len(l.Files)
	if !ok || size > limit {
		return
	}
	// Evict arbitrary listings until l fits: a miss costs one decode.
	for p, old := range c.m {
		if c.entries+size <= limit {
			break
		}
		c.entries -= len(old.Dirs) + len(old.Files)
		delete(c.m, p)
	}
	if c.m == nil {
		c.m = make(map[string]Listing)
	}
	c.m[prefix] = l
	c.entries += size
}

// PutListing stores l, replacing any listing of l.Prefix. Dirs and Files
// must be sorted and unique (ErrInvalid otherwise).
func (db *DB) PutListing(l Listing) error {
	v, err := encodeListing(l)
	if err != nil {
		return err
	}
	l = l.clone() // the cache must not share the caller's slices
	db.listings.writeMu.Lock()
	defer db.listings.writeMu.Unlock()
	err = db.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketListings).Put(listingKey(l.Prefix), v)
	})
	if err != nil {
		return fmt.Errorf("put listing %q: %w", l.Prefix, err)
	}
	db.listings.wrote(l.Prefix, l, true)
	return nil
}

// Listing returns the stored listing of prefix; ok is false if there is
// none. The result is the caller's to modify.
func (db *DB) Listing(prefix string) (l Listing, ok bool, err error) {
	l, ok, err = db.sharedListing(prefix)
	return l.clone(), ok, err
}

// sharedListing is Listing without the copy: the result may be shared with
// the cache and other callers, and must not be modified.
func (db *DB) sharedListing(prefix string) (l Listing, ok bool, err error) {
	l, ok, gen := db.listings.getOrGen(prefix)
	if ok {
		return l, true, nil
	}
	err = db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketListings).Get(listingKey(prefix))
		if v == nil {
			return nil
		}
		ok = true
		// decodeListing copies every string out of v, which is only valid
		// inside this transaction.
		l, err = decodeListing(prefix, v)
		return err
	})
	if err != nil {
		return Listing{}, false, err
	}
	if ok {
		db.listings.fill(l, gen)
	}
	return l, ok, nil
}
