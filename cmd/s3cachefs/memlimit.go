package main

// Memory limits. In a container the daemon shares a cgroup memory limit
// with whatever else runs there, and the kernel kills it when the cgroup
// goes over. So the daemon looks for the limit of its cgroup (v1 or v2)
// and sizes itself to it: it gives Go's garbage collector a memory limit
// below the cgroup's (unless GOMEMLIMIT says otherwise), and keeps fewer
// GETs, and so fewer block buffers, in flight when the limit is small.
// Flags given on the command line win over anything sized here.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"math"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"

	"s3cachefs/cmd/s3cachefs/api"
	"s3cachefs/fs/mounttab"
)

// cgroupLimit is the memory limit found for this process's cgroup.
type cgroupLimit struct {
	Bytes int64  // the smallest limit on the way up; 0: none found
	File  string // the file Bytes was read from
	Dir   string // the cgroup folder the search started in ("" if none)
}

// noLimit is where a cgroup limit stops meaning anything: cgroup v1 shows
// "no limit" as the largest page-aligned int64 (9223372036854771712 with
// 4 KiB pages), and no machine has 4 EiB of memory.
const noLimit = 1 << 62

// cgroupMount is one mounted cgroup hierarchy, from /proc/self/mountinfo.
type cgroupMount struct {
	Root       string // the folder of the hierarchy mounted (usually "/")
	Mountpoint string
	V2         bool // cgroup2; else a v1 hierarchy with the memory controller
}

// Where the hierarchies usually are, for when mountinfo cannot be read.
var defaultCgroupMounts = []cgroupMount{
	{Root: "/", Mountpoint: "/sys/fs/cgroup/memory"},
	{Root: "/", Mountpoint: "/sys/fs/cgroup", V2: true},
}

// findCgroupLimit looks for the memory limit of the cgroup this process
// is in. fsys is the root filesystem (os.DirFS("/") but in tests). For
// each hierarchy that counts memory (v1 with the memory controller, v2)
// it starts in the process's own cgroup folder and walks up to the
// hierarchy's root, reading memory.limit_in_bytes (v1) or memory.max (v2)
// wherever it is readable: a parent's limit binds its children too, so
// the smallest one found is the limit. Nothing readable means no limit.
func findCgroupLimit(fsys iofs.FS) cgroupLimit {
	var found cgroupLimit
	procData, err := iofs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return found
	}
	v1Path, v2Path := parseProcCgroup(procData)
	mounts := defaultCgroupMounts
	if info, err := iofs.ReadFile(fsys, "proc/self/mountinfo"); err == nil {
		mounts = parseCgroupMounts(info)
	}
	for _, v2 := range []bool{false, true} {
		cgPath, file := v1Path, "memory.limit_in_bytes"
		if v2 {
			cgPath, file = v2Path, "memory.max"
		}
		if cgPath == "" {
			continue
		}
		dir, top, ok := cgroupDir(mounts, cgPath, v2)
		if !ok {
			continue
		}
		if found.Dir == "" {
			found.Dir = dir
		}
		for d := dir; ; d = path.Dir(d) {
			name := path.Join(d, file)
			if b, err := iofs.ReadFile(fsys, strings.TrimPrefix(name, "/")); err == nil {
				if n, ok := parseLimit(b); ok && (found.Bytes == 0 || n < found.Bytes) {
					found.Bytes, found.File, found.Dir = n, name, dir
				}
			}
			if d == top {
				break
			}
		}
	}
	return found
}

// parseProcCgroup reads /proc/self/cgroup ("ID:CONTROLLERS:PATH" lines)
// and returns the process's cgroup in the v1 hierarchy that has the
// memory controller and in the v2 hierarchy ("0::PATH"); "" for none.
func parseProcCgroup(data []byte) (v1, v2 string) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		id, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		controllers, p, ok := strings.Cut(rest, ":") // a path may hold ':'
		if !ok || !strings.HasPrefix(p, "/") {
			continue
		}
		switch {
		case id == "0" && controllers == "":
			v2 = p
		case hasItem(controllers, "memory"):
			v1 = p
		}
	}
	return v1, v2
}

