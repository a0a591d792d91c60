package s3server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"
)

// Set declares a block of generated objects in a synthetic bucket
// (Fake.CreateSynthBucket): Folders folders of Files files each under
// Prefix, every file Size bytes. Nothing of it is stored: keys are
// computed from their index and bytes from (key, offset), so a set of 10^7
// keys costs a few hundred bytes.
//
// The keys are, for folder d in [0, Folders) and file f in [0, Files):
//
//	Prefix + fmt.Sprintf(Folder, d) + "/" + fmt.Sprintf(File, f)
//
// or Prefix + fmt.Sprintf(File, f) when Folder is "" (Folders is then
// ignored: one flat folder of Files keys). Folder and File must each hold
// one zero-padded verb wide enough for every index (like "n%05d" or
// "%07d.JPEG"), so that names have one length and sort as their indices
// do: listing is then a binary search over indices, never a walk.
//
// For example ImageNet's train split is
//
//	Set{Prefix: "imagenet/train/", Folder: "n%05d", Folders: 1000, File: "%07d.JPEG", Files: 1300, Size: 110 << 10}
type Set struct {
	Prefix  string // "" or ends in "/"
	Folder  string // folder name format; "" for files directly under Prefix
	Folders int
	File    string // file name format
	Files   int    // files per folder
	Size    int64  // bytes of every file
}

// SynthModified is the LastModified of every generated object.
var SynthModified = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Count is the number of keys of the set.
func (s Set) Count() int64 {
	if s.Folder == "" {
		return int64(s.Files)
	}
	return int64(s.Folders) * int64(s.Files)
}

// Key is the set's i-th key in order, 0 <= i < Count().
func (s Set) Key(i int64) string {
	if s.Folder == "" {
		return s.Prefix + fmt.Sprintf(s.File, i)
	}
	files := int64(s.Files)
	return s.Prefix + fmt.Sprintf(s.Folder, i/files) + "/" + fmt.Sprintf(s.File, i%files)
}

// FolderPrefix is the key prefix of folder d ("Prefix" when Folder is "").
func (s Set) FolderPrefix(d int) string {
	if s.Folder == "" {
		return s.Prefix
	}
	return s.Prefix + fmt.Sprintf(s.Folder, d) + "/"
}

// validate checks what listing relies on: fixed-width names that sort as
// their indices, no "/" inside a name.
func (s Set) validate() error {
	if s.Prefix != "" && !strings.HasSuffix(s.Prefix, "/") {
		return fmt.Errorf("set prefix %q must be empty or end in /", s.Prefix)
	}
	if s.Files < 0 || s.Folders < 0 || s.Size < 0 {
		return fmt.Errorf("set %q: negative Files, Folders or Size", s.Prefix)
	}
	check := func(format string, n int) error {
		if n == 0 {
			return nil
		}
		first, last := fmt.Sprintf(format, 0), fmt.Sprintf(format, n-1)
		switch {
		case strings.Contains(first, "%!"):
			return fmt.Errorf("name format %q: want one integer verb", format)
		case first == "" || strings.Contains(first, "/"):
			return fmt.Errorf("name format %q makes an empty name or one with /", format)
		case len(first) != len(last) || (n > 1 && fmt.Sprintf(format, 1) <= first):
			return fmt.Errorf("name format %q is not fixed-width for %d names: use a zero-padded verb like %%07d", format, n)
		}
		return nil
	}
	if err := check(s.File, s.Files); err != nil {
		return err
	}
	if s.Folder != "" {
		return check(s.Folder, s.Folders)
	}
	return nil
}

// search is the first index i with Key(i) >= from (Count() if none).
func (s Set) search(from string) int64 {
	n := s.Count()
	// sort.Search takes an int: 10^7 keys fit on every platform we run.
	return int64(sort.Search(int(n), func(i int) bool { return s.Key(int64(i)) >= from }))
}

// genSets are a synthetic bucket's sets, in key order.
type genSets []Set

// newGenSets validates sets and checks that their key ranges do not
// overlap, once sorted by first key.
func newGenSets(sets []Set) (genSets, error) {
	var out genSets
	for _, s := range sets {
		if err := s.validate(); err != nil {
			return nil, err
		}
		if s.Count() > 0 {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key(0) < out[j].Key(0) })
	for i := 1; i < len(out); i++ {
		if prev := out[i-1]; prev.Key(prev.Count()-1) >= out[i].Key(0) {
			return nil, errors.New("synthetic sets overlap: " + prev.Prefix + " and " + out[i].Prefix)
		}
	}
	return out, nil
}

// genPos is a position in genSets: set index and key index in it.
type genPos struct {
	set int
	i   int64
}

// seek is the position of the first generated key >= from.
func (g genSets) seek(from string) genPos {
	for k, s := range g {
		if s.Key(s.Count()-1) >= from {
			return genPos{k, s.search(from)}
		}
	}
	return genPos{len(g), 0}
}

// at is the key at p, or false past the end.
func (g genSets) at(p genPos) (Set, string, bool) {
	if p.set >= len(g) {
		return Set{}, "", false
	}
	return g[p.set], g[p.set].Key(p.i), true
}

// advance is the position after p.
func (g genSets) advance(p genPos) genPos {
	if p.i+1 < g[p.set].Count() {
		return genPos{p.set, p.i + 1}
	}
	return genPos{p.set + 1, 0}
}

// lookup finds a generated key's set.
func (g genSets) lookup(key string) (Set, bool) {
	p := g.seek(key)
	s, k, ok := g.at(p)
	return s, ok && k == key
}

// keySeed is the seed of a key's bytes and ETag.
func keySeed(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64()
}

// mix64 is the SplitMix64 finaliser: a cheap bijection that spreads bits.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// SynthETag is the ETag (unquoted) of a generated object of key and size.
// It is a hash of the two, NOT the MD5 of the bytes; it has the
// multipart form ("HEX-1") so that clients which check a plain ETag as
// an MD5 of the body (the AWS CLI, rclone) do not.
func SynthETag(key string, size int64) string {
	s := keySeed(key)
	return fmt.Sprintf("%016x%016x-1", mix64(s^uint64(size)), mix64(s+uint64(size)+0x9e3779b97f4a7c15))
}

// SynthBytes fills p with the bytes of a generated object of key from
// offset off on: byte o is byte o%8 (little-endian) of a hash of the
// key's seed and o/8, whatever the object's size, so any range can be
// checked alone.
func SynthBytes(key string, off int64, p []byte) {
	synthFill(keySeed(key), off, p)
}

func synthFill(seed uint64, off int64, p []byte) {
	word := func(w int64) uint64 { return mix64(seed + uint64(w)*0x9e3779b97f4a7c15) }
	for len(p) > 0 {
		w := word(off >> 3)
		if off&7 == 0 && len(p) >= 8 {
			binary.LittleEndian.PutUint64(p, w)
			p, off = p[8:], off+8
			continue
		}
		p[0] = byte(w >> (8 * (off & 7)))
		p, off = p[1:], off+1
	}
}
