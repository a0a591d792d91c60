package index

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// listings checks the listings bucket: every key is "/" + prefix and holds
// a folder bucket (never a value); in each, a FolderInfo decodes, every
// other key is a name the name rules allow with an entry value that
// decodes, nothing is a nested bucket, and FolderInfo.Entries counts the
// entries.
func (c *checker) listings() {
	_ = c.tx.Bucket(bucketListings).ForEach(func(k, v []byte) error {
		switch {
		case len(k) == 0 || k[0] != '/':
			c.addf("listing key %q does not start with /", k)
		case v != nil:
			c.addf("listing %q is a value, not a folder bucket (schema 1 layout?)", k)
		default:
			c.folder(string(k[1:]), c.tx.Bucket(bucketListings).Bucket(k))
		}
		return nil
	})
}

// folder checks the folder bucket fb of prefix.
func (c *checker) folder(prefix string, fb *bolt.Bucket) {
	info, ok, err := folderInfoIn(fb)
	switch {
	case err != nil:
		c.addf("listing %q: %w", prefix, err)
	case !ok:
		c.addf("listing %q has no folder info", prefix)
	}
	var n int64
	_ = fb.ForEach(func(k, v []byte) error {
		switch {
		case bytes.Equal(k, metaKey):
			return nil
		case v == nil:
			c.addf("listing %q: unexpected nested bucket %q", prefix, k)
		case nameProblem(string(k)) != "":
			c.addf("listing %q: entry %q: %s", prefix, k, nameProblem(string(k)))
		default:
			if _, err := decodeEntry(prefix, k, v); err != nil {
				c.problems = appendBounded(c.problems, err)
			}
		}
		n++
		return nil
	})
	if ok && info.Entries != n {
		c.addf("listing %q: folder info counts %d entries, bucket holds %d", prefix, info.Entries, n)
	}
}
