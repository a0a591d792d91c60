package test

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestOwnerOnlyModes checks the promise that the control socket and the
// cache are readable by their owner only.
func TestOwnerOnlyModes(t *testing.T) {
	e := newEnv(t)
	e.uploadDataset(t)
	files := sourceFiles(t)
	m := e.mount(t)
	name := npzNames(files, "train")[0]
	readAll(t, m.dir, map[string][]byte{name: files[name]})

	socks, _ := filepath.Glob(filepath.Join(e.runtimeDir, "*.sock"))
	if len(socks) != 1 {
		t.Fatalf("want one control socket in %s, got %v", e.runtimeDir, socks)
	}
	want := map[string]fs.FileMode{socks[0]: 0o600}
	err := filepath.WalkDir(m.cache, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != m.cache { // t.TempDir made the root; s3cachefs made the rest
				want[p] = 0o700
			}
		} else {
			want[p] = 0o600
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 4 { // socket, index, log, an objects folder and file
		t.Fatalf("too little to check: %v", want)
	}
	for p, mode := range want {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != mode {
			t.Errorf("%s has mode %o, want %o", p, got, mode)
		}
	}
}
