package prefetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"slices"
	"sync"
	"testing"
	"time"

	"s3cachefs/blockcache"
	"s3cachefs/blockcache/internal/cachetest"
	"s3cachefs/blockcache/s3store/memstore"
	"s3cachefs/blockcache/tier"
	"s3cachefs/index"
)

func waitJob(t testing.TB, j *Jobs, id string) Progress {
	t.Helper()
	j.mu.Lock()
	jb := j.jobs[id]
	j.mu.Unlock()
	<-jb.done
	p, err := j.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrefetchFolder(t *testing.T) {
	f, j := jobFixture(t, JobOptions{})
	data := map[string][]byte{
		"train/a.npz":     randBytes(20, 3*testPart+1),
		"train/b.npz":     randBytes(21, testPart/2),
		"train/sub/c.npz": randBytes(22, 2*testPart),
		"dev/d.npz":       randBytes(23, testPart),
	}
	objs := map[string]index.Object{}
	for k, v := range data {
		objs[k] = f.src.Put(k, v)
	}
	p, err := j.Start(context.Background(), []string{"train"})
	if err != nil {
		t.Fatal(err)
	}
	if tot := p.Totals(); tot.Files != 3 || tot.Bytes != int64(len(data["train/a.npz"])+len(data["train/b.npz"])+len(data["train/sub/c.npz"])) {
		t.Fatalf("plan %+v", tot)
	}
	p = waitJob(t, j, p.ID)
	if tot := p.Totals(); p.State != "done" || tot.FilesDone != 3 || tot.BytesDone != tot.Bytes {
		t.Fatalf("job ended %+v", p)
	}
	for k, o := range objs {
		rec, ok, _ := f.db.Record(f.id(o))
		inTrain := k != "dev/d.npz"
		if ok && rec.Complete() != inTrain || !ok && inTrain {
			t.Fatalf("%s: complete=%v, want %v", k, ok && rec.Complete(), inTrain)
		}
		// The job pins its path, which covers its objects and no other.
		pins := f.db.PinsOf(o.Key)
		if inTrain && (len(pins) != 1 || pins[0] != (index.Pin{Job: p.ID, Path: "train", Objects: 3})) || !inTrain && len(pins) != 0 {
			t.Fatalf("%s pinned by %+v", k, pins)
		}
	}
	gets := f.src.Stats().Gets
	// Reading everything now makes no GET.
	for _, k := range []string{"train/a.npz", "train/b.npz", "train/sub/c.npz"} {
		if got := readAll(t, f.openHandle(objs[k])); !bytes.Equal(got, data[k]) {
			t.Fatalf("%s differs", k)
		}
	}
	// A second prefetch fetches nothing.
	p2, err := j.Start(context.Background(), []string{"train"})
	if err != nil {
		t.Fatal(err)
	}
	if tot := p2.Totals(); tot.CachedAtStart != tot.Bytes {
		t.Fatalf("second plan says %d of %d bytes cached", tot.CachedAtStart, tot.Bytes)
	}
	waitJob(t, j, p2.ID)
	if n := f.src.Stats().Gets; n != gets {
		t.Fatalf("%d GETs after the folder was prefetched", n-gets)
	}
}

func TestPrefetchRefusesWhatCannotBe(t *testing.T) {
	f, j := jobFixture(t, JobOptions{MaxBytes: testPart})
	f.src.Put("big/a", randBytes(30, 2*testPart))
	if _, err := j.Start(context.Background(), []string{"big"}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("too large job: %v", err)
	}
	if _, err := j.Start(context.Background(), []string{"missing"}); !errors.Is(err, iofs.ErrNotExist) {
		t.Fatalf("missing path: %v", err)
	}
	if n := f.src.Stats().Gets; n != 0 {
		t.Fatalf("refused jobs made %d GETs", n)
	}
	if jobs, _ := f.db.Jobs(); len(jobs) != 0 {
		t.Fatalf("refused jobs recorded: %+v", jobs)
	}
}

func TestPrefetchResumesAfterRestart(t *testing.T) {
	f := newFixture(t)
	data := randBytes(40, 6*testPart)
	obj := f.src.Put("r/x", data)
	other := f.src.Put("r/y", randBytes(41, testPart))
	j := f.jobs(JobOptions{Objects: 1})
	g := holdGets(f.src)
	p, err := j.Start(context.Background(), []string{"r"})
	if err != nil {
		t.Fatal(err)
	}
	<-g.entered
	// The daemon stops mid-job: the job stays recorded as running.
	stopped := make(chan struct{})
	go func() { j.Close(); close(stopped) }()
	close(g.release)
	<-stopped
	if rec, _, _ := f.db.Job(p.ID); rec.State != index.JobRunning {
		t.Fatalf("job state after stop: %v", rec.State)
	}
	f.close()
	f.src.SetFault(nil)
	f.open()
	j2 := f.jobs(JobOptions{})
	if err := j2.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := waitJob(t, j2, p.ID); p.State != "done" {
		t.Fatalf("resumed job ended %s", p.State)
	}
	for _, o := range []index.Object{obj, other} {
		if rec, _, _ := f.db.Record(f.id(o)); !rec.Complete() {
			t.Fatalf("%s not complete after resume", o.Key)
		}
	}
	if got := readAll(t, f.openHandle(obj)); !bytes.Equal(got, data) {
		t.Fatal("bytes differ after resume")
	}
}

func TestResumeKeepsJobsItCannotPlanNow(t *testing.T) {
	f := newFixture(t)
	f.src.Put("k/a", randBytes(50, testPart))
	rec := index.Job{ID: "j1", Paths: []string{"k"}, Created: time.Now(), State: index.JobRunning}
	gone := index.Job{ID: "j2", Paths: []string{"gone"}, Created: time.Now(), State: index.JobRunning}
	for _, r := range []index.Job{rec, gone} {
		if err := f.db.PutJob(r); err != nil {
			t.Fatal(err)
		}
	}
	// S3 fails for now: the job stays queued, the impossible one fails.
	f.src.SetFault(func(op, key string) error {
		if op == memstore.OpList && key == "k/" {
			return errors.New("injected: S3 unreachable")
		}
		return nil
	})
	j := f.jobs(JobOptions{})
	if err := j.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := f.db.Job("j1"); got.State != index.JobRunning {
		t.Fatalf("job hit by a passing S3 fault is %s, want still running", got.State)
	}
	if got, _, _ := f.db.Job("j2"); got.State != index.JobFailed {
		t.Fatalf("job of a missing folder is %s, want failed", got.State)
	}
	// Both show in List; the queued one can be cancelled.
	if ps := j.List(); len(ps) != 2 {
		t.Fatalf("List shows %d jobs, want 2", len(ps))
	}
	if err := j.Cancel("j1"); err != nil {
		t.Fatal(err)
	}
	if err := j.Cancel("j1"); !errors.Is(err, ErrJobEnded) {
		t.Fatalf("second cancel: %v", err)
	}
}

func TestPrefetchFetchesAnObjectReplacedMidJob(t *testing.T) {
	f := newFixture(t)
	f.src.Put("m/a", randBytes(70, testPart))
	newData := randBytes(71, testPart+9)
	j := f.jobs(JobOptions{Objects: 1})
	// Replace the object after the plan, before its first GET.
	var once sync.Once
	f.src.SetFault(func(op, key string) error {
		if op == memstore.OpGet {
			once.Do(func() {
				if _, err := f.src.Replace("m/a", newData); err != nil {
					t.Error(err)
				}
			})
		}
		return nil
	})
	p, err := j.Start(context.Background(), []string{"m"})
	if err != nil {
		t.Fatal(err)
	}
	if p := waitJob(t, j, p.ID); p.State != "done" {
		t.Fatalf("job with a replaced object ended %s: %+v", p.State, p)
	}
	cur, err := f.src.List(context.Background(), "m/")
	if err != nil {
		t.Fatal(err)
	}
	rec, _, _ := f.db.Record(f.id(cur.Objects[0]))
	if !rec.Complete() {
		t.Fatal("the new version is not cached")
	}
	if pins := f.db.PinsOf(rec.Key); len(pins) != 1 || pins[0].Job != p.ID {
		t.Fatalf("the new version is pinned by %+v", pins)
	}
}

func TestEndedJobsArePruned(t *testing.T) {
	f, j := jobFixture(t, JobOptions{})
	f.src.Put("p/a", randBytes(80, testBlock))
	var ids []string
	for range KeepEnded + 4 {
		p, err := j.Start(context.Background(), []string{"p"})
		if err != nil {
			t.Fatal(err)
		}
		if p := waitJob(t, j, p.ID); p.State != "done" {
			t.Fatalf("job %s ended %s", p.ID, p.State)
		}
		// Released, as `prefetch --unpin` does: the record may go then.
		if _, err := j.Unpin(context.Background(), []string{"p"}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
	}
	ps := j.List()
	if len(ps) != KeepEnded || ps[0].ID != ids[len(ids)-KeepEnded] || ps[len(ps)-1].ID != ids[len(ids)-1] {
		t.Fatalf("List shows %d jobs from %s, want the newest %d from %s", len(ps), ps[0].ID, KeepEnded, ids[len(ids)-KeepEnded])
	}
	if _, err := j.Get(ids[0]); !errors.Is(err, ErrNoJob) {
		t.Fatalf("Get of the oldest job: %v, want ErrNoJob", err)
	}
	if recs, _ := f.db.Jobs(); len(recs) > KeepEnded+1 {
		t.Fatalf("the index keeps %d jobs", len(recs))
	}
	j.mu.Lock()
	n := len(j.jobs)
	j.mu.Unlock()
	if n > KeepEnded+1 {
		t.Fatalf("%d jobs kept in memory", n)
	}
}

// A prefetch of many small objects shares index commits among them (group
// commit, and a pool with many objects in flight) and brings every byte
// right.
func TestPrefetchSmallObjectsShareCommits(t *testing.T) {
	const n, size = 1200, 10 << 10
	f, j := jobFixture(t, JobOptions{})
	objs := smallObjects(f.src, "small", n, size)
	c0, s0 := f.db.Commits(), f.c.Stats().Syncs
	p, err := j.Start(context.Background(), []string{"small"})
	if err != nil {
		t.Fatal(err)
	}
	if p = waitJob(t, j, p.ID); p.State != "done" || p.Totals().FilesDone != n {
		t.Fatalf("job ended %+v", p)
	}
	commits, syncs := f.db.Commits()-c0, f.c.Stats().Syncs-s0
	t.Logf("%d objects: %d index commits (%.3f per object), %d cache syncs", n, commits, float64(commits)/n, syncs)
	if float64(commits)/n > 0.1 {
		t.Errorf("%d index commits for %d objects: %.2f per object, want at most 0.1", commits, n, float64(commits)/n)
	}
	gets := f.src.Stats().Gets
	for _, o := range objs {
		if got := readAll(t, f.openHandle(o.obj)); !bytes.Equal(got, o.data) {
			t.Fatalf("%s differs", o.obj.Key)
		}
	}
	if g := f.src.Stats().Gets; g != gets {
		t.Errorf("reading the prefetched objects made %d GETs", g-gets)
	}
}

// Jobs of shards 0, 1 and 2 of 3 each fetch a share of a folder's objects,
// no object twice, and every object once between them; the job says its
// shard.
func TestJobShards(t *testing.T) {
	f, j := jobFixture(t, JobOptions{})
	const n = 30
	objs := map[string]index.Object{}
	for i := range n {
		k := fmt.Sprintf("train/%02d.npz", i)
		objs[k] = f.src.Put(k, randBytes(uint64(40+i), testPart/4))
	}
	total := int64(0)
	for i := range 3 {
		before := f.src.Stats().Gets
		p, err := j.StartShard(context.Background(), []string{"train"}, Shard{Index: i, Count: 3})
		if err != nil {
			t.Fatal(err)
		}
		p = waitJob(t, j, p.ID)
		tot := p.Totals()
		if p.State != "done" || p.Shard != fmt.Sprintf("%d/3", i) || tot.Files == 0 || tot.Files == n {
			t.Fatalf("shard %d/3: %+v, want done with a share of the %d files", i, p, n)
		}
		if got := f.src.Stats().Gets - before; got != tot.Files {
			t.Errorf("shard %d/3 made %d GETs for its %d files: it fetched others' or its own twice", i, got, tot.Files)
		}
		// It pins its own objects, no other shard's.
		for k := range objs {
			pinned := slices.ContainsFunc(f.db.PinsOf(k), func(pin index.Pin) bool { return pin.Job == p.ID })
			if mine := (Shard{Index: i, Count: 3}).Holds(k); pinned != mine {
				t.Errorf("%s: pinned by shard %d/3 %v, in it %v", k, i, pinned, mine)
			}
		}
		total += tot.Files
	}
	if total != n {
		t.Errorf("the shards planned %d files between them, want %d", total, n)
	}
	for k, o := range objs {
		if rec, ok, _ := f.db.Record(f.id(o)); !ok || !rec.Complete() {
			t.Errorf("%s is not cached after all three shards", k)
		}
	}
	if _, err := j.StartShard(context.Background(), []string{"train"}, Shard{Index: 3, Count: 3}); err == nil {
		t.Error("shard 3 of 3 was started")
	}
}

// Three nodes sharing a tier prefetch the same folder at once: between
// them they fetch each object from S3 once (the one that claims it), and
// each ends with all of it cached.
func TestJobsShareOneFetch(t *testing.T) {
	src := memstore.New()
	folder, err := tier.OpenFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const n = 24
	for i := range n {
		k := fmt.Sprintf("train/%02d.npz", i)
		src.Put(k, randBytes(uint64(80+i), testPart/2+i))
	}
	var nodes []*fixture
	var jobs []*Jobs
	for range 3 {
		f := &fixture{t: t, dir: t.TempDir(), src: src}
		f.oc = cachetest.Open(t, f.dir, src, blockcache.Options{BlockSize: testBlock, PartSize: testPart, Tier: tier.NewShared(folder, "bucket")})
		f.db, f.c = f.oc.DB, f.oc.C
		nodes = append(nodes, f)
		jobs = append(jobs, f.jobs(JobOptions{}))
	}
	ids := make([]string, 3)
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			p, err := j.Start(context.Background(), []string{"train"})
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = p.ID
		})
	}
	wg.Wait()
	won := int64(0)
	for i, j := range jobs {
		if ids[i] == "" {
			t.FailNow()
		}
		if p := waitJob(t, j, ids[i]); p.State != "done" || p.Totals().FilesDone != n {
			t.Fatalf("node %d: %+v", i, p)
		}
		won += nodes[i].c.Stats().ClaimsWon
	}
	if got := src.Stats().Gets; got != n {
		t.Errorf("%d GETs for %d objects prefetched by 3 nodes, want %d", got, n, n)
	}
	if won != n {
		t.Errorf("%d claims won, want one per object (%d)", won, n)
	}
	for i, f := range nodes {
		s := f.c.Stats()
		if s.BytesFromS3+s.TierBytes != totalSize(src, n) {
			t.Errorf("node %d: %d bytes from S3 and %d from the tier, want %d between them", i, s.BytesFromS3, s.TierBytes, totalSize(src, n))
		}
	}
}

// totalSize is the size of the first n objects of train/.
func totalSize(src *memstore.Store, n int) int64 {
	var sum int64
	for i := range n {
		sum += int64(testPart/2 + i)
	}
	return sum
}
