package index

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// An upgrade rewrites a file of schema version from to version from+1, in
// the transaction that also stores the new version: a crash leaves the
// file wholly at one version or the other.
type upgrade struct {
	from  uint64
	steps []func(tx *bolt.Tx) error // run in order
}

// upgrades lists every layout change a file of an older schema version is
// brought through on Open, oldest first. Each step owns the buckets it
// rewrites; see doc.go for what each version holds.
var upgrades = []upgrade{
	{from: 1, steps: []func(tx *bolt.Tx) error{
		upgradeListingsV1, // listings: one value per folder → one key per entry
		upgradeRecords,    // records_migrate.go: counters, access order, current pruned
		upgradePins,       // records_migrate.go: object pins to path pins
	}},
}

// migrate brings a file at version v up to SchemaVersion, one version per
// upgrade, and stores the new version. It reports whether it changed
// anything. A version it has no upgrade from is ErrSchema.
func migrate(tx *bolt.Tx, v uint64) (bool, error) {
	if v == SchemaVersion {
		return false, nil
	}
	for v < SchemaVersion {
		var up *upgrade
		for i := range upgrades {
			if upgrades[i].from == v {
				up = &upgrades[i]
			}
		}
		if up == nil {
			break
		}
		for _, step := range up.steps {
			if err := step(tx); err != nil {
				return false, fmt.Errorf("upgrade index from schema %d: %w", v, err)
			}
		}
		v++
	}
	if v != SchemaVersion {
		return false, fmt.Errorf("%w: file has version %d, want %d", ErrSchema, v, SchemaVersion)
	}
	meta := tx.Bucket(bucketMeta)
	return true, meta.Put(keySchema, binary.AppendUvarint(nil, SchemaVersion))
}
