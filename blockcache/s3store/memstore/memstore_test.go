package memstore_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"testing"

	"s3cachefs/blockcache/s3store/memstore"
	"s3cachefs/blockcache/s3store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{New: func(t *testing.T) storetest.Fixture {
		s := memstore.New()
		return storetest.Fixture{
			Store:        s,
			Put:          func(_ testing.TB, key string, data []byte) { s.Put(key, data) },
			Delete:       func(_ testing.TB, key string) { s.Delete(key) },
			RemoveBucket: func(testing.TB) { s.RemoveBucket() },
			Truncate: func(_ testing.TB, key string) {
				s.SetFault(func(op, k string) error {
					if op == memstore.OpGet && k == key {
						s.SetFault(nil) // only the next GET
						return memstore.ErrShortBody
					}
					return nil
				})
			},
		}
	}})
}

func TestETagIsMD5(t *testing.T) {
	s := memstore.New()
	// MD5("hello"), as S3 reports for a single-part upload.
	if o := s.Put("k", []byte("hello")); o.ETag != "5d41402abc4b2a76b9719d911017c592" {
		t.Errorf("ETag = %q", o.ETag)
	}
}

func TestReplace(t *testing.T) {
	s := memstore.New()
	if _, err := s.Replace("k", []byte("x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Replace of a missing key: err = %v, want fs.ErrNotExist", err)
	}
	old := s.Put("k", []byte("one"))
	cur, err := s.Replace("k", []byte("two"))
	if err != nil || cur.ETag == old.ETag || cur.Size != 3 {
		t.Errorf("Replace = %+v, %v; want a new ETag", cur, err)
	}
}

func TestFaults(t *testing.T) {
	s := memstore.New()
	o := s.Put("dir/k", []byte("0123456789"))
	boom := errors.New("boom")
	s.SetFault(func(op, key string) error {
		if op == memstore.OpList && key == "dir/" {
			return boom
		}
		return nil
	})
	if _, err := s.List(context.Background(), "dir/"); !errors.Is(err, boom) {
		t.Errorf("List with a fault: err = %v, want boom", err)
	}
	if _, err := s.List(context.Background(), ""); err != nil {
		t.Errorf("List of another prefix: %v", err)
	}

	s.SetFault(func(op, _ string) error {
		if op == memstore.OpRead {
			return boom
		}
		return nil
	})
	rc, err := s.GetRange(context.Background(), o.Key, o.ETag, 0, o.Size)
	if err != nil {
		t.Fatalf("GetRange with a read fault: %v (the fault belongs to the body)", err)
	}
	if _, err := io.ReadAll(rc); !errors.Is(err, boom) {
		t.Errorf("reading with a read fault: err = %v, want boom", err)
	}

	s.SetFault(func(op, _ string) error {
		if op == memstore.OpGet {
			return boom
		}
		return nil
	})
	if _, err := s.GetRange(context.Background(), o.Key, o.ETag, 0, o.Size); !errors.Is(err, boom) {
		t.Errorf("GetRange with a get fault: err = %v, want boom", err)
	}
}

func TestStats(t *testing.T) {
	s := memstore.New()
	o := s.Put("k", []byte("0123456789"))
	if _, err := s.List(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	rc, err := s.GetRange(context.Background(), o.Key, o.ETag, 2, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); err != nil {
		t.Fatal(err)
	}
	want := memstore.Stats{Gets: 1, Lists: 1, BytesRead: 5}
	if got := s.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}
