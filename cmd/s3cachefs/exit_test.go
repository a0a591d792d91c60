package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExitStatus: every command-line mistake exits 2 and every failure
// found by looking at the machine exits 1, each with exactly one
// "s3cachefs: " line on stderr naming the problem and nothing on stdout.
// None of these reach a daemon or S3.
func TestExitStatus(t *testing.T) {
	t.Setenv(runtimeDirEnv, t.TempDir())
	tmp := t.TempDir()
	mnt := filepath.Join(tmp, "mnt")
	full := filepath.Join(tmp, "full")
	file := filepath.Join(tmp, "file")
	for _, dir := range []string{mnt, full} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{file, filepath.Join(full, "x")} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cache := filepath.Join(tmp, "cache")
	const src = "s3://bucket/p"
	mount := func(extra ...string) []string {
		return append([]string{"mount", src, mnt, "--cache-dir", cache}, extra...)
	}
	const job = "20250101T000000.000-1"
	cases := []struct {
		args []string
		code int
		want string // a substring of the message, any case
	}{
		{nil, 2, "missing command"},
		{[]string{""}, 2, "missing command"},
		{[]string{"nosuchcommand"}, 2, "unknown command"},
		{[]string{"mount"}, 2, "SOURCE and MOUNTPOINT"},
		{[]string{"mount", src, mnt}, 2, "--cache-dir"},
		{[]string{"mount", src, mnt, "--cache-dir"}, 2, "cache-dir"},
		{mount("--no-such-flag"), 2, "no-such-flag"},
		{[]string{"mount", "bucket/p", mnt, "--cache-dir", cache}, 2, "s3://"},
		{[]string{"mount", "https://bucket/p", mnt, "--cache-dir", cache}, 2, "s3://"},
		{[]string{"mount", "s3:///p", mnt, "--cache-dir", cache}, 2, "bucket"},
		{[]string{"mount", "s3://Bad_Bucket/p", mnt, "--cache-dir", cache}, 2, "bucket"},
		{[]string{"mount", "s3://bucket/a/../b", mnt, "--cache-dir", cache}, 2, ".."},
		{mount("--max-cache-size", "lots"), 2, "--max-cache-size must be a size"},
		{mount("--max-cache-size", "-1G"), 2, "--max-cache-size"},
		{mount("--min-free", "100%"), 2, "--min-free"},
		{mount("--min-free", "plenty"), 2, "--min-free"},
		{mount("--metadata-ttl", "forever"), 2, "--metadata-ttl"},
		{mount("--metadata-ttl", "-1s"), 2, "--metadata-ttl"},
		{mount("--uid", "-1"), 2, "--uid must be 0 to"},
		{mount("--uid", "4294967296"), 2, "--uid"},
		{mount("--gid", "abc"), 2, "--gid"},
		{mount("--file-mode", "999"), 2, "--file-mode"},
		{mount("--dir-mode", "rwx"), 2, "--dir-mode"},
		{mount("--log-level", "loud"), 2, "--log-level"},
		{mount("--endpoint-url", "ftp://example.com"), 2, "--endpoint-url"},
		{mount("--endpoint-url", "http://"), 2, "--endpoint-url"},
		{mount("--metrics-addr", "nope"), 2, "--metrics-addr"},
		{mount("--metrics-addr", "127.0.0.1:99999"), 2, "--metrics-addr"},
		{mount("--prefetch-objects", "0"), 2, "--prefetch-objects must be 1 to 4096, got 0"},
		{mount("--max-fetches", "99999"), 2, "--max-fetches"},
		{mount("--s3-max-attempts", "0"), 2, "--s3-max-attempts"},
		{mount("--s3-timeout", "500ms"), 2, "--s3-timeout must be 1s to 10m, got 500ms"},
		{mount("--s3-timeout", "soon"), 2, "--s3-timeout"},
		{mount("--part-size", "512KiB"), 2, "--part-size"},
		{mount("--read-ahead", "2GiB"), 2, "--read-ahead"},
		{mount("--kernel-read-ahead", "1TiB"), 2, "--kernel-read-ahead"},
		{mount("--kernel-read-ahead", "1KiB"), 2, "at least 4KiB"},
		{mount("--foreground=maybe"), 2, "foreground"},
		{mount("--prefetch", "/etc"), 2, "not under the mount"},
		{mount("-o", "max_cache_size=lots"), 2, "--max-cache-size must be a size"},
		{mount("--eviction", "fifo"), 2, `--eviction must be lru or none, got "fifo"`},
		{mount("-o", "eviction=random"), 2, "--eviction must be lru or none"},
		{mount("-o", "bogus"), 2, "unknown mount option"},
		{mount("--shared-cache", "s3://Near_Bucket/cache"), 2, "--shared-cache s3://Near_Bucket/cache must be a folder or s3://bucket[/prefix]"},
		{mount("-o", "shared_cache=https://near/cache"), 2, "not another kind of URL"},
		{mount("--shared-cache", "s3://bucket/p/tier"), 2, "must not lie inside SOURCE s3://bucket/p"},
		{mount("--shared-endpoint-url", "http://127.0.0.1:9001"), 2, "--shared-endpoint-url is for a bucket tier: it needs --shared-cache s3://"},
		{mount("--shared-cache", tmp, "-o", "shared_region=eu-west-1"), 2, "--shared-region is for a bucket tier"},
		{mount("--shared-profile", "near"), 2, "--shared-profile is for a bucket tier"},
		{mount("--shared-force-path-style"), 2, "--shared-force-path-style is for a bucket tier"},
		{mount("--shared-cache", "s3://near-bucket/c", "--shared-endpoint-url", "ftp://x"), 2, "--shared-endpoint-url"},
		{mount("--shared-cache", filepath.Join(mnt, "tier")), 2, "--shared-cache " + filepath.Join(mnt, "tier") + " must not lie inside the mountpoint"},
		{[]string{"mount", src, mnt, "--cache-dir", filepath.Join(mnt, "cache")}, 2, "inside the mountpoint"},

		{[]string{"prefetch", "--mount", mnt}, 2, "PATH"},
		{[]string{"prefetch", "--mount", mnt, "--interval", "0", "train"}, 2, "--interval must be positive"},
		{[]string{"prefetch", "--mount", mnt, "--interval", "soon", "train"}, 2, "--interval"},
		{[]string{"prefetch", "--mount", mnt, "--cancel", job, "train"}, 2, "--cancel takes no PATHs"},
		{[]string{"prefetch", "--mount", mnt, "--shard", "3/3", "train"}, 2, `--shard "3/3": want I/N with 0 <= I < N`},
		{[]string{"prefetch", "--mount", mnt, "--shard", "1", "train"}, 2, "--shard"},
		{[]string{"prefetch", "--mount", mnt, "--shard", "-1/4", "train"}, 2, "--shard"},
		{[]string{"prefetch", "--mount", mnt, "--shard", "0/4", "--cancel", job}, 2, "cannot be combined"},
		{mount("--shared-claim-ttl", "10ms"), 2, "--shared-claim-ttl must be 1s to 1h, got 10ms"},
		{[]string{"prefetch", "--mount", mnt, "--cancel", "../../status"}, 2, "job id"},
		{[]string{"prefetch", "--mount", mnt, "--cancel", job, "--unpin"}, 2, "cannot be combined"},
		{[]string{"prefetch", "--mount", mnt, "/etc"}, 2, "not under the mount"},
		{[]string{"prefetch", "--mount"}, 2, "mount"},
		{[]string{"status", "--mount", mnt, "extra"}, 2, "no arguments"},
		{[]string{"status", "--json=2"}, 2, "json"},
		{[]string{"verify", "--mount", mnt, "/etc"}, 2, "not under the mount"},
		{[]string{"verify", "--deep=perhaps"}, 2, "deep"},
		{[]string{"evict", "--mount", mnt}, 2, "PATH"},
		{[]string{"evict", "--mount", mnt, "/etc"}, 2, "not under the mount"},
		{[]string{"drop"}, 2, "MOUNTPOINT"},
		{[]string{"drop", mnt, tmp}, 2, "MOUNTPOINT"},
		{[]string{"drop", "--purge=x", mnt}, 2, "purge"},
		{[]string{"shared"}, 2, "shared needs a subcommand"},
		{[]string{"shared", "trim", mnt}, 2, `unknown shared subcommand "trim"`},
		{[]string{"shared", "gc", "--max-size", "1G"}, 2, "exactly one DIR"},
		{[]string{"shared", "gc", mnt, tmp, "--max-size", "1G"}, 2, "exactly one DIR"},
		{[]string{"shared", "gc", mnt}, 2, "needs --max-size"},
		{[]string{"shared", "gc", mnt, "--max-size", "lots"}, 2, "--max-size must be a size"},
		{[]string{"shared", "gc", mnt, "--max-size", "1G", "--grace", "-1m"}, 2, "--grace must be a duration of 0 or more"},
		{[]string{"shared", "gc", mnt, "--max-size", "1G", "--grace", "soon"}, 2, "--grace"},
		{[]string{"shared", "gc", mnt, "--max-size", "1G", "--no-such-flag"}, 2, "no-such-flag"},
		{[]string{"shared", "gc", "s3://near/cache", "--max-size", "1G"}, 2, "for a bucket tier an S3 lifecycle rule does this"},

		{[]string{"mount", src, filepath.Join(tmp, "missing"), "--cache-dir", cache}, 1, "does not exist"},
		{[]string{"mount", src, file, "--cache-dir", cache}, 1, "not a directory"},
		{[]string{"mount", src, full, "--cache-dir", cache}, 1, "not empty"},
		{[]string{"status", "--mount", mnt}, 1, "no s3cachefs daemon"},
		{[]string{"prefetch", "--mount", mnt, "train"}, 1, "no s3cachefs daemon"},
		{[]string{"prefetch", "--mount", mnt, "--cancel", job}, 1, "no s3cachefs daemon"},
		{[]string{"verify", "--mount", mnt}, 1, "no s3cachefs daemon"},
		{[]string{"evict", "--mount", mnt, "train"}, 1, "no s3cachefs daemon"},
		{[]string{"drop", mnt}, 1, "not an s3cachefs mount"},
		{[]string{"shared", "gc", filepath.Join(tmp, "missing"), "--max-size", "1G"}, 1, "no such file"},
		{[]string{"shared", "gc", file, "--max-size", "1G"}, 1, "not a folder"},
		{[]string{"shared", "gc", mnt, "--max-size", "1G"}, 1, "holds no shared cache"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(c.args, &stdout, &stderr)
			msg, ok := strings.CutSuffix(stderr.String(), "\n")
			if code != c.code || !ok || !strings.HasPrefix(msg, "s3cachefs: ") || strings.Contains(msg, "\n") || stdout.Len() != 0 {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and one s3cachefs: line", code, stdout.String(), stderr.String(), c.code)
			}
			if !strings.Contains(strings.ToLower(msg), strings.ToLower(c.want)) {
				t.Errorf("message %q does not say %q", msg, c.want)
			}
			if _, err := os.Stat(cache); err == nil {
				t.Errorf("the cache dir %s was made", cache)
			}
		})
	}
}

