package index

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// scaleRecords is the cached-object count of issue 13's targets.
const scaleRecords = 1_400_000

// LoadScale fills db with n complete records of 110 KB objects (ImageNet
// sized), in transactions of 100,000, with access times one second apart.
func loadScale(tb testing.TB, db *DB, n int) {
	tb.Helper()
	const chunk = 100_000
	base := time.Unix(1_700_000_000, 0)
	for start := 0; start < n; start += chunk {
		recs := make([]Record, 0, chunk)
		for i := start; i < min(start+chunk, n); i++ {
			r := Record{ID: fmt.Sprintf("%064x", i), Key: fmt.Sprintf("ds/train/n%05d/img%07d.JPEG", i/1300, i),
				Version: "0123456789abcdef0123456789abcdef", Size: 110 << 10, BlockSize: 1 << 20,
				LastAccess: base.Add(time.Duration(i) * time.Second)}
			r.Present = NewBlocks(1)
			r.Present.Set(0)
			recs = append(recs, r)
		}
		if err := db.LoadRecords(recs); err != nil {
			tb.Fatal(err)
		}
	}
}

// scaleIndex returns the path of an index holding scaleRecords records,
// built once per benchmark run.
func scaleIndex(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "index.db")
	db, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	loadScale(b, db, scaleRecords)
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkStatsScale is what every status and /metrics scrape asks of the
// index, with 1.4 M cached objects (target: well under 100 ms).
func BenchmarkStatsScale(b *testing.B) {
	db, err := Open(scaleIndex(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.ResetTimer()
	for b.Loop() {
		st, err := db.Stats()
		if err != nil || st.Objects != scaleRecords {
			b.Fatalf("Stats = %+v, %v", st, err)
		}
		if _, err := db.PinnedCount(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenScale opens and closes an index of 1.4 M records: the
// index's share of mount startup.
func BenchmarkOpenScale(b *testing.B) {
	path := scaleIndex(b)
	b.ResetTimer()
	for b.Loop() {
		db, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpgradeScale opens a schema 1 file of 1.4 M records, one job
// pinning them all object by object: the one-off upgrade a cache dir of
// the previous version gets on its first mount.
func BenchmarkUpgradeScale(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		path := filepath.Join(b.TempDir(), "index.db")
		db, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		loadScale(b, db, scaleRecords)
		if err := db.PutJob(Job{ID: "j", Paths: []string{"train"}, State: JobDone}); err != nil {
			b.Fatal(err)
		}
		// Back to schema 1: no counters, no access order, object pins.
		err = db.bolt.Update(func(tx *bolt.Tx) error {
			for _, name := range [][]byte{bucketAccess, bucketPathPins} {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
			pins, err := tx.CreateBucket(bucketPinsV1)
			if err != nil {
				return err
			}
			jobPins, err := tx.CreateBucket(bucketJobPinsV1)
			if err != nil {
				return err
			}
			for i := range scaleRecords {
				id := fmt.Sprintf("%064x", i)
				if err := jobPins.Put([]byte("j\x00"+id), nil); err != nil {
					return err
				}
				if err := pins.Put([]byte(id+"\x00j"), nil); err != nil {
					return err
				}
			}
			meta := tx.Bucket(bucketMeta)
			if err := meta.Delete(keyUsage); err != nil {
				return err
			}
			return meta.Put(keySchema, binary.AppendUvarint(nil, 1))
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		db, err = Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if st, _ := db.Stats(); st.Objects != scaleRecords || len(db.Pins()) != 1 {
			b.Fatalf("after the upgrade: %+v, pins %+v", st, db.Pins())
		}
		db.Close()
		b.StartTimer()
	}
}
