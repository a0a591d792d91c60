package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Options configure Open.
type Options struct {
	// Logger receives notes about the file itself (its creation). Skipped
	// S3 keys are logged by the Catalog, through CatalogOptions.Logger.
	// nil discards.
	Logger *slog.Logger
	// LockTimeout is how long Open waits for another process to release
	// the index file's lock before failing with ErrLocked. Zero or
	// negative means 100ms.
	LockTimeout time.Duration
}

const defaultLockTimeout = 100 * time.Millisecond

// Errors returned by this package; test for them with errors.Is.
var (
	// ErrLocked is returned by Open when another process (or another DB in
	// this process) holds the index file open.
	ErrLocked = errors.New("index is in use by another process")
	// ErrSchema is returned by Open when the file was written with another
	// SchemaVersion, or is a bbolt file that is not an index.
	ErrSchema = errors.New("index has an unknown schema version")
	// ErrCorrupt is wrapped by every failure to decode a stored value, and
	// by Open when bbolt finds the file itself invalid.
	ErrCorrupt = errors.New("index value is corrupt")
	// ErrInvalid is wrapped when a caller passes a value that cannot be
	// stored: an empty record ID, a block range outside the object, a
	// listing whose entries are not sorted, a record whose geometry differs
	// from the stored one.
	ErrInvalid = errors.New("invalid index argument")
)

// SchemaVersion is the layout version stored in the meta bucket. Open
// refuses a file with any other version rather than guess at its layout.
const SchemaVersion = 2

// Bucket names and meta keys; see doc.go for the layout.
var (
	bucketMeta     = []byte("meta")
	bucketListings = []byte("listings")
	bucketRecords  = []byte("records")
	bucketJobs     = []byte("jobs")
	bucketPathPins = []byte("pathpins")
	bucketAccess   = []byte("access")
	bucketCurrent  = []byte("current")
	keySchema      = []byte("schema")
)

// DB is an open index file. All methods may be called concurrently.
type DB struct {
	bolt *bolt.DB // set once in Open
	path string   // set once in Open

	listings listingLock // serialises listing writes; see listings.go
	pins     pinSet      // the pathpins bucket, in memory; see pins.go

	// commits counts write transactions committed (each an fsync of the
	// index file).
	commits atomic.Int64
}

// Commits returns how many write transactions the DB has committed since
// Open: each one fsyncs the index file.
func (db *DB) Commits() int64 { return db.commits.Load() }

// update runs fn in a write transaction of its own, counted once it
// commits.
func (db *DB) update(fn func(tx *bolt.Tx) error) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		tx.OnCommit(func() { db.commits.Add(1) })
		return fn(tx)
	})
}

// Open opens the index at path, creating it (mode 0600) with its buckets
// and schema version if it does not exist. It fails with ErrLocked if the
// file stays locked for opts.LockTimeout, and with ErrSchema if the file
// holds another schema version.
func Open(path string, opts Options) (*DB, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = defaultLockTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open index %s: %w", path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum):
		return nil, fmt.Errorf("open index %s: %w: %w", path, ErrCorrupt, err)
	case err != nil:
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	var created bool
	var from uint64
	if err := b.Update(func(tx *bolt.Tx) error { return initSchema(tx, &created, &from) }); err != nil {
		b.Close()
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	switch {
	case created:
		opts.Logger.Info("created index", "path", path, "schema", SchemaVersion)
	case from != SchemaVersion:
		opts.Logger.Info("upgraded index", "path", path, "from", from, "schema", SchemaVersion)
	}
	db := &DB{bolt: b, path: path}
	if err := db.loadPins(); err != nil {
		b.Close()
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	return db, nil
}

// initSchema creates the buckets of a new file (setting *created), or checks
// the schema version of an existing one (setting *from), bringing an older
// file up to SchemaVersion (see migrate.go).
func initSchema(tx *bolt.Tx, created *bool, from *uint64) error {
	*from = SchemaVersion
	if meta := tx.Bucket(bucketMeta); meta != nil {
		v, n := binary.Uvarint(meta.Get(keySchema))
		if n <= 0 || v > SchemaVersion {
			return fmt.Errorf("%w: file has version %d, want %d", ErrSchema, v, SchemaVersion)
		}
		*from = v
		// Buckets an upgrade reads must exist before it runs.
		if err := createBuckets(tx); err != nil {
			return err
		}
		if _, err := migrate(tx, v); err != nil {
			return err
		}
	} else {
		// A file without a meta bucket is new only if it holds nothing:
		// anything else is some other bbolt file we must not write into.
		if err := tx.ForEach(func([]byte, *bolt.Bucket) error { return ErrSchema }); err != nil {
			return fmt.Errorf("%w: file has buckets but no meta bucket", ErrSchema)
		}
		*created = true
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keySchema, binary.AppendUvarint(nil, SchemaVersion)); err != nil {
			return err
		}
	}
	return createBuckets(tx)
}

// allBuckets are the top-level buckets of SchemaVersion.
var allBuckets = [][]byte{bucketListings, bucketRecords, bucketJobs, bucketPathPins, bucketAccess, bucketCurrent}

// createBuckets creates any missing top-level bucket: buckets added within
// a schema version are created on Open, so a file made before they
// existed gains them.
func createBuckets(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the file. Other methods must not be called after Close.
func (db *DB) Close() error {
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("close index %s: %w", db.path, err)
	}
	return nil
}

// cursorAfter positions c at its first key after after (at its first key
// when after is nil), for walks that resume where the last chunk ended.
func cursorAfter(c *bolt.Cursor, after []byte) (k, v []byte) {
	if after == nil {
		return c.First()
	}
	if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
		k, v = c.Next()
	}
	return k, v
}
