// Package mounttab reads the kernel's mount table, /proc/self/mountinfo,
// and names the filesystem type s3cachefs mounts show there. It is the
// one parser of the table for the daemon (cmd), the FUSE layer (fs) and
// the end-to-end tests (test).
package mounttab

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

const (
	// Subtype is the FUSE subtype of an s3cachefs mount.
	Subtype = "s3cachefs"
	// FSType is the filesystem type an s3cachefs mount shows in the
	// mount table (and `mount -t` takes). gVisor shows plain "fuse".
	FSType = "fuse." + Subtype
)

// Entry is one line of /proc/self/mountinfo:
//
//	id parent major:minor root point options [optional...] - type source super
type Entry struct {
	ID      string // unique among the mounts present at once
	Root    string // the folder of the filesystem mounted at Point
	Point   string // the mount point
	Options string // the mount's own options, e.g. "ro,nosuid,nodev,relatime"
	FSType  string // e.g. "fuse.s3cachefs", "cgroup2"
	Source  string // e.g. "s3://bucket/prefix"
	Super   string // the superblock's options ("" if the line has none)
	// Owner is the user_id= of a FUSE mount's superblock options, the
	// uid of its daemon; -1 if there is none.
	Owner int
}

// AllOptions returns the mount's and the superblock's options together,
// as /proc/mounts lists them.
func (e Entry) AllOptions() []string {
	var out []string
	for _, s := range []string{e.Options, e.Super} {
		if s != "" {
			out = append(out, strings.Split(s, ",")...)
		}
	}
	return out
}

// Read parses this process's mount table.
func Read() ([]Entry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	es, err := Parse(f)
	if err != nil {
		return es, fmt.Errorf("read mount table: %w", err)
	}
	return es, nil
}

// Parse parses a mount table in the form of /proc/self/mountinfo. Lines
// it cannot read are skipped; on a read error it returns the entries
// before it.
func Parse(r io.Reader) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20) // a line holds paths and options: long, never this long
	for sc.Scan() {
		if e, ok := ParseLine(sc.Text()); ok {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// ParseLine parses one line of /proc/self/mountinfo, undoing the kernel's
// octal escapes in paths and the source.
func ParseLine(line string) (Entry, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(fields) < sep+3 {
		return Entry{}, false
	}
	e := Entry{
		ID:      fields[0],
		Root:    unescape(fields[3]),
		Point:   unescape(fields[4]),
		Options: fields[5],
		FSType:  fields[sep+1],
		Source:  unescape(fields[sep+2]),
		Owner:   -1,
	}
	if len(fields) > sep+3 {
		e.Super = fields[sep+3]
		for _, o := range strings.Split(e.Super, ",") {
			if v, ok := strings.CutPrefix(o, "user_id="); ok {
				if n, err := strconv.Atoi(v); err == nil && n >= 0 {
					e.Owner = n
				}
			}
		}
	}
	return e, true
}

// At returns the mount whose mount point is path, if any. The last entry
// wins, as mounts stack.
func At(entries []Entry, path string) (Entry, bool) {
	var found Entry
	ok := false
	for _, e := range entries {
		if e.Point == path {
			found, ok = e, true
		}
	}
	return found, ok
}

// unescape undoes the kernel's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return len(s) == 3
}
