// gvisorchild.go is the bench's side inside the gVisor sandbox: it sets up
// its own S3 server, proxy and plain files of the set in the sandbox's
// overlay, times the reads, and prints one result line (gvisor.go).

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"
)

// gvisorChild runs the job in arg and returns the exit code.
func gvisorChild(arg string) int {
	var job gvisorJob
	if err := json.Unmarshal([]byte(arg), &job); err != nil {
		fmt.Fprintln(os.Stderr, "bench gvisor-child: bad job:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := runGVisorJob(ctx, job)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench gvisor-child:", err)
		return 1
	}
	out, err := json.Marshal(res)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench gvisor-child:", err)
		return 1
	}
	fmt.Println(gvisorResultPrefix + string(out))
	return 0
}

// runGVisorJob measures the set: cold reads through fresh mounts, then
// cached reads of the last one alternating with reads of the plain files,
// then one read of each file through the mount compared with its plain
// file byte for byte.
func runGVisorJob(ctx context.Context, job gvisorJob) (res gvisorResult, err error) {
	b := &bench{
		cfg: config{work: job.Work, runs: job.Runs, readers: job.Readers, mountFlags: job.MountFlags},
		bin: job.Bin, start: time.Now(),
	}
	defer b.clean.closeAll(b.logf)
	for _, d := range []string{"tmp", "run", "home", "logs", "s3root", "plain"} {
		if err := os.MkdirAll(b.path(d), 0o700); err != nil {
			return res, err
		}
	}
	if err := b.startServer(job.Versitygw); err != nil {
		return res, err
	}
	rel := gvisorNames(job)
	plain := make([]string, len(rel))
	for i, r := range rel {
		plain[i] = b.path("plain", r)
		if err := os.MkdirAll(filepath.Dir(plain[i]), 0o755); err != nil {
			return res, err
		}
		if err := writeRandom(plain[i], job.FileSize, job.Seed, uint64(1000+i)); err != nil {
			return res, err
		}
		res.Bytes += job.FileSize
	}
	var up time.Duration
	if up, err = timed(func() error { return b.uploadSet(ctx, rel, plain) }); err != nil {
		return res, err
	}
	res.Upload = up
	b.logf("wrote %d files (%d MB) to %s and uploaded them in %s", len(rel), res.Bytes/1e6, b.path("plain"), fmtDur(up))
	if err := b.startProxy(job.TTFB, job.Rate); err != nil {
		return res, err
	}
	m, err := b.gvisorCold(ctx, rel, &res)
	if err != nil {
		return res, err
	}
	before, err := b.fsStatus(ctx, m)
	if err != nil {
		return res, err
	}
	res.ReadMode, res.FUSE, res.Fallbacks = before.ReadMode, before.FUSE, before.Fallbacks
	mounted := mountedPaths(m, rel)
	var cached, plainStat stat
	u0, s0 := cpuTimes(m.pid)
	if err := b.measurePairs(ctx, b.cfg.runs, false, &plainStat, plain, &cached, mounted); err != nil {
		return res, err
	}
	u1, s1 := cpuTimes(m.pid)
	after, err := b.fsStatus(ctx, m)
	if err != nil {
		return res, err
	}
	if after.S3GetRequests != before.S3GetRequests {
		return res, fmt.Errorf("cached reads made %d GETs", after.S3GetRequests-before.S3GetRequests)
	}
	res.BlocksChecked = after.BlocksChecked - before.BlocksChecked
	res.Reads, res.ReadBytes = after.Hits-before.Hits, after.BytesFromSSD-before.BytesFromSSD
	// measurePairs read each side once more before its samples.
	read := int64(len(cached.samples)+1) * res.Bytes
	if res.ReadBytes < read {
		// Some bytes came from a cache of the sandbox's own, not the daemon.
		return res, fmt.Errorf("cached reads: the daemon served %d bytes from SSD of the %d read", res.ReadBytes, read)
	}
	res.CachedCPU = cpuJSON{User: u1 - u0, Sys: s1 - s0, Bytes: read}
	for i := range cached.samples {
		res.Cached = append(res.Cached, cached.samples[i].d)
		res.Plain = append(res.Plain, plainStat.samples[i].d)
	}
	b.logf("cached %s [%s], plain %s [%s]", cached, cached.all(), plainStat, plainStat.all())
	for i := range mounted {
		if err := sameBytes(mounted[i], plain[i]); err != nil {
			return res, err
		}
	}
	b.logf("every file read through the mount equals its plain copy")
	return res, b.dropFS(m, true)
}

