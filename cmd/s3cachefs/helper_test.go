package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSplitOptions(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", []string{""}},
		{"a", []string{"a"}},
		{"a,b=1", []string{"a", "b=1"}},
		{"a,,b,", []string{"a", "", "b", ""}},
		{"endpoint_url=http://h:1/p?x=y=z", []string{"endpoint_url=http://h:1/p?x=y=z"}},
		{`prefetch="train,dev",ro`, []string{"prefetch=train,dev", "ro"}},
		{`prefetch=train\,dev,ro`, []string{"prefetch=train,dev", "ro"}},
		{`a="x"y"z,w",b`, []string{"a=xyz,w", "b"}},
		{`a=\"q\",b=c\\,d`, []string{`a="q"`, `b=c\`, "d"}},
		{`a=c:\dir,b`, []string{`a=c:\dir`, "b"}},
		{`a=trailing\`, []string{`a=trailing\`}},
	}
	for _, tc := range cases {
		got, err := splitOptions(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("splitOptions(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{`a="x`, `a=x,b="`, `"`} {
		if _, err := splitOptions(in); !isUsage(err) || !strings.Contains(err.Error(), "not closed") {
			t.Errorf("splitOptions(%q) = %v; want a usage error about the open quote", in, err)
		}
	}
}

// FuzzSplitOptions: any options, each escaped as the README says, joined
// with commas, split back into the same options.
func FuzzSplitOptions(f *testing.F) {
	for _, s := range []string{"a\x00b=1", `p=x,y` + "\x00" + `q="z"`, `\` + "\x00" + ","} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		opts := strings.Split(raw, "\x00")
		var esc []string
		for _, o := range opts {
			r := strings.NewReplacer(`\`, `\\`, `,`, `\,`, `"`, `\"`)
			esc = append(esc, r.Replace(o))
		}
		got, err := splitOptions(strings.Join(esc, ","))
		if err != nil || !slices.Equal(got, opts) {
			t.Fatalf("split of %q = %q, %v; want %q", strings.Join(esc, ","), got, err, opts)
		}
	})
}

// testFlags is a FlagSet with one flag of each kind, like mount's: the
// mapping must work for any flag, not a list of known ones.
func testFlags() *flag.FlagSet {
	fs := flag.NewFlagSet("mount", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	fs.String("cache-dir", "", "")
	fs.String("endpoint-url", "", "")
	fs.String("profile", "", "")
	fs.Bool("force-path-style", false, "")
	fs.Bool("passthrough", true, "")
	fs.Int("uid", 0, "")
	fs.Duration("s3-timeout", time.Second, "")
	fs.Func("prefetch", "", func(string) error { return nil })
	return fs
}

// setFlags applies args to testFlags and returns what was set, by name,
// and the arguments left.
func setFlags(t *testing.T, args ...string) (map[string]string, mountOptions, []string, error) {
	t.Helper()
	fs := testFlags()
	rest, mo, err := applyMountOptions(fs, args)
	if err != nil {
		return nil, mo, rest, err
	}
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = f.Value.String() })
	return set, mo, rest, nil
}

func TestMountOptionValues(t *testing.T) {
	cases := []struct {
		opts string
		want map[string]string
	}{
		{"cache_dir=/ssd/c", map[string]string{"cache-dir": "/ssd/c"}},
		{"cache-dir=/ssd/c", map[string]string{"cache-dir": "/ssd/c"}},
		{"cache_dir=", map[string]string{"cache-dir": ""}},
		{"endpoint_url=http://h:1/p?x=y=z", map[string]string{"endpoint-url": "http://h:1/p?x=y=z"}},
		{"force_path_style", map[string]string{"force-path-style": "true"}},
		{"force_path_style=false,passthrough=false", map[string]string{"force-path-style": "false", "passthrough": "false"}},
		{"passthrough=0,passthrough", map[string]string{"passthrough": "true"}}, // the last wins
		{"uid=1000,s3_timeout=2m", map[string]string{"uid": "1000", "s3-timeout": "2m0s"}},
		{`prefetch="train,dev",profile=p=q`, map[string]string{"prefetch": "", "profile": "p=q"}},
		{"", map[string]string{}},
		{",,", map[string]string{}},
	}
	for _, tc := range cases {
		set, mo, rest, err := setFlags(t, "s3://b/p", "/mnt", "-o", tc.opts)
		if err != nil || !reflect.DeepEqual(set, tc.want) || mo.NoExec || !slices.Equal(rest, []string{"s3://b/p", "/mnt"}) {
			t.Errorf("-o %q: set %v, %+v, rest %q, %v; want %v", tc.opts, set, mo, rest, err, tc.want)
		}
	}
}

