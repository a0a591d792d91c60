package blockcache

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"math/rand/v2"
	"time"

	"s3cachefs/index"
)

// Retries of a part. The Source retries failed requests itself (s3store:
// 5xx, SlowDown, resets, timeouts, with backoff), so a GET that fails here
// is final. A body that breaks off midway (a reset, a truncation, a stall
// cut by the store's timeout) is the cache's to retry: blocks read in full
// before the break are committed, and the next GET asks only for the rest.
const (
	// DefaultBodyAttempts is Options.BodyAttempts' default: the failed
	// bodies of one part that brought no new block. A body that brought
	// some does not count, so a fetch that makes progress goes on; as a
	// part has few blocks, a fetch still ends after at most BodyAttempts
	// plus its blocks attempts. It matches the store's attempts per
	// request, so that a share of broken bodies is survived as surely as
	// the same share of 5xx answers.
	DefaultBodyAttempts = 10
	// retryBase and retryCap shape the wait between attempts: it doubles
	// from retryBase up to retryCap, and half of it is random, so that
	// parts cut by one broken connection do not come back in lockstep.
	retryBase = 100 * time.Millisecond
	retryCap  = 2 * time.Second
)

// bodyError is a failure while a response body was read: the request
// itself succeeded, so trying again may well succeed too.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// bodyRetries is the retry budget of one read from S3 (a part's fetch, or
// an uncached read): broken bodies are tried again, within limit of them
// that brought no progress.
type bodyRetries struct {
	limit    int // broken bodies without progress before giving up
	attempt  int // attempts made
	failures int // broken bodies that brought nothing
}

// next counts an attempt that ended with err after progress (blocks or
// bytes got) and reports whether to try again. When not, it returns the
// error to end with: err itself, or err wrapped once the budget is spent.
func (r *bodyRetries) next(err error, progress int64) (bool, error) {
	r.attempt++
	var body *bodyError
	if err == nil || !errors.As(err, &body) || !retryable(err) {
		return false, err
	}
	if progress == 0 {
		r.failures++
	}
	if r.failures >= r.limit {
		return false, fmt.Errorf("gave up after %d attempts: %w", r.attempt, err)
	}
	return true, nil
}

// wait waits before the next attempt (retryBase doubled per attempt up to
// retryCap, its upper half drawn at random), or returns ctx's error.
func (r *bodyRetries) wait(ctx context.Context) error {
	d := min(retryCap, retryBase<<min(r.attempt-1, 16))
	select {
	case <-time.After(d/2 + rand.N(d/2+1)):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryable reports whether a failed fetch may succeed when tried again.
func retryable(err error) bool {
	return !errors.Is(err, index.ErrStale) && !errors.Is(err, iofs.ErrNotExist) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, ErrCacheFull)
}
