package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"s3cachefs/index"
)

// GetRange returns a reader for bytes [off, off+n) of key, pinned to etag.
//
// The request carries If-Match with the quoted etag (none when etag is "",
// for objects listed without one), and the response is checked as well:
// its ETag, Content-Range and Content-Length must describe exactly the
// version and range asked for. A 412, a 416 or any mismatch gives an error
// wrapping index.ErrStale; a missing key one wrapping io/fs.ErrNotExist; a
// missing bucket one wrapping ErrNoBucket. The caller closes the reader.
// The reader returns io.EOF only after exactly n bytes; a body that ends
// sooner yields an error wrapping io.ErrUnexpectedEOF. n == 0 returns an
// empty reader without a request. A request that failed is retried
// (Options.MaxAttempts) before GetRange returns its error; no headers, or
// a body silent, for Options.Timeout gives one wrapping ErrTimeout.
func (s *Store) GetRange(ctx context.Context, key, etag string, off, n int64) (io.ReadCloser, error) {
	what := fmt.Sprintf("s3://%s/%s bytes [%d,%d)", s.bucket, key, off, off+n)
	if off < 0 || n < 0 {
		return nil, fmt.Errorf("get %s: invalid range", what)
	}
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	in := &s3.GetObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(key),
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)),
	}
	if etag != "" {
		in.IfMatch = aws.String(`"` + etag + `"`)
	}
	s.gets.Add(1)
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", what, translate(asTimeout(ctx, err), opGet))
	}
	if err := checkResponse(out, etag, off, n); err != nil {
		out.Body.Close()
		return nil, fmt.Errorf("get %s: %w", what, err)
	}
	return &rangeBody{ctx: ctx, body: out.Body, left: n, what: what, counter: &s.bytesRead}, nil
}

// checkResponse verifies that out holds bytes [off, off+n) of the version
// etag. If-Match should already guarantee it; this guards against servers
// and proxies that ignore the header or the Range.
func checkResponse(out *s3.GetObjectOutput, etag string, off, n int64) error {
	if got := unquote(aws.ToString(out.ETag)); etag != "" && got != etag {
		return fmt.Errorf("%w: response has ETag %q, want %q", index.ErrStale, got, etag)
	}
	if cl := out.ContentLength; cl != nil && *cl != n {
		return fmt.Errorf("%w: response has %d bytes, want %d", index.ErrStale, *cl, n)
	}
	cr := aws.ToString(out.ContentRange)
	if cr == "" {
		// A plain 200 is the whole object; that is only the range asked
		// for when it starts at 0 and its length matched above.
		if off == 0 && out.ContentLength != nil {
			return nil
		}
		return fmt.Errorf("%w: response has no Content-Range", index.ErrStale)
	}
	first, last, err := parseContentRange(cr)
	if err != nil {
		return err
	}
	if first != off || last != off+n-1 {
		return fmt.Errorf("%w: response has range %q, want bytes %d-%d", index.ErrStale, cr, off, off+n-1)
	}
	return nil
}

// parseContentRange reads "bytes FIRST-LAST/TOTAL" (TOTAL may be "*").
func parseContentRange(cr string) (first, last int64, err error) {
	spec, ok := strings.CutPrefix(cr, "bytes ")
	if ok {
		spec, _, ok = strings.Cut(spec, "/")
	}
	var a, b string
	if ok {
		a, b, ok = strings.Cut(spec, "-")
	}
	if ok {
		first, err = strconv.ParseInt(a, 10, 64)
		if err == nil {
			last, err = strconv.ParseInt(b, 10, 64)
		}
	}
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("malformed Content-Range %q", cr)
	}
	return first, last, nil
}

// rangeBody yields exactly the bytes a GetRange asked for: it stops at the
// end of the range and turns an early end of the body into an error, so a
// truncated response can never pass as a short file.
type rangeBody struct {
	ctx     context.Context // the request's, to tell its end from a stall
	body    io.ReadCloser
	left    int64 // bytes still owed
	what    string
	counter *atomic.Int64 // the Store's BytesRead
}

// Read implements io.Reader.
func (b *rangeBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.body.Read(p)
	b.left -= int64(n)
	b.counter.Add(int64(n))
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF) && b.left == 0:
		return n, io.EOF
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return n, fmt.Errorf("read %s: body ended %d bytes early: %w", b.what, b.left, io.ErrUnexpectedEOF)
	default:
		return n, fmt.Errorf("read %s: %w", b.what, asTimeout(b.ctx, err))
	}
}

// Close implements io.Closer.
func (b *rangeBody) Close() error { return b.body.Close() }