// parseCgroupMounts returns the cgroup2 mounts and the v1 cgroup mounts
// of the memory controller in /proc/self/mountinfo.
func parseCgroupMounts(data []byte) []cgroupMount {
	var out []cgroupMount
	entries, _ := mounttab.Parse(bytes.NewReader(data)) // what was read before an error counts
	for _, e := range entries {
		if !path.IsAbs(e.Root) || !path.IsAbs(e.Point) {
			continue
		}
		m := cgroupMount{Root: path.Clean(e.Root), Mountpoint: path.Clean(e.Point)}
		switch {
		case e.FSType == "cgroup2":
			m.V2 = true
		case e.FSType == "cgroup" && hasItem(e.Super, "memory"):
		default:
			continue
		}
		out = append(out, m)
	}
	return out
}

// cgroupDir returns the folder of cgroup cgPath under a mount of its
// hierarchy, and that mount's mountpoint, where the walk up stops. Of the
// mounts whose root holds cgPath, the one with the deepest root is used;
// when none does (a cgroup namespace can show a path outside the mounted
// root) the search starts at the first mount's mountpoint, the cgroup a
// container sees as its own.
func cgroupDir(mounts []cgroupMount, cgPath string, v2 bool) (dir, top string, ok bool) {
	cgPath = path.Clean(cgPath)
	var best *cgroupMount
	var first *cgroupMount
	for i := range mounts {
		m := &mounts[i]
		if m.V2 != v2 {
			continue
		}
		if first == nil {
			first = m
		}
		if within(cgPath, m.Root) && (best == nil || len(m.Root) > len(best.Root)) {
			best = m
		}
	}
	switch {
	case best != nil:
		rel := strings.TrimPrefix(cgPath, best.Root)
		dir = path.Join(best.Mountpoint, rel)
		if !within(dir, best.Mountpoint) {
			return best.Mountpoint, best.Mountpoint, true
		}
		return dir, best.Mountpoint, true
	case first != nil:
		return first.Mountpoint, first.Mountpoint, true
	}
	return "", "", false
}

// within reports whether clean absolute path p is dir or lies under it.
func within(p, dir string) bool {
	return dir == "/" || p == dir || strings.HasPrefix(p, dir+"/")
}

// parseLimit parses memory.limit_in_bytes or memory.max: a byte count, or
// "max" (v2) or a huge number (v1) for no limit. ok is false for no limit
// and for anything that is not a positive count.
func parseLimit(b []byte) (int64, bool) {
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= noLimit {
		return 0, false
	}
	return n, true
}

// hasItem reports whether comma-separated list holds item.
func hasItem(list, item string) bool {
	for _, s := range strings.Split(list, ",") {
		if s == item {
			return true
		}
	}
	return false
}

// Sizing from a limit L.
const (
	// goLimitShare of L is Go's memory limit: the rest of what the cgroup
	// charges is not Go's heap — the binary's text and the index file
	// mapped in, the page cache of the cache files (reclaimable, but
	// counted), and the kernel's socket and FUSE buffers — and the GC
	// must work harder well before the kernel starts reclaiming and
	// then killing.
	goLimitNum, goLimitDen = 3, 4
	// bytesPerFetch of L buys one GET in flight. Each holds a 1 MiB
	// block buffer and an HTTP connection's buffers, which at GOGC=100
	// the heap lets double: about 2 MiB each (measured: 32 GETs in
	// flight take the daemon to 96 MiB, 16 to 62 MiB). One eighth of the
	// limit goes to them.
	bytesPerFetch = 16 << 20
	// minFetches is the floor: one GET for a reader and a few for a
	// prefetch job, which the gate serves after readers.
	minFetches = 4
)

// memPlan is what the daemon sized from the memory limit; status shows it
// as it is.
type memPlan = api.Memory

