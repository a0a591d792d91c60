package index

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func sampleJob() Job {
	return Job{
		ID:      "20261129T041500-1",
		Paths:   []string{"train", "dev/ü"},
		Created: time.Date(2026, 11, 29, 4, 15, 0, 123, time.UTC),
		State:   JobFailed,
		Error:   "3 objects kept failing",
		Failed:  []string{"data/train/a.npz", ""},
	}
}

// jobEqual compares jobs field by field; nil and empty slices are equal.
func jobEqual(a, b Job) bool {
	return a.ID == b.ID && slices.Equal(a.Paths, b.Paths) && a.Created.Equal(b.Created) &&
		a.State == b.State && a.Error == b.Error && slices.Equal(a.Failed, b.Failed) &&
		a.Shard == b.Shard && a.Shards == b.Shards
}

func TestJobStateString(t *testing.T) {
	for s, want := range map[JobState]string{
		JobRunning: "running", JobDone: "done", JobFailed: "failed", JobCancelled: "cancelled", 9: "JobState(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("JobState(%d).String() = %q, want %q", uint8(s), got, want)
		}
	}
}

func TestJobCodecRoundTrip(t *testing.T) {
	sharded := sampleJob()
	sharded.Shard, sharded.Shards = 2, 8
	for _, j := range []Job{sampleJob(), {ID: "x"}, {ID: "y", State: JobCancelled, Paths: []string{}}, sharded} {
		v, err := encodeJob(j)
		if err != nil {
			t.Fatal(err)
		}
		if v[0] != codecV1 {
			t.Errorf("first byte %d, want codec version", v[0])
		}
		got, err := decodeJob(j.ID, v)
		if err != nil {
			t.Fatal(err)
		}
		if !jobEqual(got, j) || got.Created.Location() != time.UTC {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, j)
		}
	}
}

func TestEncodeJobRefusesInvalid(t *testing.T) {
	for name, j := range map[string]Job{
		"empty ID":      {},
		"NUL in ID":     {ID: "a\x00b"},
		"unknown state": {ID: "a", State: numJobStates},
		"shard past":    {ID: "a", Shard: 3, Shards: 3},
		"shard of none": {ID: "a", Shard: 1},
	} {
		if _, err := encodeJob(j); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: encode err = %v, want ErrInvalid", name, err)
		}
	}
	db := openTest(t)
	if err := db.PutJob(Job{ID: "a", State: 200}); !errors.Is(err, ErrInvalid) {
		t.Errorf("PutJob with unknown state: err = %v, want ErrInvalid", err)
	}
	if jobs, err := db.Jobs(); err != nil || len(jobs) != 0 {
		t.Errorf("after refused PutJob, Jobs = %v, %v", jobs, err)
	}
}

