package index

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// A pin says that a prefetch job needs the objects under a path kept;
// eviction skips them. Pins are by path, not by object (doc.go, "Pins"):
//
//	pathpins  jobID + "\x00" + path -> varint objects planned under path
//
// A path is an S3 key (a file) or a key prefix without its trailing "/"
// (a folder); "" is the whole bucket. Job IDs contain no NUL (checkID),
// so the prefix jobID+"\x00" matches exactly one job's pins. The bucket is
// mirrored in memory (pinSet), changed only once a write has committed, so
// a pin check is a few map lookups and never an index read.

// Pin is one pinned path of a job.
type Pin struct {
	Job  string
	Path string // S3 key or key prefix without trailing "/"; "" is everything
	// Objects is how many objects the job planned under Path when it
	// pinned it: what status counts, not a live count.
	Objects int64
}

// ErrPinnedAbove is wrapped by UnpinPaths when a path is pinned through a
// path above it, which only unpinning that path (or ending its job) can
// release; see PinnedAboveError.
var ErrPinnedAbove = errors.New("pinned through a path above it")

// PinnedAboveError says that Path cannot be unpinned alone: Pin, on a path
// above it, covers it.
type PinnedAboveError struct {
	Path string
	Pin  Pin
}

func (e *PinnedAboveError) Error() string {
	return fmt.Sprintf("%s is pinned by prefetch job %s through %q; unpin %q instead, or cancel the job",
		e.Path, e.Pin.Job, e.Pin.Path, e.Pin.Path)
}

// Unwrap makes errors.Is(err, ErrPinnedAbove) hold.
func (e *PinnedAboveError) Unwrap() error { return ErrPinnedAbove }

// Covers reports whether key is under path: path is "", key itself, or a
// folder of key (key starts with path + "/").
func Covers(path, key string) bool {
	return path == "" || key == path || (len(key) > len(path) && key[len(path)] == '/' && strings.HasPrefix(key, path))
}

// coverers calls fn with every path that Covers key, from "" down to key
// itself, until fn returns false.
func coverers(key string, fn func(path string) bool) {
	if !fn("") || key == "" {
		return
	}
	for i := 0; i < len(key); i++ {
		if key[i] == '/' && i > 0 && !fn(key[:i]) {
			return
		}
	}
	fn(key)
}

// cleanPinPath drops trailing slashes: a folder is pinned by its prefix
// without them.
func cleanPinPath(p string) string { return strings.TrimRight(p, "/") }

// pinSet is the pathpins bucket in memory.
type pinSet struct {
	mu     sync.RWMutex
	byPath map[string]map[string]int64 // path -> job -> objects; guarded by mu
	// gen counts commits that removed a pin: eviction remembers what it
	// found pinned until gen moves.
	gen atomic.Uint64
}

func (s *pinSet) add(job string, paths map[string]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byPath == nil {
		s.byPath = make(map[string]map[string]int64)
	}
	for p, n := range paths {
		if s.byPath[p] == nil {
			s.byPath[p] = make(map[string]int64)
		}
		s.byPath[p][job] = n
	}
}

func (s *pinSet) remove(pins []Pin) {
	if len(pins) == 0 {
		return
	}
	s.mu.Lock()
	for _, p := range pins {
		delete(s.byPath[p.Path], p.Job)
		if len(s.byPath[p.Path]) == 0 {
			delete(s.byPath, p.Path)
		}
	}
	s.mu.Unlock()
	s.gen.Add(1)
}

// covering returns the pins whose path Covers key; strict drops those on
// key itself.
func (s *pinSet) covering(key string, strict bool) []Pin {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Pin
	coverers(key, func(p string) bool {
		if strict && p == key {
			return true
		}
		for job, n := range s.byPath[p] {
			out = append(out, Pin{Job: job, Path: p, Objects: n})
		}
		return true
	})
	sortPins(out)
	return out
}

func sortPins(ps []Pin) {
	slices.SortFunc(ps, func(a, b Pin) int {
		if c := strings.Compare(a.Job, b.Job); c != 0 {
			return c
		}
		return strings.Compare(a.Path, b.Path)
	})
}

// loadPins reads the pathpins bucket into memory, once in Open.
func (db *DB) loadPins() error {
	byJob := make(map[string]map[string]int64)
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPathPins).ForEach(func(k, v []byte) error {
			p, err := decodePathPin(k, v)
			if err != nil {
				return err
			}
			if byJob[p.Job] == nil {
				byJob[p.Job] = make(map[string]int64)
			}
			byJob[p.Job][p.Path] = p.Objects
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("read pins: %w", err)
	}
	for job, paths := range byJob {
		db.pins.add(job, paths)
	}
	return nil
}

// pathPinKey is jobID + "\x00" + path.
func pathPinKey(job, path string) []byte {
	k := make([]byte, 0, len(job)+1+len(path))
	k = append(k, job...)
	k = append(k, 0)
	return append(k, path...)
}

// decodePathPin decodes one pathpins entry.
func decodePathPin(k, v []byte) (Pin, error) {
	job, path, ok := bytes.Cut(k, []byte{0})
	if !ok || len(job) == 0 {
		return Pin{}, fmt.Errorf("%w: pin key %q has no job", ErrCorrupt, k)
	}
	d := decoder{b: v}
	n := d.nonNegative("objects")
	if err := d.end(); err != nil {
		return Pin{}, fmt.Errorf("pin %q: %w", k, err)
	}
	return Pin{Job: string(job), Path: string(path), Objects: n}, nil
}

