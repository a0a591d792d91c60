package index

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// JobState is where a prefetch job stands.
type JobState uint8

// Job states. Only JobRunning jobs are resumed after a restart.
const (
	JobRunning   JobState = iota // queued or fetching; resumed after a restart
	JobDone                      // every object is cached
	JobFailed                    // gave up; Error says why, Failed lists keys
	JobCancelled                 // stopped by the user
	numJobStates                 // first invalid value; keep last
)

// String returns the lower-case name shown to users ("running", ...).
func (s JobState) String() string {
	switch s {
	case JobRunning:
		return "running"
	case JobDone:
		return "done"
	case JobFailed:
		return "failed"
	case JobCancelled:
		return "cancelled"
	}
	return fmt.Sprintf("JobState(%d)", uint8(s))
}

// Job is a prefetch job, stored so that it resumes after a restart.
type Job struct {
	ID      string    // chosen by the caller, sortable (e.g. "20261129T041500-1"); not empty, no NUL
	Paths   []string  // mount-relative paths the user asked for, in the user's order
	Created time.Time // stored in UTC, to the nanosecond
	State   JobState  // JobRunning, JobDone, JobFailed or JobCancelled
	Error   string    // why it failed
	Failed  []string  // S3 keys that kept failing
	// Shard of Shards: the job fetches only the objects whose key falls
	// in shard Shard (0 to Shards-1) of Shards (prefetch --shard); 0 of
	// 0 is every object.
	Shard, Shards int
}

// checkID refuses IDs that cannot be part of a pin key: pin keys join two
// IDs with a NUL byte (see pins.go), and bbolt refuses empty keys.
func checkID(what, id string) error {
	if id == "" || strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("%w: %s ID %q is empty or contains NUL", ErrInvalid, what, id)
	}
	return nil
}

// PutJob stores j under j.ID, replacing any job with that ID (its pins are
// kept). It fails with ErrInvalid for an empty ID, an ID containing NUL, or
// an unknown State.
func (db *DB) PutJob(j Job) error {
	v, err := encodeJob(j)
	if err != nil {
		return err
	}
	err = db.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).Put([]byte(j.ID), v)
	})
	if err != nil {
		return fmt.Errorf("put job %s: %w", j.ID, err)
	}
	return nil
}

// CancelJob records the running job id as cancelled, with failed as its
// failed keys when not nil, and drops every pin it holds, in one
// transaction, so that no cancelled job keeps its objects from eviction.
// A job that is not running is left alone. It returns the stored job's
// state before; ok is false if no job id is stored.
func (db *DB) CancelJob(id string, failed []string) (was JobState, ok bool, err error) {
	if id == "" {
		return 0, false, nil
	}
	err = db.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		v := b.Get([]byte(id))
		if v == nil {
			return nil
		}
		j, err := decodeJob(id, v)
		if err != nil {
			return err
		}
		was, ok = j.State, true
		if was != JobRunning {
			return nil
		}
		j.State = JobCancelled
		if failed != nil {
			j.Failed = failed
		}
		if v, err = encodeJob(j); err != nil {
			return err
		}
		if err := db.unpinJobTx(tx, id); err != nil {
			return err
		}
		return b.Put([]byte(id), v)
	})
	if err != nil {
		return 0, false, fmt.Errorf("cancel job %s: %w", id, err)
	}
	return was, ok, nil
}

// Job returns the job stored under id; ok is false if there is none.
func (db *DB) Job(id string) (j Job, ok bool, err error) {
	if id == "" {
		return Job{}, false, nil
	}
	err = db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketJobs).Get([]byte(id))
		if v == nil {
			return nil
		}
		ok = true
		j, err = decodeJob(id, v)
		return err
	})
	if err != nil {
		return Job{}, false, err // decodeJob names the job
	}
	return j, ok, nil
}

// Jobs returns every stored job, sorted by ID. Jobs are few (one per
// prefetch command), so they are read in one transaction.
func (db *DB) Jobs() ([]Job, error) {
	var out []Job
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			j, err := decodeJob(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, j)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return out, nil
}

// DeleteJob removes job id and every pin it holds, in one transaction;
// deleting a missing job is not an error (its stray pins, if any, still go).
func (db *DB) DeleteJob(id string) error {
	if id == "" {
		return nil
	}
	err := db.update(func(tx *bolt.Tx) error {
		if err := db.unpinJobTx(tx, id); err != nil {
			return err
		}
		return tx.Bucket(bucketJobs).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete job %s: %w", id, err)
	}
	return nil
}

// PruneJobs deletes the ended jobs (done, failed, cancelled) older than
// the newest keep of them, in one transaction, and returns their IDs. A
// job that still holds pins is kept whatever its age: its pins are filed
// under it, and deleting it would drop them (see DeleteJob). Running jobs
// are never pruned.
func (db *DB) PruneJobs(keep int) (pruned []string, err error) {
	err = db.update(func(tx *bolt.Tx) error {
		pruned = nil // Update may not run fn again, but keep it idempotent
		var ended [][]byte
		jobs := tx.Bucket(bucketJobs)
		err := jobs.ForEach(func(k, v []byte) error {
			j, err := decodeJob(string(k), v)
			if err == nil && j.State != JobRunning {
				ended = append(ended, bytes.Clone(k))
			}
			return err
		})
		if err != nil {
			return err
		}
		for _, k := range ended[:max(len(ended)-keep, 0)] { // sorted by ID: oldest first
			if hasPinsTx(tx, string(k)) {
				continue
			}
			if err := jobs.Delete(k); err != nil {
				return err
			}
			pruned = append(pruned, string(k))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prune jobs: %w", err)
	}
	return pruned, nil
}
