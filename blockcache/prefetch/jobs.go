package prefetch

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	iofs "io/fs"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"s3cachefs/blockcache"
	"s3cachefs/index"
)

// Tree is what prefetch jobs need to find objects. *index.Catalog
// satisfies it. Paths are relative to the mount root ("" is the root).
// Lookup's error wraps io/fs.ErrNotExist for a name not in the folder's
// listing; Refresh lists a folder from S3 now, whatever its age. All three
// may be called concurrently.
type Tree interface {
	ReadDir(ctx context.Context, dir string) ([]index.Entry, error)
	Lookup(ctx context.Context, dir, name string) (index.Entry, error)
	Refresh(ctx context.Context, dir string) error
}

// ErrNoSpace means a prefetch job cannot fit in the cache.
var ErrNoSpace = errors.New("does not fit in the cache")

// Defaults for JobOptions: up to 256 small objects at a time, and 8
// large ones (Bytes is 8 windows of Cache.Warm).
const (
	DefaultObjects = 256
	DefaultWindows = 8
)

// JobOptions configures prefetch jobs. Zero fields take defaults.
type JobOptions struct {
	// Objects is the most objects a job fetches at once (default
	// DefaultObjects), and Bytes the most bytes of them (default
	// DefaultWindows windows of Cache.WarmWindow): each object counts its
	// size, up to what Cache.Warm keeps in flight of one object. So a job
	// has many small objects in flight, whose GETs are short and whose
	// fsyncs and index commits overlap the others' GETs, and few large
	// ones (8 by default, as many parts each as Warm keeps in flight). The
	// cache's MaxFetches still bounds the GETs in flight.
	Objects int
	Bytes   int64
	// MaxBytes is the cache size limit; a job bigger than it fails at once.
	// 0 means no limit but the filesystem's free space.
	MaxBytes int64
	// MinFree is how many bytes must stay free on the cache filesystem.
	MinFree int64
	// Prefix is the mount's S3 prefix ("" or ending in "/"): keys minus
	// it are the Tree's paths.
	Prefix string
	// Logger receives job events; nil discards.
	Logger *slog.Logger
}

// Jobs runs prefetch jobs inside the daemon. Jobs are recorded in the
// index, pin what they fetch, and resume after a restart (Resume).
type Jobs struct {
	// Set once in NewJobs.
	c      *blockcache.Cache
	tree   Tree
	db     *index.DB
	opts   JobOptions
	log    *slog.Logger
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex      // guards jobs, seq and closed; taken before a job's mu (prune)
	jobs   map[string]*job // jobs of this daemon run, by ID
	seq    int
	closed bool // set by Close: no job starts afterwards
}