// gvisorNames are the set's files, relative to the mount's root.
func gvisorNames(job gvisorJob) []string {
	out := make([]string, job.Files)
	for i := range out {
		out[i] = fmt.Sprintf("gvisor/file_%02d.bin", i)
	}
	return out
}

// mountAttempts bounds the tries of one mount in the sandbox: there, a
// mount's self-check sometimes fails on a close(2) that a signal
// interrupts (EINTR), more often the busier the machine. Each failure is
// reported with the figures.
const mountAttempts = 3

// gvisorMount is freshMount, tried again after a failure.
func (b *bench) gvisorMount(ctx context.Context, res *gvisorResult) (*fsMount, error) {
	for attempt := 1; ; attempt++ {
		res.Mounts++
		m, err := b.freshMount(ctx, "gvisor")
		if err == nil || attempt == mountAttempts || ctx.Err() != nil {
			return m, err
		}
		first, _, _ := strings.Cut(err.Error(), "\n")
		b.logf("mount failed, trying again: %s", first)
		res.MountFailures = append(res.MountFailures, first)
	}
}

// gvisorCold takes runs cold reads of the set, each on a fresh mount with
// an empty cache, and returns the last mount, its cache full.
func (b *bench) gvisorCold(ctx context.Context, rel []string, res *gvisorResult) (*fsMount, error) {
	var m *fsMount
	for i := range b.cfg.runs {
		var err error
		if m, err = b.gvisorMount(ctx, res); err != nil {
			return nil, err
		}
		paths := mountedPaths(m, rel)
		// Listing the folder is not part of the figure.
		if _, err := os.ReadDir(filepath.Dir(paths[0])); err != nil {
			return nil, err
		}
		u0, s0 := cpuTimes(m.pid)
		var n int64
		d, err := timed(func() (err error) { n, err = readFiles(ctx, paths, b.cfg.readers); return err })
		if err != nil {
			return nil, err
		}
		if n != res.Bytes {
			return nil, fmt.Errorf("cold read: %d bytes, want %d", n, res.Bytes)
		}
		u1, s1 := cpuTimes(m.pid)
		res.Cold = append(res.Cold, d)
		res.ColdCPU.User += u1 - u0
		res.ColdCPU.Sys += s1 - s0
		res.ColdCPU.Bytes += n
		b.logf("cold read %d: %s", i+1, fmtDur(d))
		if i < b.cfg.runs-1 {
			if err := b.dropFS(m, true); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// mountedPaths are the files rel on m.
func mountedPaths(m *fsMount, rel []string) []string {
	out := make([]string, len(rel))
	for i, r := range rel {
		out[i] = filepath.Join(m.dir, r)
	}
	return out
}

// uploadSet puts the files at paths into the bucket under the names rel,
// straight to the server, two at a time.
func (b *bench) uploadSet(ctx context.Context, rel, paths []string) error {
	if err := b.server.MakeBucket(ctx, bucket); err != nil {
		return err
	}
	c := b.server.ClientAt(b.server.Endpoint, 0)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for i, r := range rel {
		g.Go(func() error {
			f, err := os.Open(paths[i])
			if err != nil {
				return err
			}
			defer f.Close()
			key := prefix + "/" + r
			if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: f}); err != nil {
				return fmt.Errorf("upload %s: %w", key, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// sameBytes reads both files to the end and fails unless they are equal.
func sameBytes(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ba, bb := make([]byte, readBuf), make([]byte, readBuf)
	for off := int64(0); ; off += readBuf {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("%s differs from %s in the MiB at %d", a, b, off)
		}
		endA := errors.Is(ea, io.EOF) || errors.Is(ea, io.ErrUnexpectedEOF)
		endB := errors.Is(eb, io.EOF) || errors.Is(eb, io.ErrUnexpectedEOF)
		if ea != nil && !endA {
			return fmt.Errorf("read %s: %w", a, ea)
		}
		if eb != nil && !endB {
			return fmt.Errorf("read %s: %w", b, eb)
		}
		if endA || endB {
			return nil
		}
	}
}
