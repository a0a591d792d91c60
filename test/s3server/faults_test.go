package s3server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"s3cachefs/test/s3server"
)

// faultFixture is a server with one 1 MiB object "obj" (and "other") in
// bucket "flt", and a proxy in front.
type faultFixture struct {
	srv    *s3server.Server
	proxy  *s3server.Proxy
	client *s3.Client
	data   []byte
}

func newFaultFixture(t *testing.T) *faultFixture {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "flt")
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	srv.Put(t, "flt", "obj", data)
	srv.Put(t, "flt", "other", data)
	return &faultFixture{srv: srv, proxy: srv.NewProxy(t), client: srv.Client(t), data: data}
}

// get reads key whole through the proxy, with one attempt (no SDK retry):
// the bytes read and the first error, of the request or of the body.
func (f *faultFixture) get(key string) ([]byte, error) {
	out, err := f.client.GetObject(context.Background(),
		&s3.GetObjectInput{Bucket: aws.String("flt"), Key: aws.String(key)},
		func(o *s3.Options) {
			o.BaseEndpoint = aws.String(f.proxy.Endpoint)
			o.RetryMaxAttempts = 1
		})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

func TestFaultErrorAnswers(t *testing.T) {
	f := newFaultFixture(t)
	for _, c := range []struct {
		faults s3server.Faults
		code   string
	}{
		{s3server.Faults{InternalError: 1}, "InternalError"},
		{s3server.Faults{Unavailable: 1}, "ServiceUnavailable"},
		{s3server.Faults{SlowDown: 1}, "SlowDown"},
	} {
		f.proxy.SetFaults(c.faults)
		_, err := f.get("obj")
		var api smithy.APIError
		if !errors.As(err, &api) || api.ErrorCode() != c.code {
			t.Errorf("%+v: GET = %v, want S3 error %s", c.faults, err, c.code)
		}
	}
	f.proxy.SetFaults(s3server.Faults{})
	if got, err := f.get("obj"); err != nil || !bytes.Equal(got, f.data) {
		t.Errorf("GET after SetFaults(Faults{}) = %d bytes, %v", len(got), err)
	}
	if n := f.proxy.Faults(); n.Errors != 3 || n.Total() != 3 {
		t.Errorf("counted %+v, want 3 errors", n)
	}
}

func TestFaultBrokenBodies(t *testing.T) {
	f := newFaultFixture(t)
	const stall = 300 * time.Millisecond
	for _, c := range []struct {
		name   string
		faults s3server.Faults
		count  func(s3server.FaultCounts) int64
	}{
		{"reset", s3server.Faults{Reset: 1}, func(c s3server.FaultCounts) int64 { return c.Resets }},
		{"truncate", s3server.Faults{Truncate: 1}, func(c s3server.FaultCounts) int64 { return c.Truncated }},
		{"stall", s3server.Faults{Stall: 1, StallFor: stall}, func(c s3server.FaultCounts) int64 { return c.Stalls }},
	} {
		t.Run(c.name, func(t *testing.T) {
			f.proxy.SetFaults(c.faults)
			defer f.proxy.SetFaults(s3server.Faults{})
			before := c.count(f.proxy.Faults())
			start := time.Now()
			got, err := f.get("obj")
			if err == nil || len(got) >= len(f.data) || len(got) == 0 {
				t.Errorf("GET = %d of %d bytes, %v; want some bytes, then an error", len(got), len(f.data), err)
			}
			if !bytes.Equal(got, f.data[:len(got)]) {
				t.Error("the bytes before the break differ from the object's")
			}
			if d := time.Since(start); c.name == "stall" && d < stall {
				t.Errorf("a stalled body ended after %v, before StallFor %v", d, stall)
			}
			if n := c.count(f.proxy.Faults()) - before; n != 1 {
				t.Errorf("counted %d faults of this kind, want 1", n)
			}
		})
	}
}

func TestFaultSharesAreSeededAndScoped(t *testing.T) {
	f := newFaultFixture(t)
	outcomes := func(seed uint64) []bool {
		f.proxy.SetFaults(s3server.Faults{Seed: seed, Keys: "obj", InternalError: 0.5})
		var failed []bool
		for range 40 {
			_, err := f.get("obj")
			failed = append(failed, err != nil)
		}
		if _, err := f.get("other"); err != nil {
			t.Errorf("GET of a key outside Keys: %v", err)
		}
		return failed
	}
	a, b := outcomes(7), outcomes(7)
	n := 0
	for i := range a {
		if a[i] {
			n++
		}
		if a[i] != b[i] {
			t.Fatalf("request %d: the same seed gave other faults", i)
		}
	}
	if n < 8 || n > 32 {
		t.Errorf("%d of 40 requests failed with a share of 0.5", n)
	}
}

func TestReplaceMidRead(t *testing.T) {
	f := newFaultFixture(t)
	newData := []byte("the new version")
	done := f.proxy.ReplaceMidRead("flt", "obj", newData)
	got, err := f.get("obj")
	if err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("the GET during the replacement = %d bytes, %v; want the old version whole", len(got), err)
	}
	if err := <-done; err != nil {
		t.Fatalf("upload of the new version: %v", err)
	}
	if got, err := f.get("obj"); err != nil || !bytes.Equal(got, newData) {
		t.Fatalf("the next GET = %q, %v; want the new version", got, err)
	}
	if n := f.proxy.Faults(); n.Replaced != 1 {
		t.Errorf("counted %+v, want 1 replacement", n)
	}
}
