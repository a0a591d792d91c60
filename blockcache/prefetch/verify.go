package prefetch

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"s3cachefs/blockcache"
	"s3cachefs/blockcache/internal/ctxio"
	"s3cachefs/index"
)

// FolderReport compares one path's objects in S3 with the cache.
type FolderReport struct {
	Path      string   `json:"path"`
	InS3      int64    `json:"in_s3"`
	Bytes     int64    `json:"bytes"`
	Cached    int64    `json:"cached"`            // every block on SSD
	Partial   int64    `json:"partial"`           // some blocks on SSD
	Stale     int64    `json:"stale"`             // an older version is cached, not S3's
	Missing   int64    `json:"missing"`           // nothing cached
	Checked   int64    `json:"checked"`           // --deep: complete files whose MD5 matched the ETag
	Unchecked int64    `json:"unchecked"`         // --deep: complete files with a multipart ETag
	Corrupt   []string `json:"corrupt,omitempty"` // "key@offset" per damaged block, "key (MD5)" per file failing its ETag
}

// Verify lists paths afresh and reports, per path, how the cache stands
// against S3. With deep, every cached block is read back and checked
// against the CRC-32C recorded when it was written (damaged blocks are
// reported by key and offset, and fetched again on the next read), and
// every complete file whose ETag is a plain MD5 (single-part upload) is
// hashed whole; a mismatch drops the file's data.
func (j *Jobs) Verify(ctx context.Context, paths []string, deep bool) ([]FolderReport, error) {
	var out []FolderReport
	for _, p := range paths {
		f, err := j.walkPath(ctx, p)
		if err != nil {
			return nil, err
		}
		r := FolderReport{Path: p}
		for _, o := range f.objects {
			if err := j.verifyObject(ctx, o, deep, &r); err != nil {
				return nil, err
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func (j *Jobs) verifyObject(ctx context.Context, o index.Object, deep bool, r *FolderReport) error {
	r.InS3++
	r.Bytes += o.Size
	id := blockcache.ObjectID(j.c.Bucket(), o)
	rec, ok, err := j.db.Record(id)
	if err != nil {
		return err
	}
	if ok && deep && rec.Present.Count() > 0 {
		damaged, err := j.c.Scrub(ctx, o)
		if err != nil {
			return fmt.Errorf("check %s: %w", o.Key, err)
		}
		for _, off := range damaged {
			r.Corrupt = append(r.Corrupt, fmt.Sprintf("%s@%d", o.Key, off))
		}
		if len(damaged) > 0 {
			if rec, ok, err = j.db.Record(id); err != nil {
				return err
			}
		}
	}
	switch {
	case ok && rec.Complete():
		r.Cached++
	case ok && rec.Present.Count() > 0:
		r.Partial++
		return nil
	default:
		cur, has, err := j.db.Current(o.Key)
		if err != nil {
			return err
		}
		if _, live, _ := j.db.Record(cur); has && cur != id && live {
			r.Stale++
		} else {
			r.Missing++
		}
		return nil
	}
	if !deep {
		return nil
	}
	if !isMD5(o.ETag) {
		r.Unchecked++
		return nil
	}
	sum, err := fileMD5(ctx, j.c.FilePath(id), o.Size)
	if err != nil {
		return fmt.Errorf("read back %s: %w", o.Key, err)
	}
	if sum == o.ETag {
		r.Checked++
		return nil
	}
	r.Corrupt = append(r.Corrupt, o.Key+" (MD5)")
	r.Cached--
	j.log.Warn("verify: cached bytes differ from S3's; dropping them", "key", o.Key)
	return j.c.DropVersion(id)
}

// isMD5 reports whether etag is a plain MD5 (a single-part upload's).
func isMD5(etag string) bool {
	if len(etag) != 32 {
		return false
	}
	_, err := hex.DecodeString(etag)
	return err == nil && strings.ToLower(etag) == etag
}

// fileMD5 hashes the first size bytes of path.
func fileMD5(ctx context.Context, path string, size int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, io.LimitReader(ctxio.Reader(ctx, f), size)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Evict drops the cached data of every object under paths that is not
// open, and releases the pins on paths and under them (UnpinPaths). It
// returns how many objects it dropped and how many it had to keep because
// they are in use. A path that a pin above it covers (say train/a, with
// a job pinning train) is refused before anything is dropped, with an
// error wrapping index.ErrPinnedAbove that names the job and its path.
func (j *Jobs) Evict(ctx context.Context, paths []string) (dropped, busy int, err error) {
	ids, err := j.pathIDs(ctx, paths)
	if err != nil {
		return 0, 0, err
	}
	if err := j.unpinPaths(paths); err != nil {
		return 0, 0, err
	}
	for _, id := range ids {
		if _, cached, err := j.db.Record(id); err != nil || !cached {
			if err != nil {
				return dropped, busy, err
			}
			continue
		}
		ok, err := j.c.EvictObject(id)
		if err != nil {
			return dropped, busy, err
		}
		if ok {
			dropped++
		} else {
			busy++
		}
	}
	return dropped, busy, nil
}

// Unpin releases the pins on paths and under them, whichever job holds
// them; eviction may then remove those objects. It returns how many
// objects are under paths. A path that a pin above it covers is refused
// as in Evict: a part of a pinned folder cannot be released alone.
func (j *Jobs) Unpin(ctx context.Context, paths []string) (int, error) {
	ids, err := j.pathIDs(ctx, paths)
	if err != nil {
		return 0, err
	}
	return len(ids), j.unpinPaths(paths)
}

// unpinPaths drops the pins on and under the mount-relative paths, naming
// mount-relative paths in a refusal.
func (j *Jobs) unpinPaths(paths []string) error {
	keys := make([]string, len(paths))
	for i, p := range paths {
		keys[i] = j.keyPath(p)
	}
	_, err := j.db.UnpinPaths(keys)
	var above *index.PinnedAboveError
	if errors.As(err, &above) {
		return fmt.Errorf("%s is pinned by prefetch job %s through %s; unpin %s instead, or cancel the job: %w",
			j.relPath(above.Path), above.Pin.Job, j.relPath(above.Pin.Path), j.relPath(above.Pin.Path), index.ErrPinnedAbove)
	}
	return err
}

// pathIDs lists paths and returns the IDs of their objects' versions.
func (j *Jobs) pathIDs(ctx context.Context, paths []string) ([]string, error) {
	var ids []string
	for _, p := range paths {
		f, err := j.walkPath(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, o := range f.objects {
			ids = append(ids, blockcache.ObjectID(j.c.Bucket(), o))
		}
	}
	return ids, nil
}
