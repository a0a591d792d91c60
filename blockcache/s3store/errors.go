package s3store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"syscall"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"s3cachefs/index"
)

// Sentinels that every error from this package may wrap. Test with errors.Is.
var (
	// ErrNoBucket reports that the bucket does not exist. It wraps
	// io/fs.ErrNotExist, so code that only asks "is it there?" needs no
	// special case for a missing bucket.
	ErrNoBucket = fmt.Errorf("bucket does not exist: %w", fs.ErrNotExist)

	// ErrAccessDenied reports missing, wrong or expired credentials, a
	// signature mismatch, or a 403 from the server.
	ErrAccessDenied = errors.New("access denied")

	// ErrUnreachable reports that the endpoint could not be reached at all:
	// name resolution failed or the connection was refused or timed out.
	ErrUnreachable = errors.New("endpoint unreachable")

	// ErrTimeout reports that S3 sent nothing for Options.Timeout: no
	// response headers, or no byte of a body being read. It does not
	// wrap context.DeadlineExceeded: the caller's context did not end.
	ErrTimeout = errors.New("S3 stopped responding")
)

// operation says which call failed, because the same HTTP status means
// different things to them: a 404 on a list is a missing bucket, a 404 on a
// GET a missing key.
type operation int

const (
	opList operation = iota
	opGet
	opHead   // HeadObject: a 404 is a missing key
	opCreate // PutObject with If-None-Match: *: a 412 or 409 is "exists"
	opPut    // PutObject unconditionally
	opDelete // DeleteObject, If-Match when an ETag is given
)

// translate is the one place where SDK errors become this package's
// sentinels. It keeps the SDK error in the chain (for its request ID and
// message) and adds the sentinel in front. Errors it does not recognise,
// including context cancellation, are returned as they are.
func translate(err error, op operation) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if region := bucketRegion(err); region != "" {
		err = &wrongRegionError{region: region, err: err}
	}
	sentinel := classify(err, op)
	if sentinel == nil {
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

// wrongRegionError tells which region the bucket is in when a request was
// sent to another one, so the user learns what to pass as the region
// instead of reading a bare "301 PermanentRedirect".
type wrongRegionError struct {
	region string
	err    error
}

func (e *wrongRegionError) Error() string {
	return fmt.Sprintf("the bucket is in region %s: set the region to it (%v)", e.region, e.err)
}

func (e *wrongRegionError) Unwrap() error { return e.err }

// bucketRegion returns the region S3 names in x-amz-bucket-region when it
// refuses a request for being sent to the wrong region: a 301 to the
// region's endpoint, or a 400 for a signature scoped to another region.
// S3 sends the header with other answers too, where it means nothing wrong.
func bucketRegion(err error) string {
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.Response == nil {
		return ""
	}
	switch re.HTTPStatusCode() {
	case http.StatusMovedPermanently, http.StatusBadRequest:
		return re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	return ""
}

// classify picks the sentinel for err: by S3 error code first, then by HTTP
// status (HEAD and some servers send no code), then by network failure.
func classify(err error, op operation) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		if s := byCode(apiErr.ErrorCode(), op); s != nil {
			return s
		}
	}
	var withStatus interface{ HTTPStatusCode() int }
	if errors.As(err, &withStatus) {
		if s := byStatus(withStatus.HTTPStatusCode(), op); s != nil {
			return s
		}
	}
	if unreachable(err) {
		return ErrUnreachable
	}
	return nil
}

func byCode(code string, op operation) error {
	switch {
	case code == "NoSuchBucket":
		return ErrNoBucket
	case code == "NoSuchKey" || code == "NotFound":
		if op == opList {
			return ErrNoBucket
		}
		return fs.ErrNotExist
	case (code == "PreconditionFailed" || code == "ConditionalRequestConflict") && op == opCreate:
		// The key exists (412), or another create of it is under way
		// (409): either way this create did not happen.
		return fs.ErrExist
	case code == "PreconditionFailed":
		return index.ErrStale
	case code == "InvalidRange":
		// The listing said the object is long enough for this range;
		// S3 says it is not, so S3 holds another version now.
		return index.ErrStale
	case isAccessCode(code):
		return ErrAccessDenied
	}
	return nil
}

// isAccessCode reports whether an S3 error code means "your credentials do
// not let you do this".
func isAccessCode(code string) bool {
	switch code {
	case "AccessDenied", "AllAccessDisabled", "AccountProblem", "ExpiredToken",
		"InvalidAccessKeyId", "InvalidToken", "InvalidSecurity",
		"SignatureDoesNotMatch", "TokenRefreshRequired", "RequestTimeTooSkewed",
		// versitygw's answer (a 404) to an access key it does not know,
		// where AWS says InvalidAccessKeyId.
		"XAdminUserNotFound":
		return true
	}
	return false
}

func byStatus(status int, op operation) error {
	switch status {
	case http.StatusNotFound:
		if op == opList {
			return ErrNoBucket
		}
		return fs.ErrNotExist
	case http.StatusPreconditionFailed, http.StatusConflict:
		if op == opCreate {
			return fs.ErrExist
		}
		if status == http.StatusConflict {
			return nil
		}
		return index.ErrStale
	case http.StatusRequestedRangeNotSatisfiable:
		return index.ErrStale
	case http.StatusForbidden, http.StatusUnauthorized:
		return ErrAccessDenied
	}
	return nil
}

// unreachable reports whether err is a failure to resolve or connect to the
// endpoint, as opposed to a failure after a connection was made.
func unreachable(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}
