package blockcache

import (
	"context"
	"io"
)

// Source is what the cache needs from the object store: ranged reads of one
// object version.
//
// GetRange returns a reader for bytes [off, off+n) of key, pinned to etag:
// if S3 holds another version the error wraps index.ErrStale; if the key is
// gone it wraps io/fs.ErrNotExist. The caller closes the reader. A body that
// ends before n bytes must yield an error, not io.EOF. An empty etag means
// the object has none and the read is not pinned. GetRange may be called
// concurrently.
//
// GetRange retries failed requests itself (5xx, throttling, resets,
// timeouts before the body): an error from it is final, and the cache does
// not try again. A body that breaks off midway is the cache's to retry: it
// asks again for the blocks still missing.
type Source interface {
	GetRange(ctx context.Context, key, etag string, off, n int64) (io.ReadCloser, error)
}
