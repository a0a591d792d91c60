package s3store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"syscall"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"s3cachefs/index"
)

func TestTranslate(t *testing.T) {
	api := func(code string) error {
		return fmt.Errorf("operation error: %w", &smithy.GenericAPIError{Code: code, Message: "m"})
	}
	for _, c := range []struct {
		name string
		err  error
		op   operation
		want error
	}{
		{"no such bucket on get", api("NoSuchBucket"), opGet, ErrNoBucket},
		{"no such key", api("NoSuchKey"), opGet, fs.ErrNotExist},
		{"not found on list", api("NotFound"), opList, ErrNoBucket},
		{"precondition", api("PreconditionFailed"), opGet, index.ErrStale},
		{"invalid range", api("InvalidRange"), opGet, index.ErrStale},
		{"signature", api("SignatureDoesNotMatch"), opList, ErrAccessDenied},
		{"key id", api("InvalidAccessKeyId"), opList, ErrAccessDenied},
		{"expired", api("ExpiredToken"), opGet, ErrAccessDenied},
		{"dns", &net.DNSError{Err: "no such host", Name: "x.invalid"}, opList, ErrUnreachable},
		{"dial", &net.OpError{Op: "dial", Err: errors.New("i/o timeout")}, opList, ErrUnreachable},
		{"refused", fmt.Errorf("send: %w", syscall.ECONNREFUSED), opGet, ErrUnreachable},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := translate(c.err, c.op)
			if !errors.Is(got, c.want) {
				t.Errorf("translate = %v, want %v", got, c.want)
			}
			if !errors.Is(got, c.err) {
				t.Errorf("translate dropped the SDK error: %v", got)
			}
		})
	}
}

func TestTranslateLeavesOthersAlone(t *testing.T) {
	for _, err := range []error{
		context.Canceled,
		fmt.Errorf("wrapped: %w", context.DeadlineExceeded),
		&smithy.GenericAPIError{Code: "SlowDown"},
		&net.OpError{Op: "read", Err: syscall.ECONNRESET},
	} {
		if got := translate(err, opGet); got != err {
			t.Errorf("translate(%v) = %v, want it unchanged", err, got)
		}
	}
	if translate(nil, opGet) != nil {
		t.Error("translate(nil) != nil")
	}
}

func TestErrNoBucketIsNotExist(t *testing.T) {
	if !errors.Is(ErrNoBucket, fs.ErrNotExist) {
		t.Error("ErrNoBucket does not wrap fs.ErrNotExist")
	}
}

func TestTranslateNamesBucketRegion(t *testing.T) {
	resp := &http.Response{StatusCode: http.StatusMovedPermanently, Header: http.Header{}}
	resp.Header.Set("X-Amz-Bucket-Region", "eu-west-1")
	sdkErr := &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: resp},
		Err:      &smithy.GenericAPIError{Code: "PermanentRedirect"},
	}}
	got := translate(sdkErr, opList)
	var wr *wrongRegionError
	if !errors.As(got, &wr) || wr.region != "eu-west-1" {
		t.Errorf("translate = %v, want the bucket's region named", got)
	}
	if !errors.Is(got, sdkErr) {
		t.Errorf("translate dropped the SDK error: %v", got)
	}

	// The same header on a 403 says nothing about the region being wrong.
	resp.StatusCode = http.StatusForbidden
	if got := translate(sdkErr, opList); errors.As(got, &wr) {
		t.Errorf("translate of a 403 = %v, want no region hint", got)
	}
}
