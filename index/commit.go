package index

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// BlockAdd is one object's share of AddBlocksMany: what AddBlocksSums(Rec,
// First, Sums) records, and, when Current is set, SetCurrent(Rec.Key,
// Rec.ID) too, in the same transaction.
type BlockAdd struct {
	Rec     Record
	First   int64
	Sums    []uint32
	Current bool
}

// Added is what AddBlocksMany did for one BlockAdd: Err is nil when its
// blocks (and current version) are recorded; Stored then holds the record
// after the change (as AddBlocksSums returns it) and Stale the IDs
// SetCurrent returns (none unless Current was set).
type Added struct {
	Stored Record
	Stale  []string
	Err    error
}

// AddBlocksMany records every add in one fsync'd write transaction, in
// order (a later add of the same record sees an earlier one's blocks), and
// returns one result per add. If that transaction fails, each add is
// recorded in a transaction of its own, so an add that cannot be stored
// fails alone. The same rule as AddBlocksSums holds: callers add only
// blocks already durable. It is meant for one caller that gathers the adds
// of many concurrent fetches (a group commit), and may be called
// concurrently like every DB method.
func (db *DB) AddBlocksMany(adds []BlockAdd) []Added {
	out := make([]Added, len(adds))
	checked := make([]Record, len(adds))
	var todo []int // adds that passed checkAdd
	for i, a := range adds {
		rec, err := checkAddCurrent(a)
		if err != nil {
			out[i].Err = err
			continue
		}
		checked[i] = rec
		todo = append(todo, i)
	}
	if len(todo) == 0 {
		return out
	}
	err := db.update(func(tx *bolt.Tx) error {
		for _, i := range todo {
			stored, stale, err := addTx(tx, checked[i], adds[i])
			if err != nil {
				return err
			}
			out[i].Stored, out[i].Stale = stored, stale
		}
		return nil
	})
	if err == nil || len(todo) == 1 {
		for _, i := range todo {
			out[i].Err = wrapAdd(adds[i], err)
		}
		return out
	}
	for _, i := range todo { // alone, so that one bad add fails alone
		err := db.update(func(tx *bolt.Tx) error {
			var err error
			out[i].Stored, out[i].Stale, err = addTx(tx, checked[i], adds[i])
			return err
		})
		out[i].Err = wrapAdd(adds[i], err)
	}
	return out
}

// checkAddCurrent checks a as AddBlocksSums and SetCurrent check theirs.
func checkAddCurrent(a BlockAdd) (Record, error) {
	if a.Current && a.Rec.Key == "" {
		return Record{}, fmt.Errorf("%w: set current %q to %q: empty key", ErrInvalid, a.Rec.Key, a.Rec.ID)
	}
	rec, err := checkAdd(a.Rec, a.First, int64(len(a.Sums)))
	return rec, wrapAdd(a, err)
}

// addTx records a (rec as checkAdd returned it) in tx and returns the
// stored record and the stale IDs.
func addTx(tx *bolt.Tx, rec Record, a BlockAdd) (Record, []string, error) {
	stored, err := addBlocksTx(tx, rec, a.First, int64(len(a.Sums)), a.Sums)
	if err != nil || !a.Current {
		return stored, nil, err
	}
	stale, err := setCurrentTx(tx, rec.Key, rec.ID)
	return stored, stale, err
}

func wrapAdd(a BlockAdd, err error) error {
	if err != nil {
		return fmt.Errorf("add blocks to %s: %w", a.Rec.ID, err)
	}
	return nil
}