// NewJobs returns a job runner over c, finding objects in tree.
func NewJobs(c *blockcache.Cache, tree Tree, db *index.DB, opts JobOptions) *Jobs {
	if opts.Objects <= 0 {
		opts.Objects = DefaultObjects
	}
	if opts.Bytes <= 0 {
		opts.Bytes = DefaultWindows * c.WarmWindow()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Jobs{c: c, tree: tree, db: db, opts: opts, log: opts.Logger,
		ctx: ctx, cancel: cancel, jobs: make(map[string]*job)}
}

// Close cancels running jobs (they stay recorded as running, so they
// resume after a restart) and waits for them.
func (j *Jobs) Close() {
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	j.cancel()
	j.wg.Wait()
}

// job is one running or finished job of this daemon run.
type job struct {
	// Set once in plan, but cancel in run.
	rec     index.Job
	started time.Time
	folders []*folder
	cancel  context.CancelFunc
	done    chan struct{} // closed when the job has finished

	mu     sync.Mutex // guards state, errMsg, failed, recordErr and ended
	state  index.JobState
	errMsg string
	failed []string
	// recordErr is why recording the job's end failed, and ended that
	// the end is recorded (not stopped by Close): both set by finish.
	recordErr error
	ended     bool
}

// folder is one path of a job and its objects.
type folder struct {
	path          string
	objects       []index.Object
	bytes         int64
	cachedAtStart int64
	filesDone     atomic.Int64
	bytesDone     atomic.Int64
}

// Start plans a job for paths (fresh listings, whatever the TTL), checks it
// fits, records and pins it, and starts it. It returns the job's first
// snapshot; the job runs on after ctx ends.
func (j *Jobs) Start(ctx context.Context, paths []string) (Progress, error) {
	return j.StartShard(ctx, paths, Shard{})
}

// Shard is a share of a job's objects: those whose key hashes to Index of
// Count (0 <= Index < Count), so that Count nodes that each start the job
// with their own Index warm every object once between them. The zero
// Shard is every object.
type Shard struct{ Index, Count int }

// Holds reports whether the object with key is in s.
func (s Shard) Holds(key string) bool {
	if s.Count <= 1 {
		return true
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64()%uint64(s.Count) == uint64(s.Index)
}

// String is "I/N", or "" for every object.
func (s Shard) String() string {
	if s.Count == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%d", s.Index, s.Count)
}

// StartShard is Start for the objects of one shard of paths.
func (j *Jobs) StartShard(ctx context.Context, paths []string, shard Shard) (Progress, error) {
	if shard.Count < 0 || shard.Index < 0 || (shard.Count > 0 && shard.Index >= shard.Count) || (shard.Count == 0 && shard.Index != 0) {
		return Progress{}, fmt.Errorf("shard %d of %d: want 0 <= shard < count", shard.Index, shard.Count)
	}
	j.mu.Lock()
	j.seq++
	id := fmt.Sprintf("%s-%d", time.Now().UTC().Format("20060102T150405.000"), j.seq)
	j.mu.Unlock()
	jb, err := j.plan(ctx, index.Job{ID: id, Paths: paths, Created: time.Now().UTC(), State: index.JobRunning,
		Shard: shard.Index, Shards: shard.Count})
	if err != nil {
		return Progress{}, err
	}
	if err := j.db.PutJob(jb.rec); err != nil {
		return Progress{}, fmt.Errorf("record job: %w", err)
	}
	if err := j.run(jb); err != nil {
		return Progress{}, err
	}
	return jb.progress(), nil
}

// Resume restarts the jobs a previous daemon run left running. A job that
// no longer plans (say, a folder is gone) is recorded as failed.
func (j *Jobs) Resume(ctx context.Context) error {
	recs, err := j.db.Jobs()
	if err != nil {
		return fmt.Errorf("read jobs: %w", err)
	}
	for _, rec := range recs {
		if rec.State != index.JobRunning {
			continue
		}
		j.log.Info("resuming prefetch job", "job", rec.ID, "paths", strings.Join(rec.Paths, " "))
		jb, err := j.plan(ctx, rec)
		switch {
		case err == nil:
			if err := j.run(jb); err != nil {
				return err
			}
		case errors.Is(err, iofs.ErrNotExist) || errors.Is(err, ErrNoSpace):
			// It can never run as asked: say so for good.
			rec.State, rec.Error = index.JobFailed, err.Error()
			if perr := j.db.PutJob(rec); perr != nil {
				return perr
			}
		default:
			// S3 unreachable for now, or the daemon stopping: the job
			// stays running in the index and is tried at the next start.
			j.log.Warn("prefetch job not resumed; it stays queued", "job", rec.ID, "err", err)
		}
	}
	return nil
}

// plan lists the job's paths recursively and checks that the job fits.
func (j *Jobs) plan(ctx context.Context, rec index.Job) (*job, error) {
	jb := &job{rec: rec, started: time.Now(), state: index.JobRunning, done: make(chan struct{})}
	if len(rec.Paths) == 0 {
		return nil, errors.New("prefetch needs at least one path")
	}
	var total, cached int64
	shard := Shard{Index: rec.Shard, Count: rec.Shards}
	for _, p := range rec.Paths {
		f, err := j.walkPath(ctx, p)
		if err != nil {
			return nil, err
		}
		f.objects = slices.DeleteFunc(f.objects, func(o index.Object) bool { return !shard.Holds(o.Key) })
		for _, o := range f.objects {
			f.bytes += o.Size
			rc, ok, err := j.db.Record(blockcache.ObjectID(j.c.Bucket(), o))
			if err != nil {
				return nil, err
			}
			if ok {
				f.cachedAtStart += rc.PresentBytes()
			}
		}
		total += f.bytes
		cached += f.cachedAtStart
		jb.folders = append(jb.folders, f)
	}
	if err := j.checkFits(total, cached); err != nil {
		return nil, err
	}
	return jb, nil
}

// walkPath resolves one mount-relative path to a folder of objects.
func (j *Jobs) walkPath(ctx context.Context, p string) (*folder, error) {
	clean := strings.Trim(path.Clean("/"+p), "/")
	f := &folder{path: p}
	if clean == "" {
		return f, j.walk(ctx, "", f)
	}
	dir, name := path.Split(clean)
	dir = strings.TrimSuffix(dir, "/")
	if err := j.tree.Refresh(ctx, dir); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	e, err := j.tree.Lookup(ctx, dir, name)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist under the mount: %w", p, iofs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", p, err)
	}
	if !e.IsDir {
		f.objects = append(f.objects, e.Object)
		return f, nil
	}
	return f, j.walk(ctx, clean, f)
}

