package main

import (
	"math"
	"path"
	"strings"
	"testing"
	"testing/fstest"
)

// Lines of /proc/self/mountinfo as machines show them.
const (
	// Debian 12 with cgroup v1 (this test machine): the memory
	// controller at /sys/fs/cgroup/memory, and an empty cgroup2 beside it.
	hybridMountinfo = `22 27 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 22 0:25 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
34 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
37 30 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
`
	// A current distribution or a Kubernetes node: cgroup v2 only.
	v2Mountinfo = `25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	// A Docker container on a v1 host without a cgroup namespace: its own
	// cgroup is bind-mounted as the root of the hierarchy.
	dockerV1Mountinfo = `700 600 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:17 - cgroup cgroup rw,memory
`
)

const mib = 1 << 20

func TestFindCgroupLimit(t *testing.T) {
	v1 := "/sys/fs/cgroup/memory/"
	for _, tc := range []struct {
		name      string
		files     map[string]string
		wantBytes int64
		wantFile  string
	}{{
		name: "v1, the limit on the process's own cgroup",
		files: map[string]string{
			"proc/self/cgroup":                  "9:name=systemd:/\n4:memory:/test/x\n0::/\n",
			"proc/self/mountinfo":               hybridMountinfo,
			v1 + "memory.limit_in_bytes":        "9223372036854771712\n",
			v1 + "test/memory.limit_in_bytes":   "9223372036854771712\n",
			v1 + "test/x/memory.limit_in_bytes": "201326592\n",
		},
		wantBytes: 192 * mib, wantFile: v1 + "test/x/memory.limit_in_bytes",
	}, {
		name: "v1, a sub-cgroup of a limited one: the parent's limit binds",
		files: map[string]string{
			"proc/self/cgroup":                       "4:memory:/limited/sub\n",
			"proc/self/mountinfo":                    hybridMountinfo,
			v1 + "limited/memory.limit_in_bytes":     "201326592\n",
			v1 + "limited/sub/memory.limit_in_bytes": "9223372036854771712\n",
		},
		wantBytes: 192 * mib, wantFile: v1 + "limited/memory.limit_in_bytes",
	}, {
		name: "v1, the smallest on the way up wins",
		files: map[string]string{
			"proc/self/cgroup":                 "4:cpu,memory:/a/b/c\n",
			"proc/self/mountinfo":              hybridMountinfo,
			v1 + "a/memory.limit_in_bytes":     "104857600",
			v1 + "a/b/memory.limit_in_bytes":   "209715200",
			v1 + "a/b/c/memory.limit_in_bytes": "314572800",
		},
		wantBytes: 100 * mib, wantFile: v1 + "a/memory.limit_in_bytes",
	}, {
		name: "v1, unreadable and garbled files are passed over",
		files: map[string]string{
			"proc/self/cgroup":                   "4:memory:/a/b/c/d\n",
			"proc/self/mountinfo":                hybridMountinfo,
			v1 + "a/b/c/d/memory.limit_in_bytes": "garbage",
			v1 + "a/b/c/memory.limit_in_bytes":   "-1",
			v1 + "a/b/memory.limit_in_bytes":     "0",
			v1 + "a/memory.limit_in_bytes":       " 67108864 \n",
		},
		wantBytes: 64 * mib, wantFile: v1 + "a/memory.limit_in_bytes",
	}, {
		name: "v1, no limit anywhere",
		files: map[string]string{
			"proc/self/cgroup":             "4:memory:/a\n",
			"proc/self/mountinfo":          hybridMountinfo,
			v1 + "memory.limit_in_bytes":   "9223372036854771712",
			v1 + "a/memory.limit_in_bytes": "9223372036854771712",
		},
	}, {
		name: "v1 in a container: its own cgroup is the mount's root",
		files: map[string]string{
			"proc/self/cgroup":           "4:memory:/docker/abc\n",
			"proc/self/mountinfo":        dockerV1Mountinfo,
			v1 + "memory.limit_in_bytes": "536870912",
		},
		wantBytes: 512 * mib, wantFile: v1 + "memory.limit_in_bytes",
	}, {
		name: "v1 in a container, moved into a sub-cgroup of its own",
		files: map[string]string{
			"proc/self/cgroup":                  "4:memory:/docker/abc/worker\n",
			"proc/self/mountinfo":               dockerV1Mountinfo,
			v1 + "memory.limit_in_bytes":        "536870912",
			v1 + "worker/memory.limit_in_bytes": "268435456",
		},
		wantBytes: 256 * mib, wantFile: v1 + "worker/memory.limit_in_bytes",
	}, {
		name: "a cgroup path outside the mounted root starts at the mountpoint",
		files: map[string]string{
			"proc/self/cgroup":           "4:memory:/../../elsewhere\n",
			"proc/self/mountinfo":        dockerV1Mountinfo,
			v1 + "memory.limit_in_bytes": "536870912",
			// Must not be read: it lies above the mountpoint.
			"sys/fs/cgroup/elsewhere/memory.limit_in_bytes": "1048576",
		},
		wantBytes: 512 * mib, wantFile: v1 + "memory.limit_in_bytes",
	}, {
		name: "v2, the limit on a parent",
		files: map[string]string{
			"proc/self/cgroup":                           "0::/kubepods/pod1/ctr\n",
			"proc/self/mountinfo":                        v2Mountinfo,
			"sys/fs/cgroup/kubepods/pod1/ctr/memory.max": "max\n",
			"sys/fs/cgroup/kubepods/pod1/memory.max":     "201326592\n",
			"sys/fs/cgroup/kubepods/memory.max":          "max\n",
		},
		wantBytes: 192 * mib, wantFile: "/sys/fs/cgroup/kubepods/pod1/memory.max",
	}, {
		name: "v2, max everywhere: no limit",
		files: map[string]string{
			"proc/self/cgroup":                            "0::/user.slice/x.scope\n",
			"proc/self/mountinfo":                         v2Mountinfo,
			"sys/fs/cgroup/user.slice/x.scope/memory.max": "max\n",
			"sys/fs/cgroup/user.slice/memory.max":         "max\n",
		},
	}, {
		name: "v2 in a container with a cgroup namespace: 0::/",
		files: map[string]string{
			"proc/self/cgroup":               "0::/\n",
			"proc/self/mountinfo":            v2Mountinfo,
			"sys/fs/cgroup/memory.max":       "1073741824\n",
			"sys/fs/cgroup/memory.max.extra": "1",
		},
		wantBytes: 1024 * mib, wantFile: "/sys/fs/cgroup/memory.max",
	}, {
		name: "hybrid: v2 has no memory controller, v1 has the limit",
		files: map[string]string{
			"proc/self/cgroup":                     "4:memory:/a\n0::/a\n",
			"proc/self/mountinfo":                  hybridMountinfo,
			v1 + "a/memory.limit_in_bytes":         "201326592",
			"sys/fs/cgroup/unified/a/cgroup.procs": "",
		},
		wantBytes: 192 * mib, wantFile: v1 + "a/memory.limit_in_bytes",
	}, {
		name: "both hierarchies limit: the smaller wins",
		files: map[string]string{
			"proc/self/cgroup":                     "4:memory:/a\n0::/a\n",
			"proc/self/mountinfo":                  hybridMountinfo,
			v1 + "a/memory.limit_in_bytes":         "201326592",
			"sys/fs/cgroup/unified/a/memory.max":   "100663296",
			"sys/fs/cgroup/unified/a/memory.extra": "",
		},
		wantBytes: 96 * mib, wantFile: "/sys/fs/cgroup/unified/a/memory.max",
	}, {
		name: "no mountinfo: the usual places",
		files: map[string]string{
			"proc/self/cgroup":             "0::/a\n",
			"sys/fs/cgroup/a/memory.max":   "201326592",
			"sys/fs/cgroup/a/memory.extra": "",
		},
		wantBytes: 192 * mib, wantFile: "/sys/fs/cgroup/a/memory.max",
	}, {
		name: "a mountpoint with a space, escaped in mountinfo",
		files: map[string]string{
			"proc/self/cgroup":     "0::/a\n",
			"proc/self/mountinfo":  `26 25 0:24 / /cg\040root rw - cgroup2 cgroup2 rw` + "\n",
			"cg root/a/memory.max": "201326592",
		},
		wantBytes: 192 * mib, wantFile: "/cg root/a/memory.max",
	}, {
		name: "a cgroup path with a colon",
		files: map[string]string{
			"proc/self/cgroup":             "0::/a:b\n",
			"proc/self/mountinfo":          v2Mountinfo,
			"sys/fs/cgroup/a:b/memory.max": "201326592",
		},
		wantBytes: 192 * mib, wantFile: "/sys/fs/cgroup/a:b/memory.max",
	}, {
		name:  "no /proc/self/cgroup (not Linux, or no /proc)",
		files: map[string]string{"sys/fs/cgroup/memory.max": "201326592"},
	}, {
		name: "no memory hierarchy mounted",
		files: map[string]string{
			"proc/self/cgroup":    "4:memory:/a\n",
			"proc/self/mountinfo": "34 30 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for name, data := range tc.files {
				fsys[strings.TrimPrefix(name, "/")] = &fstest.MapFile{Data: []byte(data)}
			}
			got := findCgroupLimit(fsys)
			if got.Bytes != tc.wantBytes || got.File != tc.wantFile {
				t.Errorf("found %d bytes in %q, want %d in %q", got.Bytes, got.File, tc.wantBytes, tc.wantFile)
			}
		})
	}
}

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]int64{
		"201326592\n": 192 * mib, "4096": 4096, " 1 ": 1,
		"max": 0, "max\n": 0, "9223372036854771712": 0, "9223372036854710272": 0, // v1's none, 4K and 64K pages
		"-1": 0, "0": 0, "": 0, "12k": 0, "1e9": 0, "99999999999999999999": 0, "0x100": 0,
	} {
		got, ok := parseLimit([]byte(in))
		if got != want || ok != (want > 0) {
			t.Errorf("parseLimit(%q) = %d, %v; want %d, %v", in, got, ok, want, want > 0)
		}
	}
}

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct{ in, v1, v2 string }{
		{"4:memory:/process_api/059467\n0::/\n", "/process_api/059467", "/"},
		{"12:cpu,memory,pids:/x\n", "/x", ""},
		{"0::/user.slice/a:b.scope", "", "/user.slice/a:b.scope"},
		{"4:memoryx:/no\n5:name=memory:/no\n", "", ""},
		{"garbage\n4:memory:relative\n::\n0:memory\n", "", ""},
		{"", "", ""},
	} {
		v1, v2 := parseProcCgroup([]byte(tc.in))
		if v1 != tc.v1 || v2 != tc.v2 {
			t.Errorf("parseProcCgroup(%q) = %q, %q; want %q, %q", tc.in, v1, v2, tc.v1, tc.v2)
		}
	}
}

// FuzzFindCgroupLimit feeds arbitrary /proc/self/cgroup, mountinfo and
// limit files: the search must not panic, must find only a limit that is a
// real positive count in a memory.max or memory.limit_in_bytes file, and
// must never read outside the mountpoints mountinfo names.
func FuzzFindCgroupLimit(f *testing.F) {
	f.Add("4:memory:/a/b\n0::/a\n", hybridMountinfo, "201326592", "max")
	f.Add("0::/../../x\n", v2Mountinfo, "max", "1048576")
	f.Add("4:memory:/docker/abc/../..\n", dockerV1Mountinfo, "-5", "0")
	f.Add("0::/a\n", `1 2 0:1 /a /m\134\040x rw - cgroup2 x rw`, "1", "2")
	f.Fuzz(func(t *testing.T, procCgroup, mountinfo, limitA, limitB string) {
		v1Path, v2Path := parseProcCgroup([]byte(procCgroup))
		mounts := parseCgroupMounts([]byte(mountinfo))
		fsys := fstest.MapFS{
			"proc/self/cgroup":    {Data: []byte(procCgroup)},
			"proc/self/mountinfo": {Data: []byte(mountinfo)},
		}
		// A limit in each cgroup folder on the walk up, and one just
		// above each mountpoint, which must never be found.
		for _, p := range []struct {
			cg string
			v2 bool
		}{{v1Path, false}, {v2Path, true}} {
			if p.cg == "" {
				continue
			}
			dir, top, ok := cgroupDir(mounts, p.cg, p.v2)
			if !ok {
				continue
			}
			if !within(dir, top) {
				t.Fatalf("cgroupDir(%q) = %q, outside its mountpoint %q", p.cg, dir, top)
			}
			file := "memory.limit_in_bytes"
			if p.v2 {
				file = "memory.max"
			}
			for d, i := dir, 0; ; d, i = path.Dir(d), i+1 {
				data := limitA
				if i%2 == 1 {
					data = limitB
				}
				fsys[strings.TrimPrefix(path.Join(d, file), "/")] = &fstest.MapFile{Data: []byte(data)}
				if d == top {
					break
				}
			}
			if top != "/" {
				fsys[strings.TrimPrefix(path.Join(path.Dir(top), file), "/")] = &fstest.MapFile{Data: []byte("1")}
			}
		}
		got := findCgroupLimit(fsys)
		if got.Bytes == 0 {
			if got.File != "" {
				t.Fatalf("no limit, but a file: %+v", got)
			}
			return
		}
		if got.Bytes < 0 || got.Bytes >= noLimit {
			t.Fatalf("limit %d out of range", got.Bytes)
		}
		want := []int64{}
		for _, s := range []string{limitA, limitB} {
			if n, ok := parseLimit([]byte(s)); ok {
				want = append(want, n)
			}
		}
		if len(want) == 0 || (got.Bytes != want[0] && got.Bytes != want[len(want)-1]) {
			t.Fatalf("found %d (%s), which no limit file on the walk held (%q, %q)", got.Bytes, got.File, limitA, limitB)
		}
		if path.Base(got.File) != "memory.max" && path.Base(got.File) != "memory.limit_in_bytes" {
			t.Fatalf("limit read from %q", got.File)
		}
	})
}

func TestPlanMemory(t *testing.T) {
	defaults := mountConfig{MaxFetches: 32, PrefetchObjects: 8}
	limit := func(n int64) cgroupLimit { return cgroupLimit{Bytes: n, File: "/cg/memory.max"} }
	none := int64(math.MaxInt64)
	for _, tc := range []struct {
		name    string
		limit   cgroupLimit
		cfg     mountConfig
		set     map[string]bool
		env     string
		current int64
		want    memPlan
	}{{
		name: "no limit: as today", cfg: defaults, current: none,
		want: memPlan{MaxFetches: 32, MaxFetchesFrom: "default", PrefetchObjects: 8, PrefetchObjectsFrom: "default"},
	}, {
		name: "192 MiB", limit: limit(192 * mib), cfg: defaults, current: none,
		want: memPlan{CgroupLimit: 192 * mib, CgroupLimitFile: "/cg/memory.max",
			GoMemoryLimit: 144 * mib, GoMemoryLimitFrom: "cgroup",
			MaxFetches: 12, MaxFetchesFrom: "cgroup", PrefetchObjects: 8, PrefetchObjectsFrom: "default"},
	}, {
		name: "64 MiB", limit: limit(64 * mib), cfg: defaults, current: none,
		want: memPlan{CgroupLimit: 64 * mib, CgroupLimitFile: "/cg/memory.max",
			GoMemoryLimit: 48 * mib, GoMemoryLimitFrom: "cgroup",
			MaxFetches: 4, MaxFetchesFrom: "cgroup", PrefetchObjects: 4, PrefetchObjectsFrom: "cgroup"},
	}, {
		name: "16 MiB: never below the floor", limit: limit(16 * mib), cfg: defaults, current: none,
		want: memPlan{CgroupLimit: 16 * mib, CgroupLimitFile: "/cg/memory.max",
			GoMemoryLimit: 12 * mib, GoMemoryLimitFrom: "cgroup",
			MaxFetches: 4, MaxFetchesFrom: "cgroup", PrefetchObjects: 4, PrefetchObjectsFrom: "cgroup"},
	}, {
		name: "4 GiB: buffers as by default", limit: limit(4 << 30), cfg: defaults, current: none,
		want: memPlan{CgroupLimit: 4 << 30, CgroupLimitFile: "/cg/memory.max",
			GoMemoryLimit: 3 << 30, GoMemoryLimitFrom: "cgroup",
			MaxFetches: 32, MaxFetchesFrom: "default", PrefetchObjects: 8, PrefetchObjectsFrom: "default"},
	}, {
		name: "explicit flags win", limit: limit(64 * mib), current: none,
		cfg: mountConfig{MaxFetches: 64, PrefetchObjects: 16}, set: map[string]bool{"max-fetches": true, "prefetch-objects": true},
		want: memPlan{CgroupLimit: 64 * mib, CgroupLimitFile: "/cg/memory.max",
			GoMemoryLimit: 48 * mib, GoMemoryLimitFrom: "cgroup",
			MaxFetches: 64, MaxFetchesFrom: "flag", PrefetchObjects: 16, PrefetchObjectsFrom: "flag"},
	}, {
		name: "a small flag is kept, the other is sized", limit: limit(64 * mib), current: none,
		cfg: mountConfig{MaxFetches: 2, PrefetchObjects: 8}, set: map[string]bool{"max-fetches": true},
		want: memPlan{CgroupLimit: 64 * mib, CgroupLimitFile: "/cg/memory.max",
			GoMemoryLimit: 48 * mib, GoMemoryLimitFrom: "cgroup",
			MaxFetches: 2, MaxFetchesFrom: "flag", PrefetchObjects: 4, PrefetchObjectsFrom: "cgroup"},
	}, {
		name: "GOMEMLIMIT wins over the cgroup", limit: limit(192 * mib), cfg: defaults,
		env: "100MiB", current: 100 * mib,
		want: memPlan{CgroupLimit: 192 * mib, CgroupLimitFile: "/cg/memory.max",
			GoMemoryLimit: 100 * mib, GoMemoryLimitFrom: "GOMEMLIMIT",
			MaxFetches: 12, MaxFetchesFrom: "cgroup", PrefetchObjects: 8, PrefetchObjectsFrom: "default"},
	}, {
		name: "GOMEMLIMIT=off wins too", limit: limit(192 * mib), cfg: defaults, env: "off", current: none,
		want: memPlan{CgroupLimit: 192 * mib, CgroupLimitFile: "/cg/memory.max",
			MaxFetches: 12, MaxFetchesFrom: "cgroup", PrefetchObjects: 8, PrefetchObjectsFrom: "default"},
	}, {
		name: "GOMEMLIMIT without a cgroup limit", cfg: defaults, env: "1GiB", current: 1 << 30,
		want: memPlan{GoMemoryLimit: 1 << 30, GoMemoryLimitFrom: "GOMEMLIMIT",
			MaxFetches: 32, MaxFetchesFrom: "default", PrefetchObjects: 8, PrefetchObjectsFrom: "default"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := planMemory(tc.limit, tc.cfg, tc.set, tc.env, tc.current)
			if got != tc.want {
				t.Errorf("planMemory:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestMountFlagsSeen: the flags given are known to the sizing, so that an
// explicit --max-fetches is never sized down.
func TestMountFlagsSeen(t *testing.T) {
	cfg, err := parseMountArgs([]string{"s3://bucket", t.TempDir(), "--cache-dir", t.TempDir(), "--max-fetches", "32"})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.setFlags["max-fetches"] || !cfg.setFlags["cache-dir"] || cfg.setFlags["prefetch-objects"] {
		t.Errorf("flags seen: %v; want max-fetches and cache-dir, not prefetch-objects", cfg.setFlags)
	}
	p := planMemory(cgroupLimit{Bytes: 64 * mib}, cfg, cfg.setFlags, "", math.MaxInt64)
	if p.MaxFetches != 32 || p.PrefetchObjects != 4 {
		t.Errorf("in 64 MiB: %d GETs and %d objects, want the flag's 32 and a sized 4", p.MaxFetches, p.PrefetchObjects)
	}
}

func TestPrintMemory(t *testing.T) {
	for _, tc := range []struct {
		p    memPlan
		want string
	}{{
		memPlan{MaxFetches: 32, MaxFetchesFrom: "default", PrefetchObjects: 8, PrefetchObjectsFrom: "default"},
		"memory\tno cgroup memory limit; 32 GETs in flight (default), 8 objects per prefetch job (default)\n",
	}, {
		memPlan{CgroupLimit: 192 * mib, CgroupLimitFile: "/cg/memory.max", GoMemoryLimit: 144 * mib, GoMemoryLimitFrom: "cgroup",
			MaxFetches: 12, MaxFetchesFrom: "cgroup", PrefetchObjects: 16, PrefetchObjectsFrom: "flag"},
		"memory\tcgroup limit 192.0 MiB (/cg/memory.max); Go memory limit 144.0 MiB (from cgroup); " +
			"12 GETs in flight (sized to the limit), 16 objects per prefetch job (as set)\n",
	}, {
		memPlan{GoMemoryLimit: 1 << 30, GoMemoryLimitFrom: "GOMEMLIMIT", MaxFetches: 32, MaxFetchesFrom: "default",
			PrefetchObjects: 8, PrefetchObjectsFrom: "default"},
		"memory\tno cgroup memory limit; Go memory limit 1.0 GiB (from GOMEMLIMIT); " +
			"32 GETs in flight (default), 8 objects per prefetch job (default)\n",
	}} {
		var b strings.Builder
		printMemory(&b, tc.p)
		if b.String() != tc.want {
			t.Errorf("printMemory(%+v) =\n%q\nwant\n%q", tc.p, b.String(), tc.want)
		}
	}
}
