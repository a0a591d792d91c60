package s3store_test

import (
	"context"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"s3cachefs/index"
)

// TestListDecodesURLEncoding checks the path real S3 takes and versitygw
// does not: names URL-encoded because the request asked for it.
func TestListDecodesURLEncoding(t *testing.T) {
	var query atomic.Value
	s := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		query.Store(r.URL.Query())
		w.Header().Set("Content-Type", "application/xml")
		w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Name>fake</Name><Prefix>odd%2F</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>
<Delimiter>%2F</Delimiter><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>
<Contents><Key>odd/a+b%2Bc%01</Key><LastModified>2025-01-02T03:04:05.000Z</LastModified>
<ETag>&quot;abc&quot;</ETag><Size>7</Size><StorageClass>STANDARD</StorageClass></Contents>
<CommonPrefixes><Prefix>odd/sub%20dir/</Prefix></CommonPrefixes>
</ListBucketResult>`))
	})
	res, err := s.List(context.Background(), "odd/")
	if err != nil {
		t.Fatal(err)
	}
	want := index.Object{
		Key: "odd/a b+c\x01", Size: 7, ETag: "abc",
		LastModified: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	if len(res.Objects) != 1 || res.Objects[0] != want {
		t.Errorf("objects = %+v, want [%+v]", res.Objects, want)
	}
	if len(res.Prefixes) != 1 || res.Prefixes[0] != "odd/sub dir/" {
		t.Errorf("prefixes = %q, want [\"odd/sub dir/\"]", res.Prefixes)
	}
	q := query.Load().(url.Values)
	for k, v := range map[string]string{"list-type": "2", "prefix": "odd/", "delimiter": "/", "encoding-type": "url"} {
		if q.Get(k) != v {
			t.Errorf("query %s = %q, want %q", k, q.Get(k), v)
		}
	}
}