func TestDecodeJobRefusesMalformed(t *testing.T) {
	v, _ := encodeJob(sampleJob())
	for i := range len(v) {
		if _, err := decodeJob("j", v[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("job truncated to %d bytes: err = %v, want ErrCorrupt", i, err)
		}
	}
	if _, err := decodeJob("j", append(slices.Clone(v), 0)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("trailing byte: err = %v, want ErrCorrupt", err)
	}
	// Created of time.Unix(0,0) is bytes 0,0; the state byte follows.
	bad := map[string][]byte{
		"unknown version": {2, 0, 0, 0, 0, 0, 0},
		"unknown state":   {1, 0, 0, 4, 0, 0, 0},
		"huge count":      {1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
	if _, err := decodeJob("j", []byte{1, 0, 0, 3, 0, 0, 0}); err != nil {
		t.Fatalf("control value refused: %v", err)
	}
	for name, b := range bad {
		if _, err := decodeJob("j", b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestJobsStoreListReplaceDelete(t *testing.T) {
	db := openTest(t)
	if _, ok, err := db.Job("nope"); ok || err != nil {
		t.Fatalf("Job(missing) = %v, %v", ok, err)
	}
	// Stored out of order; Jobs sorts by ID.
	for _, id := range []string{"20261129T041500-2", "20261129T041500-10", "20251231T000000-1", "20261129T041500-1"} {
		j := sampleJob()
		j.ID = id
		if err := db.PutJob(j); err != nil {
			t.Fatal(err)
		}
	}
	jobs, err := db.Jobs()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	want := []string{"20251231T000000-1", "20261129T041500-1", "20261129T041500-10", "20261129T041500-2"}
	if !slices.Equal(ids, want) {
		t.Errorf("Jobs order %q, want %q", ids, want)
	}

	j := sampleJob()
	j.State, j.Error, j.Failed = JobDone, "", nil
	if err := db.PutJob(j); err != nil {
		t.Fatal(err)
	}
	got, ok, err := db.Job(j.ID)
	if err != nil || !ok || !jobEqual(got, j) {
		t.Errorf("after replace Job = %+v, %v, %v; want %+v", got, ok, err, j)
	}

	if err := db.DeleteJob(j.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteJob(j.ID); err != nil {
		t.Errorf("deleting a missing job: %v", err)
	}
	if _, ok, _ := db.Job(j.ID); ok {
		t.Error("job still there after DeleteJob")
	}
	if jobs, _ := db.Jobs(); len(jobs) != 3 {
		t.Errorf("%d jobs left, want 3", len(jobs))
	}
}

// Jobs, pins and current versions survive Close and Open.
func TestJobsPinsVersionsPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db := openAt(t, path)
	j := sampleJob()
	if err := db.PutJob(j); err != nil {
		t.Fatal(err)
	}
	if err := db.Pin(j.ID, map[string]int64{"data/sub": 2, "data/b.npz": 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SetCurrent("data/a.npz", "o1"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openAt(t, path)
	defer db.Close()
	got, ok, err := db.Job(j.ID)
	if err != nil || !ok || !jobEqual(got, j) {
		t.Errorf("after reopen Job = %+v, %v, %v", got, ok, err)
	}
	if pins := db.PinsOf("data/sub/x"); len(pins) != 1 || pins[0] != (Pin{Job: j.ID, Path: "data/sub", Objects: 2}) {
		t.Errorf("after reopen PinsOf(data/sub/x) = %+v", pins)
	}
	if n, err := db.PinnedCount(); err != nil || n != 3 {
		t.Errorf("after reopen PinnedCount = %d, %v; want 3", n, err)
	}
	if id, ok, err := db.Current("data/a.npz"); err != nil || !ok || id != "o1" {
		t.Errorf("after reopen Current = %q, %v, %v", id, ok, err)
	}
}

// FuzzDecodeJob: decoding arbitrary bytes never panics, fails only with
// ErrCorrupt, and whatever decodes re-encodes to a value that decodes to the
// same job and is a fixed point of encoding.
func FuzzDecodeJob(f *testing.F) {
	for _, j := range []Job{sampleJob(), {ID: "e"}, {ID: "r", State: JobRunning, Paths: []string{"a"}}} {
		v, err := encodeJob(j)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 4, 0, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		j, err := decodeJob("id", b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		v, err := encodeJob(j)
		if err != nil {
			t.Fatalf("decoded job %+v does not encode: %v", j, err)
		}
		j2, err := decodeJob("id", v)
		if err != nil {
			t.Fatalf("re-encoded job does not decode: %v", err)
		}
		if !reflect.DeepEqual(j, j2) {
			t.Fatalf("round trip changed the job:\n%+v\n%+v", j, j2)
		}
		if v2, _ := encodeJob(j2); !bytes.Equal(v, v2) {
			t.Fatalf("encoding is not stable")
		}
	})
}

// A file written before jobs, pins and current existed gains those buckets
// on Open and keeps its records.
func TestOpenAddsNewBucketsToOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db := openAt(t, path)
	if _, err := db.AddBlocks(Record{ID: "r", Key: "k", Size: 1, BlockSize: 1}, 0, 1); err != nil {
		t.Fatal(err)
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketJobs, bucketPathPins, bucketCurrent} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openAt(t, path)
	defer db.Close()
	putJobs(t, db, "j")
	if err := db.Pin("j", map[string]int64{"k": 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SetCurrent("k", "r"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := db.Record("r"); !ok || err != nil {
		t.Errorf("record lost on reopen: %v, %v", ok, err)
	}
}
