package main

import (
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"s3cachefs/cmd/s3cachefs/api"
)

// fakeStatus has a distinct value in every figure, so a figure wired to
// the wrong field shows.
func fakeStatus() api.Status {
	return api.Status{
		Hits: 1, Misses: 2, BytesFromS3: 3, BytesFromSSD: 4, FetchErrors: 5,
		Evictions: 6, UncachedReads: 7, CorruptBlocks: 8, S3GetRequests: 9,
		S3ListRequests: 10, UsedBytes: 11, CacheLimit: 12, FreeBytes: 13,
		CacheFull: true, OpenFiles: 14, Objects: 15, CompleteObjects: 16,
		CachedBytes: 17, PinnedObjects: 18, PassthroughOpens: 19, DaemonOpens: 20,
		IndexCommits: 21, CacheSyncs: 22, ReadMode: "passthrough", FileNodes: 23,
		TierBytes: 24, TierMisses: 25, TierRejected: 26, Published: 27, PublishErrors: 28, ClaimsWon: 29, ClaimsWaited: 30, ClaimErrors: 31,
	}
}

func TestStatusCollectorValues(t *testing.T) {
	// What fakeStatus reads as, by metric name.
	want := map[string]float64{
		"s3cachefs_cache_hits_total": 1, "s3cachefs_cache_misses_total": 2,
		"s3cachefs_bytes_from_s3_total": 3, "s3cachefs_bytes_from_ssd_total": 4,
		"s3cachefs_fetch_errors_total": 5, "s3cachefs_evictions_total": 6,
		"s3cachefs_uncached_reads_total": 7, "s3cachefs_corrupt_blocks_total": 8,
		"s3cachefs_s3_get_requests_total": 9, "s3cachefs_s3_list_requests_total": 10,
		"s3cachefs_cache_used_bytes": 11, "s3cachefs_cache_limit_bytes": 12,
		"s3cachefs_cache_fs_free_bytes": 13, "s3cachefs_cache_full": 1,
		"s3cachefs_open_files": 14, "s3cachefs_cached_objects": 15,
		"s3cachefs_cached_complete_objects": 16, "s3cachefs_cached_bytes": 17,
		"s3cachefs_pinned_objects": 18, "s3cachefs_passthrough_opens_total": 19,
		"s3cachefs_daemon_opens_total": 20, "s3cachefs_passthrough": 1,
		"s3cachefs_index_commits_total": 21, "s3cachefs_cache_syncs_total": 22,
		"s3cachefs_file_nodes": 23, "s3cachefs_shared_cache_bytes_total": 24,
		"s3cachefs_shared_cache_misses_total": 25, "s3cachefs_shared_cache_rejected_total": 26,
		"s3cachefs_shared_cache_published_total": 27, "s3cachefs_shared_cache_publish_errors_total": 28,
		"s3cachefs_shared_cache_claims_won_total": 29, "s3cachefs_shared_cache_claims_waited_total": 30, "s3cachefs_shared_cache_claim_errors_total": 31,
	}
	c := newStatusCollector(fakeStatus)
	reg := prometheus.NewPedanticRegistry() // also checks descriptions against metrics
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		if len(mf.GetMetric()) != 1 || mf.GetHelp() == "" {
			t.Errorf("%s: %d samples, help %q; want one sample and help", mf.GetName(), len(mf.GetMetric()), mf.GetHelp())
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetCounter() != nil:
			got[mf.GetName()] = m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			got[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("collected\n%v\nwant\n%v", got, want)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestStatusCollectorLeavesOutUnreadIndex(t *testing.T) {
	c := newStatusCollector(func() api.Status {
		r := fakeStatus()
		r.Error = "read index: broken"
		return r
	})
	for _, name := range []string{"s3cachefs_cached_objects", "s3cachefs_cached_complete_objects", "s3cachefs_cached_bytes"} {
		if n := testutil.CollectAndCount(c, name); n != 0 {
			t.Errorf("%s exposed although the index could not be read", name)
		}
	}
	if n := testutil.CollectAndCount(c, "s3cachefs_bytes_from_s3_total"); n != 1 {
		t.Errorf("s3cachefs_bytes_from_s3_total left out with the index figures")
	}
}

func TestParseMetricsAddr(t *testing.T) {
	for _, ok := range []string{"", "127.0.0.1:9100", "[::1]:9100", "localhost:1", ":65535", "0.0.0.0:9100"} {
		if got, err := parseMetricsAddr(ok); err != nil || got != ok {
			t.Errorf("parseMetricsAddr(%q) = %q, %v", ok, got, err)
		}
	}
	for _, bad := range []string{"9100", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "::1:9100", "127.0.0.1:-1"} {
		_, err := parseMetricsAddr(bad)
		if err == nil {
			t.Errorf("parseMetricsAddr(%q) accepted", bad)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "--metrics-addr ") || strings.Contains(msg, "\n") {
			t.Errorf("parseMetricsAddr(%q): message %q is not one line naming the flag", bad, msg)
		}
	}
	cfg, err := parseMountArgs([]string{"s3://bucket/p", "/tmp/m", "--cache-dir", "/tmp/c", "--metrics-addr", "127.0.0.1:9100"})
	if err != nil || cfg.MetricsAddr != "127.0.0.1:9100" {
		t.Fatalf("mount --metrics-addr: cfg.MetricsAddr %q, err %v", cfg.MetricsAddr, err)
	}
	if _, err := parseMountArgs([]string{"s3://bucket/p", "/tmp/m", "--cache-dir", "/tmp/c", "--metrics-addr", "9100"}); err == nil {
		t.Fatal("mount --metrics-addr 9100 accepted")
	}
}

func TestMetricsServesScrapes(t *testing.T) {
	m, err := listenMetrics("127.0.0.1:0", fakeStatus, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	hook := m.fetchHook()
	hook(8<<20, 30*time.Millisecond, nil)
	hook(0, 2*time.Second, errors.New("failed GET"))
	m.serve()
	addr := m.http.ln.Addr().String()
	body := get(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		"s3cachefs_bytes_from_s3_total 3\n",
		"s3cachefs_s3_get_duration_seconds_count 2\n",
		`s3cachefs_s3_get_duration_seconds_bucket{le="0.04"} 1` + "\n",
		"s3cachefs_s3_get_size_bytes_count 1\n",
		"s3cachefs_s3_get_size_bytes_sum 8.388608e+06\n",
		"# HELP s3cachefs_cache_hits_total ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if err := m.close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("metrics address still answers after close")
	}
}

func TestListenMetricsPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	_, err = listenMetrics(addr, fakeStatus, slog.New(slog.DiscardHandler))
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("listen on a busy port: %v, want EADDRINUSE", err)
	}
	if want := "--metrics-addr " + addr + ": address already in use"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
}

func TestMetricsCloseWithoutServe(t *testing.T) {
	m, err := listenMetrics("127.0.0.1:0", fakeStatus, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr := m.http.ln.Addr().String()
	if err := m.close(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The port is free again: a failed mount leaves nothing listening.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port still taken after close: %v", err)
	}
	l.Close()
	var off *metrics // no --metrics-addr
	if off.fetchHook() != nil || off.close(t.Context()) != nil {
		t.Fatal("a nil *metrics does something")
	}
	off.serve()
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b)
}
