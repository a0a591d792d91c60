package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"s3cachefs/blockcache"
)

// source is a parsed s3://bucket[/prefix].
type source struct {
	Bucket string
	Prefix string // "" or ending in "/"
}

// String is the source as users write it: s3://bucket or s3://bucket/prefix.
func (s source) String() string {
	return strings.TrimSuffix("s3://"+s.Bucket+"/"+s.Prefix, "/")
}

// parseSource parses SOURCE. The prefix is normalised: no leading slash,
// one trailing slash, no empty, "." or ".." segments. Its errors are
// usageErrors.
func parseSource(raw string) (source, error) {
	bad := func(why string) (source, error) {
		return source{}, usagef("SOURCE must look like s3://bucket[/prefix]: %q %s", raw, why)
	}
	rest, ok := strings.CutPrefix(raw, "s3://")
	if !ok {
		return bad("does not start with s3://")
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if err := checkBucketName(bucket); err != nil {
		return bad(err.Error())
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		for _, seg := range strings.Split(prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return bad("has an empty, . or .. segment in its prefix")
			}
		}
		prefix += "/"
	}
	return source{Bucket: bucket, Prefix: prefix}, nil
}

// checkBucketName applies S3's bucket naming rules (3-63 characters of
// lower-case letters, digits, '.' and '-', starting and ending with a letter
// or digit).
func checkBucketName(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return errors.New("has a bucket name that is not 3 to 63 characters long")
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return errors.New("has a bucket name with characters other than a-z, 0-9, '.' and '-'")
		}
	}
	if !isAlnum(b[0]) || !isAlnum(b[len(b)-1]) {
		return errors.New("has a bucket name that does not start and end with a letter or digit")
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// parseTTL parses --metadata-ttl: a duration, or "indefinite" (returned as -1).
func parseTTL(s string) (time.Duration, error) {
	if s == "indefinite" {
		return -1, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("--metadata-ttl must be a duration like 5m or \"indefinite\", got %q", s)
	}
	return d, nil
}

// parseMode parses an octal permission like 0444.
func parseMode(flag, s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 {
		return 0, fmt.Errorf("%s must be octal permission bits like 0444, got %q", flag, s)
	}
	return uint32(v), nil
}

// parseLevel parses --log-level.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level must be debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// parseEviction parses --eviction.
func parseEviction(s string) (blockcache.Eviction, error) {
	switch s {
	case "lru":
		return blockcache.EvictLRU, nil
	case "none":
		return blockcache.EvictNone, nil
	}
	return 0, fmt.Errorf("--eviction must be lru or none, got %q", s)
}

// evictionName is the flag's word for e.
func evictionName(e blockcache.Eviction) string {
	if e == blockcache.EvictNone {
		return "none"
	}
	return "lru"
}

// parseEndpoint checks --endpoint-url.
func parseEndpoint(s string) (string, error) { return endpointIn("--endpoint-url")(s) }

// endpointIn parses an endpoint URL flag called name.
func endpointIn(name string) func(string) (string, error) {
	return func(s string) (string, error) {
		if s == "" {
			return "", nil
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("%s must be an http:// or https:// URL, got %q", name, s)
		}
		return s, nil
	}
}

// checkMountpoint refuses a mountpoint that is missing, not a folder,
// already mounted or not empty.
func checkMountpoint(path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("mountpoint %s does not exist", path)
	case err != nil:
		return fmt.Errorf("mountpoint %s: %w (already mounted by a daemon that died? run: s3cachefs drop %s)", path, err, path)
	case !st.IsDir():
		return fmt.Errorf("mountpoint %s is not a directory", path)
	}
	if m, ok, err := mountAt(path); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("mountpoint %s is already mounted (%s from %s)", path, m.FSType, m.Source)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", path, err)
	}
	defer f.Close()
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("mountpoint %s is not empty", path)
	}
	return nil
}

// prepareCacheDir creates the cache dir (0700) if needed and checks it can
// be written. It reports whether it created the folder, so that a failed
// mount can remove it again.
func prepareCacheDir(dir string) (created bool, err error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("cache dir %s cannot be created: %w", dir, cause(err))
	}
	st, err := os.Stat(dir)
	if err != nil {
		return created, fmt.Errorf("cache dir %s: %w", dir, cause(err))
	}
	if !st.IsDir() {
		return created, fmt.Errorf("cache dir %s is not a directory", dir)
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return created, fmt.Errorf("cache dir %s is not writable: %w", dir, cause(err))
	}
	probe.Close()
	return created, os.Remove(probe.Name())
}

// cause strips the path from a *PathError: our messages name the path
// already.
func cause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// absPath makes p absolute and clean without touching the filesystem.
func absPath(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	return a, nil
}
