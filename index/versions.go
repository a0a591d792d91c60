package index

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The current bucket maps an S3 key to the cache ID of the version of it
// that readers should use. When S3's copy changes, the caller caches the
// new version under a new ID and calls SetCurrent, which hands back the old
// ID once so the caller can drop its data.

// SetCurrent records id as the current cached version of key and returns
// the IDs previously recorded for key that differ from id: versions that
// are now stale and whose data the caller drops. Calling it again with the
// same id returns nothing, so each stale ID is returned exactly once. A
// caller that crashes before dropping the data finds it later as a record
// whose ID is not Current for its Key. Empty key or id fail with ErrInvalid.
func (db *DB) SetCurrent(key, id string) (stale []string, err error) {
	if key == "" || id == "" {
		return nil, fmt.Errorf("%w: set current %q to %q: empty key or ID", ErrInvalid, key, id)
	}
	err = db.update(func(tx *bolt.Tx) error {
		stale, err = setCurrentTx(tx, key, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("set current version of %q: %w", key, err)
	}
	return stale, nil
}

// setCurrentTx is SetCurrent's write in tx.
func setCurrentTx(tx *bolt.Tx, key, id string) (stale []string, err error) {
	b := tx.Bucket(bucketCurrent)
	if old := b.Get([]byte(key)); old != nil {
		prev, err := decodeCurrent(old)
		if err != nil {
			return nil, err
		}
		if prev == id {
			return nil, nil
		}
		stale = []string{prev}
	}
	return stale, b.Put([]byte(key), encodeCurrent(id))
}

// Current returns the ID recorded by SetCurrent for key; ok is false if
// there is none. The record with that ID may have been evicted since.
func (db *DB) Current(key string) (id string, ok bool, err error) {
	if key == "" {
		return "", false, nil
	}
	err = db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCurrent).Get([]byte(key))
		if v == nil {
			return nil
		}
		ok = true
		id, err = decodeCurrent(v)
		return err
	})
	if err != nil {
		return "", false, fmt.Errorf("current version of %q: %w", key, err)
	}
	return id, ok, nil
}
