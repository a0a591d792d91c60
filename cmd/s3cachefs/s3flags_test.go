package main

import (
	"testing"
	"time"

	"s3cachefs/blockcache/s3store"
)

func TestS3ClientFlags(t *testing.T) {
	base := []string{"s3://bucket/p", "/tmp/m", "--cache-dir", "/tmp/c"}
	cfg, err := parseMountArgs(base)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.S3Timeout != s3store.DefaultTimeout || cfg.S3MaxAttempts != s3store.DefaultMaxAttempts {
		t.Errorf("defaults: timeout %v, attempts %d; want the store's", cfg.S3Timeout, cfg.S3MaxAttempts)
	}
	cfg, err = parseMountArgs(append(base, "--s3-timeout", "2s", "--s3-max-attempts", "3"))
	if err != nil || cfg.S3Timeout != 2*time.Second || cfg.S3MaxAttempts != 3 {
		t.Errorf("--s3-timeout 2s --s3-max-attempts 3: %v, %d, %v", cfg.S3Timeout, cfg.S3MaxAttempts, err)
	}
	for _, bad := range [][]string{
		{"--s3-timeout", "500ms"}, {"--s3-timeout", "11m"}, {"--s3-timeout", "soon"},
		{"--s3-max-attempts", "0"}, {"--s3-max-attempts", "101"}, {"--s3-max-attempts", "x"},
	} {
		if _, err := parseMountArgs(append(base, bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestReadFlags: the size flags of the read path, their defaults, and the
// values refused.
func TestReadFlags(t *testing.T) {
	base := []string{"s3://bucket/p", "/tmp/m", "--cache-dir", "/tmp/c"}
	cfg, err := parseMountArgs(base)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PartSize != 4<<20 || cfg.ReadAhead != 64<<20 || cfg.KernelReadAhead != 4<<20 {
		t.Errorf("defaults: part %d, read-ahead %d, kernel read-ahead %d", cfg.PartSize, cfg.ReadAhead, cfg.KernelReadAhead)
	}
	cfg, err = parseMountArgs(append(base, "--kernel-read-ahead", "0", "--read-ahead", "0", "--part-size", "1MiB"))
	if err != nil || cfg.KernelReadAhead != 0 || cfg.ReadAhead != 0 || cfg.PartSize != 1<<20 {
		t.Errorf("zeros and 1MiB: %+v, %v", cfg, err)
	}
	for _, bad := range [][]string{
		{"--kernel-read-ahead", "-1"}, {"--kernel-read-ahead", "257MiB"}, {"--kernel-read-ahead", "lots"},
		{"--kernel-read-ahead", "1000"},
		{"--read-ahead", "2GiB"}, {"--part-size", "512KiB"}, {"--part-size", "65MiB"},
	} {
		if _, err := parseMountArgs(append(base, bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