// walk adds every object under dir to f, listing each folder afresh.
func (j *Jobs) walk(ctx context.Context, dir string, f *folder) error {
	if err := j.tree.Refresh(ctx, dir); err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	entries, err := j.tree.ReadDir(ctx, dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.IsDir {
			f.objects = append(f.objects, e.Object)
			continue
		}
		if err := j.walk(ctx, path.Join(dir, e.Name), f); err != nil {
			return err
		}
	}
	return nil
}

// checkFits fails a job that cannot fit: bigger than the cache limit, or
// needing more than the free space of the cache filesystem.
func (j *Jobs) checkFits(total, cached int64) error {
	if j.opts.MaxBytes > 0 && total > j.opts.MaxBytes {
		return fmt.Errorf("prefetch needs %d bytes but the cache limit is %d: %w", total, j.opts.MaxBytes, ErrNoSpace)
	}
	free, err := j.c.FreeSpace()
	if err != nil {
		return err
	}
	free -= j.opts.MinFree
	if need := total - cached; need > free {
		return fmt.Errorf("prefetch needs %d more bytes on SSD but %s has %d free (after keeping %d free): %w",
			need, j.c.Dir(), max(free, 0), j.opts.MinFree, ErrNoSpace)
	}
	return nil
}

// pinPaths is what jb pins: the S3 key (or key prefix) of each of its
// paths, with the objects planned under it.
func (jb *job) pinPaths(j *Jobs) map[string]int64 {
	out := make(map[string]int64, len(jb.folders))
	for _, f := range jb.folders {
		if jb.rec.Shards > 1 {
			// A shard pins its own objects only: its room check counted
			// no other.
			for _, o := range f.objects {
				out[o.Key] = 1
			}
			continue
		}
		out[j.keyPath(f.path)] += int64(len(f.objects))
	}
	return out
}

// keyPath turns a mount-relative path into what the index pins: the S3
// key of a file, or a folder's key prefix without its trailing "/" (the
// mount root is the mount's prefix, "" for a whole bucket).
func (j *Jobs) keyPath(p string) string {
	clean := strings.Trim(path.Clean("/"+p), "/")
	return strings.TrimSuffix(j.opts.Prefix+clean, "/")
}

// relPath turns a pinned key path back into a mount-relative path for
// messages ("/" for the mount root).
func (j *Jobs) relPath(k string) string {
	if k == strings.TrimSuffix(j.opts.Prefix, "/") {
		return "/"
	}
	return strings.TrimPrefix(k, j.opts.Prefix)
}
