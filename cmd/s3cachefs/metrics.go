package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"s3cachefs/cmd/s3cachefs/api"
)

// metrics serves a daemon's figures to Prometheus at http://ADDR/metrics.
// It keeps a registry of its own, so that nothing in the process is
// global. A nil *metrics (no --metrics-addr) does nothing.
type metrics struct {
	// Set once in listenMetrics.
	http       *httpServer
	getSeconds prometheus.Histogram // ranged GETs that fill the cache
	fetchBytes prometheus.Histogram // bytes each of those GETs wrote
}

// parseMetricsAddr checks a --metrics-addr value: "" (off) or HOST:PORT
// with a numeric port. Any host is accepted, as it is given explicitly;
// an empty host means every interface.
func parseMetricsAddr(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("--metrics-addr %q: want HOST:PORT, e.g. 127.0.0.1:9100", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("--metrics-addr %q: the port must be a number from 1 to 65535", s)
	}
	return s, nil
}

// listenMetrics opens the metrics listener on addr, so that a port in use
// fails the mount before anything is mounted. status is called at every
// scrape, once serve has been called. It returns nil when addr is "".
func listenMetrics(addr string, status func() api.Status, log *slog.Logger) (*metrics, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, listenCause(err))
	}
	m := &metrics{
		getSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "s3cachefs_s3_get_duration_seconds",
			Help: "Time from sending a ranged S3 GET that fills the cache to the end of its body (or its failure).",
			// 5ms … 41s: a few ms on a nearby endpoint, tens of seconds when S3 is slow.
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		fetchBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "s3cachefs_s3_get_size_bytes",
			Help: "Bytes written to the cache by each ranged S3 GET.",
			// 4KiB … 64MiB: a GET asks for at most one part (--part-size:
			// 4 MiB by default, 64 MiB at most), less at the ends of
			// objects and of gaps.
			Buckets: prometheus.ExponentialBuckets(4<<10, 4, 8),
		}),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStatusCollector(status), m.getSeconds, m.fetchBytes,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError, // a failed figure must not hide the rest
		Registry:      reg,
	}))
	m.http = newHTTPServer("metrics listener", ln, mux, log)
	return m, nil
}

// listenCause shortens a listen error to its cause ("address already in
// use"); the caller names the flag and address.
func listenCause(err error) error {
	var sys *os.SyscallError
	if errors.As(err, &sys) {
		return sys.Err
	}
	return err
}

// fetchHook returns the blockcache.Options.OnFetch that feeds the
// histograms, or nil when m is nil.
func (m *metrics) fetchHook() func(int64, time.Duration, error) {
	if m == nil {
		return nil
	}
	return m.observeFetch
}

// observeFetch records one ranged GET. Failed GETs count towards latency
// (a slow failure is still time a reader waited) but not towards sizes.
func (m *metrics) observeFetch(bytes int64, d time.Duration, err error) {
	m.getSeconds.Observe(d.Seconds())
	if err == nil {
		m.fetchBytes.Observe(float64(bytes))
	}
}

// serve starts answering scrapes; called once the mount is up.
func (m *metrics) serve() {
	if m != nil {
		m.http.serve()
	}
}

// close stops serving, waiting (within ctx) for scrapes in progress:
// they read the cache and index, which close next.
func (m *metrics) close(ctx context.Context) error {
	if m == nil {
		return nil
	}
	return m.http.close(ctx)
}

// statusCollector exposes the figures of `status` at scrape time, so a
// scrape and `status` never disagree.
type statusCollector struct {
	status  func() api.Status
	metrics []statusMetric
}

// statusMetric is one figure of api.Status.
type statusMetric struct {
	desc      *prometheus.Desc
	kind      prometheus.ValueType
	fromIndex bool // left out when the index could not be read: unknown, not 0
	value     func(r *api.Status) float64
}

var _ prometheus.Collector = (*statusCollector)(nil)

