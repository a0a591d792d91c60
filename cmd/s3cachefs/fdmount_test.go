package main

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestFuseFDPath(t *testing.T) {
	for p, want := range map[string]int{
		"/dev/fd/3": 3, "/dev/fd/17": 17, "/dev/fd//3": 3, "/dev/fd/1": 1,
		"/dev/fd/0": -1, "/dev/fd/-3": -1, "/dev/fd/03": -1, "/dev/fd/x": -1, "/dev/fd/": -1,
		"/dev/fd/3/x": -1, "/proc/self/fd/3": -1, "/mnt": -1, "dev/fd/3": -1,
	} {
		n, ok := fuseFDPath(p)
		if !ok {
			n = -1
		}
		if n != want {
			t.Errorf("fuseFDPath(%q) = %d, %v; want %d", p, n, ok, want)
		}
	}
}

func TestParseMountArgsFuseFD(t *testing.T) {
	base := []string{"s3://bucket/p", "--cache-dir", "/tmp/c"}
	cfg, err := parseMountArgs(append(base, "/dev/fd/3"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mountpoint != "/dev/fd/3" || cfg.FuseFD != 3 || cfg.Name != "/dev/fd/3" || cfg.KernelReadAhead != 0 {
		t.Errorf("/dev/fd/3: %+v", cfg)
	}
	cfg, err = parseMountArgs(append(base, "/dev/fd/7", "--mountpoint-name", "/data/x/", "--prefetch", "/data/x/train"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FuseFD != 7 || cfg.Name != "/data/x" || len(cfg.Prefetch) != 1 || cfg.Prefetch[0] != "train" {
		t.Errorf("/dev/fd/7 named /data/x: %+v", cfg)
	}
	cfg, err = parseMountArgs(append(base, "/tmp/m"))
	if err != nil || cfg.FuseFD != 0 || cfg.Name != "/tmp/m" {
		t.Errorf("/tmp/m: %+v, %v", cfg, err)
	}
	for _, bad := range [][]string{
		{"/tmp/m", "--mountpoint-name", "/data"},
		{"/dev/fd/1"},
		{"/dev/fd/3", "--allow-other"},
		{"/dev/fd/3", "--mountpoint-name", "/dev/fd/4"},
	} {
		var ue usageError
		if _, err := parseMountArgs(append(base, bad...)); !errors.As(err, &ue) {
			t.Errorf("parseMountArgs(%v) = %v, want a usage error", bad, err)
		}
	}
	if _, err := parseMountArgs(append(base, "/dev/fd/3", "--mountpoint-name", "/tmp")); err == nil ||
		!strings.Contains(err.Error(), "inside the mountpoint") {
		t.Errorf("a cache dir inside --mountpoint-name: %v", err)
	}
}

func TestCheckFuseFD(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := checkFuseFD(int(f.Fd())); err == nil || !strings.Contains(err.Error(), "is not /dev/fuse") {
		t.Errorf("checkFuseFD of a regular file: %v", err)
	}
	if err := checkFuseFD(1 << 20); err == nil || !strings.Contains(err.Error(), "is not open") {
		t.Errorf("checkFuseFD of a closed descriptor: %v", err)
	}
	fuse, err := os.Open("/dev/fuse")
	if err != nil {
		t.Skipf("no /dev/fuse to open: %v", err)
	}
	defer fuse.Close()
	if err := checkFuseFD(int(fuse.Fd())); err == nil || !strings.Contains(err.Error(), "no mount uses") {
		t.Errorf("checkFuseFD of a /dev/fuse not mounted: %v", err)
	}
}

func TestDaemonFiles(t *testing.T) {
	ready, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer ready.Close()
	if files, at := daemonFiles(nil, ready); at != 3 || len(files) != 1 || files[0] != ready {
		t.Errorf("daemonFiles without a handed-over descriptor: ready at %d of %v", at, files)
	}
	for range 3 { // descriptors of different numbers, all >= 3
		fuse, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer fuse.Close()
		n := int(fuse.Fd())
		files, at := daemonFiles(fuse, ready)
		if len(files) < n-2 || files[n-3] != fuse || at < 3 || at-3 >= len(files) || files[at-3] != ready || at == n {
			t.Errorf("daemonFiles(fd %d): ready at %d of %d files; want fd %d passed as itself, ready elsewhere", n, at, len(files), n)
		}
	}
}
