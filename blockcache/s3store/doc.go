// Package s3store is the only package that talks to S3: it lists folders
// and reads byte ranges of one object version, and turns the AWS SDK's
// errors into this project's sentinels. For a bucket that is a shared
// cache tier it also writes (put.go): Create (PutObject with
// If-None-Match: *), Put, Head and Delete (with If-Match).
//
// # Contracts
//
// A Store satisfies index.Lister (List) and blockcache.Source (GetRange).
// Errors wrap, where they apply:
//
//   - ErrNoBucket (which wraps io/fs.ErrNotExist) for a missing bucket;
//   - io/fs.ErrNotExist for a missing key;
//   - index.ErrStale when S3 holds another version than the ETag asked for
//     (412 on If-Match, or a response whose ETag, Content-Range or length
//     differ from the request);
//   - ErrAccessDenied for missing or wrong credentials and 403s;
//   - ErrUnreachable when no connection to the endpoint can be made;
//   - ErrTimeout when S3 sent nothing for Options.Timeout;
//   - io/fs.ErrExist when Create finds the key there (412), or another
//     create of it under way (409 ConditionalRequestConflict).
//
// Put sends one PutObject, so at most MaxPutSize (5 GiB); Create sends a
// body past Options.MultipartAbove (5 GiB) as a multipart upload completed
// with If-None-Match: *, up to MaxCreateSize (5 TiB), and aborts one that
// does not complete.
//
// The translation happens once, in errors.go, by S3 error code and HTTP
// status, never by message text.
//
// # Retries and timeouts
//
// Every request is sent up to Options.MaxAttempts times (10 by default)
// when it fails with a 5xx, a throttling answer (SlowDown), a reset or
// refused connection, or a timeout, with exponential backoff and full
// jitter capped at 5s (retry.go). The SDK's retry quota, a token bucket
// shared by the whole client, is off: with dozens of GETs in flight a burst
// of 503s would empty it and turn every later failure final at once.
// Check tries only 3 times, so that a mount against a dead endpoint fails
// fast.
//
// Retries cover a request up to its response headers. An error while a
// body is read comes to the reader, which retries what it still lacks
// (blockcache resumes a part from its first missing block).
//
// Options.Timeout bounds the wait for response headers and any silence of
// a connection while a body is read (a slow body that keeps moving is never
// cut). Either gives an error wrapping ErrTimeout, which is not
// context.DeadlineExceeded: the caller's context did not end.
//
// The pool holds Options.MaxConns connections, and keeps as many idle for
// reuse: the daemon sizes it from the GETs it lets run at once.
//
// # Credentials
//
// Credentials come from the SDK's default chain; nothing here logs them,
// and the SDK's own request logging stays off.
package s3store
