// trainer.go measures issue 11's first epoch: a real PyTorch DataLoader
// (trainer.py: 4 workers, shuffled, numpy.load per sample) over NPZ files
// of mixed sizes in s3://bench/npz/train/, from the first command to the
// trainer's exit, with s3cachefs (prefetch started just before, prefetch
// first, no prefetch) beside "copy first, then train" (`aws s3 sync`,
// `rclone copy`); then later epochs through the mount beside a local copy.

package main

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

//go:embed trainer.py
var trainerPy []byte

// python runs trainer.py: Debian's, which has python3-numpy and python3-torch.
const python = "/usr/bin/python3"

// The trainer's dataset: s3://bench/npz/train/, WORK/npz/train locally.
const (
	npzPrefix = "npz"
	npzSplit  = "train"
)

var npzSource = fmt.Sprintf("s3://%s/%s", bucket, npzPrefix)

// npzSpec describes the trainer's dataset. Its String is the cache stamp.
type npzSpec struct {
	Files          int // NPZ files in the split
	MinMiB, MaxMiB int // each file's size is drawn from this range
	Seed           int
}

func (s npzSpec) String() string {
	return fmt.Sprintf("npz files=%d size=%d-%dMiB seed=%d", s.Files, s.MinMiB, s.MaxMiB, s.Seed)
}

func fullNPZ() npzSpec  { return npzSpec{Files: 40, MinMiB: 12, MaxMiB: 36, Seed: 11} }
func quickNPZ() npzSpec { return npzSpec{Files: 8, MinMiB: 2, MaxMiB: 6, Seed: 11} }

// trainerFigures is what the trainer figure measured.
type trainerFigures struct {
	spec   npzSpec
	bytes  int64 // bytes of the split's files
	arrays int64 // array bytes one epoch reads
	// Wall time from the first command to the trainer's exit, one epoch.
	sync, rclone       stat // aws s3 sync / rclone copy --transfers 16, then the epoch over the copy
	during, after      stat // s3cachefs, empty cache: prefetch --detach then the epoch at once / prefetch, then the epoch
	cold               stat // s3cachefs, empty cache, the epoch alone
	prefetchAlone      stat // the prefetch of the after runs, by itself
	fsDrop, localDrop  stat // a later epoch, the trainer's own time, page cache dropped: mount / local copy
	fsHot, localHot    stat // the same, the epoch after another one (page cache kept)
	cpuDuring, cpuCold cpuUse
	// pathDuring and pathCold: how the daemon served the epochs.
	pathDuring, pathCold readPath
	rssDuring, rssCold   int64 // the highest daemon VmHWM of any run
	s3During, s3Cold     int64 // the most GetObject body bytes of any run
}

// epochResult is one line of trainer.py's output.
type epochResult struct {
	Epoch   int     `json:"epoch"`
	Seconds float64 `json:"seconds"`
	Bytes   int64   `json:"bytes"`
	Samples int     `json:"samples"`
}

func (b *bench) figTrainer(ctx context.Context) error {
	t := &trainerFigures{spec: fullNPZ()}
	if b.cfg.quick {
		t.spec = quickNPZ()
	}
	if err := b.prepareNPZ(ctx, t); err != nil {
		return err
	}
	b.logf("trainer dataset: %s, %d MiB", t.spec, t.bytes/mib)
	for run := range b.cfg.runs {
		seed := run + 1
		if err := b.trainerCopyFirst(ctx, t, &t.sync, seed, b.npzSync); err != nil {
			return err
		}
		if err := b.trainerMount(ctx, t, &t.during, seed, "during"); err != nil {
			return err
		}
		if err := b.trainerMount(ctx, t, &t.after, seed, "after"); err != nil {
			return err
		}
		if err := b.trainerMount(ctx, t, &t.cold, seed, "cold"); err != nil {
			return err
		}
		if err := b.trainerCopyFirst(ctx, t, &t.rclone, seed, b.npzRclone); err != nil {
			return err
		}
	}
	b.logf("trainer: sync+epoch %s [%s]; rclone+epoch %s [%s]", t.sync, t.sync.all(), t.rclone, t.rclone.all())
	b.logf("trainer: s3cachefs prefetch --detach + epoch %s [%s]; prefetch, then epoch %s [%s] (prefetch %s); epoch alone %s [%s]",
		t.during, t.during.all(), t.after, t.after.all(), t.prefetchAlone, t.cold, t.cold.all())
	if err := b.trainerLaterEpochs(ctx, t); err != nil {
		return err
	}
	b.res.trainer = t
	return nil
}

