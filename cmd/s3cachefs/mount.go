package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"s3cachefs/blockcache"
	pf "s3cachefs/blockcache/prefetch"
	"s3cachefs/blockcache/s3store"
	"s3cachefs/blockcache/tier"
	"s3cachefs/index"
)

// mountConfig is everything `mount` was told, parsed and validated.
type mountConfig struct {
	Source          source
	Mountpoint      string // absolute; or /dev/fd/N, see FuseFD
	CacheDir        string // absolute
	Endpoint        string
	Region          string
	Profile         string
	ForcePathStyle  bool
	TTL             time.Duration // < 0: indefinite
	Foreground      bool
	LogLevel        slog.Level
	AllowOther      bool
	UID, GID        uint32
	FileMode        uint32
	DirMode         uint32
	Prefetch        []string // mount-relative paths to prefetch once mounted
	PrefetchObjects int      // most objects a prefetch job fetches at once
	MaxFetches      int      // ranged GETs in flight
	MaxCacheSize    int64    // bytes; 0 = no limit but free space
	Eviction        blockcache.Eviction
	MinFree         minFree       // kept free on the cache filesystem
	MetricsAddr     string        // HOST:PORT serving Prometheus metrics; "" = off
	Passthrough     bool          // hand complete files to the kernel when it allows
	PartSize        int64         // bytes one ranged GET asks for
	ReadAhead       int64         // largest read-ahead window of a sequential reader
	KernelReadAhead int64         // the kernel's read-ahead window for the mount; 0 = its default
	S3Timeout       time.Duration // longest wait for response headers or a silent body
	S3MaxAttempts   int           // attempts per S3 request, the first included
	NoExec          bool          // mount option noexec
	SharedCache     string        // the shared tier: an absolute folder, or s3://bucket[/prefix]; "" = none
	SharedBucket    source        // the tier's bucket and prefix when it is one; Bucket "" otherwise
	SharedClaimTTL  time.Duration // how long a claim in it outlives its renewal
	SharedS3        sharedS3      // how to reach the tier's bucket

	// FuseFD is N when MOUNTPOINT is /dev/fd/N: a mount that another
	// process made on a /dev/fuse it handed over (see fdmount.go); 0 for
	// a mount of our own.
	FuseFD int
	// Name names the mount to the other commands (its control socket) and
	// in status: the mountpoint, or for a handed-over descriptor
	// --mountpoint-name (else /dev/fd/N).
	Name string

	setFlags map[string]bool // names of the flags given on the command line
	Memory   memPlan         // what the daemon sized to its memory limit (memlimit.go)
}

// sharedS3 is how the daemon reaches a bucket tier: its own endpoint,
// region, profile and addressing, not the source's ("" and false: the
// SDK's default chain, as for a source given none).
type sharedS3 struct {
	Endpoint       string
	Region         string
	Profile        string
	ForcePathStyle bool
}

// readyFDEnv names the inherited pipe on which a background daemon reports
// "ok" or its error to the `mount` command that started it.
const readyFDEnv = "S3CACHEFS_READY_FD"

const mountHelp = `usage: s3cachefs mount SOURCE MOUNTPOINT --cache-dir DIR [flags]

Mounts SOURCE (s3://bucket[/prefix]) read-only at MOUNTPOINT. Bytes read are
kept in DIR and served from there afterwards, also after a remount.

Every flag is also a mount option, with _ for -: -o cache_dir=DIR,force_path_style
(as mount -t fuse.s3cachefs and /etc/fstab give them; see the README).

flags:
`

