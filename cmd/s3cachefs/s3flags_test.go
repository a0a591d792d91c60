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