// Pin pins paths (path -> how many objects the job planned under it) for
// job jobID, in one transaction; trailing slashes are dropped. Pinning a
// path again replaces its count. The job must already be stored
// (ErrInvalid otherwise), so that DeleteJob always finds and removes the
// pins; nothing under the paths need be cached yet.
func (db *DB) Pin(jobID string, paths map[string]int64) error {
	if err := checkID("job", jobID); err != nil {
		return err
	}
	clean := make(map[string]int64, len(paths))
	for p, n := range paths {
		if n < 0 {
			return fmt.Errorf("%w: pin %q with %d objects", ErrInvalid, p, n)
		}
		clean[cleanPinPath(p)] = n
	}
	err := db.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketJobs).Get([]byte(jobID)) == nil {
			return fmt.Errorf("%w: no job %q", ErrInvalid, jobID)
		}
		b := tx.Bucket(bucketPathPins)
		for _, p := range slices.Sorted(maps.Keys(clean)) {
			if err := b.Put(pathPinKey(jobID, p), encodeObjects(clean[p])); err != nil {
				return err
			}
		}
		tx.OnCommit(func() { db.pins.add(jobID, clean) })
		return nil
	})
	if err != nil {
		return fmt.Errorf("pin %d paths for job %s: %w", len(clean), jobID, err)
	}
	return nil
}

// encodeObjects encodes a pin's value: its object count as a varint.
func encodeObjects(n int64) []byte {
	e := encoder{}
	e.varint(n)
	return e.b
}

// Unpin drops every pin of job jobID; the job itself stays.
func (db *DB) Unpin(jobID string) error {
	if jobID == "" {
		return nil
	}
	if err := db.update(func(tx *bolt.Tx) error { return db.unpinJobTx(tx, jobID) }); err != nil {
		return fmt.Errorf("unpin job %s: %w", jobID, err)
	}
	return nil
}

// UnpinPaths drops every pin, of any job, on each of paths or on a path
// under it, in one transaction, and returns the pins it dropped. If a pin
// on a path strictly above one of paths covers it, nothing is dropped and
// the error is a *PinnedAboveError naming that job and path: a part of a
// pinned folder cannot be released alone, and narrowing the pin behind
// the user's back would surprise whoever pinned the folder.
func (db *DB) UnpinPaths(paths []string) ([]Pin, error) {
	var drop []Pin
	for _, p := range paths {
		p = cleanPinPath(p)
		if above := db.pins.covering(p, true); len(above) > 0 {
			return nil, &PinnedAboveError{Path: p, Pin: above[0]}
		}
		for _, pin := range db.Pins() {
			if Covers(p, pin.Path) && !slices.Contains(drop, pin) {
				drop = append(drop, pin)
			}
		}
	}
	err := db.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPathPins)
		for _, pin := range drop {
			if err := b.Delete(pathPinKey(pin.Job, pin.Path)); err != nil {
				return err
			}
		}
		tx.OnCommit(func() { db.pins.remove(drop) })
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("unpin %d paths: %w", len(paths), err)
	}
	return drop, nil
}

// Pins returns every pin, sorted by job and path.
func (db *DB) Pins() []Pin {
	db.pins.mu.RLock()
	var out []Pin
	for p, jobs := range db.pins.byPath {
		for job, n := range jobs {
			out = append(out, Pin{Job: job, Path: p, Objects: n})
		}
	}
	db.pins.mu.RUnlock()
	sortPins(out)
	return out
}

// PinsOf returns the pins that cover key, sorted by job and path; none
// means the object may be evicted. It reads memory only.
func (db *DB) PinsOf(key string) []Pin { return db.pins.covering(key, false) }

// PinnedKey reports whether some pin covers key, reading memory only: a
// few map lookups, one per folder level of key.
func (db *DB) PinnedKey(key string) bool {
	db.pins.mu.RLock()
	defer db.pins.mu.RUnlock()
	pinned := false
	coverers(key, func(p string) bool {
		pinned = len(db.pins.byPath[p]) > 0
		return !pinned
	})
	return pinned
}

// PinsGen changes after every commit that dropped a pin: something pinned
// before may be evictable now.
func (db *DB) PinsGen() uint64 { return db.pins.gen.Load() }

// PinnedCount returns how many objects the pins protect, as planned when
// they were pinned: for each pinned path not under another pinned path,
// the most objects any job planned under it. It reads memory only; it is
// not a count of what is cached now.
func (db *DB) PinnedCount() (int, error) {
	db.pins.mu.RLock()
	defer db.pins.mu.RUnlock()
	var n int64
	for p, jobs := range db.pins.byPath {
		above := false
		coverers(p, func(q string) bool {
			above = q != p && len(db.pins.byPath[q]) > 0
			return !above
		})
		if above {
			continue
		}
		var most int64
		for _, c := range jobs {
			most = max(most, c)
		}
		n += most
	}
	return int(n), nil
}

// unpinJobTx deletes every pin of jobID in tx, and from memory once tx
// commits.
func (db *DB) unpinJobTx(tx *bolt.Tx, jobID string) error {
	b := tx.Bucket(bucketPathPins)
	prefix := pathPinKey(jobID, "")
	var drop []Pin
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		drop = append(drop, Pin{Job: jobID, Path: string(k[len(prefix):])})
	}
	// Deleted after the walk: deleting under a bbolt cursor can make it
	// skip the next key.
	for _, p := range drop {
		if err := b.Delete(pathPinKey(p.Job, p.Path)); err != nil {
			return err
		}
	}
	tx.OnCommit(func() { db.pins.remove(drop) })
	return nil
}

// hasPinsTx reports whether jobID holds a pin in tx.
func hasPinsTx(tx *bolt.Tx, jobID string) bool {
	prefix := pathPinKey(jobID, "")
	k, _ := tx.Bucket(bucketPathPins).Cursor().Seek(prefix)
	return k != nil && bytes.HasPrefix(k, prefix)
}
