// measure.go holds the timing tools: page-cache drops, parallel reads with
// 1 MiB buffers, repeated runs and their medians.

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// readBuf is the size of each read(2): large, as a data loader's would be.
const readBuf = 1 << 20

// dropCaches writes back dirty pages and drops the page cache, dentries
// and inodes, so the next read of any file comes from its backing store.
func dropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("drop page cache (needs root): %w", err)
	}
	return nil
}

// readFiles reads every file of paths to the end with readers files in
// flight, and returns the bytes read.
func readFiles(ctx context.Context, paths []string, readers int) (int64, error) {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(readers)
	total := make([]int64, len(paths))
	for i, p := range paths {
		g.Go(func() error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			n, err := readFile(p)
			total[i] = n
			return err
		})
	}
	err := g.Wait()
	var sum int64
	for _, n := range total {
		sum += n
	}
	return sum, err
}

// readFile reads path to the end with plain read(2)s of readBuf bytes.
func readFile(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, readBuf)
	var n int64
	for {
		m, err := f.Read(buf)
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read %s: %w", path, err)
		}
	}
}

// sample is one timed run: how long it took and how many bytes it moved.
type sample struct {
	d     time.Duration
	bytes int64
}

// stat is the median of several samples.
type stat struct {
	samples []sample
}

// add records one run.
func (s *stat) add(d time.Duration, bytes int64) { s.samples = append(s.samples, sample{d, bytes}) }

// empty reports whether the figure was not measured (-only).
func (s stat) empty() bool { return len(s.samples) == 0 }

// median is the median duration (the lower middle for an even count).
func (s stat) median() time.Duration {
	if len(s.samples) == 0 {
		return 0
	}
	ds := make([]time.Duration, len(s.samples))
	for i, x := range s.samples {
		ds[i] = x.d
	}
	slices.Sort(ds)
	return ds[(len(ds)-1)/2]
}

// rate is bytes per second at the median duration.
func (s stat) rate() float64 {
	d := s.median()
	if d <= 0 || len(s.samples) == 0 {
		return 0
	}
	return float64(s.samples[0].bytes) / d.Seconds()
}

// String is "1.23 s (456 MB/s)", or the time alone when no bytes moved.
func (s stat) String() string {
	if len(s.samples) == 0 {
		return "n/a"
	}
	if s.samples[0].bytes == 0 {
		return fmtDur(s.median())
	}
	return fmt.Sprintf("%s (%s)", fmtDur(s.median()), fmtRate(s.rate()))
}

// all lists every sample's duration, for the log.
func (s stat) all() string {
	out := ""
	for i, x := range s.samples {
		if i > 0 {
			out += ", "
		}
		out += fmtDur(x.d)
	}
	return out
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func fmtRate(bps float64) string { return fmt.Sprintf("%.0f MB/s", bps/1e6) }

// timed runs fn and returns how long it took.
func timed(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

// cpuTime is the user+system CPU time pid has used so far; zero when it
// cannot be read.
func cpuTime(pid int) time.Duration {
	user, sys := cpuTimes(pid)
	return user + sys
}

// cpuTimes are the user and system CPU time pid has used so far, from
// /proc/PID/stat (in clock ticks of 10 ms); zero when it cannot be read.
func cpuTimes(pid int) (user, sys time.Duration) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0
	}
	// After ") " come state (field 3) ... utime (14), stime (15).
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime) * 10 * time.Millisecond, time.Duration(stime) * 10 * time.Millisecond
}

// cpuMeter measures the CPU time of the daemon, this process (the proxy
// runs here) and versitygw over one figure, to show what is CPU-bound.
type cpuMeter struct {
	pids  [3]int
	start [3]time.Duration
}

func (b *bench) startCPU(daemon int) *cpuMeter {
	m := &cpuMeter{pids: [3]int{daemon, os.Getpid(), b.server.Pid()}}
	for i, p := range m.pids {
		m.start[i] = cpuTime(p)
	}
	return m
}

// String is the CPU seconds each used since startCPU.
func (m *cpuMeter) String() string {
	var d [3]float64
	for i, p := range m.pids {
		d[i] = (cpuTime(p) - m.start[i]).Seconds()
	}
	return fmt.Sprintf("CPU s: daemon %.2f, bench+proxy %.2f, versitygw %.2f", d[0], d[1], d[2])
}