// planMemory sizes cfg's buffers in flight to limit, except those whose
// flags were given (set), and decides Go's memory limit: current is the
// one in force (math.MaxInt64 for none), goMemLimitEnv $GOMEMLIMIT, which
// wins over the cgroup when set.
func planMemory(limit cgroupLimit, cfg mountConfig, set map[string]bool, goMemLimitEnv string, current int64) memPlan {
	p := memPlan{
		CgroupLimit: limit.Bytes, CgroupLimitFile: limit.File,
		MaxFetches: cfg.MaxFetches, MaxFetchesFrom: "default",
		PrefetchObjects: cfg.PrefetchObjects, PrefetchObjectsFrom: "default",
	}
	if set["max-fetches"] {
		p.MaxFetchesFrom = "flag"
	}
	if set["prefetch-objects"] {
		p.PrefetchObjectsFrom = "flag"
	}
	switch {
	case goMemLimitEnv != "":
		if current < math.MaxInt64 {
			p.GoMemoryLimit, p.GoMemoryLimitFrom = current, "GOMEMLIMIT"
		}
	case limit.Bytes > 0:
		p.GoMemoryLimit, p.GoMemoryLimitFrom = limit.Bytes/goLimitDen*goLimitNum, "cgroup"
	}
	if limit.Bytes <= 0 {
		return p
	}
	fetches := int(max(minFetches, min(limit.Bytes/bytesPerFetch, 1<<20)))
	if !set["max-fetches"] && fetches < p.MaxFetches {
		p.MaxFetches, p.MaxFetchesFrom = fetches, "cgroup"
	}
	// Objects in flight beyond the GETs help only small files (whose
	// syncs and index commits overlap the others' GETs); in a container
	// with a limit, keep each object's open file and queued parts to one
	// per GET.
	if !set["prefetch-objects"] && fetches < p.PrefetchObjects {
		p.PrefetchObjects, p.PrefetchObjectsFrom = fetches, "cgroup"
	}
	return p
}

// sizeToMemory finds the cgroup memory limit, sets Go's memory limit from
// it unless $GOMEMLIMIT is set, sizes cfg's buffers in flight, logs what it
// did and returns cfg with the plan in cfg.Memory. The daemon calls it once,
// before anything is started.
func sizeToMemory(cfg mountConfig, log *slog.Logger) mountConfig {
	limit := findCgroupLimit(os.DirFS("/"))
	p := planMemory(limit, cfg, cfg.setFlags, os.Getenv("GOMEMLIMIT"), debug.SetMemoryLimit(-1))
	if p.GoMemoryLimitFrom == "cgroup" {
		debug.SetMemoryLimit(p.GoMemoryLimit)
	}
	cfg.MaxFetches, cfg.PrefetchObjects, cfg.Memory = p.MaxFetches, p.PrefetchObjects, p
	if limit.Bytes == 0 {
		log.Info("no cgroup memory limit found; buffers sized by flags and defaults",
			"cgroup", limit.Dir, "go_memory_limit", p.GoMemoryLimit, "max_fetches", p.MaxFetches,
			"prefetch_objects", p.PrefetchObjects)
		return cfg
	}
	log.Info("cgroup memory limit found; daemon sized to it",
		"limit", humanBytes(limit.Bytes), "file", limit.File,
		"go_memory_limit", humanBytes(p.GoMemoryLimit), "go_memory_limit_from", p.GoMemoryLimitFrom,
		"max_fetches", p.MaxFetches, "max_fetches_from", p.MaxFetchesFrom,
		"prefetch_objects", p.PrefetchObjects, "prefetch_objects_from", p.PrefetchObjectsFrom)
	if limit.Bytes < minMemory {
		log.Warn("cgroup memory limit is below what the daemon needs; it may be killed",
			"limit", humanBytes(limit.Bytes), "needs", humanBytes(minMemory))
	}
	return cfg
}

// minMemory is about the least the daemon runs in with minFetches GETs in
// flight (measured: 34 MiB at its peak), with room for the page cache.
const minMemory = 48 << 20

// printMemory writes status's memory line.
func printMemory(w io.Writer, p api.Memory) {
	from := map[string]string{"cgroup": "sized to the limit", "flag": "as set", "default": "default"}
	buffers := fmt.Sprintf("%d GETs in flight (%s), %d objects per prefetch job (%s)",
		p.MaxFetches, from[p.MaxFetchesFrom], p.PrefetchObjects, from[p.PrefetchObjectsFrom])
	cg := "no cgroup memory limit"
	if p.CgroupLimit > 0 {
		cg = fmt.Sprintf("cgroup limit %s (%s)", humanBytes(p.CgroupLimit), p.CgroupLimitFile)
	}
	goLimit := ""
	if p.GoMemoryLimit > 0 {
		goLimit = fmt.Sprintf("; Go memory limit %s (from %s)", humanBytes(p.GoMemoryLimit), p.GoMemoryLimitFrom)
	}
	fmt.Fprintf(w, "memory\t%s%s; %s\n", cg, goLimit, buffers)
}
