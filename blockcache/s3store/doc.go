// Package s3store is the only package that talks to S3: it lists folders
// and reads byte ranges of one object version, and turns the AWS SDK's
// errors into this project's sentinels.
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
//   - ErrUnreachable when no connection to the endpoint can be made.
//
// The translation happens once, in errors.go, by S3 error code and HTTP
// status, never by message text.
//
// # Retries and timeouts
//
// The SDK's standard retryer is left on: up to 3 attempts per request with
// exponential backoff and jitter (at most 20s), for 5xx, throttling
// (SlowDown) and connection errors, limited by the SDK's retry-token quota.
// It retries until response headers arrive; errors while reading a body are
// the reader's to handle (blockcache retries whole parts). Options.Timeout
// bounds the wait for response headers and any stall while a body is read.
//
// # Credentials
//
// Credentials come from the SDK's default chain; nothing here logs them,
// and the SDK's own request logging stays off.
package s3store
