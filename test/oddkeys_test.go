package test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"s3cachefs/test/s3server"
)

// oddEnv is an env whose S3 is the in-process fake (behind the counting
// proxy), for keys versitygw's posix backend cannot store.
func oddEnv(t *testing.T) (*env, *s3server.Fake) {
	t.Helper()
	fake := s3server.StartFake(t)
	fake.CreateBucket(bucket)
	srv := fake.Server()
	return &env{srv: srv, proxy: srv.NewProxy(t), runtimeDir: t.TempDir(), home: t.TempDir()}, fake
}

// oddSkip is a key the mount must not show, and the warning it must log:
// the attribute ("key" or "prefix") and its value.
type oddSkip struct{ attr, value string }

// TestOddKeys mounts a bucket full of keys that cannot be files as they
// are, and checks each against the name rules of index/doc.go: shown as
// documented or skipped with a warning naming it, listings exact, bytes
// right, and nothing written outside the cache's own layout.
func TestOddKeys(t *testing.T) {
	e, fake := oddEnv(t)
	p := prefix + "/"
	long255, long256 := strings.Repeat("l", 255), strings.Repeat("L", 256)
	// shown: path in the mount -> key suffix after p (files only).
	shown := map[string]string{
		"ok.bin":           "ok.bin",
		"dot/fine":         "dot/fine",
		"dbl/y":            "dbl/y",
		"mk/f":             "mk/f",
		long255:            long255,
		"both/inner":       "both/inner",
		"sp ace+%41.bin":   "sp ace+%41.bin",
		"ü ñ.bin":          "ü ñ.bin",
		".hidden":          ".hidden",
		"U+FFFD \uFFFD ok": "U+FFFD \uFFFD ok",
	}
	// Keys that name folders only, or are skipped, each with no file.
	others := []string{
		"..", ".", "dot/../escape", "../../../../etc/hostile", "dbl//x", "//lead",
		"marker/", "mk/", long256, long256 + "/f", "ctl\tx", "nl\nx", "esc\x1b[31mred",
		"del\x7f", "bad\xff", "both",
	}
	skipped := []oddSkip{
		{"key", p + ".."}, {"key", p + "."}, {"prefix", p + "dot/../"}, {"prefix", p + "../"},
		{"prefix", p + "dbl//"}, {"prefix", p + "/"}, {"key", p + long256}, {"prefix", p + long256 + "/"},
		{"key", p + "ctl\tx"}, {"key", p + "nl\nx"}, {"key", p + "esc\x1b[31mred"}, {"key", p + "del\x7f"},
		{"key", p + "bad\xff"}, {"key", p + "both"},
	}
	const bigN = 10000
	want := map[string][]byte{}
	for path, suffix := range shown {
		want[path] = []byte("bytes of " + suffix)
		fake.Put(bucket, p+suffix, want[path])
	}
	for _, suffix := range others {
		fake.Put(bucket, p+suffix, []byte("must not be shown: "+suffix))
	}
	var bigNames []string
	for i := range bigN {
		name := fmt.Sprintf("f%05d.bin", i)
		bigNames = append(bigNames, name)
		fake.Put(bucket, p+"big/"+name, []byte(name))
	}

	// Each folder is listed once, so each skipped key warns once.
	m := e.mount(t, "--metadata-ttl", "indefinite")
	wantDirs := map[string][]string{
		"":       {".hidden", "U+FFFD \uFFFD ok", "big", "both", "dbl", "dot", long255, "marker", "mk", "ok.bin", "sp ace+%41.bin", "ü ñ.bin"},
		"dot":    {"fine"},
		"dbl":    {"y"},
		"marker": nil,
		"mk":     {"f"},
		"both":   {"inner"},
		"big":    bigNames,
	}
	for dir, names := range wantDirs {
		if got := oddReadDir(t, filepath.Join(m.dir, dir)); !slices.Equal(got, names) {
			if len(got) > 20 {
				t.Errorf("ls %q: %d names, want %d", dir, len(got), len(names))
			} else {
				t.Errorf("ls %q = %q\nwant %q", dir, got, names)
			}
		}
	}
	readAll(t, m.dir, want)
	for _, i := range []int{0, 4999, bigN - 1} {
		readAll(t, m.dir, map[string][]byte{"big/" + bigNames[i]: []byte(bigNames[i])})
	}
	// Skipped names are absent, not errors of another kind.
	for _, name := range []string{"ctl\tx", "nl\nx", "esc\x1b[31mred", "del\x7f", "bad\xff", "dbl/x", "both/..x"} {
		if _, err := os.Lstat(filepath.Join(m.dir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat %q: %v, want ENOENT", name, err)
		}
	}
	if fi, err := os.Lstat(filepath.Join(m.dir, "both")); err != nil || !fi.IsDir() {
		t.Errorf("both: %v, %v; want the folder (folder wins over the file)", fi, err)
	}

	e.waitNoOpenFiles(t, m)
	e.drop(t, m)
	log := readLog(m.cache)
	for _, s := range skipped {
		if !oddWarned(log, s) {
			t.Errorf("no warning in the log for skipped %s %q", s.attr, s.value)
		}
	}
	// Folder markers hide nothing: not warned about.
	for _, k := range []string{p + "marker/", p + "mk/"} {
		if oddWarned(log, oddSkip{"key", k}) {
			t.Errorf("folder marker %q was warned about", k)
		}
	}
	if n := strings.Count(log, "level=WARN"); n != len(skipped) {
		t.Errorf("%d warnings in the log, want %d (one per skipped key):\n%s", n, len(skipped), oddWarnings(log))
	}
	oddCheckCacheLayout(t, m.cache)
}

// oddReadDir returns the names in dir, sorted.
func oddReadDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Errorf("ls %s: %v", dir, err)
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// oddWarned reports whether log has a warning with attr=value, as slog's
// text handler writes it: quoted when it holds spaces, "=", quotes or
// bytes it deems unprintable, else raw (DEL, for one, stays raw).
func oddWarned(log string, s oddSkip) bool {
	forms := []string{s.attr + "=" + strconv.Quote(s.value), s.attr + "=" + s.value}
	for line := range strings.Lines(log) {
		if !strings.Contains(line, "level=WARN") {
			continue
		}
		for _, f := range forms {
			if strings.Contains(line, f+" ") || strings.HasSuffix(strings.TrimSuffix(line, "\n"), f) {
				return true
			}
		}
	}
	return false
}

// oddWarnings returns the warning lines of log, for failure messages.
func oddWarnings(log string) string {
	var b strings.Builder
	for line := range strings.Lines(log) {
		if strings.Contains(line, "level=WARN") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// oddObjectFile is the only shape of file s3cachefs may create under
// objects/: a hex hash, in a folder named by its first two digits.
var oddObjectFile = regexp.MustCompile(`^objects/([0-9a-f]{2})/([0-9a-f]{64})$`)

// oddCheckCacheLayout walks the cache dir: nothing but index.db, the log,
// objects/, objects/XX/ and objects/XX/ID files, every one a regular file
// or folder (no links) inside the dir.
func oddCheckCacheLayout(t *testing.T, cache string) {
	t.Helper()
	objects := 0
	err := filepath.WalkDir(cache, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(cache, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			t.Errorf("walked outside the cache dir: %s", path)
			return nil
		}
		ok := false
		switch {
		case rel == ".", rel == "objects":
			ok = d.IsDir()
		case rel == "index.db", rel == "s3cachefs.log":
			ok = d.Type().IsRegular()
		case len(rel) == len("objects/xx") && strings.HasPrefix(rel, "objects/"):
			ok = d.IsDir() && regexp.MustCompile(`^[0-9a-f]{2}$`).MatchString(rel[len("objects/"):])
		default:
			sub := oddObjectFile.FindStringSubmatch(rel)
			ok = sub != nil && strings.HasPrefix(sub[2], sub[1]) && d.Type().IsRegular()
			objects++
		}
		if !ok {
			t.Errorf("unexpected entry in the cache dir: %q (%v)", rel, d.Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every shown file was read, each is one cache file.
	if objects == 0 {
		t.Errorf("no cache files at all under %s/objects", cache)
	}
	if b, err := os.ReadFile(filepath.Join(cache, "s3cachefs.log")); err == nil && bytes.Contains(b, []byte("must not be shown")) {
		t.Errorf("bytes of a skipped key reached the log")
	}
}