func newStatusCollector(status func() api.Status) *statusCollector {
	c := &statusCollector{status: status}
	add := func(name, help string, kind prometheus.ValueType, fromIndex bool, value func(r *api.Status) float64) {
		c.metrics = append(c.metrics, statusMetric{
			desc: prometheus.NewDesc("s3cachefs_"+name, help, nil, nil),
			kind: kind, fromIndex: fromIndex, value: value,
		})
	}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	add("cache_hits_total", "Reads served entirely from blocks already on SSD.", counter, false,
		func(r *api.Status) float64 { return float64(r.Hits) })
	add("cache_misses_total", "Reads that waited for at least one fetch from S3.", counter, false,
		func(r *api.Status) float64 { return float64(r.Misses) })
	add("bytes_from_s3_total", "Bytes downloaded from S3 into the cache.", counter, false,
		func(r *api.Status) float64 { return float64(r.BytesFromS3) })
	add("bytes_from_ssd_total", "Bytes the daemon returned from SSD (passthrough reads are not counted).", counter, false,
		func(r *api.Status) float64 { return float64(r.BytesFromSSD) })
	add("fetch_errors_total", "Fetches from S3 that failed after retries.", counter, false,
		func(r *api.Status) float64 { return float64(r.FetchErrors) })
	add("evictions_total", "Objects evicted to make room.", counter, false,
		func(r *api.Status) float64 { return float64(r.Evictions) })
	add("uncached_reads_total", "Reads served straight from S3 because the cache was full.", counter, false,
		func(r *api.Status) float64 { return float64(r.UncachedReads) })
	add("index_commits_total", "Write transactions committed to the index (each an fsync of index.db).", counter, false,
		func(r *api.Status) float64 { return float64(r.IndexCommits) })
	add("cache_syncs_total", "fdatasyncs of cache files, one per part fetched before its blocks are recorded.", counter, false,
		func(r *api.Status) float64 { return float64(r.CacheSyncs) })
	add("shared_cache_bytes_total", "Bytes copied from the shared cache (--shared-cache) instead of S3.", counter, false,
		func(r *api.Status) float64 { return float64(r.TierBytes) })
	add("shared_cache_misses_total", "Objects the shared cache did not hold (fetched from S3).", counter, false,
		func(r *api.Status) float64 { return float64(r.TierMisses) })
	add("shared_cache_rejected_total", "Shared cache entries refused: not proven to be the S3 object, or unreadable (fetched from S3).", counter, false,
		func(r *api.Status) float64 { return float64(r.TierRejected) })
	add("shared_cache_published_total", "Objects published to the shared cache.", counter, false,
		func(r *api.Status) float64 { return float64(r.Published) })
	add("shared_cache_publish_errors_total", "Publishes to the shared cache that failed.", counter, false,
		func(r *api.Status) float64 { return float64(r.PublishErrors) })
	add("shared_cache_claims_won_total", "Objects a prefetch claimed in the shared cache and fetched from S3 for every node.", counter, false,
		func(r *api.Status) float64 { return float64(r.ClaimsWon) })
	add("shared_cache_claims_waited_total", "Objects a prefetch waited for while another node fetched them from S3.", counter, false,
		func(r *api.Status) float64 { return float64(r.ClaimsWaited) })
	add("shared_cache_claim_errors_total", "Claims in the shared cache that failed (the object was fetched from S3 unclaimed).", counter, false,
		func(r *api.Status) float64 { return float64(r.ClaimErrors) })
	add("corrupt_blocks_total", "Cached blocks found damaged on read and fetched again.", counter, false,
		func(r *api.Status) float64 { return float64(r.CorruptBlocks) })
	add("s3_get_requests_total", "S3 GET requests sent.", counter, false,
		func(r *api.Status) float64 { return float64(r.S3GetRequests) })
	add("s3_list_requests_total", "S3 LIST requests sent.", counter, false,
		func(r *api.Status) float64 { return float64(r.S3ListRequests) })
	add("cache_used_bytes", "SSD space taken by cached blocks, as --max-cache-size counts it.", gauge, false,
		func(r *api.Status) float64 { return float64(r.UsedBytes) })
	add("cache_limit_bytes", "The --max-cache-size limit; 0 means no limit but --min-free.", gauge, false,
		func(r *api.Status) float64 { return float64(r.CacheLimit) })
	add("cache_fs_free_bytes", "Space available on the cache directory's filesystem.", gauge, false,
		func(r *api.Status) float64 { return float64(r.FreeBytes) })
	add("cache_full", "1 when the cache could not make room for its last fetch, else 0.", gauge, false,
		func(r *api.Status) float64 { return boolFloat(r.CacheFull) })
	add("open_files", "Files open on the mount.", gauge, false,
		func(r *api.Status) float64 { return float64(r.OpenFiles) })
	add("file_nodes", "File inodes the kernel holds from the mount (bounded; the least recently used are pruned past it).", gauge, false,
		func(r *api.Status) float64 { return float64(r.FileNodes) })
	add("cached_objects", "Object versions with cached data.", gauge, true,
		func(r *api.Status) float64 { return float64(r.Objects) })
	add("cached_complete_objects", "Object versions cached in full.", gauge, true,
		func(r *api.Status) float64 { return float64(r.CompleteObjects) })
	add("cached_bytes", "Logical bytes of object data cached.", gauge, true,
		func(r *api.Status) float64 { return float64(r.CachedBytes) })
	add("passthrough_opens_total", "Opens the kernel reads straight from the cache file (FUSE passthrough); their bytes pass no counter.", counter, false,
		func(r *api.Status) float64 { return float64(r.PassthroughOpens) })
	add("daemon_opens_total", "Opens whose reads go through the daemon.", counter, false,
		func(r *api.Status) float64 { return float64(r.DaemonOpens) })
	add("passthrough", "1 when complete files are opened in FUSE passthrough mode, else 0.", gauge, false,
		func(r *api.Status) float64 { return boolFloat(r.ReadMode == "passthrough") })
	add("pinned_objects", "Objects pinned by prefetch, never evicted.", gauge, false,
		func(r *api.Status) float64 { return float64(r.PinnedObjects) })
	return c
}

// Describe implements prometheus.Collector.
func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector: one status per scrape.
func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.status()
	for _, m := range c.metrics {
		if m.fromIndex && r.Error != "" {
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(&r))
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