// TestMountOptionsIgnored: the usual options mount(8), mount.fuse3 and
// fstab users pass set nothing and are not refused.
func TestMountOptionsIgnored(t *testing.T) {
	var opts []string
	for name := range ignoredOptions {
		opts = append(opts, name)
	}
	opts = append(opts, "x-systemd.automount", "x-systemd.requires=network-online.target",
		"x-systemd.mount-timeout=2min", "x-mount.mkdir=0755", "X-mount.mkdir", "comment=systemd.automount", "comment=")
	for _, o := range opts {
		set, mo, _, err := setFlags(t, "-o", o)
		if err != nil || len(set) != 0 || mo.NoExec {
			t.Errorf("-o %s: set %v, %+v, %v; want it ignored", o, set, mo, err)
		}
	}
	set, mo, _, err := setFlags(t, "-o", strings.Join(opts, ","))
	if err != nil || len(set) != 0 {
		t.Errorf("all at once: %v, %+v, %v", set, mo, err)
	}
}

func TestMountOptionNoExec(t *testing.T) {
	for opts, want := range map[string]bool{"noexec": true, "rw,noexec,nodev": true, "noexec,exec": false, "exec,noexec": true, "exec": false} {
		_, mo, _, err := setFlags(t, "-o", opts)
		if err != nil || mo.NoExec != want {
			t.Errorf("-o %s: NoExec %v, %v; want %v", opts, mo.NoExec, err, want)
		}
	}
}

func TestMountOptionsRefused(t *testing.T) {
	cases := map[string]string{ // -o LIST → what the one line must name
		"bogus":                     `unknown mount option "bogus"`,
		"cache_dir=/c,bogus=1":      `unknown mount option "bogus=1"`,
		"ro=1":                      `unknown mount option "ro=1"`,
		"noexec=1":                  `unknown mount option "noexec=1"`,
		"allow_root":                `unknown mount option "allow_root"`,
		"Cache_Dir=/c":              `unknown mount option "Cache_Dir=/c"`,
		"-cache_dir=/c":             `unknown mount option "-cache_dir=/c"`,
		"=x":                        `unknown mount option "=x"`,
		"setuid=nobody":             `unknown mount option "setuid=nobody"`,
		"cache_dir":                 "mount option cache_dir needs a value: cache_dir=...",
		"uid=abc":                   `mount option uid: invalid value "abc": parse error`,
		"uid=99999999999999999999":  `mount option uid: invalid value "99999999999999999999": value out of range`,
		"force_path_style=yes":      `mount option force_path_style: invalid value "yes": parse error`,
		"s3_timeout=soon":           `mount option s3_timeout: invalid value "soon"`,
		`prefetch="train,dev`:       `a " is not closed`,
		"x_systemd.automount":       `unknown mount option "x_systemd.automount"`,
		"comment":                   `unknown mount option "comment"`,
		"default_permissions=false": `unknown mount option "default_permissions=false"`,
	}
	for opts, want := range cases {
		_, _, _, err := setFlags(t, "s3://b/p", "/mnt", "-o", opts)
		if !isUsage(err) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("-o %s: %v; want a one-line usage error containing %q", opts, err, want)
		}
	}
}

// TestMountOptionsArgs: where -o may stand, and what is not an -o.
func TestMountOptionsArgs(t *testing.T) {
	set, _, rest, err := setFlags(t, "-o", "uid=1", "s3://b/p", "-ocache_dir=/c", "/mnt", "-o", "profile=x", "--uid", "2")
	if err != nil || set["uid"] != "1" || set["cache-dir"] != "/c" || set["profile"] != "x" ||
		!slices.Equal(rest, []string{"s3://b/p", "/mnt", "--uid", "2"}) {
		t.Errorf("three -o: %v, rest %q, %v", set, rest, err)
	}
	// The value of a flag is not read as -o, nor is anything after --.
	set, _, rest, err = setFlags(t, "--profile", "-o", "-profile", "-o", "--force-path-style", "-o", "uid=3", "--", "-o", "x")
	if err != nil || set["uid"] != "3" || !slices.Equal(rest, []string{"--profile", "-o", "-profile", "-o", "--force-path-style", "--", "-o", "x"}) {
		t.Errorf("flag values: %v, rest %q, %v", set, rest, err)
	}
	if _, _, _, err := setFlags(t, "s3://b/p", "/mnt", "-o"); !isUsage(err) || !strings.Contains(err.Error(), "-o needs") {
		t.Errorf("-o at the end: %v", err)
	}
	// A flag on the command line wins over the same flag as an option,
	// wherever it stands: `mount` starts its daemon with --foreground
	// before the caller's arguments.
	fs := testFlags()
	rest, _, err = applyMountOptions(fs, []string{"--passthrough=false", "-o", "passthrough,cache_dir=/b", "--cache-dir", "/a"})
	if err == nil {
		err = fs.Parse(rest)
	}
	if err != nil || fs.Lookup("passthrough").Value.String() != "false" || fs.Lookup("cache-dir").Value.String() != "/a" {
		t.Errorf("flags against options: passthrough %s, cache-dir %s, %v",
			fs.Lookup("passthrough").Value, fs.Lookup("cache-dir").Value, err)
	}
}

