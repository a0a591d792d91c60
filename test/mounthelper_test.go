package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/fs/mounttab"
)

// helperLink is where TestMountHelper puts the binary under test for
// mount.fuse3 to find. mount(8) removes PATH from the environment of its
// helpers and mount.fuse3 runs `s3cachefs SOURCE DIR -o OPTIONS` through
// /bin/sh, which then searches its built-in path (dash:
// /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin): a
// directory on the test's PATH would never be searched. /usr/local/sbin
// comes first, so a link there wins over a `make install` in
// /usr/local/bin and leaves that alone.
const helperLink = "/usr/local/sbin/s3cachefs"

// TestMountHelper runs the real util-linux mount(8) and fuse3 mount.fuse3
// against the binary under test: `mount -t fuse.s3cachefs`, an fstab line
// (`mount -T FILE DIR`), and bad options. Credentials reach the daemon
// only as a profile= option naming a profile of a shared credentials file,
// as an fstab mount would get them.
func TestMountHelper(t *testing.T) {
	installHelper(t)
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(10, 4))
	files := map[string][]byte{
		"train/a.npz": randomBytes(rng, 3<<20+17),
		"train/b.npz": randomBytes(rng, 100<<10),
		"dev/c.npz":   randomBytes(rng, 1<<20),
	}
	for name, data := range files {
		e.srv.Put(t, bucket, prefix+"/"+name, data)
	}
	env := profileEnv(t, e, "fstab-test")

	t.Run("mount -t", func(t *testing.T) {
		dir, cache := newMountpoint(t), filepath.Join(t.TempDir(), "cache")
		r := runMountCmd(t, env, "mount", "-t", mounttab.FSType, source, dir, "-o",
			"cache_dir="+cache+",endpoint_url="+e.proxy.Endpoint+",force_path_style,profile=fstab-test,"+
				"metadata_ttl=1h,max_cache_size=1GiB,noexec,noatime,nodev,nofail")
		m := helperMounted(t, e, r, dir, cache)
		if opts := mountOptions(t, dir); !slices.Contains(opts, "ro") || !slices.Contains(opts, "noexec") {
			t.Errorf("mount options %v; want ro and noexec", opts)
		}
		// What the README says of the helper's environment: mount(8)
		// dropped PATH and HOME, mount.fuse3 set HOME=/root, the rest
		// came through.
		environ := procEnviron(t, m.pid)
		if path, ok := environ["PATH"]; ok || environ["HOME"] != "/root" || environ["AWS_SHARED_CREDENTIALS_FILE"] == "" {
			t.Errorf("daemon environment: PATH %q (set: %v), HOME %q, AWS_SHARED_CREDENTIALS_FILE %q; want no PATH, HOME=/root and the file",
				path, ok, environ["HOME"], environ["AWS_SHARED_CREDENTIALS_FILE"])
		}
		readAll(t, dir, files)
		e.waitNoOpenFiles(t, m)
		helperUnmount(t, env, m)
	})

	t.Run("fstab", func(t *testing.T) {
		dir, cache := newMountpoint(t), filepath.Join(t.TempDir(), "cache")
		// The shape of the README's line: SOURCE is the device field;
		// a comma inside a value needs double quotes.
		fstab := filepath.Join(t.TempDir(), "fstab")
		line := fmt.Sprintf("%s %s %s _netdev,nofail,x-systemd.requires=network-online.target,"+
			"cache_dir=%s,max_cache_size=400GiB,endpoint_url=%s,force_path_style,profile=fstab-test,"+
			"prefetch=\"train,dev\" 0 0\n", source, dir, mounttab.FSType, cache, e.proxy.Endpoint)
		if err := os.WriteFile(fstab, []byte("# s3cachefs e2e\n"+line), 0o644); err != nil {
			t.Fatal(err)
		}
		r := runMountCmd(t, env, "mount", "-T", fstab, dir)
		m := helperMounted(t, e, r, dir, cache)
		if opts := mountOptions(t, dir); !slices.Contains(opts, "ro") || slices.Contains(opts, "noexec") {
			t.Errorf("mount options %v; want ro and not noexec", opts)
		}
		waitPrefetched(t, e, m, []string{"dev", "train"})
		readAll(t, dir, files)
		e.waitNoOpenFiles(t, m)
		helperUnmount(t, env, m)
	})

	t.Run("bad input", func(t *testing.T) {
		good := "cache_dir=%s,endpoint_url=" + e.proxy.Endpoint + ",force_path_style,profile=fstab-test"
		// mount(8) exits with the status of the helper it ran.
		for _, tc := range []struct {
			name, source, opts string
			code               int
			want               string
		}{
			{"unknown option", source, good + ",bogus_option=1", 2, `s3cachefs: unknown mount option "bogus_option=1"`},
			{"option without its value", source, good + ",metadata_ttl", 2, "s3cachefs: mount option metadata_ttl needs a value"},
			{"bad value", source, good + ",max_cache_size=lots", 2, "s3cachefs: mount option max_cache_size: invalid value \"lots\": --max-cache-size"},
			{"missing bucket", "s3://no-such-bucket-e2e/x", good, 1, "no-such-bucket-e2e"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir, cache := newMountpoint(t), filepath.Join(t.TempDir(), "cache")
				r := runMountCmd(t, env, "mount", "-t", mounttab.FSType, tc.source, dir, "-o", fmt.Sprintf(tc.opts, cache))
				t.Logf("mount: %s", r)
				wantRefused(t, r, tc.code, tc.want)
				if isMounted(t, dir) {
					t.Errorf("%s is mounted after a failed mount", dir)
					_ = exec.Command("umount", dir).Run()
				}
				if _, err := os.Stat(cache); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("cache dir left behind by a failed mount: %v", err)
				}
				if pids := daemonPIDs(); len(pids) != 0 {
					t.Errorf("daemons running after a failed mount: %v", pids)
				}
			})
		}
	})
}

