package blockcache

import "path/filepath"

// FilesDir returns the folder under a cache dir (Options.Dir) that holds
// every cache file, Dir/objects/XX/ID (see doc.go), so that a command
// that deletes the cache, or a test that looks at it, need not spell the
// layout out.
func FilesDir(cacheDir string) string {
	return filepath.Join(cacheDir, "objects")
}
