package blockcache

// What the external tests (package blockcache_test, which may import
// blockcache/prefetch) need of the package's insides.

// Sizes and helpers of the package's own tests.
const (
	TestBlock = testBlock
	TestPart  = testPart
)

// WaitFetches waits for every fetch in flight, read-ahead included.
func (c *Cache) WaitFetches() { c.wg.Wait() }

// DiskUsed sums the disk usage of the cache files under dir, as du does.
func DiskUsed(dir string) int64 { return (&fixture{dir: dir}).diskUsed() }
