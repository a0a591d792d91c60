package prefetch

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"s3cachefs/index"
)

// The snapshots of jobs the control API returns as JSON.

// FolderProgress is the state of one path of a job.
type FolderProgress struct {
	Path          string `json:"path"`
	Files         int64  `json:"files"`
	FilesDone     int64  `json:"files_done"`
	Bytes         int64  `json:"bytes"`
	BytesDone     int64  `json:"bytes_done"`
	CachedAtStart int64  `json:"cached_at_start"`
}

// Progress is a snapshot of one job.
type Progress struct {
	ID             string           `json:"id"`
	State          string           `json:"state"`
	Error          string           `json:"error,omitempty"`
	Failed         []string         `json:"failed,omitempty"`
	ElapsedSeconds float64          `json:"elapsed_seconds"`
	Folders        []FolderProgress `json:"folders"`
	Shard          string           `json:"shard,omitempty"` // "I/N" of a job of one shard
}

// Totals sums the folders.
func (p Progress) Totals() FolderProgress {
	var t FolderProgress
	for _, f := range p.Folders {
		t.Files += f.Files
		t.FilesDone += f.FilesDone
		t.Bytes += f.Bytes
		t.BytesDone += f.BytesDone
		t.CachedAtStart += f.CachedAtStart
	}
	return t
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

// List returns snapshots of this run's jobs, and of jobs of earlier runs
// that failed or are still queued, oldest first: every running job, and
// the newest KeepEnded of the ended ones.
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
	return keepNewestEnded(out)
}

// keepNewestEnded drops from ps, sorted oldest first, the ended jobs
// older than the newest KeepEnded of them.
func keepNewestEnded(ps []Progress) []Progress {
	ended := 0
	for _, p := range ps {
		if p.State != index.JobRunning.String() {
			ended++
		}
	}
	out := ps[:0]
	for _, p := range ps {
		if p.State != index.JobRunning.String() && ended > KeepEnded {
			ended--
			continue
		}
		out = append(out, p)
	}
	return out
}

func (jb *job) progress() Progress {
	jb.mu.Lock()
	p := Progress{
		ID: jb.rec.ID, State: jb.state.String(), Error: jb.errMsg,
		Failed: append([]string(nil), jb.failed...),
		Shard:  Shard{Index: jb.rec.Shard, Count: jb.rec.Shards}.String(),
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

func sortProgress(ps []Progress) {
	slices.SortFunc(ps, func(a, b Progress) int { return strings.Compare(a.ID, b.ID) })
}