// TestMakeInstall: `make install` honours DESTDIR and PREFIX, and its
// default, /usr/local/bin, is on the path that mount.fuse3's /bin/sh
// searches: mount(8) leaves it no PATH, so the shell's own default.
func TestMakeInstall(t *testing.T) {
	for _, tc := range []struct{ prefix, want string }{{"", "usr/local/bin/s3cachefs"}, {"/opt/s3", "opt/s3/bin/s3cachefs"}} {
		dest := t.TempDir()
		args := []string{"--no-print-directory", "install", "DESTDIR=" + dest}
		if tc.prefix != "" {
			args = append(args, "PREFIX="+tc.prefix)
		}
		cmd := exec.Command("make", args...)
		cmd.Dir = ".." // the module root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		bin := filepath.Join(dest, tc.want)
		if st, err := os.Stat(bin); err != nil || st.Mode().Perm() != 0o755 {
			t.Fatalf("make %s: %s: %v, %v", strings.Join(args, " "), tc.want, st, err)
		}
		if out, err := exec.Command(bin, "help").Output(); err != nil || !strings.Contains(string(out), "SOURCE MOUNTPOINT -o") {
			t.Errorf("%s help: %v\n%s", bin, err, out)
		}
	}
	out, err := exec.Command("env", "-i", "/bin/sh", "-c", `echo "$PATH"`).Output()
	if err != nil || !slices.Contains(strings.Split(strings.TrimSpace(string(out)), ":"), "/usr/local/bin") {
		t.Errorf("the default path of /bin/sh is %q (%v); want /usr/local/bin in it", out, err)
	}
}

