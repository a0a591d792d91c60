package index

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// What only tests call.

// AddBlocks is AddBlocksSums without checksums: blocks [first, first+n).
func (db *DB) AddBlocks(rec Record, first, n int64) (Record, error) {
	return db.addBlocks(rec, first, n, nil)
}

// DeleteListing removes the listing of prefix; deleting a missing listing is
// not an error.
func (db *DB) DeleteListing(prefix string) error {
	db.listings.writeMu.Lock()
	defer db.listings.writeMu.Unlock()
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketListings).Delete(listingKey(prefix))
	})
	if err != nil {
		return fmt.Errorf("delete listing %q: %w", prefix, err)
	}
	db.listings.wrote(prefix, Listing{}, false)
	return nil
}

// Path returns the file path given to Open.
func (db *DB) Path() string { return db.path }
