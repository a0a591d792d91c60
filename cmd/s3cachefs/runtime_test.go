package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRuntimeDirFor(t *testing.T) {
	for _, c := range []struct {
		uid  int
		env  map[string]string
		want string
	}{
		{0, nil, "/run/s3cachefs"},
		{0, map[string]string{"XDG_RUNTIME_DIR": "/run/user/0"}, "/run/s3cachefs"},
		{1000, map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, "/run/user/1000/s3cachefs"},
		{1000, nil, "/tmp/s3cachefs-1000"},
		{1000, map[string]string{"XDG_RUNTIME_DIR": "relative/dir"}, "/tmp/s3cachefs-1000"},
		{1000, map[string]string{runtimeDirEnv: "/x", "XDG_RUNTIME_DIR": "/run/user/1000"}, "/x"},
		{0, map[string]string{runtimeDirEnv: "/x"}, "/x"},
	} {
		if got := runtimeDirFor(c.uid, func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("runtimeDirFor(%d, %v) = %q, want %q", c.uid, c.env, got, c.want)
		}
	}
}

func TestCheckRuntimeDir(t *testing.T) {
	base := t.TempDir()
	private := filepath.Join(base, "private")
	open := filepath.Join(base, "open")
	link := filepath.Join(base, "link")
	file := filepath.Join(base, "file")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{private, filepath.Join(base, "missing")} {
		if err := checkRuntimeDir(ok); err != nil {
			t.Errorf("checkRuntimeDir(%s): %v", ok, err)
		}
	}
	for _, bad := range []string{open, link, file} {
		if err := checkRuntimeDir(bad); !errors.Is(err, errRuntimeDir) {
			t.Errorf("checkRuntimeDir(%s) = %v, want errRuntimeDir", bad, err)
		}
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(private, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := checkRuntimeDir(private); !errors.Is(err, errRuntimeDir) {
			t.Errorf("checkRuntimeDir of a folder of uid 65534 = %v, want errRuntimeDir", err)
		}
	}
}

func TestConfAllowsOther(t *testing.T) {
	for conf, want := range map[string]bool{
		"":                                      false,
		"#user_allow_other\n":                   false,
		"# user_allow_other\nmount_max = 9":     false,
		"user_allow_others\n":                   false,
		"user_allow_other":                      true,
		"mount_max = 9\n  user_allow_other  \n": true,
		"user_allow_other # let users share\n":  true,
	} {
		if got := confAllowsOther([]byte(conf)); got != want {
			t.Errorf("confAllowsOther(%q) = %v, want %v", conf, got, want)
		}
	}
}
