package test

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestMetrics reads the dataset through a mount started with
// --metrics-addr and checks that a Prometheus scrape shows the reads: the
// status counters and the GET histograms. A second mount asking for the
// same port fails with one line and leaves nothing mounted; dropping the
// first mount frees the port.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	addr := closedAddr(t)
	m := e.mount(t, "--metrics-addr", addr)

	readAll(t, m.dir, files)
	metrics := scrape(t, addr)
	fromS3 := sample(t, metrics, "s3cachefs_bytes_from_s3_total")
	if fromS3 <= 0 {
		t.Errorf("s3cachefs_bytes_from_s3_total = %v after reading the dataset, want > 0", fromS3)
	}
	// Counters only grow: status, asked after the scrape, has at least as much.
	if s := e.status(t, m); float64(s.BytesFromS3) < fromS3 {
		t.Errorf("status says %d bytes from S3, less than the scrape's %v", s.BytesFromS3, fromS3)
	}
	if n := sample(t, metrics, "s3cachefs_s3_get_duration_seconds_count"); n <= 0 {
		t.Errorf("GET latency histogram count = %v after reading the dataset, want > 0", n)
	}
	if n := sample(t, metrics, "s3cachefs_s3_get_size_bytes_sum"); n <= 0 || n > fromS3 {
		t.Errorf("GET size histogram sum = %v, want > 0 and at most the %v bytes from S3", n, fromS3)
	}
	if n := sample(t, metrics, "s3cachefs_cached_objects"); n <= 0 {
		t.Errorf("s3cachefs_cached_objects = %v after reading the dataset, want > 0", n)
	}

	t.Run("port in use", func(t *testing.T) {
		tmp := t.TempDir()
		mnt := emptyDir(t, tmp, "mnt")
		pidsBefore := daemonPIDs()
		r := e.run(t, append(mountArgs(e, source, mnt, filepath.Join(tmp, "cache")), "--metrics-addr", addr)...)
		if r.code != 1 {
			t.Errorf("exit status %d, want 1\n%s", r.code, r)
		}
		want := "s3cachefs: --metrics-addr " + addr + ": address already in use\n"
		if r.stderr != want {
			t.Errorf("stderr %q, want %q", r.stderr, want)
		}
		if isMounted(t, mnt) {
			t.Errorf("%s is mounted after a failed mount", mnt)
		}
		if after := daemonPIDs(); !slices.Equal(after, pidsBefore) {
			t.Errorf("s3cachefs processes changed from %v to %v", pidsBefore, after)
		}
	})

	e.drop(t, m)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the metrics port is still taken after drop: %v", err)
	}
	l.Close()
}

// scrape GETs http://addr/metrics and returns the exposition text.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, b)
	}
	return string(b)
}

// sample returns the value of the unlabelled sample name in text.
func sample(t *testing.T, text, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no sample %s:\n%s", name, text)
	return 0
}
