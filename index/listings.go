package index

import (
	"bytes"
	"cmp"
	"fmt"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Listing is one folder level of S3 as a listing saw it, stored under its
// full S3 prefix. It is the whole-folder form that S3's answer is turned
// into (toListing) and that tests and the schema 1 upgrade use; the index
// stores it one entry per key (see doc.go), and the Catalog reads entries
// one at a time or a page at a time, never a whole Listing.
type Listing struct {
	Prefix   string    // full S3 prefix: "" or ending in "/"
	ListedAt time.Time // when S3 was asked
	Dirs     []string  // child folder names (not full prefixes), sorted, unique
	Files    []Object  // sorted by Key, unique; only files that pass the name rules
}

// FolderInfo is what the index keeps about a stored folder besides its
// entries.
type FolderInfo struct {
	// ListedAt is when S3 was asked for the stored entries; zero when the
	// listing was invalidated or a re-list of it is half written.
	ListedAt time.Time
	// Gen is the folder's change generation: 1 for its first listing,
	// bumped by every write that changes an entry. Equal generations of
	// one folder mean equal entries. Never 0 for a stored folder.
	Gen uint64
	// Entries counts the folder's entries (folders and files).
	Entries int64
}

// listingKey is the key, in the listings bucket, of the bucket holding
// prefix's entries: "/" + prefix, because bbolt refuses empty keys and the
// root prefix is "". Keys are never parsed back.
func listingKey(prefix string) []byte { return []byte("/" + prefix) }

// metaKey is the key of a folder bucket's FolderInfo. No entry name can be
// it (names have no control characters), and it sorts before every name.
var metaKey = []byte{0}

// maxWritesPerTx bounds the entries one transaction of a re-list writes or
// deletes: a first listing of a million entries commits in about thirty
// transactions of bounded size rather than one that holds every dirty page,
// and the file changes waiting to be written are never more than this many
// (a folder's subfolder changes are queued together at its end).
const maxWritesPerTx = 1 << 15

// listingLock serialises the re-lists of each folder. A re-list compares
// S3's answer with the stored entries in read transactions and writes the
// difference in later write transactions, while S3's answer is still
// arriving; holding the folder's lock across all of it keeps another
// re-list of that folder (a forced Refresh beside a background one) from
// landing in between. Re-lists of other folders go on meanwhile: a
// minute-long LIST of one big folder holds up no other. Readers never take
// it, nor does Invalidate, which marks the folder instead (invalidate).
type listingLock struct {
	mu    sync.Mutex
	held  map[string]*folderLock // guarded by mu; the folders locked or waited for
	batch int                    // set before use; writes per transaction, 0 means maxWritesPerTx (tests lower it)
}

// folderLock is the lock of one folder, kept while anyone holds or waits
// for it.
type folderLock struct {
	mu            sync.Mutex
	refs          int    // guarded by listingLock.mu
	invalidations uint64 // guarded by listingLock.mu; Invalidates while the lock was held or waited for
}

// lock takes the lock of prefix's listing and returns its unlock.
func (l *listingLock) lock(prefix string) (unlock func()) {
	l.mu.Lock()
	if l.held == nil {
		l.held = make(map[string]*folderLock)
	}
	fl := l.held[prefix]
	if fl == nil {
		fl = &folderLock{}
		l.held[prefix] = fl
	}
	fl.refs++
	l.mu.Unlock()
	fl.mu.Lock()
	return func() {
		fl.mu.Unlock()
		l.mu.Lock()
		if fl.refs--; fl.refs == 0 {
			delete(l.held, prefix)
		}
		l.mu.Unlock()
	}
}

// invalidations counts the Invalidates of prefix since its lock was first
// held or waited for; a re-list holding the lock compares it at its start
// and its end. 0 if nobody holds it.
func (l *listingLock) invalidations(prefix string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if fl := l.held[prefix]; fl != nil {
		return fl.invalidations
	}
	return 0
}

// invalidate notes an Invalidate of prefix for the re-list that holds its
// lock, if any: that re-list stores ListedAt zero at its end.
func (l *listingLock) invalidate(prefix string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if fl := l.held[prefix]; fl != nil {
		fl.invalidations++
	}
}

// limit is how many writes one transaction of a re-list makes.
func (l *listingLock) limit() int { return cmp.Or(l.batch, maxWritesPerTx) }

// entryIter yields the entries of a Listing in name order: its Dirs and
// Files merged (they share no name once toListing has applied the rules).
type entryIter struct {
	l    *Listing
	i, j int // next dir, next file
}

// next returns the next entry and false once all are out.
func (it *entryIter) next() (Entry, bool) {
	l := it.l
	switch {
	case it.i < len(l.Dirs) && (it.j >= len(l.Files) || l.Dirs[it.i] < l.Files[it.j].Key[len(l.Prefix):]):
		it.i++
		return Entry{Name: l.Dirs[it.i-1], IsDir: true}, true
	case it.j < len(l.Files):
		it.j++
		o := l.Files[it.j-1]
		return Entry{Name: o.Key[len(l.Prefix):], Object: o}, true
	}
	return Entry{}, false
}

// checkListing enforces what PutListing documents.
func checkListing(l Listing) error {
	if l.Prefix != "" && !strings.HasSuffix(l.Prefix, "/") {
		return fmt.Errorf("%w: listing prefix %q does not end in /", ErrInvalid, l.Prefix)
	}
	for i, d := range l.Dirs {
		if why := nameProblem(d); why != "" {
			return fmt.Errorf("%w: listing %q: folder %q: %s", ErrInvalid, l.Prefix, d, why)
		}
		if i > 0 && l.Dirs[i-1] >= d {
			return fmt.Errorf("%w: listing %q: dirs not sorted and unique at %q", ErrInvalid, l.Prefix, d)
		}
	}
	for i, o := range l.Files {
		if !strings.HasPrefix(o.Key, l.Prefix) {
			return fmt.Errorf("%w: listing %q: key %q outside it", ErrInvalid, l.Prefix, o.Key)
		}
		if why := nameProblem(o.Key[len(l.Prefix):]); why != "" {
			return fmt.Errorf("%w: listing %q: key %q: %s", ErrInvalid, l.Prefix, o.Key, why)
		}
		if o.Size < 0 {
			return fmt.Errorf("%w: listing %q: %q has negative size", ErrInvalid, l.Prefix, o.Key)
		}
		if i > 0 && l.Files[i-1].Key >= o.Key {
			return fmt.Errorf("%w: listing %q: files not sorted and unique at %q", ErrInvalid, l.Prefix, o.Key)
		}
	}
	// A name that is both is refused: one key per name.
	it := entryIter{l: &l}
	prev, first := "", true
	for e, ok := it.next(); ok; e, ok = it.next() {
		if !first && e.Name == prev {
			return fmt.Errorf("%w: listing %q: %q is both a folder and a file", ErrInvalid, l.Prefix, e.Name)
		}
		prev, first = e.Name, false
	}
	return nil
}

// PutListing stores l, replacing any listing of l.Prefix: it writes the
// entries that differ from the stored ones and deletes the ones l lacks
// (see putListing). Dirs and Files must be sorted and unique, with valid
// names under l.Prefix and no name in both (ErrInvalid otherwise).
func (db *DB) PutListing(l Listing) error {
	_, err := db.putListing(l, nil)
	return err
}

// listingChange is one write of a re-list: value nil deletes name.
type listingChange struct {
	name  []byte
	value []byte
}

// putListing merges l into the stored entries of l.Prefix as one re-list
// (see relist) and reports whether any entry changed.
func (db *DB) putListing(l Listing, onGone func([]Object)) (changed bool, err error) {
	if err := checkListing(l); err != nil {
		return false, err
	}
	r := db.beginRelist(l.Prefix, nil, onGone)
	defer r.close()
	r.listedAt = l.ListedAt
	r.addWhole(l)
	return r.finish()
}

// seekAfter positions cur at the first entry after name (the first entry if
// name is nil), skipping the folder's FolderInfo. A nil cursor (no folder
// stored) is at its end.
func seekAfter(cur *bolt.Cursor, name []byte) (k, v []byte) {
	if cur == nil {
		return nil, nil
	}
	k, v = cursorAfter(cur, name)
	if k != nil && bytes.Equal(k, metaKey) {
		k, v = cur.Next()
	}
	return k, v
}

// next moves cur to the next entry.
func next(cur *bolt.Cursor) (k, v []byte) {
	if cur == nil {
		return nil, nil
	}
	return cur.Next()
}

// applyListing writes changes to the folder bucket of prefix in one
// transaction, one after the other (a name may come twice; the last
// wins), creating the bucket if needed, and stores its FolderInfo with the
// time stamp gives (called inside the transaction) and, if anything
// changed, the next generation. It returns the stored files the changes
// deleted or replaced with another version (or with a folder): the objects
// whose cached data is now gone.
func (db *DB) applyListing(prefix string, changes []listingChange, stamp func() time.Time) (gone []Object, err error) {
	err = db.update(func(tx *bolt.Tx) error {
		fb, err := tx.Bucket(bucketListings).CreateBucketIfNotExists(listingKey(prefix))
		if err != nil {
			return err
		}
		// Entries arrive in key order; fuller pages suit appends.
		fb.FillPercent = 0.9
		info, _, err := folderInfoIn(fb)
		if err != nil {
			return err
		}
		for _, ch := range changes {
			old := fb.Get(ch.name)
			if o, ok := replacedFile(prefix, ch, old); ok {
				gone = append(gone, o)
			}
			switch {
			case ch.value == nil:
				err = fb.Delete(ch.name)
				if old != nil {
					info.Entries--
				}
			default:
				err = fb.Put(ch.name, ch.value)
				if old == nil {
					info.Entries++
				}
			}
			if err != nil {
				return err
			}
		}
		if len(changes) > 0 || info.Gen == 0 {
			info.Gen++
		}
		info.ListedAt = stamp()
		return fb.Put(metaKey, encodeFolderInfo(info))
	})
	if err != nil {
		return nil, fmt.Errorf("put listing %q: %w", prefix, err)
	}
	return gone, nil
}

// replacedFile returns the file stored as old that ch removes from the
// mount: deletes, turns into a folder, or replaces with another version.
// A value that does not decode is replaced without a report: it named no
// object the cache could hold.
func replacedFile(prefix string, ch listingChange, old []byte) (Object, bool) {
	if old == nil {
		return Object{}, false
	}
	was, err := decodeEntry(prefix, ch.name, old)
	if err != nil || was.IsDir {
		return Object{}, false
	}
	if ch.value != nil {
		now, err := decodeEntry(prefix, ch.name, ch.value)
		if err == nil && !now.IsDir && now.Object.Version() == was.Object.Version() {
			return Object{}, false
		}
	}
	return was.Object, true
}

// folderInfoIn reads the FolderInfo of a folder bucket; ok is false if it
// has none.
func folderInfoIn(fb *bolt.Bucket) (FolderInfo, bool, error) {
	v := fb.Get(metaKey)
	if v == nil {
		return FolderInfo{}, false, nil
	}
	info, err := decodeFolderInfo(v)
	return info, err == nil, err
}

// folderBucket returns the folder bucket of prefix and its FolderInfo, or
// nil if none is stored.
func folderBucket(tx *bolt.Tx, prefix string) (*bolt.Bucket, FolderInfo, error) {
	fb := tx.Bucket(bucketListings).Bucket(listingKey(prefix))
	if fb == nil {
		return nil, FolderInfo{}, nil
	}
	info, ok, err := folderInfoIn(fb)
	if err != nil {
		return nil, FolderInfo{}, fmt.Errorf("listing %q: %w", prefix, err)
	}
	if !ok {
		return nil, FolderInfo{}, nil
	}
	return fb, info, nil
}

// lookupEntry reads, in one read transaction, the FolderInfo of prefix (ok
// false if no listing is stored) and its entry name (found).
func (db *DB) lookupEntry(prefix, name string) (info FolderInfo, ok bool, e Entry, found bool, err error) {
	err = db.bolt.View(func(tx *bolt.Tx) error {
		fb, fi, err := folderBucket(tx, prefix)
		if err != nil || fb == nil {
			return err
		}
		info, ok = fi, true
		v := fb.Get([]byte(name))
		if v == nil {
			return nil
		}
		e, err = decodeEntry(prefix, []byte(name), v)
		found = err == nil
		return err
	})
	return info, ok, e, found, err
}

// FolderInfo returns what is stored about the listing of prefix; ok is
// false if there is none.
func (db *DB) FolderInfo(prefix string) (info FolderInfo, ok bool, err error) {
	err = db.bolt.View(func(tx *bolt.Tx) error {
		fb, fi, err := folderBucket(tx, prefix)
		info, ok = fi, fb != nil
		return err
	})
	return info, ok, err
}

// dirPageCap bounds the room EntryPage reserves up front for a page.
const dirPageCap = 1 << 16

// EntryPage returns up to n stored entries of prefix whose names sort after
// after ("" for the first page), in name order, read in one transaction,
// with the folder's FolderInfo as of that transaction. ok is false if no
// listing of prefix is stored. Pages of one folder read at the same Gen
// are pages of the same entries.
func (db *DB) EntryPage(prefix, after string, n int) (page []Entry, info FolderInfo, ok bool, err error) {
	n = max(n, 0)
	err = db.bolt.View(func(tx *bolt.Tx) error {
		fb, fi, err := folderBucket(tx, prefix)
		if err != nil || fb == nil {
			return err
		}
		info, ok = fi, true
		var start []byte
		if after != "" {
			start = []byte(after)
		}
		page = make([]Entry, 0, min(int64(n), fi.Entries, dirPageCap))
		cur := fb.Cursor()
		for k, v := seekAfter(cur, start); k != nil && len(page) < n; k, v = cur.Next() {
			e, err := decodeEntry(prefix, k, v)
			if err != nil {
				return err
			}
			page = append(page, e)
		}
		return nil
	})
	if err != nil {
		return nil, FolderInfo{}, false, err
	}
	return page, info, ok, nil
}

// Listing returns the whole stored listing of prefix; ok is false if there
// is none. It reads every entry into memory: it is for tests and tools,
// not for the paths that serve the mount.
func (db *DB) Listing(prefix string) (l Listing, ok bool, err error) {
	err = db.bolt.View(func(tx *bolt.Tx) error {
		fb, info, err := folderBucket(tx, prefix)
		if err != nil || fb == nil {
			return err
		}
		ok = true
		l = Listing{Prefix: prefix, ListedAt: info.ListedAt}
		cur := fb.Cursor()
		for k, v := seekAfter(cur, nil); k != nil; k, v = cur.Next() {
			e, err := decodeEntry(prefix, k, v)
			if err != nil {
				return err
			}
			if e.IsDir {
				l.Dirs = append(l.Dirs, e.Name)
			} else {
				l.Files = append(l.Files, e.Object)
			}
		}
		return nil
	})
	if err != nil {
		return Listing{}, false, err
	}
	return l, ok, nil
}

// invalidateListing stores ListedAt zero for prefix, keeping its entries
// and generation, so that its next use lists S3 again. A missing listing
// is left missing. It does not wait for a re-list of prefix under way (a
// LIST may take minutes): that re-list stores ListedAt zero too when it
// ends, whatever S3 answered before or after this.
func (db *DB) invalidateListing(prefix string) error {
	db.listings.invalidate(prefix)
	err := db.update(func(tx *bolt.Tx) error {
		fb, info, err := folderBucket(tx, prefix)
		if err != nil || fb == nil {
			return err
		}
		info.ListedAt = time.Time{}
		return fb.Put(metaKey, encodeFolderInfo(info))
	})
	if err != nil {
		return fmt.Errorf("invalidate listing %q: %w", prefix, err)
	}
	return nil
}
