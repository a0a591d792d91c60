package index

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Record is one cached object version, stored under its cache ID.
type Record struct {
	ID         string    // chosen by blockcache; the bbolt key, must not be empty
	Key        string    // S3 key
	Version    string    // Object.Version() of the cached bytes
	Size       int64     // bytes
	BlockSize  int64     // bytes per block, > 0
	Present    Blocks    // blocks durable on SSD; Len() == NumBlocks(Size, BlockSize)
	LastAccess time.Time // for least-recently-used eviction
	// Sums are the CRC-32C (Castagnoli) checksums of the blocks, by block
	// number; nil, or 0 for a block, means not known. A present block's
	// sum was recorded together with its presence.
	Sums []uint32
}

// Sum returns the recorded checksum of block i and whether there is one.
func (r Record) Sum(i int64) (uint32, bool) {
	if i < 0 || i >= int64(len(r.Sums)) || r.Sums[i] == 0 {
		return 0, false
	}
	return r.Sums[i], true
}

// Complete reports whether every block of the object is present.
func (r Record) Complete() bool { return r.Present.Full() }

// PresentBytes returns how many bytes of the object are present: full
// blocks count BlockSize, the last block only its real length.
func (r Record) PresentBytes() int64 {
	n := r.Present.Count() * r.BlockSize
	if last := r.Present.Len() - 1; last >= 0 && r.Present.Has(last) {
		n -= last*r.BlockSize + r.BlockSize - r.Size
	}
	return n
}

// Record returns the record stored under id; ok is false if there is none.
func (db *DB) Record(id string) (r Record, ok bool, err error) {
	if id == "" {
		return Record{}, false, nil
	}
	err = db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get([]byte(id))
		if v == nil {
			return nil
		}
		ok = true
		r, err = decodeRecord(id, v)
		return err
	})
	if err != nil {
		return Record{}, false, err
	}
	return r, ok, nil
}

// AddBlocksSums marks the len(sums) blocks from first of rec.ID present,
// recording their checksums (see Record.Sums) in the same transaction, and
// returns the stored record after the change. If no record with rec.ID
// exists it is created from rec's fields with an empty Present of the
// right length (rec.Present is ignored). An existing record keeps its
// LastAccess; its Key, Version, Size and BlockSize must match rec's
// (ErrInvalid otherwise), as must the block range.
//
// Callers must only add blocks whose bytes are already durable: after a
// crash, a recorded block is trusted. It is AddBlocksMany of one add, in
// a transaction of its own; a caller with many adds at once (blockcache's
// group commit) passes them all to AddBlocksMany.
func (db *DB) AddBlocksSums(rec Record, first int64, sums []uint32) (Record, error) {
	res := db.AddBlocksMany([]BlockAdd{{Rec: rec, First: first, Sums: sums}})[0]
	return res.Stored, res.Err
}

// checkAdd returns rec with an empty Present of its length and no Sums,
// or ErrInvalid if rec or the blocks [first, first+n) cannot be stored.
func checkAdd(rec Record, first, n int64) (Record, error) {
	rec.Present = Blocks{}
	rec.Sums = nil
	if rec.ID != "" && rec.Size >= 0 && rec.BlockSize > 0 {
		rec.Present = NewBlocks(NumBlocks(rec.Size, rec.BlockSize))
	}
	if err := checkRecordShape(rec); err != nil {
		return Record{}, err
	}
	if first < 0 || n < 0 || first > rec.Present.Len()-n {
		return Record{}, fmt.Errorf("%w: record %s: blocks [%d,+%d) outside [0,%d)", ErrInvalid, rec.ID, first, n, rec.Present.Len())
	}
	return rec, nil
}

// addBlocksTx marks blocks [first, first+n) of rec.ID present in tx (rec
// as checkAdd returns it), creating the record if needed, and returns the
// stored record. A new record counts as accessed when it is made, so that
// eviction does not take what was fetched just now first. The usage
// counters and the access order change with the record (putRecord). It
// writes nothing when it fails.
func addBlocksTx(tx *bolt.Tx, rec Record, first, n int64, sums []uint32) (Record, error) {
	b := tx.Bucket(bucketRecords)
	cur := rec
	cur.Present = rec.Present.Clone()
	if cur.LastAccess.IsZero() {
		cur.LastAccess = time.Now()
	}
	var old *Record
	if v := b.Get([]byte(rec.ID)); v != nil {
		stored, err := decodeRecord(rec.ID, v)
		if err != nil {
			return Record{}, err
		}
		if stored.Key != rec.Key || stored.Version != rec.Version || stored.Size != rec.Size || stored.BlockSize != rec.BlockSize {
			return Record{}, fmt.Errorf("%w: record %s: stored %q %q size %d block %d, adding for %q %q size %d block %d",
				ErrInvalid, rec.ID, stored.Key, stored.Version, stored.Size, stored.BlockSize, rec.Key, rec.Version, rec.Size, rec.BlockSize)
		}
		before := stored
		before.Present = stored.Present.Clone()
		old = &before
		cur = stored
	}
	for i := first; i < first+n; i++ {
		cur.Present.Set(i)
	}
	if sums != nil {
		all := make([]uint32, cur.Present.Len())
		copy(all, cur.Sums)
		copy(all[first:], sums)
		cur.Sums = all
	}
	return cur, putRecord(tx, old, cur)
}