// prepareNPZ writes trainer.py into the work dir, generates the NPZ files
// and uploads them to the server (each skipped when its stamp says done),
// and reads their sizes and the bytes an epoch reads.
func (b *bench) prepareNPZ(ctx context.Context, t *trainerFigures) error {
	if err := os.WriteFile(b.path("trainer.py"), trainerPy, 0o644); err != nil {
		return err
	}
	dir := b.path("npz", npzSplit)
	if !stamped(b.path("npz.spec"), t.spec.String()) {
		if err := os.RemoveAll(b.path("npz")); err != nil {
			return err
		}
		b.logf("generating the trainer's NPZ files (%s)", t.spec)
		if _, err := b.runCmd(ctx, python, b.path("trainer.py"), "gen", dir, fmt.Sprint(t.spec.Files),
			fmt.Sprint(t.spec.MinMiB), fmt.Sprint(t.spec.MaxMiB), fmt.Sprint(t.spec.Seed)); err != nil {
			return fmt.Errorf("generate NPZ files (needs python3-numpy): %w", err)
		}
		if err := os.WriteFile(b.path("npz.spec"), []byte(t.spec.String()), 0o644); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(dir + ".json")
	if err != nil {
		return err
	}
	var manifest map[string]int64
	if err := json.Unmarshal(data, &manifest); err != nil {
		return fmt.Errorf("%s.json: %w", dir, err)
	}
	for name, n := range manifest {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		t.bytes += st.Size()
		t.arrays += n
	}
	// The server's root is removed with the main dataset's stamp, so the
	// stamp alone is not enough: the objects must be there too.
	stamp := b.path("s3root-npz.spec")
	first := filepath.Join(b.path("s3root"), bucket, npzPrefix, npzSplit, "rec_0000.npz")
	if _, err := os.Stat(first); err == nil && stamped(stamp, t.spec.String()) {
		return nil
	}
	dest := fmt.Sprintf("s3://%s/%s/%s/", bucket, npzPrefix, npzSplit)
	if _, err := b.runCmd(ctx, awsCLI, b.awsArgs(b.server.Endpoint, "s3", "sync", "--no-progress",
		"--only-show-errors", "--delete", dir, dest)...); err != nil {
		return fmt.Errorf("upload NPZ files: %w", err)
	}
	return os.WriteFile(stamp, []byte(t.spec.String()), 0o644)
}

// coldStart drops the page cache, then reads the server's copy of the
// split so that versitygw serves it from memory, as S3 is not one disk.
func (b *bench) coldStart(ctx context.Context) error {
	if err := dropCaches(); err != nil {
		return err
	}
	dir := filepath.Join(b.path("s3root"), bucket, npzPrefix, npzSplit)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var paths []string
	for _, e := range entries {
		paths = append(paths, filepath.Join(dir, e.Name()))
	}
	_, err = readFiles(ctx, paths, 2)
	return err
}

// trainerCopyFirst adds one sample of the old workflow to s: copy the
// split to local disk with copy, then one epoch over the copy.
func (b *bench) trainerCopyFirst(ctx context.Context, t *trainerFigures, s *stat, seed int,
	copy func(context.Context, string) error) error {
	dest := b.path("tmp", "npz-copy")
	if err := os.RemoveAll(dest); err != nil {
		return err
	}
	if err := b.coldStart(ctx); err != nil {
		return err
	}
	d, err := timed(func() error {
		if err := copy(ctx, dest); err != nil {
			return err
		}
		_, err := b.epochs(ctx, t, dest, 1, seed)
		return err
	})
	if err != nil {
		return err
	}
	s.add(d, t.bytes)
	return nil
}

func (b *bench) npzSync(ctx context.Context, dest string) error {
	src := fmt.Sprintf("s3://%s/%s/%s/", bucket, npzPrefix, npzSplit)
	_, err := b.runCmd(ctx, awsCLI, b.awsArgs(b.proxy.Endpoint, "s3", "sync", "--no-progress",
		"--only-show-errors", src, dest)...)
	return err
}

func (b *bench) npzRclone(ctx context.Context, dest string) error {
	src := fmt.Sprintf("%s:%s/%s/%s", rcloneRemote, bucket, npzPrefix, npzSplit)
	_, err := b.runCmdEnv(ctx, b.rcloneEnv(), rclone, "copy", "--transfers", "16", src, dest)
	return err
}

// trainerMount adds one sample of s3cachefs on an empty cache to s, from
// the mount command to the trainer's exit. mode "during" starts
// `prefetch --detach` and the trainer at once, "after" waits for the
// prefetch first, "cold" runs the trainer alone.
func (b *bench) trainerMount(ctx context.Context, t *trainerFigures, s *stat, seed int, mode string) error {
	cache := b.path("tmp", "trainer-cache")
	if err := os.RemoveAll(cache); err != nil {
		return err
	}
	if err := b.coldStart(ctx); err != nil {
		return err
	}
	b.proxy.Reset()
	start := time.Now()
	m, err := b.mountSource(ctx, b.bin, npzSource, "trainer", cache)
	if err != nil {
		return err
	}
	stopPerf, err := b.startPerf(m.pid, fmt.Sprintf("perf-%s-%d.data", mode, seed))
	if err != nil {
		return err
	}
	user, sys := cpuTimes(m.pid)
	switch mode {
	case "during":
		_, err = b.runCmd(ctx, m.bin, "prefetch", "--mount", m.dir, "--detach", npzSplit)
	case "after":
		var job time.Duration
		if job, err = b.prefetch(ctx, m, npzSplit); err == nil {
			t.prefetchAlone.add(job, t.bytes)
		}
	}
	if err == nil {
		_, err = b.epochs(ctx, t, filepath.Join(m.dir, npzSplit), 1, seed)
	}
	d := time.Since(start)
	if perr := stopPerf(); err == nil {
		err = perr
	}
	if err != nil {
		return fmt.Errorf("%s: %w\ndaemon log:\n%s", mode, err, logTail(cache))
	}
	s.add(d, t.bytes)
	u2, s2 := cpuTimes(m.pid)
	got := b.proxy.Counts().GetBytes
	rss, err := peakRSS(m.pid)
	if err != nil {
		return err
	}
	st, err := b.fsStatus(ctx, m)
	if err != nil {
		return err
	}
	switch mode {
	case "during":
		t.pathDuring.add(st)
		t.cpuDuring.add(u2-user, s2-sys, got)
		t.rssDuring, t.s3During = max(t.rssDuring, rss), max(t.s3During, got)
	case "cold":
		t.pathCold.add(st)
		t.cpuCold.add(u2-user, s2-sys, got)
		t.rssCold, t.s3Cold = max(t.rssCold, rss), max(t.s3Cold, got)
	}
	return b.dropFS(m, true)
}

// trainerLaterEpochs measures epochs after the first: through a mount whose
// cache holds the split beside the local copy the last run left, page
// cache dropped before each, then hot (the second of two epochs in one
// trainer), alternating sides.
func (b *bench) trainerLaterEpochs(ctx context.Context, t *trainerFigures) error {
	cache := b.path("tmp", "trainer-cache")
	if err := os.RemoveAll(cache); err != nil {
		return err
	}
	m, err := b.mountSource(ctx, b.bin, npzSource, "trainer", cache)
	if err != nil {
		return err
	}
	if _, err := b.prefetch(ctx, m, npzSplit); err != nil {
		return err
	}
	sides := []struct {
		dir       string
		drop, hot *stat
	}{
		{filepath.Join(m.dir, npzSplit), &t.fsDrop, &t.fsHot},
		{b.path("tmp", "npz-copy"), &t.localDrop, &t.localHot},
	}
	for run := range b.cfg.runs {
		for _, sd := range sides {
			if err := dropCaches(); err != nil {
				return err
			}
			ep, err := b.epochs(ctx, t, sd.dir, 1, run+1)
			if err != nil {
				return err
			}
			sd.drop.add(ep[0].duration(), t.arrays)
		}
	}
	for run := range b.cfg.runs {
		for _, sd := range sides {
			ep, err := b.epochs(ctx, t, sd.dir, 2, run+1)
			if err != nil {
				return err
			}
			sd.hot.add(ep[1].duration(), t.arrays)
		}
	}
	b.logf("trainer later epochs: dropped %s vs local %s; hot %s vs local %s",
		t.fsDrop, t.localDrop, t.fsHot, t.localHot)
	return b.dropFS(m, true)
}

func (e epochResult) duration() time.Duration {
	return time.Duration(e.Seconds * float64(time.Second))
}

// epochs runs trainer.py over dir for n epochs and checks that every epoch
// read every sample and every array byte.
func (b *bench) epochs(ctx context.Context, t *trainerFigures, dir string, n, seed int) ([]epochResult, error) {
	out, err := b.runCmd(ctx, python, b.path("trainer.py"), "epochs", dir, fmt.Sprint(n), fmt.Sprint(seed))
	if err != nil {
		return nil, fmt.Errorf("trainer (needs python3-torch): %w", err)
	}
	var res []epochResult
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var e epochResult
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("trainer output %q: %w", sc.Text(), err)
		}
		if e.Samples != t.spec.Files || e.Bytes != t.arrays {
			return nil, fmt.Errorf("trainer epoch %d over %s read %d samples, %d bytes; want %d, %d",
				e.Epoch, dir, e.Samples, e.Bytes, t.spec.Files, t.arrays)
		}
		res = append(res, e)
	}
	if len(res) != n {
		return nil, fmt.Errorf("trainer over %s printed %d epochs, want %d", dir, len(res), n)
	}
	return res, nil
}

