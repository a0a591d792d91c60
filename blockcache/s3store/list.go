package s3store

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"s3cachefs/index"
)

// List returns one level of prefix (delimiter "/"), following every page.
// prefix is "" or ends in "/". Objects and prefixes come in S3's order
// (UTF-8 binary); a folder-marker key equal to prefix is returned as S3
// sends it. A missing bucket gives an error wrapping ErrNoBucket (and so
// io/fs.ErrNotExist).
func (s *Store) List(ctx context.Context, prefix string) (index.ListResult, error) {
	var res index.ListResult
	err := s.ListPages(ctx, prefix, func(page index.ListResult) error {
		res.Objects = append(res.Objects, page.Objects...)
		res.Prefixes = append(res.Prefixes, page.Prefixes...)
		return nil
	})
	if err != nil {
		return index.ListResult{}, err
	}
	return res, nil
}

// ListPages is List a page of ListObjectsV2 at a time (up to 1,000 keys
// and prefixes each): page gets each as it arrives (index.PageLister).
func (s *Store) ListPages(ctx context.Context, prefix string, page func(index.ListResult) error) error {
	pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket:    aws.String(s.bucket),
		Prefix:    aws.String(prefix),
		Delimiter: aws.String("/"),
		// Keys may hold bytes that XML 1.0 cannot carry; URL-encoded
		// they survive.
		EncodingType: types.EncodingTypeUrl,
	})
	var objects, prefixes int
	for pages.HasMorePages() {
		s.lists.Add(1)
		out, err := pages.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list s3://%s/%s: %w", s.bucket, prefix, translate(asTimeout(ctx, err), opList))
		}
		var res index.ListResult
		if err := appendPage(&res, out); err != nil {
			return fmt.Errorf("list s3://%s/%s: %w", s.bucket, prefix, err)
		}
		objects, prefixes = objects+len(res.Objects), prefixes+len(res.Prefixes)
		if err := page(res); err != nil {
			return err
		}
	}
	s.log.Debug("listed", "bucket", s.bucket, "prefix", prefix, "objects", objects, "prefixes", prefixes)
	return nil
}

// appendPage adds one ListObjectsV2 page to res, decoding names when the
// server says it URL-encoded them (servers that ignore EncodingType send
// them raw and say nothing).
func appendPage(res *index.ListResult, page *s3.ListObjectsV2Output) error {
	decode := func(s *string) (string, error) { return aws.ToString(s), nil }
	if page.EncodingType == types.EncodingTypeUrl {
		decode = func(s *string) (string, error) { return url.QueryUnescape(aws.ToString(s)) }
	}
	for _, o := range page.Contents {
		key, err := decode(o.Key)
		if err != nil {
			return fmt.Errorf("decode key %q: %w", aws.ToString(o.Key), err)
		}
		res.Objects = append(res.Objects, index.Object{
			Key:          key,
			Size:         aws.ToInt64(o.Size),
			ETag:         unquote(aws.ToString(o.ETag)),
			LastModified: aws.ToTime(o.LastModified).UTC(),
		})
	}
	for _, cp := range page.CommonPrefixes {
		p, err := decode(cp.Prefix)
		if err != nil {
			return fmt.Errorf("decode prefix %q: %w", aws.ToString(cp.Prefix), err)
		}
		res.Prefixes = append(res.Prefixes, p)
	}
	return nil
}

// unquote strips the double quotes S3 puts around ETags.
func unquote(etag string) string {
	if len(etag) >= 2 && strings.HasPrefix(etag, `"`) && strings.HasSuffix(etag, `"`) {
		return etag[1 : len(etag)-1]
	}
	return etag
}