// RemoveBlock marks block i of record id absent (its bytes were found
// damaged) and forgets its checksum. A missing record is left alone.
func (db *DB) RemoveBlock(id string, i int64) error {
	err := db.update(func(tx *bolt.Tx) error {
		return updateRecord(tx, id, func(r *Record) error {
			if i < 0 || i >= r.Present.Len() {
				return fmt.Errorf("%w: record %s: block %d outside [0,%d)", ErrInvalid, id, i, r.Present.Len())
			}
			r.Present.Clear(i)
			if r.Sums != nil {
				r.Sums[i] = 0
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("remove block %d of %s: %w", i, id, err)
	}
	return nil
}

// updateRecord applies fn to the stored record id and stores the result.
// A missing record is left alone: it may have been evicted meanwhile.
func updateRecord(tx *bolt.Tx, id string, fn func(*Record) error) error {
	b := tx.Bucket(bucketRecords)
	v := b.Get([]byte(id))
	if v == nil {
		return nil
	}
	r, err := decodeRecord(id, v)
	if err != nil {
		return err
	}
	before := r
	before.Present = r.Present.Clone()
	if err := fn(&r); err != nil {
		return err
	}
	return putRecord(tx, &before, r)
}

// TouchAll sets the LastAccess of each record named in times, in one
// transaction. A missing record is skipped: it may have been evicted
// meanwhile.
func (db *DB) TouchAll(times map[string]time.Time) error {
	if len(times) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(times)) // bbolt writes sorted keys best
	err := db.update(func(tx *bolt.Tx) error {
		for _, id := range ids {
			if id == "" {
				continue
			}
			err := updateRecord(tx, id, func(r *Record) error {
				r.LastAccess = times[id]
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("touch %d records: %w", len(ids), err)
	}
	return nil
}

// DeleteRecord removes record id (its data was evicted or dropped) and, in
// the same transaction, its key's current entry if that still names id,
// so current holds no more keys than the records. It returns what it
// removed; ok is false if there was no record, which is not an error.
func (db *DB) DeleteRecord(id string) (r Record, ok bool, err error) {
	gone, err := db.DeleteRecords([]string{id})
	if err != nil || len(gone) == 0 {
		return Record{}, false, err
	}
	return gone[0], true, nil
}

// DeleteRecords is DeleteRecord for each of ids, all in one transaction:
// eviction drops many small objects at once. It returns the records it
// removed; missing and empty IDs are skipped.
func (db *DB) DeleteRecords(ids []string) ([]Record, error) {
	sorted := slices.Clone(ids)
	slices.Sort(sorted) // bbolt writes sorted keys best
	var gone []Record
	err := db.update(func(tx *bolt.Tx) error {
		gone = gone[:0]
		b := tx.Bucket(bucketRecords)
		for _, id := range slices.Compact(sorted) {
			v := b.Get([]byte(id))
			if id == "" || v == nil {
				continue
			}
			r, err := decodeRecord(id, v)
			if err != nil {
				return err
			}
			if err := deleteRecordTx(tx, r, true); err != nil {
				return err
			}
			gone = append(gone, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("delete %d records: %w", len(ids), err)
	}
	return gone, nil
}

// ResetRecord removes record id, in one transaction, and returns what it
// removed (ok false: there was none): the object's blocks are forgotten
// and fetched again. Its key's current entry stays (the same version is
// fetched again), and pins, which are by path, are not touched.
func (db *DB) ResetRecord(id string) (r Record, ok bool, err error) {
	if id == "" {
		return Record{}, false, nil
	}
	err = db.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		v := b.Get([]byte(id))
		if v == nil {
			return nil
		}
		if r, err = decodeRecord(id, v); err != nil {
			return err
		}
		ok = true
		return deleteRecordTx(tx, r, false)
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("reset record %s: %w", id, err)
	}
	return r, ok, nil
}

// recordsChunk is how many records Records decodes per read transaction.
const recordsChunk = 256

// Records calls fn for every record in ID order until fn returns false.
// fn runs outside any transaction, so it may call other DB methods (for
// example DeleteRecord while evicting); records added or removed during the
// walk may or may not be seen.
func (db *DB) Records(fn func(Record) bool) error {
	var after []byte // last ID handed out; nil before the first chunk
	for {
		chunk, err := db.recordsAfter(after, recordsChunk)
		if err != nil {
			return err
		}
		for _, r := range chunk {
			if !fn(r) {
				return nil
			}
		}
		if len(chunk) < recordsChunk {
			return nil
		}
		after = []byte(chunk[len(chunk)-1].ID)
	}
}

// recordsAfter decodes up to limit records with IDs greater than after
// (all, from the first, when after is nil).
func (db *DB) recordsAfter(after []byte, limit int) ([]Record, error) {
	var out []Record
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := cursorAfter(c, after); k != nil && len(out) < limit; k, v = c.Next() {
			r, err := decodeRecord(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// LoadRecords stores recs as they are (LastAccess and presence included),
// replacing any record with the same ID, with their counters and access
// entries, in one transaction: a bulk load for tools, tests and
// benchmarks that build a large index. IDs must be unique; they are
// stored sorted, which bbolt loads fastest.
func (db *DB) LoadRecords(recs []Record) error {
	sorted := slices.Clone(recs)
	slices.SortFunc(sorted, func(a, b Record) int { return strings.Compare(a.ID, b.ID) })
	err := db.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		for _, r := range sorted {
			var old *Record
			if v := b.Get([]byte(r.ID)); v != nil {
				stored, err := decodeRecord(r.ID, v)
				if err != nil {
					return err
				}
				old = &stored
			}
			if err := putRecord(tx, old, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load %d records: %w", len(recs), err)
	}
	return nil
}