// parseMountArgs parses and checks mount's command line. Every error it
// returns is a usageError but those of resolving paths (the working
// directory gone).
func parseMountArgs(args []string) (mountConfig, error) {
	fs := flag.NewFlagSet("mount", flag.ContinueOnError)
	cacheDir := fs.String("cache-dir", "", "folder for cached data and the index (required)")
	endpoint := typedFlag(fs, "endpoint-url", "", "S3 endpoint `URL` (default: AWS, or $AWS_ENDPOINT_URL)", parseEndpoint)
	region := fs.String("region", "", "AWS region (default: from the AWS config chain)")
	profile := fs.String("profile", "", "AWS shared-config profile")
	pathStyle := fs.Bool("force-path-style", false, "address buckets as ENDPOINT/bucket instead of bucket.ENDPOINT")
	ttl := typedFlag(fs, "metadata-ttl", "5m", "how long a folder listing is trusted: a `duration` or \"indefinite\"", parseTTL)
	fg := fs.Bool("foreground", false, "stay attached; unmount on SIGINT/SIGTERM")
	level := typedFlag(fs, "log-level", "info", "`level`: debug, info, warn or error", parseLevel)
	allowOther := fs.Bool("allow-other", false, "let users other than the mounting one read the mount")
	uid := intFlag(fs, "uid", int64(os.Getuid()), 0, math.MaxUint32, "owner `uid` of every file")
	gid := intFlag(fs, "gid", int64(os.Getgid()), 0, math.MaxUint32, "owner `gid` of every file")
	fileMode := typedFlag(fs, "file-mode", "0444", "permission bits of files, an octal `mode`", modeIn("--file-mode"))
	dirMode := typedFlag(fs, "dir-mode", "0555", "permission bits of folders, an octal `mode`", modeIn("--dir-mode"))
	prefetch := fs.String("prefetch", "", "comma-separated folders to prefetch once mounted, e.g. train,dev")
	prefetchObjects := intFlag(fs, "prefetch-objects", pf.DefaultObjects, 1, 4096,
		"most `objects` a prefetch job fetches at once (1 to 4096; of large ones, 8 at most)")
	maxFetches := intFlag(fs, "max-fetches", 32, 1, 1024, "ranged `GETs` in flight (reads go before prefetch; 1 to 1024)")
	maxCache := typedFlag(fs, "max-cache-size", "0", "most SSD space the cache may take, a `size` like 400GiB (0: no limit but --min-free)",
		func(s string) (int64, error) { return parseSize("--max-cache-size", s) })
	eviction := typedFlag(fs, "eviction", "lru", "what a full cache does: `policy` lru (evict the least recently opened objects) or none (keep what is cached; read the rest from S3 uncached)", parseEviction)
	minFreeFlag := typedFlag(fs, "min-free", "5%", "space kept free on the cache filesystem: a `size` or a percentage", parseMinFree)
	passthrough := fs.Bool("passthrough", true, "let the kernel read complete cached files straight from SSD (FUSE passthrough; Linux 6.9+, root); false serves every read through the daemon")
	partSize := typedFlag(fs, "part-size", "4MiB", "`bytes` one ranged GET asks for (1MiB to 64MiB)", sizeIn("--part-size", 1<<20, 64<<20))
	readAhead := typedFlag(fs, "read-ahead", "64MiB", "largest read-ahead window of a sequential reader, in `bytes` (0 to 1GiB)", sizeIn("--read-ahead", 0, 1<<30))
	kernelReadAhead := typedFlag(fs, "kernel-read-ahead", "4MiB", "the kernel's read-ahead window for the mount, in `bytes`, which sets how much one FUSE read asks of the daemon (at most 1MiB per read); 0 leaves the kernel's 128KiB (0, or 4KiB to 256MiB)",
		sizeIn("--kernel-read-ahead", 0, 256<<20))
	s3Timeout := typedFlag(fs, "s3-timeout", s3store.DefaultTimeout.String(), "how long (a `duration`) an S3 request may wait for response headers, or a response body go without a byte, before it is cut off and retried (1s to 10m)",
		durationIn("--s3-timeout", time.Second, 10*time.Minute, "1s to 10m"))
	s3Attempts := intFlag(fs, "s3-max-attempts", s3store.DefaultMaxAttempts, 1, 100, "`attempts` per S3 request, the first included: 5xx, SlowDown, resets and timeouts are retried with exponential backoff and jitter; so is a body broken off midway, from its first missing block (1 to 100)")
	sharedCache := fs.String("shared-cache", "", "a `folder` every node mounts (NFS, EFS, Lustre, a Modal Volume), or s3://bucket[/prefix] of a bucket near the nodes (S3 Express One Zone, MinIO, Ceph), shared as a cache tier: objects another node fetched are copied from it, proven by their ETag, instead of from S3; objects fetched from S3 are published to it")
	sharedEndpoint := typedFlag(fs, "shared-endpoint-url", "", "with --shared-cache s3://...: the tier bucket's endpoint `URL` (default: the AWS SDK's chain, i.e. AWS or $AWS_ENDPOINT_URL; not --endpoint-url)", endpointIn("--shared-endpoint-url"))
	sharedRegion := fs.String("shared-region", "", "with --shared-cache s3://...: the tier bucket's region (default: from the AWS config chain; not --region)")
	sharedProfile := fs.String("shared-profile", "", "with --shared-cache s3://...: the AWS shared-config profile for the tier bucket (default: the chain's; not --profile)")
	sharedPathStyle := fs.Bool("shared-force-path-style", false, "with --shared-cache s3://...: address the tier bucket as ENDPOINT/bucket (not --force-path-style)")
	claimTTL := typedFlag(fs, "shared-claim-ttl", tier.DefaultClaimTTL.String(), "with --shared-cache: how long (a `duration`) a node's claim on an object it fetches from S3 for the others outlives its last renewal; a node killed mid-fetch delays the others by about this much (1s to 1h; the same on every node)",
		durationIn("--shared-claim-ttl", time.Second, time.Hour, "1s to 1h"))
	metricsAddr := typedFlag(fs, "metrics-addr", "", "serve Prometheus metrics at http://`HOST:PORT`/metrics, e.g. 127.0.0.1:9100 (default: off)", parseMetricsAddr)
	args, opts, err := applyMountOptions(fs, args)
	if err != nil {
		return mountConfig{}, err
	}
	mountpointName := fs.String("mountpoint-name", "", "for a MOUNTPOINT /dev/fd/N handed over by the process that mounted: where that mount is seen, so that status, prefetch, verify, evict and drop find the daemon by it (default: /dev/fd/N)")
	pos, err := parseArgs(fs, args, mountHelp)
	if err != nil {
		return mountConfig{}, err
	}
	if len(pos) != 2 {
		return mountConfig{}, usagef("mount needs SOURCE and MOUNTPOINT, got %d arguments", len(pos))
	}
	if *cacheDir == "" {
		return mountConfig{}, usagef("mount needs --cache-dir DIR (as a mount option: -o cache_dir=DIR)")
	}
	cfg := mountConfig{
		Endpoint: *endpoint, Region: *region, Profile: *profile, ForcePathStyle: *pathStyle,
		TTL: *ttl, Foreground: *fg, LogLevel: *level, AllowOther: *allowOther,
		UID: uint32(*uid), GID: uint32(*gid), FileMode: *fileMode, DirMode: *dirMode,
		PrefetchObjects: int(*prefetchObjects), MaxFetches: int(*maxFetches),
		MaxCacheSize: *maxCache, Eviction: *eviction, MinFree: *minFreeFlag, Passthrough: *passthrough,
		PartSize: *partSize, ReadAhead: *readAhead, KernelReadAhead: *kernelReadAhead,
		S3Timeout: *s3Timeout, S3MaxAttempts: int(*s3Attempts), MetricsAddr: *metricsAddr, SharedClaimTTL: *claimTTL,
		SharedS3: sharedS3{Endpoint: *sharedEndpoint, Region: *sharedRegion, Profile: *sharedProfile, ForcePathStyle: *sharedPathStyle},
		NoExec:   opts.NoExec,
		setFlags: map[string]bool{},
	}
	fs.Visit(func(f *flag.Flag) { cfg.setFlags[f.Name] = true })
	if cfg.Source, err = parseSource(pos[0]); err != nil {
		return cfg, err
	}
	// Symlinks resolved: the mount table, and so every later command,
	// names the real folder.
	if cfg.Mountpoint, err = cleanPath(pos[1]); err != nil {
		return cfg, err
	}
	if err = applyFuseFD(&cfg, *mountpointName); err != nil {
		return cfg, err
	}
	if cfg.CacheDir, err = absPath(*cacheDir); err != nil {
		return cfg, err
	}
	if cfg.SharedCache, cfg.SharedBucket, err = parseSharedCache(*sharedCache); err != nil {
		return cfg, err
	}
	if t := cfg.SharedBucket; t.Bucket == cfg.Source.Bucket && cfg.SharedS3.Endpoint == cfg.Endpoint && strings.HasPrefix(t.Prefix, cfg.Source.Prefix) {
		return cfg, usagef("--shared-cache %s must not lie inside SOURCE %s: the mount would show the tier", t, cfg.Source)
	}
	if cfg.SharedBucket.Bucket == "" {
		for _, name := range []string{"shared-endpoint-url", "shared-region", "shared-profile", "shared-force-path-style"} {
			if cfg.setFlags[name] {
				return cfg, usagef("--%s is for a bucket tier: it needs --shared-cache s3://bucket[/prefix]", name)
			}
		}
	}
	if cfg.FuseFD > 0 {
		cfg.KernelReadAhead = 0 // the daemon cannot tell which mount is its own
	}
	if cfg.KernelReadAhead > 0 && cfg.KernelReadAhead < 4<<10 {
		// The kernel counts it in KiB: less would turn read-ahead off.
		return cfg, usagef("--kernel-read-ahead must be 0 or at least 4KiB, got %s", fs.Lookup("kernel-read-ahead").Value)
	}
	if *prefetch != "" {
		if cfg.Prefetch, err = mountRelative(cfg.Name, strings.Split(*prefetch, ",")); err != nil {
			return cfg, fmt.Errorf("--prefetch: %w", err)
		}
	}
	if cfg.CacheDir == cfg.Name || strings.HasPrefix(cfg.CacheDir, cfg.Name+"/") {
		return cfg, usagef("cache dir %s must not lie inside the mountpoint", cfg.CacheDir)
	}
	if d := cfg.SharedCache; d != "" && cfg.SharedBucket.Bucket == "" && (d == cfg.Name || strings.HasPrefix(d, cfg.Name+"/")) {
		return cfg, usagef("--shared-cache %s must not lie inside the mountpoint", d)
	}
	return cfg, nil
}

