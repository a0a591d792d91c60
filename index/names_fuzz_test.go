package index

import (
	"context"
	"errors"
	iofs "io/fs"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// pageLister answers every List with one fixed S3 page.
type pageLister struct{ res ListResult }

func (l pageLister) List(context.Context, string) (ListResult, error) { return l.res, nil }

// s3Page builds the answer S3 gives to ListObjectsV2(prefix, delimiter "/")
// over a bucket holding keys: keys with a "/" after the prefix fold into
// one common prefix each; the rest are objects. Like a hostile server, it
// also returns the keys outside the prefix, as objects.
func s3Page(prefix string, keys []string) ListResult {
	var res ListResult
	seen := map[string]bool{}
	for _, k := range keys {
		rest, under := strings.CutPrefix(k, prefix)
		if i := strings.IndexByte(rest, '/'); under && i >= 0 {
			cp := prefix + rest[:i+1]
			if !seen[cp] {
				seen[cp] = true
				res.Prefixes = append(res.Prefixes, cp)
			}
			continue
		}
		if !seen[k] {
			seen[k] = true
			res.Objects = append(res.Objects, Object{Key: k, Size: int64(len(k)), ETag: "e"})
		}
	}
	return res
}

// showable is the name rule written out independently of nameProblem.
func showable(name string) bool {
	if name == "" || name == "." || name == ".." || len(name) > 255 || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r == '/' || unicode.Is(unicode.Cc, r) {
			return false
		}
	}
	return true
}

// FuzzListingToTree feeds raw S3 keys (separated by "|") through the
// listing of one folder, as S3 pages them, into the tree a mount shows. The
// tree must follow the name rules exactly: every showable folder is shown,
// every showable file is shown unless a folder has its name, nothing else
// is shown, each skipped key (but folder markers) is warned about once,
// S3's order does not matter, and Lookup agrees with ReadDir.
func FuzzListingToTree(f *testing.F) {
	f.Add("data/", "data/a.npz|data/x|data/x/y|data/x/|data/")
	f.Add("", "..|.|a//b|/lead|trail/|../etc/passwd|./x")
	f.Add("p/", "p/"+strings.Repeat("n", 256)+"|p/"+strings.Repeat("m", 255)+"|p/"+strings.Repeat("d", 256)+"/f")
	f.Add("p/", "p/tab\there|p/nl\nx|p/\x7fdel|p/\u0085nel|p/bad\xffutf8|p/ok ü|p/esc\x1b[31m/x")
	f.Add("p/", "p/both|p/both/inner|other/f|p|p/%2e%2e|p/a+b")
	db, err := Open(filepath.Join(f.TempDir(), "index.db"), Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	f.Fuzz(func(t *testing.T, prefix, joined string) {
		if prefix != "" && !strings.HasSuffix(prefix, "/") {
			prefix += "/"
		}
		res := s3Page(prefix, strings.Split(joined, "|"))
		rec := &logRecorder{}
		l := toListing(prefix, res, time.Unix(1, 0), slog.New(rec))

		wantDirs, wantFiles, wantWarn := expectTree(prefix, res)
		if !slices.Equal(l.Dirs, wantDirs) {
			t.Fatalf("dirs = %q, want %q", l.Dirs, wantDirs)
		}
		var files []string
		for _, o := range l.Files {
			files = append(files, o.Key[len(prefix):])
		}
		if !slices.Equal(files, wantFiles) {
			t.Fatalf("files = %q, want %q", files, wantFiles)
		}
		if got := rec.count(slog.LevelWarn); got != wantWarn {
			t.Fatalf("%d warnings, want one per skipped key: %d", got, wantWarn)
		}

		shuffled := ListResult{Objects: slices.Clone(res.Objects), Prefixes: slices.Clone(res.Prefixes)}
		r := rand.New(rand.NewPCG(uint64(len(joined)), 1))
		r.Shuffle(len(shuffled.Objects), func(i, j int) { shuffled.Objects[i], shuffled.Objects[j] = shuffled.Objects[j], shuffled.Objects[i] })
		r.Shuffle(len(shuffled.Prefixes), func(i, j int) {
			shuffled.Prefixes[i], shuffled.Prefixes[j] = shuffled.Prefixes[j], shuffled.Prefixes[i]
		})
		assertListingEqual(t, toListing(prefix, shuffled, time.Unix(1, 0), slog.New(&logRecorder{})), l)

		checkCatalogAgrees(t, db, prefix, res, l)
	})
}

// expectTree applies the name rules to an S3 page the slow, obvious way.
func expectTree(prefix string, res ListResult) (dirs, files []string, warnings int) {
	for _, p := range res.Prefixes {
		if name := strings.TrimSuffix(p[len(prefix):], "/"); showable(name) {
			dirs = append(dirs, name)
		} else {
			warnings++
		}
	}
	slices.Sort(dirs)
	for _, o := range res.Objects {
		name, under := strings.CutPrefix(o.Key, prefix)
		switch {
		case strings.HasSuffix(o.Key, "/"): // a marker: debug only
		case !under || !showable(name) || slices.Contains(dirs, name):
			warnings++
		default:
			files = append(files, name)
		}
	}
	slices.Sort(files)
	return dirs, files, warnings
}

// checkCatalogAgrees lists res through a Catalog over db and checks that
// ReadDir shows l, that Lookup finds every shown name, and that every name
// S3 sent but the mount skips is ErrNotExist.
func checkCatalogAgrees(t *testing.T, db *DB, prefix string, res ListResult, l Listing) {
	ctx := context.Background()
	c := NewCatalog(db, pageLister{res}, CatalogOptions{Prefix: prefix, TTL: -1})
	// The DB is shared by every input: list now, then answer from it.
	if err := c.Refresh(ctx, ""); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	ents, err := c.ReadDir(ctx, "")
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	shown := map[string]bool{}
	for _, e := range ents {
		shown[e.Name] = true
		got, err := c.Lookup(ctx, "", e.Name)
		if err != nil || got.IsDir != e.IsDir || got.Object != e.Object {
			t.Fatalf("Lookup(%q) = %+v, %v; ReadDir had %+v", e.Name, got, err, e)
		}
	}
	if len(ents) != len(l.Dirs)+len(l.Files) {
		t.Fatalf("ReadDir shows %d entries, the listing has %d", len(ents), len(l.Dirs)+len(l.Files))
	}
	var sent []string
	for _, p := range res.Prefixes {
		sent = append(sent, strings.TrimSuffix(strings.TrimPrefix(p, prefix), "/"))
	}
	for _, o := range res.Objects {
		sent = append(sent, strings.TrimPrefix(o.Key, prefix))
	}
	for _, name := range sent {
		if shown[name] {
			continue
		}
		if _, err := c.Lookup(ctx, "", name); !errors.Is(err, iofs.ErrNotExist) {
			t.Fatalf("Lookup of skipped name %q: err = %v, want ErrNotExist", name, err)
		}
	}
}
