package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"s3cachefs/index"
)

// MaxPutSize is the largest body one PutObject takes (Put's limit); Create
// sends a larger one as a multipart upload, up to MaxCreateSize (S3's
// largest object).
const (
	MaxPutSize    = 5 << 30
	MaxCreateSize = 5 << 40
)

// defaultPartSize is the part size of Create's multipart uploads, unless
// an object needs larger parts to fit in maxParts.
const (
	defaultPartSize = 64 << 20
	maxParts        = 10000
)

// Create stores body (exactly size bytes) under key only if no object is
// there: a PutObject with If-None-Match: *. An object already there, or
// another create of the key under way (S3's 409 ConditionalRequestConflict),
// gives an error wrapping io/fs.ErrExist and stores nothing. body is read
// from its start, and again for each retry. A create whose first attempt
// succeeded but whose answer was lost may be retried and report
// io/fs.ErrExist for the object it stored itself.
func (s *Store) Create(ctx context.Context, key string, body io.ReadSeeker, size int64) error {
	if size > s.multipartAbove {
		at, ok := body.(io.ReaderAt)
		if !ok {
			return fmt.Errorf("create s3://%s/%s: %d bytes need a multipart upload, from a body that is an io.ReaderAt", s.bucket, key, size)
		}
		return s.createMultipart(ctx, key, at, size)
	}
	return s.put(ctx, key, body, size, opCreate)
}

// createMultipart is Create of a body too large for one PutObject: a
// multipart upload whose completion carries If-None-Match: *, so that the
// object appears whole, and only if none is there. An upload that does
// not complete is aborted.
func (s *Store) createMultipart(ctx context.Context, key string, body io.ReaderAt, size int64) (err error) {
	what := fmt.Sprintf("s3://%s/%s", s.bucket, key)
	if size > MaxCreateSize {
		return fmt.Errorf("create %s: %d bytes: S3 objects take at most %d (5 TiB)", what, size, int64(MaxCreateSize))
	}
	partSize := max(s.partSize, ((size+maxParts-1)/maxParts+(1<<20)-1)>>20<<20)
	s.puts.Add(1)
	up, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return fmt.Errorf("create %s: start multipart upload: %w", what, translate(asTimeout(ctx, err), opPut))
	}
	defer func() {
		if err == nil {
			return
		}
		// After the caller's context may have ended.
		actx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, aerr := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: up.UploadId,
		}); aerr != nil {
			s.log.Debug("abort multipart upload", "key", key, "err", aerr)
		}
	}()
	unsigned := s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
	var parts []types.CompletedPart
	for n, off := int32(1), int64(0); off < size; n, off = n+1, off+partSize {
		length := min(partSize, size-off)
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: up.UploadId,
			PartNumber: aws.Int32(n), Body: io.NewSectionReader(body, off, length), ContentLength: aws.Int64(length),
		}, unsigned)
		if err != nil {
			return fmt.Errorf("create %s: part %d: %w", what, n, translate(asTimeout(ctx, err), opPut))
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n)})
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		IfNoneMatch:     aws.String("*"),
	})
	if err != nil {
		return fmt.Errorf("create %s: complete multipart upload: %w", what, translate(asTimeout(ctx, err), opCreate))
	}
	return nil
}

// Put stores body (exactly size bytes) under key, replacing whatever is
// there.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, size int64) error {
	return s.put(ctx, key, body, size, opPut)
}

func (s *Store) put(ctx context.Context, key string, body io.ReadSeeker, size int64, op operation) error {
	what := fmt.Sprintf("s3://%s/%s", s.bucket, key)
	if size < 0 || size > MaxPutSize {
		return fmt.Errorf("put %s: %d bytes: one PutObject takes at most %d (5 GiB)", what, size, int64(MaxPutSize))
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(key),
		Body:          body,
		ContentLength: aws.Int64(size),
	}
	if op == opCreate {
		in.IfNoneMatch = aws.String("*")
	}
	s.puts.Add(1)
	// No SHA-256 of the body for the signature (over plain HTTP the SDK
	// would hash every byte once more): what the tier holds is proven by
	// its readers against S3's ETag, whoever sent it. The body's CRC
	// checksum, which the server checks, stays.
	unsigned := s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
	if _, err := s.client.PutObject(ctx, in, unsigned); err != nil {
		return fmt.Errorf("put %s: %w", what, translate(asTimeout(ctx, err), op))
	}
	return nil
}

// Head returns key's size, ETag (unquoted) and last modification time. A
// missing key (or bucket) gives an error wrapping io/fs.ErrNotExist.
func (s *Store) Head(ctx context.Context, key string) (index.Object, error) {
	s.heads.Add(1)
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return index.Object{}, fmt.Errorf("head s3://%s/%s: %w", s.bucket, key, translate(asTimeout(ctx, err), opHead))
	}
	return index.Object{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         unquote(aws.ToString(out.ETag)),
		LastModified: aws.ToTime(out.LastModified).UTC(),
	}, nil
}

// Delete deletes key; with etag not "", only while key holds that version
// (If-Match): another version there gives an error wrapping
// index.ErrStale. A server that ignores If-Match on deletes deletes
// whatever is there. A missing key is not an error.
func (s *Store) Delete(ctx context.Context, key, etag string) error {
	in := &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}
	if etag != "" {
		in.IfMatch = aws.String(`"` + etag + `"`)
	}
	s.deletes.Add(1)
	_, err := s.client.DeleteObject(ctx, in)
	if err = translate(asTimeout(ctx, err), opDelete); err != nil && !(errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrNoBucket)) {
		return fmt.Errorf("delete s3://%s/%s: %w", s.bucket, key, err)
	}
	return nil
}