// TestMountOptionsShadow: a flag named like one of the usual options
// (mount(8) passes rw, dev and suid on every mount) is a programming error
// caught by any parse.
func TestMountOptionsShadow(t *testing.T) {
	for _, name := range []string{"sync", "dev", "noexec", "default-permissions", "x-systemd", "comment", "o"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("flag --%s accepted", name)
				}
			}()
			fs := testFlags()
			fs.Bool(name, false, "")
			applyMountOptions(fs, nil)
		}()
	}
}

// TestMountOptionsLikeFlags: the real mount flags given as options give
// the same config as given as flags.
func TestMountOptionsLikeFlags(t *testing.T) {
	flags := []string{"s3://bucket/p", "/tmp/m", "--cache-dir", "/ssd/c",
		"--endpoint-url", "http://127.0.0.1:7070/?a=b", "--force-path-style", "--max-cache-size", "400GiB",
		"--metadata-ttl", "indefinite", "--allow-other", "--uid", "1000", "--gid", "100",
		"--passthrough=false", "--profile", "train=ing", "--file-mode", "0440", "--prefetch", "train,dev",
		"--s3-timeout", "5s", "--log-level", "debug", "--min-free", "10%"}
	want, err := parseMountArgs(flags)
	if err != nil {
		t.Fatal(err)
	}
	want.NoExec = true
	for _, args := range [][]string{
		{"s3://bucket/p", "/tmp/m", "-o", `cache_dir=/ssd/c,endpoint_url=http://127.0.0.1:7070/?a=b,force_path_style,` +
			`max_cache_size=400GiB,metadata_ttl=indefinite,allow_other,uid=1000,gid=100,passthrough=false,` +
			`profile=train=ing,file_mode=0440,prefetch="train,dev",s3_timeout=5s,log_level=debug,min_free=10%,` +
			`rw,nosuid,nodev,noexec,noatime,_netdev,nofail,x-systemd.automount`},
		{"-o", "rw,dev,suid", "s3://bucket/p", "-o", `cache_dir=/ssd/c,endpoint_url=http://127.0.0.1:7070/?a=b,force_path_style`,
			"--max-cache-size", "400GiB", "/tmp/m", "-o", `metadata_ttl=indefinite,allow_other,uid=1000,gid=100,passthrough=0,profile=train=ing`,
			"--file-mode", "0440", "-o", `prefetch=train\,dev,s3_timeout=5s,log_level=debug,min_free=10%,noexec`},
	} {
		got, err := parseMountArgs(args)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q:\n got %+v, %v\nwant %+v", args, got, err, want)
		}
	}
}

// TestHelperCommandLine: `s3cachefs SOURCE MOUNTPOINT -o ...`, as
// mount.fuse3 runs it, and `s3cachefs mount ... -o ...` refuse a bad
// option with one line and exit status 2, before creating anything.
func TestHelperCommandLine(t *testing.T) {
	tmp := t.TempDir()
	cache := filepath.Join(tmp, "cache")
	for _, args := range [][]string{
		{"s3://bucket/p", tmp, "-o", "rw,cache_dir=" + cache + ",bogus"},
		{"mount", "s3://bucket/p", tmp, "-o", "cache_dir=" + cache + ",bogus"},
		{"s3://bucket/p", tmp, "-o", "cache_dir=" + cache + ",endpoint_url"},
		{"s3://bucket/p", tmp, "-o", "rw,dev,suid"},
		{"s3://bucket/p", tmp},
		{"s3://bucket/p", "-o", "cache_dir=" + cache},
	} {
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "s3cachefs: ") || stdout.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and one s3cachefs: line", args, code, stdout.String(), stderr.String())
		}
		if _, err := os.Stat(cache); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%q: cache dir created (%v)", args, err)
		}
	}
	var stderr bytes.Buffer
	run([]string{"s3://bucket/p", tmp, "-o", "rw"}, new(bytes.Buffer), &stderr)
	if !strings.Contains(stderr.String(), "cache_dir=DIR") {
		t.Errorf("without cache_dir: %q; want it to name cache_dir=DIR", stderr.String())
	}
}

func isUsage(err error) bool {
	var ue usageError
	return errors.As(err, &ue)
}
