package test

import (
	"testing"
)

// TestDamageWhileMounted changes the bytes of a cache file while the mount
// serves it, after the file was read (and so checked) — a stray script, a
// bad cp — and checks that the next reads return S3's bytes, in both read
// paths: through the daemon, which checks each block on every read, and
// passthrough, where the next open finds the cache file's stamp moved and
// checks it again before handing it to the kernel.
func TestDamageWhileMounted(t *testing.T) {
	for _, mode := range []struct {
		name  string
		flags []string
	}{
		{"daemon", []string{"--passthrough=false"}},
		{"passthrough", nil},
	} {
		t.Run(mode.name, func(t *testing.T) {
			e := newEnv(t)
			e.uploadDataset(t)
			files := sourceFiles(t)
			m := e.mount(t, mode.flags...)
			if mode.name == "passthrough" && !passthroughExpected(t) {
				t.Skip("no FUSE passthrough on this machine: the daemon case covers the read path")
			}
			name := npzNames(files, "dev")[0]
			one := map[string][]byte{name: files[name]}
			readAll(t, m.dir, one) // fetched, then complete
			e.waitNoOpenFiles(t, m)
			readAll(t, m.dir, one) // checked, and handed out in passthrough
			e.waitNoOpenFiles(t, m)
			if s := e.status(t, m); mode.name == "passthrough" && s.PassthroughOpens == 0 {
				t.Fatalf("no passthrough open of the complete file (%s)", s.PassthroughOff)
			}
			damageCacheFiles(t, m.cache, 1<<20+4096) // the only cached object
			// Kernel caches of the mount's files go; the damaged pages of
			// the cache file stay (dirty pages are not dropped).
			dropKernelCaches(t)
			e.proxy.Reset()
			readAll(t, m.dir, one)
			readAll(t, m.dir, one)
			s := e.status(t, m)
			if s.CorruptBlocks == 0 || e.proxy.Counts().GetObject == 0 {
				t.Errorf("after damage: %d damaged blocks found, %d GETs; want the damage found and refetched",
					s.CorruptBlocks, e.proxy.Counts().GetObject)
			}
		})
	}
}
