package index

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// What only tests call.

// AddBlocks is AddBlocksSums without checksums: blocks [first, first+n).
func (db *DB) AddBlocks(rec Record, first, n int64) (Record, error) {
	rec, err := checkAdd(rec, first, n)
	if err != nil {
		return Record{}, err
	}
	var out Record
	err = db.update(func(tx *bolt.Tx) error {
		out, err = addBlocksTx(tx, rec, first, n, nil)
		return err
	})
	return out, err
}

// DeleteListing removes the listing of prefix; deleting a missing listing is
// not an error.
func (db *DB) DeleteListing(prefix string) error {
	defer db.listings.lock(prefix)()
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketListings).DeleteBucket(listingKey(prefix))
		if errors.Is(err, berrors.ErrBucketNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete listing %q: %w", prefix, err)
	}
	return nil
}

// Path returns the file path given to Open.
func (db *DB) Path() string { return db.path }
