package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"s3cachefs/blockcache"
	"s3cachefs/blockcache/prefetch"
	"s3cachefs/blockcache/s3store"
	"s3cachefs/blockcache/tier"
	s3fs "s3cachefs/fs"
	"s3cachefs/fs/mounttab"
	"s3cachefs/index"
)

// daemon is one running mount: everything it opened, in the order it
// closes them.
type daemon struct {
	// Set once in startDaemon.
	cfg     mountConfig
	log     *slog.Logger
	db      *index.DB
	store   *s3store.Store
	catalog *index.Catalog
	cache   *blockcache.Cache
	jobs    *prefetch.Jobs
	root    *s3fs.Root
	server  *fuse.Server
	ctl     *control
	metrics *metrics // nil without --metrics-addr
	started time.Time

	bgCtx    context.Context // cancelled by close; for work started after mount
	bgCancel context.CancelFunc
	bg       sync.WaitGroup // goroutines started after mount

	detached chan struct{} // closed when drop or a signal unmounted it
	gone     chan struct{} // closed when the mount left the mount table
	stopped  chan struct{} // closed once cache and index are closed

	unmountMu sync.Mutex // serialises unmount attempts
}

// runDaemon mounts and serves until the mount goes away. ready, if not nil,
// receives "ok" once the mount answers, or the error that prevented it.
func runDaemon(cfg mountConfig, ready *os.File) (err error) {
	defer func() {
		if ready != nil {
			if err != nil {
				fmt.Fprintf(ready, "error: %s\n", oneLine(err.Error()))
			}
			ready.Close()
		}
	}()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	cfg = sizeToMemory(cfg, log)
	// Every path in cfg is absolute; leave the caller's folder so the
	// daemon never keeps another mount busy.
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	d, err := startDaemon(cfg, log)
	if err != nil {
		return err
	}
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
		ready = nil
	}
	log.Info("mounted", "source", cfg.Source.String(), "mountpoint", cfg.Mountpoint, "cache_dir", cfg.CacheDir, "pid", os.Getpid())
	d.startJobs()
	return d.serve()
}

// startDaemon opens the index, checks S3, mounts and starts the control
// socket. On any error it undoes what it did: nothing stays mounted.
func startDaemon(cfg mountConfig, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log, started: time.Now(),
		detached: make(chan struct{}), gone: make(chan struct{}), stopped: make(chan struct{})}
	d.bgCtx, d.bgCancel = context.WithCancel(context.Background())
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	// First, so that a port in use fails the mount at once.
	if d.metrics, err = listenMetrics(cfg.MetricsAddr, d.status, log); err != nil {
		return nil, err
	}
	undo = append(undo, func() { d.metrics.close(context.Background()) })
	if d.store, err = connectS3(cfg, log); err != nil {
		return nil, err
	}
	if d.db, err = openIndex(cfg.CacheDir, log); err != nil {
		return nil, err
	}
	undo = append(undo, func() { d.db.Close() })
	d.catalog = index.NewCatalog(d.db, d.store, index.CatalogOptions{
		Prefix: cfg.Source.Prefix, TTL: cfg.TTL, Logger: log,
		// Set before any listing: d.cache exists by the time the mount
		// (and with it the first listing) is up.
		OnGone: func(gone []index.Object) { d.cache.Forget(gone) },
	})
	minFree, err := minFreeBytes(cfg.CacheDir, cfg.MinFree)
	if err != nil {
		return nil, err
	}
	shared, err := openTier(cfg, log)
	if err != nil {
		return nil, err
	}
	d.cache, err = blockcache.New(d.db, d.store, blockcache.Options{
		Dir: cfg.CacheDir, Bucket: cfg.Source.Bucket, MaxFetches: cfg.MaxFetches,
		PartSize: cfg.PartSize, ReadAhead: readAhead(cfg.ReadAhead),
		MaxBytes: cfg.MaxCacheSize, MinFree: minFree, BodyAttempts: cfg.S3MaxAttempts,
		Eviction: cfg.Eviction, Logger: log, OnFetch: d.metrics.fetchHook(), Tier: shared,
	})
	if err != nil {
		return nil, fmt.Errorf("cache dir %s: %w", cfg.CacheDir, err)
	}
	undo = append(undo, func() { d.cache.Close() })
	d.jobs = prefetch.NewJobs(d.cache, d.catalog, d.db, prefetch.JobOptions{
		Objects: cfg.PrefetchObjects, MaxBytes: cfg.MaxCacheSize, MinFree: minFree,
		Prefix: cfg.Source.Prefix, Logger: log,
	})
	undo = append(undo, d.jobs.Close)
	undo = append(undo, d.catalog.Close) // before the cache its OnGone calls, and the index
	d.root = s3fs.NewRoot(s3fs.Options{
		Tree: d.catalog, Files: cacheFiles{d.cache},
		UID: cfg.UID, GID: cfg.GID, FileMode: cfg.FileMode, DirMode: cfg.DirMode,
		EntryTimeout: entryTimeout(cfg.TTL), Logger: log,
	})
	if d.ctl, err = listenControl(cfg, d, log); err != nil {
		return nil, err
	}
	undo = append(undo, func() { d.ctl.close(context.Background()) })
	mo := s3fs.MountOptions{FsName: cfg.Source.String(), AllowOther: cfg.AllowOther, HandedOver: cfg.FuseFD > 0,
		KernelReadAhead: cfg.KernelReadAhead, NoExec: cfg.NoExec, Logger: log}
	if cfg.Passthrough {
		// The index is a regular file on the cache's filesystem: the
		// kind of file passthrough will be asked to read.
		mo.PassthroughProbe = filepath.Join(cfg.CacheDir, indexFileName)
	}
	d.server, err = s3fs.Mount(cfg.Mountpoint, d.root, mo)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", cfg.Mountpoint, err)
	}
	d.watchMount()
	if st := d.root.Stats(); st.Passthrough {
		log.Info("complete files are read by the kernel straight from SSD (FUSE passthrough)")
	} else {
		log.Info("every read goes through the daemon", "passthrough_off", st.PassthroughOff)
	}
	d.ctl.serve()
	d.metrics.serve()
	return d, nil
}

