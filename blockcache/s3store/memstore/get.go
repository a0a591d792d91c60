package memstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"s3cachefs/index"
)

// GetRange returns a reader for bytes [off, off+n) of key, with the
// contract of s3store.Store.GetRange: another ETag than etag (unless etag
// is "") or a range past the end wraps index.ErrStale, a missing key
// io/fs.ErrNotExist, and a body that ends early io.ErrUnexpectedEOF.
func (s *Store) GetRange(ctx context.Context, key, etag string, off, n int64) (io.ReadCloser, error) {
	what := fmt.Sprintf("get %s bytes [%d,%d)", key, off, off+n)
	if off < 0 || n < 0 {
		return nil, fmt.Errorf("%s: invalid range", what)
	}
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	s.gets.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	short := false
	if err := s.injected(OpGet, key); errors.Is(err, ErrShortBody) {
		short = true
	} else if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	data, err := s.version(key, etag)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if off+n > int64(len(data)) {
		return nil, fmt.Errorf("%s: %w: object has %d bytes", what, index.ErrStale, len(data))
	}
	body := data[off : off+n]
	if short {
		body = body[:n/2]
	}
	return &reader{s: s, key: key, what: what, data: body, left: n}, nil
}

// version returns the data of key if its ETag is etag (or etag is "").
func (s *Store) version(key, etag string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.noBucket {
		return nil, ErrNoBucket
	}
	o, ok := s.objects[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	if etag != "" && o.meta.ETag != etag {
		return nil, fmt.Errorf("%w: ETag is %q, want %q", index.ErrStale, o.meta.ETag, etag)
	}
	return o.data, nil
}

// reader serves a range. data may be shorter than left when the body was
// cut short on purpose.
type reader struct {
	s    *Store
	key  string
	what string
	data []byte
	left int64 // bytes owed to the caller
}

// Read implements io.Reader.
func (r *reader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if err := r.s.injected(OpRead, r.key); err != nil {
		return 0, fmt.Errorf("%s: %w", r.what, err)
	}
	if len(r.data) == 0 {
		return 0, fmt.Errorf("%s: body ended %d bytes early: %w", r.what, r.left, io.ErrUnexpectedEOF)
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	r.left -= int64(n)
	r.s.bytesRead.Add(int64(n))
	return n, nil
}

// Close implements io.Closer.
func (r *reader) Close() error { return nil }
