package index

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// logRecorder is a slog.Handler that keeps the messages logged at each level.
type logRecorder struct {
	mu   sync.Mutex
	msgs map[slog.Level][]string
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.msgs == nil {
		h.msgs = map[slog.Level][]string{}
	}
	h.msgs[r.Level] = append(h.msgs[r.Level], r.Message)
	return nil
}

func (h *logRecorder) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.msgs[l])
}

func TestNameRules(t *testing.T) {
	long := strings.Repeat("n", 255)
	tooLong := long + "x"
	const p = "data/"
	cases := []struct {
		name      string
		objects   []string
		prefixes  []string
		wantDirs  []string
		wantFiles []string // names
		warnings  int
	}{
		{name: "plain", objects: []string{p + "b.npz", p + "a.npz"}, prefixes: []string{p + "train/", p + "dev/"},
			wantDirs: []string{"dev", "train"}, wantFiles: []string{"a.npz", "b.npz"}},
		{name: "folder marker of the listing itself", objects: []string{p, p + "f"},
			wantFiles: []string{"f"}},
		{name: "marker-like key deeper is never a file", objects: []string{p + "sub/"},
			wantFiles: nil},
		{name: "double slash run", objects: []string{p + "/x"}, prefixes: []string{p + "/"},
			warnings: 2},
		{name: "dot names", objects: []string{p + ".", p + "..", p + ".hidden"}, prefixes: []string{p + "./", p + "../"},
			wantFiles: []string{".hidden"}, warnings: 4},
		{name: "255 bytes kept, 256 skipped", objects: []string{p + long, p + tooLong}, prefixes: []string{p + tooLong + "/"},
			wantFiles: []string{long}, warnings: 2},
		{name: "NUL", objects: []string{p + "a\x00b"}, prefixes: []string{p + "c\x00/"}, warnings: 2},
		{name: "slash inside a name", objects: []string{p + "a/b"}, prefixes: []string{p + "a/b/"}, warnings: 2},
		{name: "file and folder of one name: folder wins", objects: []string{p + "x", p + "y"}, prefixes: []string{p + "x/"},
			wantDirs: []string{"x"}, wantFiles: []string{"y"}, warnings: 1},
		{name: "duplicates kept once", objects: []string{p + "f", p + "f"}, prefixes: []string{p + "d/", p + "d/"},
			wantDirs: []string{"d"}, wantFiles: []string{"f"}, warnings: 2},
		{name: "keys outside the prefix", objects: []string{"elsewhere/f"}, prefixes: []string{"elsewhere/d/"}, warnings: 2},
		{name: "control characters", objects: []string{p + "tab\there", p + "nl\n", p + "esc\x1b[2J", p + "del\x7f", p + "c1\u0085"},
			prefixes: []string{p + "bell\a/"}, warnings: 6},
		{name: "invalid UTF-8", objects: []string{p + "bad\xff", p + "half\xc3"}, prefixes: []string{p + "\xfe/"},
			wantFiles: nil, warnings: 3},
		{name: "U+FFFD itself is valid", objects: []string{p + "\uFFFD"}, wantFiles: []string{"\uFFFD"}},
		{name: "unicode and spaces are fine", objects: []string{p + "ü ñ.npz", p + " "},
			wantFiles: []string{" ", "ü ñ.npz"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &logRecorder{}
			var res ListResult
			for _, k := range c.objects {
				res.Objects = append(res.Objects, Object{Key: k, Size: 1})
			}
			res.Prefixes = c.prefixes
			l := toListing(p, res, time.Unix(1, 0), slog.New(rec))
			if !slices.Equal(l.Dirs, c.wantDirs) {
				t.Errorf("dirs = %q, want %q", l.Dirs, c.wantDirs)
			}
			var files []string
			for _, o := range l.Files {
				files = append(files, strings.TrimPrefix(o.Key, p))
			}
			if !slices.Equal(files, c.wantFiles) {
				t.Errorf("files = %q, want %q", files, c.wantFiles)
			}
			if got := rec.count(slog.LevelWarn); got != c.warnings {
				t.Errorf("%d warnings, want %d: %q", got, c.warnings, rec.msgs[slog.LevelWarn])
			}
			if err := checkListing(l); err != nil {
				t.Errorf("result cannot be stored: %v", err)
			}
		})
	}
}

// The same S3 answer in any order gives the same listing.
func TestNameRulesIndependentOfOrder(t *testing.T) {
	discard := slog.New(&logRecorder{})
	res := ListResult{
		Objects:  []Object{{Key: "b", ETag: "1"}, {Key: "a"}, {Key: "b", ETag: "1"}, {Key: "d"}},
		Prefixes: []string{"d/", "c/", "a//"},
	}
	want := toListing("", res, time.Time{}, discard)
	slices.Reverse(res.Objects)
	slices.Reverse(res.Prefixes)
	got := toListing("", res, time.Time{}, discard)
	assertListingEqual(t, got, want)
	if !slices.Equal(got.Dirs, []string{"c", "d"}) || len(got.Files) != 2 {
		t.Errorf("listing %+v", got)
	}
}

func TestDuplicateKeyKeepsNewest(t *testing.T) {
	discard := slog.New(&logRecorder{})
	old := Object{Key: "f", ETag: "old", LastModified: time.Unix(1, 0)}
	newer := Object{Key: "f", ETag: "new", LastModified: time.Unix(2, 0)}
	for _, objs := range [][]Object{{old, newer}, {newer, old}} {
		l := toListing("", ListResult{Objects: objs}, time.Time{}, discard)
		if len(l.Files) != 1 || l.Files[0].ETag != "new" {
			t.Errorf("from %v kept %v, want the newer", objs, l.Files)
		}
	}
}
