package test

import (
	"net"
	"path/filepath"
	"testing"
)

// TestBadInput checks that each bad mount gets one clear line on stderr
// and its exit status (2 for a malformed command line, 1 for what S3 or
// the machine refuses), and leaves nothing mounted and no daemon running.
// A good mount runs throughout, for the cases that collide with it, and
// must be unharmed at the end.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	data := []byte("some bytes")
	e.srv.Put(t, bucket, prefix+"/train/a.npz", data)
	good := e.mount(t)
	closedEndpoint := "http://" + closedAddr(t)

	cases := []struct {
		name string
		// args returns the mount arguments; it may set up the
		// mountpoint or cache dir in tmp.
		args func(t *testing.T, tmp string) []string
		env  []string
		code int      // the exact exit status; 0 means 1
		want []string // substrings of the message, any case
	}{
		{
			name: "SOURCE without s3://",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, bucket+"/"+prefix, emptyDir(t, tmp, "mnt"), filepath.Join(tmp, "cache"))
			},
			code: 2, want: []string{"s3://"},
		},
		{
			name: "SOURCE with another scheme",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, "https://"+bucket+"/"+prefix, emptyDir(t, tmp, "mnt"), filepath.Join(tmp, "cache"))
			},
			code: 2, want: []string{"s3://"},
		},
		{
			name: "SOURCE without a bucket",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, "s3:///"+prefix, emptyDir(t, tmp, "mnt"), filepath.Join(tmp, "cache"))
			},
			code: 2, want: []string{"s3://"},
		},
		{
			name: "missing bucket",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, "s3://no-such-bucket-e2e/"+prefix, emptyDir(t, tmp, "mnt"), filepath.Join(tmp, "cache"))
			},
			want: []string{"does not exist", "no-such-bucket-e2e"},
		},
		{
			name: "wrong secret key",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, source, emptyDir(t, tmp, "mnt"), filepath.Join(tmp, "cache"))
			},
			env:  []string{"AWS_SECRET_ACCESS_KEY=wrong" + e.srv.SecretKey},
			want: []string{"credentials"},
		},
		{
			name: "unknown access key",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, source, emptyDir(t, tmp, "mnt"), filepath.Join(tmp, "cache"))
			},
			env:  []string{"AWS_ACCESS_KEY_ID=AKIANOSUCHKEY0000000"},
			want: []string{"credentials"},
		},
		{
			name: "unreachable endpoint",
			args: func(t *testing.T, tmp string) []string {
				return []string{"mount", source, emptyDir(t, tmp, "mnt"), "--cache-dir", filepath.Join(tmp, "cache"),
					"--endpoint-url", closedEndpoint, "--force-path-style"}
			},
			want: []string{"cannot reach"},
		},
		{
			name: "mountpoint missing",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, source, filepath.Join(tmp, "no-such-dir"), filepath.Join(tmp, "cache"))
			},
			want: []string{"does not exist"},
		},
		{
			name: "mountpoint is a file",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, source, regularFile(t, tmp, "file"), filepath.Join(tmp, "cache"))
			},
			want: []string{"not a directory"},
		},
		{
			name: "mountpoint not empty",
			args: func(t *testing.T, tmp string) []string {
				mnt := emptyDir(t, tmp, "mnt")
				regularFile(t, mnt, "something")
				return mountArgs(e, source, mnt, filepath.Join(tmp, "cache"))
			},
			want: []string{"not empty"},
		},
		{
			name: "mountpoint already mounted",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, source, good.dir, filepath.Join(tmp, "cache"))
			},
			want: []string{"already mounted"},
		},
		{
			name: "cache dir is a file",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, source, emptyDir(t, tmp, "mnt"), regularFile(t, tmp, "cachefile"))
			},
			want: []string{"cache dir"},
		},
		{
			name: "cache dir under a file",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, source, emptyDir(t, tmp, "mnt"), filepath.Join(regularFile(t, tmp, "cachefile"), "cache"))
			},
			want: []string{"cache dir"},
		},
		{
			name: "cache dir in use by a running daemon",
			args: func(t *testing.T, tmp string) []string {
				return mountArgs(e, source, emptyDir(t, tmp, "mnt"), good.cache)
			},
			want: []string{"in use"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tmp := t.TempDir()
			args := c.args(t, tmp)
			code := c.code
			if code == 0 {
				code = 1 // found by looking at S3 or the machine
			}
			e.runRefused(t, c.env, args, tmp, good.dir, code, c.want...)
		})
	}

	// The good mount outlived every collision.
	if !alive(good.pid) {
		t.Fatalf("the good mount's daemon is gone")
	}
	readAll(t, good.dir, map[string][]byte{"train/a.npz": data})
	if s := e.status(t, good); s.PID != good.pid {
		t.Errorf("the good mount answers status with pid %d, want %d", s.PID, good.pid)
	}
}

// mountArgs builds a mount command line through e's proxy.
func mountArgs(e *env, src, mnt, cache string) []string {
	return []string{"mount", src, mnt, "--cache-dir", cache, "--endpoint-url", e.proxy.Endpoint, "--force-path-style"}
}

// closedAddr returns a 127.0.0.1 address on which nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
