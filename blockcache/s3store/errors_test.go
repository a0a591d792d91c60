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
		{"create of a key there", api("PreconditionFailed"), opCreate, fs.ErrExist},
		{"create racing another", api("ConditionalRequestConflict"), opCreate, fs.ErrExist},
		{"create 412 without a code", status(http.StatusPreconditionFailed), opCreate, fs.ErrExist},
		{"create 409 without a code", status(http.StatusConflict), opCreate, fs.ErrExist},
		{"delete of another version", api("PreconditionFailed"), opDelete, index.ErrStale},
		{"head of a missing key", status(http.StatusNotFound), opHead, fs.ErrNotExist},
		{"put denied", api("AccessDenied"), opPut, ErrAccessDenied},
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

// status is an error with an HTTP status and no S3 error code, as a HEAD
// or a server without error bodies gives.
func status(code int) error {
	return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: code}}, Err: errors.New("no body")}
}

// Only a create takes a 412 or 409 for "exists"; a 409 elsewhere is left
// alone, and a 412 on a GET stays "stale".
func TestTranslateExistsOnlyOnCreate(t *testing.T) {
	if err := translate(status(http.StatusConflict), opPut); errors.Is(err, fs.ErrExist) || errors.Is(err, index.ErrStale) {
		t.Errorf("a 409 on a plain put: %v", err)
	}
	if err := translate(api412(), opGet); errors.Is(err, fs.ErrExist) || !errors.Is(err, index.ErrStale) {
		t.Errorf("a 412 on a GET: %v, want ErrStale only", err)
	}
}

func api412() error { return &smithy.GenericAPIError{Code: "PreconditionFailed"} }

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
