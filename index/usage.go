package index

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Counters and access order are kept with the records (doc.go, "Counters
// and access order"): every write of a record goes through putRecord and
// every removal through deleteRecordTx, which update meta's "usage" value
// and the access bucket in the same transaction, so both are exact after
// any crash and readers never walk the records.

// DiskBlock is the filesystem block size disk usage is counted in: a
// sparse cache file allocates whole blocks.
const DiskBlock = 4096

// DiskUsage is the SSD space the present blocks of r take: each block
// rounded up to whole DiskBlocks, as a sparse file allocates them.
func (r Record) DiskUsage() int64 {
	n := r.Present.Count() * r.BlockSize
	if last := r.Present.Len() - 1; last >= 0 && r.Present.Has(last) {
		tail := r.Size - last*r.BlockSize
		n += (tail+DiskBlock-1)/DiskBlock*DiskBlock - r.BlockSize
	}
	return n
}

// Stats summarises the cached records.
type Stats struct {
	Objects   int   // records
	Complete  int   // records with every block present
	Bytes     int64 // present bytes; a record's last block counts its real length
	DiskBytes int64 // SSD space of the present blocks (Record.DiskUsage)
}

// add adds (sign 1) or removes (sign -1) r's share.
func (s *Stats) add(r Record, sign int) {
	s.Objects += sign
	if r.Complete() {
		s.Complete += sign
	}
	s.Bytes += int64(sign) * r.PresentBytes()
	s.DiskBytes += int64(sign) * r.DiskUsage()
}

var keyUsage = []byte("usage")

// Stats returns the counters kept with the records: O(1), no walk.
func (db *DB) Stats() (Stats, error) {
	var s Stats
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		s, err = readUsage(tx)
		return err
	})
	if err != nil {
		return Stats{}, fmt.Errorf("read index counters: %w", err)
	}
	return s, nil
}

// readUsage decodes meta's usage value; a missing one is all zeros (a new
// file).
func readUsage(tx *bolt.Tx) (Stats, error) {
	v := tx.Bucket(bucketMeta).Get(keyUsage)
	if v == nil {
		return Stats{}, nil
	}
	return decodeUsage(v)
}

// writeUsage stores s as meta's usage value.
func writeUsage(tx *bolt.Tx, s Stats) error {
	return tx.Bucket(bucketMeta).Put(keyUsage, encodeUsage(s))
}

// encodeUsage: codec version (1), then Objects, Complete, Bytes and
// DiskBytes as varints (never negative).
func encodeUsage(s Stats) []byte {
	e := encoder{b: make([]byte, 0, 24)}
	e.b = append(e.b, codecV1)
	e.varint(int64(s.Objects))
	e.varint(int64(s.Complete))
	e.varint(s.Bytes)
	e.varint(s.DiskBytes)
	return e.b
}

func decodeUsage(b []byte) (Stats, error) {
	d := decoder{b: b}
	d.version()
	s := Stats{Objects: int(d.nonNegative("objects")), Complete: int(d.nonNegative("complete objects"))}
	s.Bytes, s.DiskBytes = d.nonNegative("bytes"), d.nonNegative("disk bytes")
	if err := d.end(); err != nil {
		return Stats{}, fmt.Errorf("usage counters: %w", err)
	}
	return s, nil
}

// accessKey is r's key in the access bucket: LastAccess as it is stored
// (clamped like the codec's times) in 12 big-endian bytes, seconds since
// the year 1 then nanoseconds, then the ID, so that a cursor walks records
// oldest first and ties in ID order.
func accessKey(id string, t time.Time) []byte {
	sec, nsec := clampTime(t)
	k := make([]byte, 12, 12+len(id))
	binary.BigEndian.PutUint64(k, uint64(sec-minUnixSec))
	binary.BigEndian.PutUint32(k[8:], uint32(nsec))
	return append(k, id...)
}

// putRecord stores r, replacing old (nil: there was no record), and keeps
// the counters and the access bucket in step.
func putRecord(tx *bolt.Tx, old *Record, r Record) error {
	v, err := encodeRecord(r)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketRecords).Put([]byte(r.ID), v); err != nil {
		return err
	}
	s, err := readUsage(tx)
	if err != nil {
		return err
	}
	access := tx.Bucket(bucketAccess)
	if old != nil {
		s.add(*old, -1)
		if !old.LastAccess.Equal(r.LastAccess) {
			if err := access.Delete(accessKey(old.ID, old.LastAccess)); err != nil {
				return err
			}
		}
	}
	s.add(r, 1)
	if err := access.Put(accessKey(r.ID, r.LastAccess), accessValue(r)); err != nil {
		return err
	}
	return writeUsage(tx, s)
}

// accessValue is r's value in the access bucket: its disk usage as a
// varint, then its key, so that eviction picks victims without decoding
// records.
func accessValue(r Record) []byte {
	e := encoder{b: make([]byte, 0, 10+len(r.Key))}
	e.varint(r.DiskUsage())
	e.b = append(e.b, r.Key...)
	return e.b
}

// deleteRecordTx removes the stored record r with its access entry and
// its share of the counters; with pruneCurrent, also its key's current
// entry if that still names it.
func deleteRecordTx(tx *bolt.Tx, r Record, pruneCurrent bool) error {
	if err := tx.Bucket(bucketRecords).Delete([]byte(r.ID)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketAccess).Delete(accessKey(r.ID, r.LastAccess)); err != nil {
		return err
	}
	s, err := readUsage(tx)
	if err != nil {
		return err
	}
	s.add(r, -1)
	if err := writeUsage(tx, s); err != nil {
		return err
	}
	if !pruneCurrent {
		return nil
	}
	cur := tx.Bucket(bucketCurrent)
	v := cur.Get([]byte(r.Key))
	if v == nil {
		return nil
	}
	if id, err := decodeCurrent(v); err != nil || id != r.ID {
		return err // another version is current now; keep it
	}
	return cur.Delete([]byte(r.Key))
}

// AccessPos is where a walk of the records in access order stands: pass
// the Pos of the last Access handed out to continue after it.
type AccessPos []byte

// Access is one record as eviction sees it, oldest first.
type Access struct {
	ID         string
	Key        string // S3 key
	LastAccess time.Time
	DiskBytes  int64     // Record.DiskUsage
	Pos        AccessPos // this entry's place in the order
}

// Oldest returns up to limit records in LastAccess order (ties by ID),
// starting after pos (from the oldest when pos is nil), in one read
// transaction: a chunk of an eviction round, with no record decoded.
func (db *DB) Oldest(after AccessPos, limit int) ([]Access, error) {
	var out []Access
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAccess).Cursor()
		for k, v := cursorAfter(c, after); k != nil && len(out) < limit; k, v = c.Next() {
			if len(k) <= 12 {
				return fmt.Errorf("%w: access key %q is too short", ErrCorrupt, k)
			}
			sec := int64(binary.BigEndian.Uint64(k)) + minUnixSec
			nsec := int64(binary.BigEndian.Uint32(k[8:]))
			d := decoder{b: v}
			disk := d.nonNegative("disk bytes")
			if d.err != nil {
				return fmt.Errorf("access entry %q: %w", k, d.err)
			}
			out = append(out, Access{ID: string(k[12:]), Key: string(d.b), DiskBytes: disk,
				LastAccess: time.Unix(sec, nsec).UTC(), Pos: append(AccessPos(nil), k...)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("records in access order: %w", err)
	}
	return out, nil
}