// trainerRows are the rows of the trainer figure.
func (b *bench) trainerRows() []row {
	t := b.res.trainer
	if t == nil {
		return nil
	}
	set := fmt.Sprintf("%d NPZ files of %d–%d MiB (%d MiB), PyTorch DataLoader, 4 workers, shuffled, numpy.load per sample",
		t.spec.Files, t.spec.MinMiB, t.spec.MaxMiB, t.bytes/mib)
	during := "epoch 1 on an empty cache, `prefetch --detach train` just before (" + set + "; wall time, first command to the trainer's exit)"
	within := float64(t.during.median()) / float64(max(t.after.median(), 1))
	return []row{
		{during, t.during.String(), "`aws s3 sync`, then the epoch over the copy: " + t.sync.String(),
			fmtRatio(speedup(t.during, t.sync)), "≥ 1.3× sooner", yesNo(speedup(t.during, t.sync) >= 1.3)},
		{"the same", t.during.String(), fmt.Sprintf("`prefetch train` (%s), then the epoch over the warm cache: %s", t.prefetchAlone, t.after),
			fmtRatio(within), "≤ 1.1× (time)", yesNo(within <= 1.1)},
		{"epoch 1 on an empty cache, no prefetch", t.cold.String(), "`rclone copy --transfers 16`, then the epoch over the copy: " + t.rclone.String(),
			fmtRatio(speedup(t.cold, t.rclone)), "≥ 1× (no later)", yesNo(speedup(t.cold, t.rclone) >= 1)},
		{"a later epoch (the trainer's own time), page cache dropped", t.fsDrop.String(), "local copy: " + t.localDrop.String(),
			fmtRatio(faster(t.fsDrop, t.localDrop)), "≥ 0.97× local", yesNo(faster(t.fsDrop, t.localDrop) >= 0.97)},
		{"a later epoch, hot (the second of two in one trainer)", t.fsHot.String(), "local copy: " + t.localHot.String(),
			fmtRatio(faster(t.fsHot, t.localHot)), "≥ 0.97× local", yesNo(faster(t.fsHot, t.localHot) >= 0.97)},
		{"daemon CPU per GB fetched (/proc/PID/stat), peak RSS (VmHWM) and S3 GET bytes over the split's, epoch 1 with prefetch",
			fmt.Sprintf("%s; %.0f MiB; %.2f×; %s", t.cpuDuring, float64(t.rssDuring)/mib, float64(t.s3During)/float64(t.bytes), t.pathDuring),
			"—", "—", "RSS ≤ 128 MiB", yesNo(t.rssDuring <= 128*mib)},
		{"the same, epoch 1 without prefetch",
			fmt.Sprintf("%s; %.0f MiB; %.2f×; %s", t.cpuCold, float64(t.rssCold)/mib, float64(t.s3Cold)/float64(t.bytes), t.pathCold),
			"—", "—", "RSS ≤ 128 MiB", yesNo(t.rssCold <= 128*mib)},
	}
}

