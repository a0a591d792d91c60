package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"s3cachefs/blockcache"
)

func TestParseSource(t *testing.T) {
	good := map[string]source{
		"s3://bucket":                 {Bucket: "bucket"},
		"s3://bucket/":                {Bucket: "bucket"},
		"s3://my.bucket-1/cache/tusz": {Bucket: "my.bucket-1", Prefix: "cache/tusz/"},
		"s3://bkt/cache/tusz/":        {Bucket: "bkt", Prefix: "cache/tusz/"},
	}
	for in, want := range good {
		got, err := parseSource(in)
		if err != nil || got != want {
			t.Errorf("parseSource(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "bucket", "s3:/bucket", "http://bucket/x", "s3://", "s3://ab",
		"s3://Bucket", "s3://bu_cket", "s3://-bucket", "s3://bucket/a//b", "s3://bucket/a/../b", "s3://bucket/./a"} {
		if _, err := parseSource(in); err == nil || !strings.Contains(err.Error(), "s3://") {
			t.Errorf("parseSource(%q) = %v; want an error naming s3://", in, err)
		}
	}
}

func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"s3://bucket/a/b", "s3://x", "s3://bucket//", "s3://b.b/../x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		s, err := parseSource(raw)
		if err != nil {
			return
		}
		if checkBucketName(s.Bucket) != nil {
			t.Fatalf("accepted bad bucket %q", s.Bucket)
		}
		if s.Prefix != "" && (!strings.HasSuffix(s.Prefix, "/") || strings.HasPrefix(s.Prefix, "/")) {
			t.Fatalf("prefix %q not normalised", s.Prefix)
		}
		for _, seg := range strings.Split(strings.TrimSuffix(s.Prefix, "/"), "/") {
			if s.Prefix != "" && (seg == "" || seg == "." || seg == "..") {
				t.Fatalf("prefix %q has segment %q", s.Prefix, seg)
			}
		}
		again, err := parseSource(s.String())
		if err != nil || again != s {
			t.Fatalf("round trip of %q: %+v, %v", s.String(), again, err)
		}
	})
}

func TestParseTTL(t *testing.T) {
	if d, err := parseTTL("indefinite"); err != nil || d >= 0 {
		t.Errorf("indefinite = %v, %v", d, err)
	}
	if d, err := parseTTL("90s"); err != nil || d != 90*time.Second {
		t.Errorf("90s = %v, %v", d, err)
	}
	for _, bad := range []string{"", "5", "-1m", "forever"} {
		if _, err := parseTTL(bad); err == nil {
			t.Errorf("parseTTL(%q) accepted", bad)
		}
	}
}

func TestParseMode(t *testing.T) {
	if m, err := parseMode("--file-mode", "0440"); err != nil || m != 0o440 {
		t.Errorf("0440 = %o, %v", m, err)
	}
	for _, bad := range []string{"", "999", "01777", "rw"} {
		if _, err := parseMode("--file-mode", bad); err == nil {
			t.Errorf("parseMode(%q) accepted", bad)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParseMountArgsInterleaved(t *testing.T) {
	cfg, err := parseMountArgs([]string{"s3://bucket/p", "--cache-dir", "/tmp/c", "/tmp/m", "--metadata-ttl", "indefinite"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mountpoint != "/tmp/m" || cfg.CacheDir != "/tmp/c" || cfg.TTL >= 0 || cfg.Source.Prefix != "p/" {
		t.Fatalf("cfg = %+v", cfg)
	}
	if _, err := parseMountArgs([]string{"s3://bucket", "/tmp/m"}); err == nil {
		t.Fatal("no --cache-dir accepted")
	}
	if _, err := parseMountArgs([]string{"s3://bucket", "/tmp/m", "--cache-dir", "/tmp/m/c"}); err == nil {
		t.Fatal("cache dir inside the mountpoint accepted")
	}
}

// --shared-cache s3://... takes the tier's own connection flags, as flags
// or as mount options, and leaves the source's alone.
func TestParseMountArgsBucketTier(t *testing.T) {
	for _, args := range [][]string{
		{"--shared-cache", "s3://near-bucket/tier/", "--shared-endpoint-url", "http://127.0.0.1:9001", "--shared-region", "eu-west-1",
			"--shared-profile", "tier", "--shared-force-path-style"},
		{"-o", "shared_cache=s3://near-bucket/tier,shared_endpoint_url=http://127.0.0.1:9001,shared_region=eu-west-1,shared_profile=tier,shared_force_path_style"},
	} {
		cfg, err := parseMountArgs(append([]string{"s3://bucket/p", "/tmp/m", "--cache-dir", "/tmp/c", "--endpoint-url", "http://127.0.0.1:9000"}, args...))
		if err != nil {
			t.Fatal(err)
		}
		want := sharedS3{Endpoint: "http://127.0.0.1:9001", Region: "eu-west-1", Profile: "tier", ForcePathStyle: true}
		if cfg.SharedCache != "s3://near-bucket/tier" || cfg.SharedBucket != (source{Bucket: "near-bucket", Prefix: "tier/"}) || cfg.SharedS3 != want {
			t.Errorf("%v: shared cache %q, bucket %+v, connection %+v", args, cfg.SharedCache, cfg.SharedBucket, cfg.SharedS3)
		}
		if cfg.Endpoint != "http://127.0.0.1:9000" || cfg.ForcePathStyle || cfg.Region != "" || cfg.Profile != "" {
			t.Errorf("%v: the source's connection changed: %+v", args, cfg)
		}
	}
	// The source's bucket is fine, beside the source's prefix.
	for _, tier := range []string{"s3://bucket/q", "s3://bucket"} {
		if _, err := parseMountArgs([]string{"s3://bucket/p", "/tmp/m", "--cache-dir", "/tmp/c", "--shared-cache", tier}); err != nil {
			t.Errorf("--shared-cache %s beside the source: %v", tier, err)
		}
	}
}

func TestParseEviction(t *testing.T) {
	for _, c := range []struct {
		args []string
		want blockcache.Eviction
	}{
		{nil, blockcache.EvictLRU},
		{[]string{"--eviction", "lru"}, blockcache.EvictLRU},
		{[]string{"--eviction", "none"}, blockcache.EvictNone},
		{[]string{"-o", "eviction=none"}, blockcache.EvictNone},
	} {
		cfg, err := parseMountArgs(append([]string{"s3://bucket/p", "/tmp/m", "--cache-dir", "/tmp/c"}, c.args...))
		if err != nil || cfg.Eviction != c.want {
			t.Errorf("%q: eviction %v, %v; want %v", c.args, cfg.Eviction, err, c.want)
		}
		if got := evictionName(cfg.Eviction); (got == "none") != (c.want == blockcache.EvictNone) {
			t.Errorf("%q: status says %q", c.args, got)
		}
	}
}

func TestProcessAlive(t *testing.T) {
	if !processAlive(os.Getpid()) {
		t.Fatal("this process is not alive")
	}
	if processAlive(0) || processAlive(-1) || processAlive(1<<30) {
		t.Fatal("a process that cannot exist is alive")
	}
}