// installHelper links helperLink to the binary under test until t ends. A
// lock keeps two test runs on this machine from taking the name at once.
func installHelper(t *testing.T) {
	t.Helper()
	lock, err := os.OpenFile("/run/lock/s3cachefs-e2e-mount-helper.lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // and with it the lock
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatalf("lock: %v", err)
	}
	if target, err := os.Readlink(helperLink); err == nil {
		// Ours, left by a run that was killed: its binary sits in an
		// s3cachefs-e2e-* temp dir (or is gone with it).
		if !strings.HasPrefix(filepath.Base(filepath.Dir(target)), "s3cachefs-e2e-") {
			t.Fatalf("%s links to %s: this test needs the name for the binary under test; move it away", helperLink, target)
		}
		if err := os.Remove(helperLink); err != nil {
			t.Fatal(err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists and is not a link (%v): this test needs the name for the binary under test; move it away", helperLink, err)
	}
	if err := os.Symlink(suite.bin, helperLink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(helperLink); err != nil {
			t.Errorf("remove %s: %v", helperLink, err)
		}
	})
}

// profileEnv is the test environment with no credentials but a profile of
// a shared credentials file, and the region in the profile's config.
func profileEnv(t *testing.T, e *env, profile string) []string {
	t.Helper()
	dir := t.TempDir()
	creds, config := filepath.Join(dir, "credentials"), filepath.Join(dir, "config")
	write := func(path, text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(creds, fmt.Sprintf("[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", profile, e.srv.AccessKey, e.srv.SecretKey))
	write(config, fmt.Sprintf("[profile %s]\nregion = %s\n", profile, e.srv.Region))
	var out []string
	for _, kv := range e.childEnv() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION",
			"AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE":
			continue
		}
		out = append(out, kv)
	}
	return append(out, "AWS_SHARED_CREDENTIALS_FILE="+creds, "AWS_CONFIG_FILE="+config)
}

// runMountCmd runs mount(8) or umount(8) with env.
func runMountCmd(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Dir = env, "/"
	return runCmd(t, ctx, cmd, name+" "+strings.Join(args, " "))
}

// helperMounted checks that mount(8) succeeded quietly and that dir now
// serves SOURCE as fuse.s3cachefs, and arranges for it to go when t ends.
func helperMounted(t *testing.T, e *env, r result, dir, cache string) *mounted {
	t.Helper()
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("mount: %s\nwant exit 0 and no output\ndaemon log:\n%s", r, logTail(cache))
	}
	m := &mounted{dir: dir, cache: cache}
	t.Cleanup(func() {
		// A mount made by mount(8) may have a line in its utab: umount(8)
		// removes that too. e.cleanup then waits for the daemon.
		if isMounted(t, dir) {
			_ = exec.Command("umount", dir).Run()
		}
		e.cleanup(t, m)
	})
	if mt := mountOf(t, dir); mt.Source != source || mt.FSType != mounttab.FSType {
		t.Fatalf("the mount table has %q %q at %s; want %s %s", mt.Source, mt.FSType, dir, source, mounttab.FSType)
	}
	st := e.status(t, m)
	if st.Source != source || st.PID <= 0 {
		t.Fatalf("status: source %q, pid %d", st.Source, st.PID)
	}
	m.pid = st.PID
	return m
}

// helperUnmount unmounts m with umount(8) and checks that its daemon exits.
func helperUnmount(t *testing.T, env []string, m *mounted) {
	t.Helper()
	if r := runMountCmd(t, env, "umount", m.dir); r.code != 0 {
		t.Fatalf("umount %s: %s", m.dir, r)
	}
	if isMounted(t, m.dir) {
		t.Fatalf("%s still mounted after umount", m.dir)
	}
	if err := waitExit(m.pid, exitTimeout); err != nil {
		t.Fatalf("after umount: %v", err)
	}
}

// waitPrefetched waits until m's daemon has one prefetch job, done, over
// exactly the folders paths.
func waitPrefetched(t *testing.T, e *env, m *mounted, paths []string) {
	t.Helper()
	waitFor(t, 30*time.Second, "the prefetch job of the mount options", func() bool {
		s := e.status(t, m)
		if len(s.Prefetch) != 1 {
			return false
		}
		var got []string
		for _, f := range s.Prefetch[0].Folders {
			got = append(got, f.Path)
		}
		slices.Sort(got)
		if !slices.Equal(got, paths) {
			t.Fatalf("prefetch job over %q; want %q", got, paths)
		}
		return s.Prefetch[0].State == "done"
	})
}

// procEnviron returns the environment of process pid.
func procEnviron(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if name, value, ok := strings.Cut(kv, "="); ok {
			env[name] = value
		}
	}
	return env
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}
