package index

import (
	"bytes"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// A pin says that a job needs an object's cached data; eviction skips
// pinned objects. Each pin is stored twice with an empty value, so that
// both questions are one prefix scan:
//
//	pins     objectID + "\x00" + jobID   (which jobs pin this object?)
//	jobpins  jobID + "\x00" + objectID   (which objects does this job pin?)
//
// IDs contain no NUL (checkID), so the prefix id+"\x00" matches exactly the
// pins of id and no other ID that merely starts with id. Both entries are
// always written and deleted in the same transaction.

// pinKey joins two IDs with the NUL separator.
func pinKey(first, second string) []byte {
	k := make([]byte, 0, len(first)+1+len(second))
	k = append(k, first...)
	k = append(k, 0)
	return append(k, second...)
}

// Pin pins objectIDs for job jobID, in one transaction. Pinning an object
// twice is harmless. The job must already be stored (ErrInvalid otherwise),
// so that DeleteJob always finds and removes the pins; the objects need not
// have records yet, since a job pins what it is about to fetch.
func (db *DB) Pin(jobID string, objectIDs []string) error {
	if err := checkID("job", jobID); err != nil {
		return err
	}
	for _, id := range objectIDs {
		if err := checkID("object", id); err != nil {
			return err
		}
	}
	// Inserting keys in order keeps bbolt's page splits cheap: sort each
	// bucket's keys before the bulk load.
	objs := slices.Clone(objectIDs)
	slices.Sort(objs)
	objs = slices.Compact(objs)
	byJob := make([][]byte, len(objs))
	byObject := make([][]byte, len(objs))
	for i, o := range objs {
		byJob[i] = pinKey(jobID, o)
		byObject[i] = pinKey(o, jobID)
	}
	// byJob shares jobID as prefix, so it is sorted as objs is; byObject
	// too, since no object ID contains the NUL that ends each prefix.
	err := db.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketJobs).Get([]byte(jobID)) == nil {
			return fmt.Errorf("%w: no job %q", ErrInvalid, jobID)
		}
		if err := putKeys(tx.Bucket(bucketJobPins), byJob); err != nil {
			return err
		}
		return putKeys(tx.Bucket(bucketPins), byObject)
	})
	if err != nil {
		return fmt.Errorf("pin %d objects for job %s: %w", len(objs), jobID, err)
	}
	return nil
}

// putKeys stores each key with an empty value.
func putKeys(b *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := b.Put(k, nil); err != nil {
			return err
		}
	}
	return nil
}

// Unpin drops every pin of job jobID; the job itself stays.
func (db *DB) Unpin(jobID string) error {
	if jobID == "" {
		return nil
	}
	if err := db.update(func(tx *bolt.Tx) error { return unpinJobTx(tx, jobID) }); err != nil {
		return fmt.Errorf("unpin job %s: %w", jobID, err)
	}
	return nil
}

// UnpinObjects drops every pin of each of objectIDs, whichever job holds
// it, in one transaction.
func (db *DB) UnpinObjects(objectIDs []string) error {
	objs := slices.Clone(objectIDs)
	slices.Sort(objs)
	err := db.update(func(tx *bolt.Tx) error {
		for _, o := range slices.Compact(objs) {
			if err := unpinObjectTx(tx, o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("unpin %d objects: %w", len(objs), err)
	}
	return nil
}

// Pinned returns the IDs of the jobs pinning objectID, sorted; none means
// the object may be evicted.
func (db *DB) Pinned(objectID string) (jobIDs []string, err error) {
	if objectID == "" {
		return nil, nil
	}
	err = db.bolt.View(func(tx *bolt.Tx) error {
		prefix := pinKey(objectID, "")
		c := tx.Bucket(bucketPins).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			jobIDs = append(jobIDs, string(k[len(prefix):]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pins of %s: %w", objectID, err)
	}
	return jobIDs, nil
}

// PinnedCount returns how many objects have at least one pin. It walks
// every pin: fine for status output, not for a hot path.
func (db *DB) PinnedCount() (int, error) {
	n := 0
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var last []byte // object ID of the previous pin; pins of one object are adjacent
		return tx.Bucket(bucketPins).ForEach(func(k, _ []byte) error {
			i := bytes.IndexByte(k, 0)
			if i < 0 {
				return fmt.Errorf("%w: pin key %q has no separator", ErrCorrupt, k)
			}
			obj := k[:i]
			if last == nil || !bytes.Equal(obj, last) {
				n++
				last = append(last[:0], obj...)
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("count pinned objects: %w", err)
	}
	return n, nil
}

// unpinJobTx deletes every pin of jobID in both buckets.
func unpinJobTx(tx *bolt.Tx, jobID string) error {
	return unpinTx(tx.Bucket(bucketJobPins), tx.Bucket(bucketPins), jobID)
}

// unpinObjectTx deletes every pin of objectID in both buckets.
func unpinObjectTx(tx *bolt.Tx, objectID string) error {
	return unpinTx(tx.Bucket(bucketPins), tx.Bucket(bucketJobPins), objectID)
}

// unpinTx deletes the keys id+"\x00"+other from b and the mirrored keys
// other+"\x00"+id from mirror. The keys are collected before deleting,
// because deleting under a bbolt cursor can make it skip the next key.
func unpinTx(b, mirror *bolt.Bucket, id string) error {
	prefix := pinKey(id, "")
	var others []string
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		others = append(others, string(k[len(prefix):]))
	}
	for _, o := range others {
		if err := b.Delete(pinKey(id, o)); err != nil {
			return err
		}
		if err := mirror.Delete(pinKey(o, id)); err != nil {
			return err
		}
	}
	return nil
}
