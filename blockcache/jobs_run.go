package blockcache

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"s3cachefs/index"
)

// ErrNoJob means no job has the given ID.
var ErrNoJob = errors.New("no such prefetch job")

// ErrJobEnded means a job to cancel has already ended.
var ErrJobEnded = errors.New("prefetch job already ended")

// run pins what jb planned (again, on a resume: an object may have a new
// version now) and starts its downloads: a bounded pool over its objects.
func (j *Jobs) run(jb *job) error {
	if err := j.db.Pin(jb.rec.ID, jb.objectIDs(j.c.opts.Bucket)); err != nil {
		return fmt.Errorf("pin objects: %w", err)
	}
	ctx, cancel := context.WithCancel(j.ctx)
	jb.cancel = cancel
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		cancel()
		return ErrClosed
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
	}()
	return nil
}

// fetchAll warms every object of jb; an object that keeps failing is noted
// and the rest go on.
func (j *Jobs) fetchAll(ctx context.Context, jb *job) {
	var g errgroup.Group
	g.SetLimit(j.opts.Objects)
	for _, f := range jb.folders {
		for _, o := range f.objects {
			if ctx.Err() != nil {
				break
			}
			g.Go(func() error {
				err := j.c.Warm(ctx, o, func(n int64) { f.bytesDone.Add(n) })
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
				return nil
			})
		}
	}
	g.Wait()
}

// warmCurrent looks o's key up in a fresh listing and fetches the version
// S3 holds now, pinned to the job. Its progress is not counted: the plan's
// sizes were of the old version.
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
	if err := j.db.Pin(jb.rec.ID, []string{ObjectID(j.c.opts.Bucket, e.Object)}); err != nil {
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
	if err := j.db.PutJob(rec); err != nil {
		j.log.Error("record job", "job", rec.ID, "err", err)
	}
	j.log.Info("prefetch job ended", "job", rec.ID, "state", rec.State.String(), "failed", len(rec.Failed))
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
	if err := j.db.Unpin(id); err != nil {
		return fmt.Errorf("unpin job %s: %w", id, err)
	}
	return nil
}

// cancelQueued cancels a job an earlier run left running that this run
// has not resumed.
func (j *Jobs) cancelQueued(id string) error {
	rec, ok, err := j.db.Job(id)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("%w: %s", ErrNoJob, id)
	case rec.State != index.JobRunning:
		return fmt.Errorf("%w: %s is %s", ErrJobEnded, id, rec.State)
	}
	rec.State = index.JobCancelled
	if err := j.db.PutJob(rec); err != nil {
		return err
	}
	return j.db.Unpin(id)
}

// Get returns a snapshot of job id.
func (j *Jobs) Get(id string) (Progress, error) {
	j.mu.Lock()
	jb, ok := j.jobs[id]
	j.mu.Unlock()
	if ok {
		return jb.progress(), nil
	}
	rec, ok, err := j.db.Job(id)
	if err != nil {
		return Progress{}, err
	}
	if !ok {
		return Progress{}, fmt.Errorf("%w: %s", ErrNoJob, id)
	}
	return recordProgress(rec), nil
}

// recordProgress is what the index knows of a job not run by this daemon
// run: its state, not its counts.
func recordProgress(rec index.Job) Progress {
	p := Progress{ID: rec.ID, State: rec.State.String(), Error: rec.Error, Failed: rec.Failed}
	for _, path := range rec.Paths {
		p.Folders = append(p.Folders, FolderProgress{Path: path})
	}
	return p
}

// List returns snapshots of this run's jobs, oldest first.
func (j *Jobs) List() []Progress {
	j.mu.Lock()
	jobs := make([]*job, 0, len(j.jobs))
	for _, jb := range j.jobs {
		jobs = append(jobs, jb)
	}
	j.mu.Unlock()
	out := make([]Progress, 0, len(jobs))
	seen := make(map[string]bool, len(jobs))
	for _, jb := range jobs {
		out = append(out, jb.progress())
		seen[jb.rec.ID] = true
	}
	// Jobs of earlier runs that did not run now: failed, or still queued.
	if recs, err := j.db.Jobs(); err == nil {
		for _, rec := range recs {
			if !seen[rec.ID] && rec.State != index.JobDone && rec.State != index.JobCancelled {
				out = append(out, recordProgress(rec))
			}
		}
	} else {
		j.log.Warn("read jobs", "err", err)
	}
	sortProgress(out)
	return out
}

func (jb *job) progress() Progress {
	jb.mu.Lock()
	p := Progress{
		ID: jb.rec.ID, State: jb.state.String(), Error: jb.errMsg,
		Failed: append([]string(nil), jb.failed...),
	}
	jb.mu.Unlock()
	p.ElapsedSeconds = time.Since(jb.started).Seconds()
	for _, f := range jb.folders {
		p.Folders = append(p.Folders, FolderProgress{
			Path: f.path, Files: int64(len(f.objects)), FilesDone: f.filesDone.Load(),
			Bytes: f.bytes, BytesDone: f.bytesDone.Load(), CachedAtStart: f.cachedAtStart,
		})
	}
	return p
}