// readPath sums how daemons served their reads, from `status --json`.
type readPath struct{ fresh, checked, passOpens, daemonOpens int64 }

func (p *readPath) add(st fsStatus) {
	p.fresh += st.BlocksFresh
	p.checked += st.BlocksChecked
	p.passOpens += st.PassOpens
	p.daemonOpens += st.DaemonOpens
}

// String is "blocks: 700 fresh, 300 read back; opens: 20 passthrough, 100 daemon".
func (p readPath) String() string {
	return fmt.Sprintf("blocks: %d fresh, %d read back; opens: %d passthrough, %d daemon",
		p.fresh, p.checked, p.passOpens, p.daemonOpens)
}

// trainerSamples lists every sample of the trainer figure for the report.
func (t *trainerFigures) samples() []namedStat {
	return []namedStat{
		{"trainer: aws s3 sync + epoch", t.sync}, {"trainer: rclone copy + epoch", t.rclone},
		{"trainer: prefetch --detach + epoch", t.during}, {"trainer: prefetch, then epoch", t.after},
		{"trainer: prefetch alone (job time)", t.prefetchAlone}, {"trainer: epoch, no prefetch", t.cold},
		{"trainer: later epoch, dropped, mount", t.fsDrop}, {"trainer: later epoch, dropped, local", t.localDrop},
		{"trainer: later epoch, hot, mount", t.fsHot}, {"trainer: later epoch, hot, local", t.localHot},
	}
}

// startPerf starts `perf record -g` of pid into name in -perf's folder,
// and returns what stops it; without -perf both do nothing.
func (b *bench) startPerf(pid int, name string) (stop func() error, err error) {
	if b.cfg.perf == "" {
		return func() error { return nil }, nil
	}
	if err := os.MkdirAll(b.cfg.perf, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command("perf", "record", "-g", "-F", "999", "-p", fmt.Sprint(pid),
		"-o", filepath.Join(b.cfg.perf, name))
	log, err := os.OpenFile(b.path("logs", "perf.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("perf: %w", err)
	}
	return func() error {
		defer log.Close()
		// perf ends on SIGINT, with that signal as its exit status.
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		return nil
	}, nil
}
