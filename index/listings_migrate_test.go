package index

import (
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// writeSchema1 writes, with bbolt directly, an index file as the previous
// version left it: schema 1, its buckets, and each listing as one value.
func writeSchema1(t *testing.T, path string, listings []Listing, raw map[string][]byte) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keySchema, binary.AppendUvarint(nil, 1)); err != nil {
			return err
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		lb := tx.Bucket(bucketListings)
		for _, l := range listings {
			v, err := encodeListingV1(l)
			if err != nil {
				return err
			}
			if err := lb.Put(listingKey(l.Prefix), v); err != nil {
				return err
			}
		}
		for k, v := range raw {
			if err := lb.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Open brings a schema 1 file to schema 2: every listing keeps its entries
// and ListedAt, one that does not decode is dropped, and Check passes.
func TestUpgradeListingsFromSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	root := sampleListing()
	root.Prefix = ""
	for i := range root.Files {
		root.Files[i].Key = root.Files[i].Key[len("cache/tusz/"):]
	}
	sub := sampleListing()
	empty := Listing{Prefix: "cache/tusz/empty/", ListedAt: time.Unix(7, 0)}
	writeSchema1(t, path, []Listing{root, sub, empty}, map[string][]byte{"/broken/": {1, 2, 3}})

	db := openAt(t, path)
	for _, want := range []Listing{root, sub, empty} {
		got, ok, err := db.Listing(want.Prefix)
		if err != nil || !ok {
			t.Fatalf("Listing(%q) after upgrade = %v, %v", want.Prefix, ok, err)
		}
		assertListingEqual(t, got, want)
		fi := info(t, db, want.Prefix)
		if fi.Gen != 1 || fi.Entries != int64(len(want.Dirs)+len(want.Files)) {
			t.Errorf("folder info of %q = %+v", want.Prefix, fi)
		}
	}
	if e, err := lookupOne(db, "cache/tusz/", "a.npz"); err != nil || e.Object.Size != 70<<20 {
		t.Errorf("lookup after upgrade = %+v, %v", e, err)
	}
	if _, ok, err := db.FolderInfo("broken/"); ok || err != nil {
		t.Errorf("undecodable schema 1 listing kept: %v, %v", ok, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Check(path); err != nil {
		t.Fatalf("Check after upgrade: %v", err)
	}
	// A second Open finds schema 2 and changes nothing.
	db = openAt(t, path)
	got, _, _ := db.Listing("cache/tusz/")
	assertListingEqual(t, got, sub)
	db.Close()
}

func lookupOne(db *DB, prefix, name string) (Entry, error) {
	_, _, e, _, err := db.lookupEntry(prefix, name)
	return e, err
}
