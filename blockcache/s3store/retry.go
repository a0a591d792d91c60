package s3store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// Retry and timeout settings that are not options.
const (
	// maxBackoff caps the wait before one retry. The SDK's backoff starts
	// at 50ms (1s after a throttling answer such as SlowDown), doubles per
	// attempt and draws the actual wait at random below that: a trainer
	// blocked on a read gains nothing from waits longer than this.
	maxBackoff = 5 * time.Second
	// checkAttempts is the attempts of Check: a mount against an endpoint
	// that is down should say so in a second, not after a full budget.
	checkAttempts = 3
)

// newRetryer returns the retryer of every request: the SDK's standard one
// (exponential backoff with full jitter; 5xx, throttling codes such as
// SlowDown, connection resets and timeouts retried) with two changes.
//
// Its retry quota is off (ratelimit.None). The standard quota is a bucket
// of 500 tokens shared by the whole client, and each retry takes 5 to 14:
// with dozens of GETs in flight a burst of 503s empties it in one go, and
// from then on every failure is final at once, with no retry at all, until
// successes refill it. Backoff alone spaces the retries.
//
// maxAttempts counts the first attempt.
func newRetryer(maxAttempts int) aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = maxAttempts
		o.MaxBackoff = maxBackoff
		o.RateLimiter = ratelimit.None
	})
}

// newHTTPClient returns the HTTP client of a Store: a pool of maxConns
// connections (all of them kept for reuse) and timeout as the longest
// wait for response headers or silence while a body is read.
func newHTTPClient(maxConns int, timeout time.Duration) *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().
		WithTransportOptions(func(tr *http.Transport) {
			tr.MaxConnsPerHost = maxConns
			tr.MaxIdleConnsPerHost = maxConns
			// The total idle cap (100 by default) would otherwise
			// close connections of a larger pool after every burst.
			tr.MaxIdleConns = max(tr.MaxIdleConns, maxConns)
			tr.ResponseHeaderTimeout = timeout
		}).
		WithDialerOptions(func(d *net.Dialer) {
			d.Timeout = timeout
		}).
		// A body that stalls is cut off instead of hanging a reader
		// forever: every read on the connection must deliver a byte
		// within timeout. A slow but moving body is never cut.
		WithReadTimeout(timeout)
}

// asTimeout turns a timeout of the connection (no headers, or a body
// that went silent, for Options.Timeout) into an error wrapping
// ErrTimeout. Other errors, and the end of ctx, are returned as they are.
//
// The transport's error is kept as text only: net/http's header timeout
// reports itself as context.DeadlineExceeded, and callers would take it
// for the end of their own context (not to be retried; ETIMEDOUT to the
// kernel) when it is a server that stopped answering.
func asTimeout(ctx context.Context, err error) error {
	var t interface{ Timeout() bool }
	if err == nil || ctx.Err() != nil || !errors.As(err, &t) || !t.Timeout() {
		return err
	}
	return fmt.Errorf("%w: %s", ErrTimeout, err.Error())
}
