package index

import (
	"bytes"
	"sort"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// The schema 1 -> 2 upgrade of the records and pins (migrate.go): schema 1
// had no counters and no access bucket, and pinned objects one by one:
//
//	pins     objectID + "\x00" + jobID -> empty
//	jobpins  jobID + "\x00" + objectID -> empty
var (
	bucketPinsV1    = []byte("pins")
	bucketJobPinsV1 = []byte("jobpins")
)

// upgradeRecords builds the counters and the access bucket from a walk of
// the records, and drops current entries whose record is gone.
func upgradeRecords(tx *bolt.Tx) error {
	var s Stats
	access := tx.Bucket(bucketAccess)
	records := tx.Bucket(bucketRecords)
	err := records.ForEach(func(k, v []byte) error {
		r, err := decodeRecord(string(k), v)
		if err != nil {
			return err
		}
		s.add(r, 1)
		return access.Put(accessKey(r.ID, r.LastAccess), accessValue(r))
	})
	if err != nil {
		return err
	}
	if err := writeUsage(tx, s); err != nil {
		return err
	}
	cur := tx.Bucket(bucketCurrent)
	var gone [][]byte
	err = cur.ForEach(func(k, v []byte) error {
		id, err := decodeCurrent(v)
		if err != nil {
			return err
		}
		if records.Get([]byte(id)) == nil {
			gone = append(gone, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range gone {
		if err := cur.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// upgradePins turns each job's object pins into path pins and drops the
// schema 1 pin buckets. A job's paths are mount-relative and the index
// does not know the mount's prefix, so it is found from the keys of the
// job's pinned records (see pinPathsOf); a pinned record no path then
// covers keeps a pin on its own key, so nothing pinned before is
// unpinned after. Pins of objects with no record are dropped: a running
// job pins its paths again when it resumes, and an ended job's objects
// that were never cached protect nothing.
func upgradePins(tx *bolt.Tx) error {
	jobPins := tx.Bucket(bucketJobPinsV1)
	if jobPins != nil {
		keys := make(map[string][]string) // job -> keys of its pinned records
		records := tx.Bucket(bucketRecords)
		err := jobPins.ForEach(func(k, _ []byte) error {
			job, obj, ok := bytes.Cut(k, []byte{0})
			if !ok {
				return nil
			}
			if v := records.Get(obj); v != nil {
				r, err := decodeRecord(string(obj), v)
				if err != nil {
					return err
				}
				keys[string(job)] = append(keys[string(job)], r.Key)
			} else if _, seen := keys[string(job)]; !seen {
				keys[string(job)] = nil
			}
			return nil
		})
		if err != nil {
			return err
		}
		jobs, pins := tx.Bucket(bucketJobs), tx.Bucket(bucketPathPins)
		for job, ks := range keys {
			v := jobs.Get([]byte(job))
			if v == nil {
				continue // a stray pin: its job is gone
			}
			j, err := decodeJob(job, v)
			if err != nil {
				return err
			}
			for p, n := range pinPathsOf(j.Paths, ks) {
				if err := pins.Put(pathPinKey(job, p), encodeObjects(n)); err != nil {
					return err
				}
			}
		}
	}
	for _, name := range [][]byte{bucketPinsV1, bucketJobPinsV1} {
		if tx.Bucket(name) != nil {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
	}
	return nil
}

// pinPathsOf returns path pins (path -> objects under it) that cover every
// key in keys, for a job asked for the mount-relative paths rels. The
// mount's prefix is the one most keys agree on: for a key k and a path
// rel, k is prefix+rel (a file) or starts with prefix+rel+"/" (a folder),
// with prefix "" or ending in "/". A key no path covers under that prefix
// is pinned by itself.
func pinPathsOf(rels, keys []string) map[string]int64 {
	votes := make(map[string]int)
	for _, k := range keys {
		for _, rel := range rels {
			rel = strings.Trim(rel, "/")
			for _, p := range prefixesFor(k, rel) {
				votes[p]++
			}
		}
	}
	var prefix string
	best := -1
	cands := make([]string, 0, len(votes))
	for p := range votes {
		cands = append(cands, p)
	}
	sort.Strings(cands) // ties: the shortest prefix, the same every run
	for _, p := range cands {
		if votes[p] > best {
			prefix, best = p, votes[p]
		}
	}
	out := make(map[string]int64)
	if best < 0 {
		for _, k := range keys {
			out[k]++
		}
		return out
	}
	var paths []string
	for _, rel := range rels {
		paths = append(paths, cleanPinPath(prefix+strings.Trim(rel, "/")))
	}
	for _, k := range keys {
		covered := false
		for _, p := range paths {
			if Covers(p, k) {
				out[p]++
				covered = true
				break
			}
		}
		if !covered {
			out[k]++
		}
	}
	return out
}

// prefixesFor returns each prefix P ("" or ending in "/") with key equal
// to P+rel or under P+rel+"/". An empty rel (the mount root) fits every
// folder of key.
func prefixesFor(key, rel string) []string {
	var out []string
	for i := 0; i <= len(key); i++ {
		if i > 0 && key[i-1] != '/' {
			continue
		}
		p, rest := key[:i], key[i:]
		if rel == "" {
			if rest != "" {
				out = append(out, p)
			}
			continue
		}
		if rest == rel || strings.HasPrefix(rest, rel+"/") {
			out = append(out, p)
		}
	}
	return out
}
