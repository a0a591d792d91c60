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
// blocks (and current version) are recorded, and Stale then holds the IDs
// SetCurrent returns (none unless Current was set).
type Added struct {
	Stale []string
	Err   error
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
			stale, err := addTx(tx, checked[i], adds[i])
			if err != nil {
				return err
			}
			out[i].Stale = stale
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
			out[i].Stale, err = addTx(tx, checked[i], adds[i])
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

// addTx records a (rec as checkAdd returned it) in tx.
func addTx(tx *bolt.Tx, rec Record, a BlockAdd) ([]string, error) {
	if _, err := addBlocksTx(tx, rec, a.First, int64(len(a.Sums)), a.Sums); err != nil {
		return nil, err
	}
	if !a.Current {
		return nil, nil
	}
	return setCurrentTx(tx, rec.Key, rec.ID)
}

func wrapAdd(a BlockAdd, err error) error {
	if err != nil {
		return fmt.Errorf("add blocks to %s: %w", a.Rec.ID, err)
	}
	return nil
}