// openTier returns the shared tier of --shared-cache, or nil. A folder
// tier must be there (an error otherwise); a bucket tier is never a reason
// for a mount to fail: one that cannot be reached now costs a warning, and
// its errors later are misses and failed claims.
func openTier(cfg mountConfig, log *slog.Logger) (blockcache.Tier, error) {
	if cfg.SharedCache == "" {
		return nil, nil
	}
	if cfg.SharedBucket.Bucket == "" {
		folder, err := tier.OpenFolder(cfg.SharedCache)
		if err != nil {
			return nil, err
		}
		folder.SetClaimTTL(cfg.SharedClaimTTL)
		return tier.NewShared(folder, cfg.Source.Bucket), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), tierCheckTimeout)
	defer cancel()
	t := cfg.SharedS3
	store, err := s3store.New(ctx, s3store.Options{
		Bucket: cfg.SharedBucket.Bucket, Endpoint: t.Endpoint, Region: t.Region, Profile: t.Profile,
		ForcePathStyle: t.ForcePathStyle,
		// Publishers, fills and claims; the tier's pool is its own.
		MaxConns: cfg.MaxFetches + 16,
		Timeout:  cfg.S3Timeout,
		// A tier that fails costs every read that tries it this much
		// before S3 is asked instead: few retries.
		MaxAttempts: tierAttempts,
		Logger:      log,
	})
	if err != nil {
		return nil, fmt.Errorf("shared cache %s: configure S3 client: %w", cfg.SharedCache, err)
	}
	if err := store.Check(ctx, cfg.SharedBucket.Prefix); err != nil {
		log.Warn("shared cache bucket not reachable now; reading from S3 until it is", "shared_cache", cfg.SharedCache, "err", err)
	}
	bucket := tier.NewBucket(store, tier.BucketOptions{
		Prefix: cfg.SharedBucket.Prefix, ClaimTTL: cfg.SharedClaimTTL, TempDir: cfg.CacheDir,
	})
	return tier.NewShared(bucket, cfg.Source.Bucket), nil
}

// A bucket tier's requests are tried this often; the mount's check of it
// waits at most this long.
const (
	tierAttempts     = 3
	tierCheckTimeout = 10 * time.Second
)

// watchMount starts watching the mount table for the mount just made, so
// that a plain umount stops the daemon also where the FUSE side never
// says so (watch.go).
func (d *daemon) watchMount() {
	if d.cfg.FuseFD > 0 {
		// Not in our mount table, and the helper's umount ends the
		// serve loop (ENODEV) where one hands a /dev/fuse over.
		return
	}
	// The newest mount at the mountpoint is the one just made; gVisor
	// shows it as plain "fuse".
	m, found, err := mountAt(d.cfg.Mountpoint)
	found = found && (m.FSType == mounttab.FSType || m.FSType == "fuse")
	var st unix.Stat_t
	if err == nil && found {
		err = unix.Stat(d.cfg.Mountpoint, &st)
	}
	if err != nil || !found {
		d.log.Warn("mount not found in the mount table; a plain umount may not stop the daemon here", "err", err)
		return
	}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		watchMount(d.bgCtx, m.ID, d.cfg.Mountpoint, st.Dev, d.gone, d.log)
	}()
}

// startJobs resumes the prefetch jobs an earlier run left unfinished and
// starts the one --prefetch asks for, in the background.
func (d *daemon) startJobs() {
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		if err := d.jobs.Resume(d.bgCtx); err != nil {
			d.log.Error("resume prefetch jobs", "err", err)
		}
		if len(d.cfg.Prefetch) == 0 {
			return
		}
		p, err := d.jobs.Start(d.bgCtx, d.cfg.Prefetch)
		if err != nil {
			d.log.Error("--prefetch", "err", err)
			return
		}
		d.log.Info("--prefetch started", "job", p.ID)
	}()
}

