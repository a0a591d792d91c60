package prefetch

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"s3cachefs/blockcache"
	"s3cachefs/index"
)

// ErrNoJob means no job has the given ID.
var ErrNoJob = errors.New("no such prefetch job")

// ErrJobEnded means a job to cancel has already ended.
var ErrJobEnded = errors.New("prefetch job already ended")

// run pins jb's paths (again, on a resume, with what is planned now) and
// starts its downloads: a bounded pool over its objects.
func (j *Jobs) run(jb *job) error {
	if err := j.db.Pin(jb.rec.ID, jb.pinPaths(j)); err != nil {
		return fmt.Errorf("pin paths: %w", err)
	}
	ctx, cancel := context.WithCancel(j.ctx)
	jb.cancel = cancel
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		cancel()
		return blockcache.ErrClosed
	}
	j.jobs[jb.rec.ID] = jb
	j.wg.Add(1)
	j.mu.Unlock()
	go func() {
		defer j.wg.Done()
		defer close(jb.done)
		defer cancel()
		j.fetchAll(ctx, jb)
		j.finish(jb)
		j.prune()
	}()
	return nil
}

// fetchAll warms every object of jb; an object that keeps failing is noted
// and the rest go on. At most JobOptions.Objects objects are in flight,
// and at most JobOptions.Bytes of them (pool.go). With a shared tier, the
// objects another node is fetching from S3 (claimed) are put off until
// the others are warm: by then that node has mostly published them.
func (j *Jobs) fetchAll(ctx context.Context, jb *job) {
	var later []laterObject
	var mu sync.Mutex
	j.warmEach(ctx, func(yield func(*folder, index.Object)) {
		for _, f := range jb.folders {
			for _, o := range f.objects {
				yield(f, o)
			}
		}
	}, func(f *folder, o index.Object) {
		if j.warm(ctx, jb, f, o, false) {
			mu.Lock()
			later = append(later, laterObject{f, o})
			mu.Unlock()
		}
	})
	j.warmEach(ctx, func(yield func(*folder, index.Object)) {
		for _, l := range later {
			yield(l.f, l.o)
		}
	}, func(f *folder, o index.Object) { j.warm(ctx, jb, f, o, true) })
}

// laterObject is an object fetchAll put off.
type laterObject struct {
	f *folder
	o index.Object
}

// warmEach calls warm for each object each yields, in the bounded pool.
func (j *Jobs) warmEach(ctx context.Context, each func(yield func(*folder, index.Object)), warm func(*folder, index.Object)) {
	var g errgroup.Group
	g.SetLimit(j.opts.Objects)
	room := semaphore.NewWeighted(j.opts.Bytes)
	each(func(f *folder, o index.Object) {
		w := j.weight(o)
		if room.Acquire(ctx, w) != nil {
			return // cancelled
		}
		g.Go(func() error {
			defer room.Release(w)
			warm(f, o)
			return nil
		})
	})
	g.Wait()
}

// warm fetches o, one object of folder f of jb, and notes how it went.
// Unless waitClaims, it reports true, having done nothing, for an object
// another node has claimed.
func (j *Jobs) warm(ctx context.Context, jb *job, f *folder, o index.Object, waitClaims bool) (claimed bool) {
	progress := func(n int64) { f.bytesDone.Add(n) }
	var err error
	if waitClaims {
		err = j.c.Warm(ctx, o, progress)
	} else {
		err = j.c.WarmUnclaimed(ctx, o, progress)
	}
	if errors.Is(err, blockcache.ErrClaimed) {
		return true
	}
	if errors.Is(err, index.ErrStale) {
		// Replaced in S3 since the plan: fetch the new version.
		err = j.warmCurrent(ctx, jb, o)
	}
	switch {
	case err == nil:
		f.filesDone.Add(1)
	case ctx.Err() == nil:
		j.log.Warn("prefetch: object failed", "job", jb.rec.ID, "key", o.Key, "err", err)
		jb.mu.Lock()
		jb.failed = append(jb.failed, o.Key)
		jb.mu.Unlock()
	}
	return false
}