// parseSharedCache checks --shared-cache: "" (none), a folder (made
// absolute), or s3://bucket[/prefix] (then also returned parsed).
func parseSharedCache(s string) (string, source, error) {
	switch {
	case s == "":
		return "", source{}, nil
	case strings.HasPrefix(s, "s3://"):
		src, err := parseSource(s)
		if err != nil {
			return "", source{}, usagef("--shared-cache %s must be a folder or s3://bucket[/prefix]: %s", s, strings.TrimPrefix(err.Error(), "SOURCE must look like s3://bucket[/prefix]: "))
		}
		return src.String(), src, nil
	case strings.Contains(s, "://"):
		return "", source{}, usagef("--shared-cache %s: a folder or s3://bucket[/prefix], not another kind of URL", s)
	}
	dir, err := absPath(s)
	return dir, source{}, err
}

func cmdMount(args []string, stdout io.Writer) error {
	cfg, err := parseMountArgs(args)
	if err != nil {
		return err
	}
	if err := checkAllowOther(cfg.AllowOther); err != nil {
		return err
	}
	if cfg.FuseFD > 0 {
		if err := checkFuseFD(cfg.FuseFD); err != nil {
			return err
		}
	} else {
		// A mount left by a daemon that died is cleaned up, not refused:
		// a trainer's script that remounts after a crash just works. (In
		// the background daemon started below this finds nothing left
		// to do.)
		if err := reapDeadMount(cfg.Mountpoint, os.Stderr); err != nil {
			return err
		}
		if err := checkMountpoint(cfg.Mountpoint); err != nil {
			return err
		}
	}
	created, err := prepareCacheDir(cfg.CacheDir)
	if err != nil {
		return err
	}
	if cfg.Foreground {
		err = runDaemon(cfg, readyPipe())
	} else {
		err = startBackground(args, cfg)
	}
	if err != nil && created {
		// Leave nothing half-made behind a mount that never came up.
		os.RemoveAll(cfg.CacheDir)
	}
	if err != nil || cfg.Foreground {
		return err
	}
	fmt.Fprintf(stdout, "mounted %s at %s (cache %s)\n", cfg.Source, cfg.Name, cfg.CacheDir)
	return nil
}

