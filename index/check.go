package index

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// maxProblems bounds how many problems Check reports: a badly damaged file
// would otherwise yield one per value.
const maxProblems = 20

// Check opens the index file at path read-only and checks it whole: bbolt's
// own consistency check (page tree, free list), then this package's schema
// (see doc.go): the schema version, every bucket present, every listing,
// record, job, pin and current value decodes, every pin names a stored
// job, and the counters and access order agree with a walk of the records. It writes nothing and needs no
// exclusive lock, but fails with ErrLocked while a daemon holds the file.
//
// It exists for tests and tools that must prove a file sound, for example
// after a crash: Open checks only what it needs to start. Problems wrap
// ErrCorrupt (ErrSchema for a wrong schema version); up to 20 are joined
// into the returned error.
func Check(path string) error {
	b, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: defaultLockTimeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("check index %s: %w", path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum):
		return fmt.Errorf("check index %s: %w: %w", path, ErrCorrupt, err)
	case err != nil:
		return fmt.Errorf("check index %s: %w", path, err)
	}
	defer b.Close()
	var problems []error
	err = b.View(func(tx *bolt.Tx) error {
		// Drain the channel whole: the check runs in a goroutine of
		// bbolt's that ends only when every error was received.
		for err := range tx.Check() {
			if len(problems) < maxProblems {
				problems = append(problems, fmt.Errorf("%w: bbolt: %w", ErrCorrupt, err))
			}
		}
		if len(problems) > 0 {
			// The tree itself is broken: walking it may not be safe.
			return nil
		}
		c := checker{tx: tx}
		c.all()
		problems = c.problems
		return nil
	})
	if err != nil {
		problems = append(problems, err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("check index %s: %w", path, errors.Join(problems...))
	}
	return nil
}

// checker walks one read transaction and collects what is wrong.
type checker struct {
	tx       *bolt.Tx
	problems []error
}

// addf notes a problem wrapping ErrCorrupt.
func (c *checker) addf(format string, args ...any) {
	if len(c.problems) < maxProblems {
		c.problems = append(c.problems, fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...))
	}
}

// all runs every schema check. A missing bucket is reported and its
// checks skipped.
func (c *checker) all() {
	if !c.schema() {
		return
	}
	c.listings() // see listings_check.go
	c.values(bucketRecords, func(k, v []byte) error {
		r, err := decodeRecord(string(k), v)
		if err != nil {
			return err
		}
		return checkRecordShape(r)
	})
	c.values(bucketJobs, func(k, v []byte) error {
		_, err := decodeJob(string(k), v)
		return err
	})
	c.values(bucketCurrent, func(k, v []byte) error {
		if _, err := decodeCurrent(v); err != nil {
			return fmt.Errorf("current version of %q: %w", k, err)
		}
		return nil
	})
	c.pins()
	c.usage()
}

// schema checks the schema version and that every bucket exists.
func (c *checker) schema() bool {
	meta := c.tx.Bucket(bucketMeta)
	if meta == nil {
		c.addf("no meta bucket")
		return false
	}
	if v, n := binary.Uvarint(meta.Get(keySchema)); n <= 0 || v != SchemaVersion {
		c.problems = append(c.problems, fmt.Errorf("%w: file has version %d, want %d", ErrSchema, v, SchemaVersion))
		return false
	}
	ok := true
	for _, name := range allBuckets {
		if c.tx.Bucket(name) == nil {
			c.addf("bucket %s is missing", name)
			ok = false
		}
	}
	return ok
}

// values calls check for every key and value of bucket name; a nested
// bucket (nil value) is itself a problem, as the layout has none.
func (c *checker) values(name []byte, check func(k, v []byte) error) {
	_ = c.tx.Bucket(name).ForEach(func(k, v []byte) error {
		switch {
		case v == nil:
			c.addf("%s: unexpected nested bucket %q", name, k)
		default:
			if err := check(k, v); err != nil {
				// Decoders wrap ErrCorrupt already; checkRecordShape
				// wraps ErrInvalid, which here means a corrupt value.
				if errors.Is(err, ErrCorrupt) {
					c.problems = appendBounded(c.problems, fmt.Errorf("%s: %w", name, err))
				} else {
					c.addf("%s: %w", name, err)
				}
			}
		}
		return nil
	})
}

// pins checks that every pathpins entry decodes and names a stored job
// (DeleteJob drops a job's pins with it).
func (c *checker) pins() {
	jobs := c.tx.Bucket(bucketJobs)
	c.values(bucketPathPins, func(k, v []byte) error {
		p, err := decodePathPin(k, v)
		if err != nil {
			return err
		}
		if jobs.Get([]byte(p.Job)) == nil {
			return fmt.Errorf("pin %q names job %q, which is not stored", k, p.Job)
		}
		return nil
	})
}

// usage walks every record (the one place besides an upgrade that does)
// and checks the counters and the access bucket against them: one access
// entry per record, under its LastAccess, holding its usage and key.
func (c *checker) usage() {
	var want Stats
	access := c.tx.Bucket(bucketAccess)
	_ = c.tx.Bucket(bucketRecords).ForEach(func(k, v []byte) error {
		r, err := decodeRecord(string(k), v)
		if err != nil || checkRecordShape(r) != nil {
			return nil // reported by values
		}
		want.add(r, 1)
		if got := access.Get(accessKey(r.ID, r.LastAccess)); got == nil || string(got) != string(accessValue(r)) {
			c.addf("access: record %s (last access %s) has no entry holding its usage and key", r.ID, r.LastAccess)
		}
		return nil
	})
	if n := access.Stats().KeyN; n != want.Objects {
		c.addf("access: %d entries for %d records", n, want.Objects)
	}
	got, err := readUsage(c.tx)
	switch {
	case err != nil:
		c.addf("meta: %w", err)
	case got != want:
		c.addf("meta: counters %+v, the records add up to %+v", got, want)
	}
}

// appendBounded appends err unless maxProblems are already collected.
func appendBounded(errs []error, err error) []error {
	if len(errs) >= maxProblems {
		return errs
	}
	return append(errs, err)
}