// $RANK and $WORLD_SIZE name prefetch's shard when --shard is not given;
// values that name none are a bad command line.
func TestShardFromEnv(t *testing.T) {
	for _, c := range []struct {
		rank, world string
		want        shard
		bad         bool
	}{
		{"", "", shard{}, false},
		{"3", "", shard{}, false},
		{"3", "8", shard{index: 3, count: 8}, false},
		{"0", "1", shard{index: 0, count: 1}, false},
		{"8", "8", shard{}, true},
		{"x", "8", shard{}, true},
	} {
		got, err := shardFromEnv(c.rank, c.world)
		if got != c.want || (err != nil) != c.bad {
			t.Errorf("RANK=%q WORLD_SIZE=%q: %+v, %v; want %+v, bad %v", c.rank, c.world, got, err, c.want, c.bad)
		}
		var ue usageError
		if c.bad && !errors.As(err, &ue) {
			t.Errorf("RANK=%q WORLD_SIZE=%q: %v is not a usage error (exit 2)", c.rank, c.world, err)
		}
	}
}

// --cancel and --unpin take no shard: a $RANK and $WORLD_SIZE that name
// none do not make them a bad command line.
func TestCancelIgnoresRank(t *testing.T) {
	t.Setenv("RANK", "5")
	t.Setenv("WORLD_SIZE", "2")
	for _, args := range [][]string{
		{"prefetch", "--mount", t.TempDir(), "--cancel", "20250101T000000.000-1"},
		{"prefetch", "--mount", t.TempDir(), "--unpin", "train"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		if code == 2 || strings.Contains(stderr.String(), "RANK") {
			t.Errorf("%v: exit %d: %s", args, code, strings.TrimSpace(stderr.String()))
		}
	}
}