// readyPipe returns the pipe inherited from a `mount` that started this
// daemon in the background, or nil in a plain --foreground run.
func readyPipe() *os.File {
	n, err := strconv.Atoi(os.Getenv(readyFDEnv))
	if err != nil || n < 3 {
		return nil
	}
	os.Unsetenv(readyFDEnv)
	return os.NewFile(uintptr(n), "ready")
}

// startBackground runs this program again as a detached daemon with
// --foreground, and waits until it reports the mount ready or fails.
func startBackground(args []string, cfg mountConfig) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	logPath := filepath.Join(cfg.CacheDir, logFileName)
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cache dir %s: open log: %w", cfg.CacheDir, err)
	}
	defer logFile.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("create pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe, append([]string{"mount", "--foreground"}, args...)...)
	var readyFD int
	cmd.ExtraFiles, readyFD = daemonFiles(fuseFile(cfg.FuseFD), w)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", readyFDEnv, readyFD))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start daemon: %w", err)
	}
	w.Close()
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "ok" {
		return cmd.Process.Release()
	}
	werr := cmd.Wait()
	if msg, ok := strings.CutPrefix(line, "error: "); ok {
		return errors.New(msg)
	}
	return fmt.Errorf("daemon exited before the mount was ready (%v); see %s", werr, logPath)
}

// logFileName is the daemon's log inside the cache dir.
const logFileName = "s3cachefs.log"

// openIndex opens the cache dir's index, naming a running daemon as the
// cause when it holds the lock.
func openIndex(dir string, log *slog.Logger) (*index.DB, error) {
	db, err := index.Open(filepath.Join(dir, indexFileName), index.Options{Logger: log, LockTimeout: 200 * time.Millisecond})
	if errors.Is(err, index.ErrLocked) {
		return nil, fmt.Errorf("cache dir %s is in use by another s3cachefs daemon", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("cache dir %s: open index: %w", dir, err)
	}
	return db, nil
}

// indexFileName is the bbolt file inside the cache dir.
const indexFileName = "index.db"
