package index

import (
	"bytes"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// upgradeListingsV1 is the schema 1 → 2 step for the listings bucket.
// Schema 1 stored each folder as one value under "/" + prefix (see
// decodeListingV1); schema 2 stores a bucket under the same key, one key
// per entry plus the folder's FolderInfo (see doc.go). Each old value is
// decoded, deleted and replaced by its bucket, with the old ListedAt and
// generation 1. A value that does not decode, or that breaks the name
// rules, is dropped rather than failing Open: a listing only caches S3's
// answer, and the folder is listed again on its next use.
func upgradeListingsV1(tx *bolt.Tx) error {
	b := tx.Bucket(bucketListings)
	var keys [][]byte
	err := b.ForEach(func(k, v []byte) error {
		if v != nil {
			keys = append(keys, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("upgrade listings: %w", err)
	}
	for _, k := range keys {
		l, ok := oldListing(k, b.Get(k))
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("upgrade listing %q: %w", k, err)
		}
		if !ok {
			continue
		}
		if err := writeFolder(b, l); err != nil {
			return fmt.Errorf("upgrade listing %q: %w", k, err)
		}
	}
	return nil
}

// oldListing decodes the schema 1 value v stored under k; ok is false if it
// cannot be kept in schema 2.
func oldListing(k, v []byte) (Listing, bool) {
	if len(k) == 0 || k[0] != '/' {
		return Listing{}, false
	}
	l, err := decodeListingV1(string(k[1:]), v)
	if err != nil || checkListing(l) != nil {
		return Listing{}, false
	}
	return l, true
}

// writeFolder creates the folder bucket of l in b, which must not hold one,
// with every entry of l and generation 1.
func writeFolder(b *bolt.Bucket, l Listing) error {
	fb, err := b.CreateBucket(listingKey(l.Prefix))
	if err != nil {
		return err
	}
	fb.FillPercent = 0.9 // entries arrive in key order
	it := entryIter{l: &l}
	n := int64(0)
	for e, ok := it.next(); ok; e, ok = it.next() {
		if err := fb.Put([]byte(e.Name), encodeEntry(e)); err != nil {
			return err
		}
		n++
	}
	return fb.Put(metaKey, encodeFolderInfo(FolderInfo{ListedAt: l.ListedAt, Gen: 1, Entries: n}))
}

// decodeListingV1 decodes a schema 1 listing value of prefix:
//
//	byte     codec version (1)
//	time     ListedAt
//	uvarint  len(Dirs), then each Dir as string
//	uvarint  len(Files), then each Object as: string Key, varint Size,
//	         string ETag, time LastModified
//
// Only the upgrade reads it. It never panics; malformed input yields an
// error wrapping ErrCorrupt.
func decodeListingV1(prefix string, b []byte) (Listing, error) {
	d := decoder{b: b}
	d.version()
	l := Listing{Prefix: prefix, ListedAt: d.time()}
	if n := d.count(); n > 0 {
		l.Dirs = make([]string, 0, n)
		for range n {
			name := d.str()
			if len(l.Dirs) > 0 && l.Dirs[len(l.Dirs)-1] >= name {
				d.fail("dirs not sorted and unique at %q", name)
			}
			l.Dirs = append(l.Dirs, name)
		}
	}
	if n := d.count(); n > 0 {
		l.Files = make([]Object, 0, n)
		for range n {
			o := Object{Key: d.str(), Size: d.nonNegative("size"), ETag: d.str(), LastModified: d.time()}
			if len(l.Files) > 0 && strings.Compare(l.Files[len(l.Files)-1].Key, o.Key) >= 0 {
				d.fail("files not sorted and unique at %q", o.Key)
			}
			l.Files = append(l.Files, o)
		}
	}
	if err := d.end(); err != nil {
		return Listing{}, fmt.Errorf("listing %q: %w", prefix, err)
	}
	return l, nil
}
