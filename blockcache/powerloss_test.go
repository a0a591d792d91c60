package blockcache

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"s3cachefs/index"
)

// TestPowerLossServesNothingUnproven stops a fetch at each fault point
// between writing a part, making it durable and recording it, as a crash
// or power loss there would; fills the part's bytes in the cache file with
// garbage, as a torn or lost write leaves them; then "restarts" (reopens
// the index and the cache over the same folder) and reads the object. The
// index must pass index.Check, the part proven before the crash must be
// served from SSD, and the part cut short must be fetched again: its
// garbage is never served, whichever point the crash hit.
func TestPowerLossServesNothingUnproven(t *testing.T) {
	for _, point := range []string{"write", "sync", "record"} {
		t.Run(point, func(t *testing.T) {
			var armed atomic.Bool
			crash := errors.New("crash at " + point)
			f := newFixture(t, Options{ReadAhead: -1, Fault: func(p, id string) error {
				if p == point && armed.Load() {
					return crash
				}
				return nil
			}})
			data := randBytes(21, 2*testPart)
			obj := f.src.Put("p", data)
			h := f.openHandle(obj)
			// Part 0 is fetched, made durable and recorded: proven.
			if _, err := h.ReadAt(t.Context(), buf(testPart), 0); err != nil {
				t.Fatal(err)
			}
			armed.Store(true)
			if _, err := h.ReadAt(t.Context(), buf(10), testPart); !errors.Is(err, crash) {
				t.Fatalf("read of part 1 with a crash at %s: %v", point, err)
			}
			h.Close()
			f.close()

			id := ObjectID("bucket", obj)
			powerLoss(t, objectPath(f.dir, id), testPart, testPart)
			if err := index.Check(filepath.Join(f.dir, "index.db")); err != nil {
				t.Fatalf("index after the crash: %v", err)
			}
			armed.Store(false)
			f.open(Options{ReadAhead: -1})
			rec, ok, err := f.db.Record(id)
			if err != nil || !ok || rec.Present.Count() != testPart/testBlock {
				t.Fatalf("record after the crash: %d blocks present (ok %v, err %v), want part 0's %d",
					rec.Present.Count(), ok, err, testPart/testBlock)
			}
			before := f.src.Stats().Gets
			if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
				t.Fatalf("after a crash at %s the cache served bytes that differ from the source at %d",
					point, powerLossDiff(got, data))
			}
			if gets := f.src.Stats().Gets - before; gets != 1 {
				t.Fatalf("after a crash at %s: %d GETs, want 1 (part 1 only)", point, gets)
			}
			// Had part 1 been recorded before it was durable, its
			// checksums would have caught the garbage: none may.
			if s := f.c.Stats(); s.BytesFromS3 != testPart || s.Corrupt != 0 {
				t.Fatalf("after a crash at %s: %d bytes fetched (want part 1's %d), %d damaged blocks found (want 0)",
					point, s.BytesFromS3, testPart, s.Corrupt)
			}
		})
	}
}

// powerLoss overwrites n bytes at off of the cache file at path with
// garbage, as a write that never reached the disk whole leaves them.
func powerLoss(t *testing.T, path string, off, n int64) {
	t.Helper()
	file, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if _, err := file.WriteAt(bytes.Repeat([]byte{0xA5}, int(n)), off); err != nil {
		t.Fatal(err)
	}
}

// powerLossDiff is the first offset where a and b differ.
func powerLossDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
