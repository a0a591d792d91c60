package index

import (
	"cmp"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxNameLen is the longest name Linux accepts for one path component.
const maxNameLen = 255

// nameProblem says why name cannot be shown in the mount, or "" if it can.
// See "Name rules" in doc.go.
func nameProblem(name string) string {
	switch {
	case name == "":
		return "empty name"
	case name == "." || name == "..":
		return "reserved name"
	case len(name) > maxNameLen:
		return "name longer than 255 bytes"
	case strings.Contains(name, "/"):
		return "name contains /"
	case !utf8.ValidString(name):
		// S3 keys are UTF-8; only a server that is not S3 sends these.
		return "name is not valid UTF-8"
	case strings.ContainsFunc(name, unicode.IsControl):
		// NUL cannot be in a Linux name at all; the others (C0, DEL, C1)
		// would reach terminals and scripts through ls and find.
		return "name contains a control character"
	}
	return ""
}

// toListing applies the name rules to one level of S3 listed under prefix
// and returns what the mount shows. Every skipped key is logged.
func toListing(prefix string, res ListResult, listedAt time.Time, log *slog.Logger) Listing {
	l := Listing{Prefix: prefix, ListedAt: listedAt}
	dirs := make(map[string]bool, len(res.Prefixes))
	for _, p := range res.Prefixes {
		name, ok := childName(prefix, p, true, log)
		if !ok {
			continue
		}
		if dirs[name] {
			log.Warn("skipping duplicate S3 folder", "prefix", p)
			continue
		}
		dirs[name] = true
		l.Dirs = append(l.Dirs, name)
	}
	slices.Sort(l.Dirs)

	// Sort to make duplicates adjacent, the one to keep first.
	objs := slices.Clone(res.Objects)
	slices.SortFunc(objs, objectOrder)
	// Files are filtered into objs itself (a copy of S3's answer that
	// only this function sees): one slice of a million objects, not two.
	l.Files = objs[:0]
	for _, o := range objs {
		if strings.HasSuffix(o.Key, "/") {
			// A folder marker (console "create folder", or "prefix/"
			// itself). It names a folder, never a file; the folder, if it
			// has anything in it, comes from Prefixes. Not a warning: these
			// are normal and lose nothing.
			log.Debug("skipping S3 folder marker", "key", o.Key)
			continue
		}
		name, ok := childName(prefix, o.Key, false, log)
		if !ok {
			continue
		}
		if dirs[name] {
			log.Warn("skipping S3 key: a folder has the same name", "key", o.Key)
			continue
		}
		if n := len(l.Files); n > 0 && l.Files[n-1].Key == o.Key {
			log.Warn("skipping duplicate S3 key", "key", o.Key)
			continue
		}
		l.Files = append(l.Files, o)
	}
	return l
}

// objectOrder sorts objects by key and, among equal keys (which only a
// server that is not S3 sends), newest first, with a total order so that the
// one kept of a duplicate never depends on the server's order.
func objectOrder(a, b Object) int {
	return cmp.Or(
		cmp.Compare(a.Key, b.Key),
		b.LastModified.Compare(a.LastModified),
		cmp.Compare(a.ETag, b.ETag),
		cmp.Compare(a.Size, b.Size),
	)
}

// childName returns the name that key (or common prefix, if isDir) takes
// inside the listing of prefix, and false if it is skipped.
func childName(prefix, key string, isDir bool, log *slog.Logger) (string, bool) {
	kind := "key"
	if isDir {
		kind = "prefix"
	}
	if !strings.HasPrefix(key, prefix) {
		log.Warn("skipping S3 "+kind+" outside the listed prefix", kind, key, "listed", prefix)
		return "", false
	}
	name := key[len(prefix):]
	if isDir {
		name = strings.TrimSuffix(name, "/")
	}
	if why := nameProblem(name); why != "" {
		log.Warn("skipping S3 "+kind+": "+why, kind, key)
		return "", false
	}
	return name, true
}