// weight is what o counts against JobOptions.Bytes: what Warm keeps in
// flight of it, its size up to the cache's warm window, and never more
// than the whole budget (so any object can go). An empty object counts 1.
func (j *Jobs) weight(o index.Object) int64 {
	return max(1, min(o.Size, j.c.WarmWindow(), j.opts.Bytes))
}

// warmCurrent looks o's key up in a fresh listing and fetches the version
// S3 holds now, pinned to the job already: the job's path covers its key.
// Its progress is not counted: the plan's sizes were of the old version.
func (j *Jobs) warmCurrent(ctx context.Context, jb *job, o index.Object) error {
	rel := strings.TrimPrefix(o.Key, j.opts.Prefix)
	dir, name := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if err := j.tree.Refresh(ctx, dir); err != nil {
		return err
	}
	e, err := j.tree.Lookup(ctx, dir, name)
	if err != nil {
		return err
	}
	return j.c.Warm(ctx, e.Object, nil)
}

// finish records how jb ended. A job stopped by Close stays "running" in
// the index so that it resumes after a restart.
func (j *Jobs) finish(jb *job) {
	jb.mu.Lock()
	switch {
	case jb.state == index.JobCancelled:
	case j.ctx.Err() != nil:
		jb.mu.Unlock()
		return
	case len(jb.failed) > 0:
		jb.state = index.JobFailed
		jb.errMsg = fmt.Sprintf("%d object(s) failed", len(jb.failed))
	default:
		jb.state = index.JobDone
	}
	rec := jb.rec
	rec.State, rec.Error, rec.Failed = jb.state, jb.errMsg, append([]string(nil), jb.failed...)
	jb.mu.Unlock()
	var err error
	if rec.State == index.JobCancelled {
		// Recorded cancelled and unpinned at once: Cancel waits for this.
		_, _, err = j.db.CancelJob(rec.ID, rec.Failed)
	} else {
		err = j.db.PutJob(rec)
	}
	if err != nil {
		j.log.Error("record job", "job", rec.ID, "err", err)
	}
	jb.mu.Lock()
	jb.recordErr, jb.ended = err, true
	jb.mu.Unlock()
	j.log.Info("prefetch job ended", "job", rec.ID, "state", rec.State.String(), "failed", len(rec.Failed))
}

// KeepEnded is how many ended jobs (done, failed, cancelled) List shows
// and Get knows, the newest ones; older ones are forgotten.
const KeepEnded = 16

// prune forgets the ended jobs past the newest KeepEnded: this run's from
// memory (Get then answers from the index, while the record is there),
// and their records, and those of earlier runs, from the index once they
// hold no pins (the index keeps a job with pins: they are filed under it).
func (j *Jobs) prune() {
	if _, err := j.db.PruneJobs(KeepEnded); err != nil {
		j.log.Warn("prune ended prefetch jobs", "err", err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	var ended []string
	for id, jb := range j.jobs {
		jb.mu.Lock()
		over := jb.ended
		jb.mu.Unlock()
		if over {
			ended = append(ended, id)
		}
	}
	if len(ended) <= KeepEnded {
		return
	}
	slices.Sort(ended) // IDs sort by start time
	for _, id := range ended[:len(ended)-KeepEnded] {
		delete(j.jobs, id)
	}
}

// Cancel stops a running job and releases its pins.
func (j *Jobs) Cancel(id string) error {
	j.mu.Lock()
	jb, ok := j.jobs[id]
	j.mu.Unlock()
	if !ok {
		return j.cancelQueued(id)
	}
	jb.mu.Lock()
	state := jb.state
	if state == index.JobRunning {
		jb.state = index.JobCancelled
	}
	jb.mu.Unlock()
	if state != index.JobRunning {
		return fmt.Errorf("%w: %s is %s", ErrJobEnded, id, state)
	}
	jb.cancel()
	<-jb.done
	jb.mu.Lock()
	defer jb.mu.Unlock()
	return jb.recordErr
}

// cancelQueued cancels a job an earlier run left running that this run
// has not resumed.
func (j *Jobs) cancelQueued(id string) error {
	was, ok, err := j.db.CancelJob(id, nil)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("%w: %s", ErrNoJob, id)
	case was != index.JobRunning:
		return fmt.Errorf("%w: %s is %s", ErrJobEnded, id, was)
	}
	return nil
}