// connectS3 builds the S3 client and checks bucket, credentials and
// endpoint with one request, turning each failure into one clear line.
func connectS3(cfg mountConfig, log *slog.Logger) (*s3store.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := s3store.New(ctx, s3store.Options{
		Bucket: cfg.Source.Bucket, Region: cfg.Region, Profile: cfg.Profile,
		Endpoint: cfg.Endpoint, ForcePathStyle: cfg.ForcePathStyle,
		// One connection per cache GET the gate lets run, plus room for
		// listings and uncached reads (a full cache), which it does
		// not count: no GET waits for a connection, and every one is
		// kept for reuse.
		MaxConns:    cfg.MaxFetches + 16,
		Timeout:     cfg.S3Timeout,
		MaxAttempts: cfg.S3MaxAttempts,
		Logger:      log,
	})
	if err != nil {
		return nil, fmt.Errorf("configure S3 client: %w", err)
	}
	err = store.Check(ctx, cfg.Source.Prefix)
	where := cfg.Endpoint
	if where == "" {
		where = "S3"
	}
	switch {
	case err == nil:
		return store, nil
	case errors.Is(err, s3store.ErrNoBucket):
		return nil, fmt.Errorf("bucket %s does not exist (at %s)", cfg.Source.Bucket, where)
	case errors.Is(err, s3store.ErrAccessDenied):
		log.Error("S3 check", "err", err)
		return nil, fmt.Errorf("access to %s denied: check the AWS credentials and the bucket's policy", cfg.Source)
	case errors.Is(err, s3store.ErrUnreachable), errors.Is(err, context.DeadlineExceeded):
		log.Error("S3 check", "err", err)
		return nil, fmt.Errorf("cannot reach %s: %v", where, netCause(err))
	default:
		return nil, fmt.Errorf("list %s: %w", cfg.Source, err)
	}
}

// netCause digs the innermost network error out of an SDK error chain, for
// a short message ("connection refused").
func netCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns
	}
	return err
}

// minFreeBytes turns --min-free into bytes for the cache filesystem.
func minFreeBytes(dir string, m minFree) (int64, error) {
	if m.Bytes > 0 || m.Percent == 0 {
		return m.Bytes, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("cache dir %s: %w", dir, err)
	}
	return int64(float64(st.Blocks) * float64(st.Bsize) * m.Percent / 100), nil
}

// entryTimeout is how long the kernel may cache names and attributes:
// the metadata TTL, capped so that a changed object shows within a minute
// of its listing being refreshed.
func entryTimeout(ttl time.Duration) time.Duration {
	if ttl < 0 || ttl > time.Minute {
		return time.Minute
	}
	return ttl
}

// serve waits until the mount goes away — plain umount, drop, or a signal —
// then closes everything.
func (d *daemon) serve() error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	served := make(chan struct{})
	go func() {
		d.server.Wait()
		close(served)
	}()
	for done := false; !done; {
		select {
		case s := <-sigs:
			d.log.Info("signal: unmounting", "signal", s.String())
			if err := d.unmount(true); err != nil {
				d.log.Error("unmount", "err", err)
			}
		case <-served:
			done = true
		case <-d.detached:
			done = true
		case <-d.gone:
			d.log.Info("the mount left the mount table")
			done = true
		}
	}
	select {
	case <-served:
	case <-time.After(serveAfterUnmount):
		// gVisor: the FUSE device keeps blocking after an unmount.
		d.log.Info("the FUSE device did not report the unmount; stopping anyway")
	}
	err := d.close()
	d.log.Info("stopped", "mountpoint", d.cfg.Mountpoint)
	return err
}

// unmount unmounts the mountpoint. With force, a busy mount is detached
// lazily: open files fail once the daemon is gone. Once the mount is
// gone, serve returns. A mount made by another process (a handed-over
// /dev/fd/N) is that process's to unmount: the daemon only stops.
func (d *daemon) unmount(force bool) error {
	d.unmountMu.Lock()
	defer d.unmountMu.Unlock()
	select {
	case <-d.detached:
		return nil // done before
	default:
	}
	if d.cfg.FuseFD == 0 {
		err := s3fs.Unmount(d.cfg.Mountpoint, false)
		if err != nil && !force {
			return err
		}
		if err != nil {
			d.log.Warn("mount busy; detaching it", "err", err)
			if err := detachMount(d.cfg.Mountpoint); err != nil {
				return err
			}
		}
	}
	close(d.detached)
	return nil
}

// close stops the metrics listener (scrapes read the cache and index),
// the cache and the index, then the control socket (after it has told a
// waiting `drop` that everything is closed).
func (d *daemon) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errs := []error{d.metrics.close(ctx)}
	d.bgCancel()
	d.bg.Wait()
	d.jobs.Close()
	d.catalog.Close() // its listings write to the index and call the cache
	errs = append(errs, d.cache.Close(), d.db.Close())
	close(d.stopped)
	errs = append(errs, d.ctl.close(ctx))
	return errors.Join(errs...)
}

// cacheFiles adapts the block cache to what the fs layer opens.
type cacheFiles struct{ c *blockcache.Cache }

func (f cacheFiles) Open(ctx context.Context, obj index.Object) (s3fs.File, error) {
	h, err := f.c.Open(ctx, obj)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// readAhead maps --read-ahead to blockcache's option, where 0 means the
// default and a negative window none.
func readAhead(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}
