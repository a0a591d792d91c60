package s3store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/logging"
)

// Defaults applied by New to zero fields of Options.
const (
	DefaultMaxConns    = 64
	DefaultTimeout     = 30 * time.Second
	DefaultMaxAttempts = 10
	// fallbackRegion is used when neither Options nor the SDK's
	// configuration chain names a region, as the AWS CLI does for S3.
	fallbackRegion = "us-east-1"
)

// Options configure a Store. Only Bucket is required.
type Options struct {
	// Bucket is the S3 bucket every call works on.
	Bucket string
	// Region signs requests. "" takes it from the SDK's configuration
	// chain (AWS_REGION, the profile), else us-east-1.
	Region string
	// Profile names the shared-config profile; "" means the default one
	// (or AWS_PROFILE).
	Profile string
	// Endpoint is the S3 endpoint URL, e.g. http://127.0.0.1:9000.
	// "" means AWS, or AWS_ENDPOINT_URL when that is set.
	Endpoint string
	// ForcePathStyle addresses buckets as ENDPOINT/BUCKET/KEY instead of
	// BUCKET.ENDPOINT/KEY; most S3-compatible servers need it.
	ForcePathStyle bool
	// MaxConns caps HTTP connections per host, and as many are kept idle
	// for reuse. Default DefaultMaxConns.
	MaxConns int
	// Timeout bounds the wait for response headers, and how long a
	// connection may deliver no bytes while a body is being read.
	// Default DefaultTimeout.
	Timeout time.Duration
	// MaxAttempts is how often one request is sent, the first time
	// included, when it fails with a 5xx, a throttling answer (SlowDown),
	// a reset connection or a timeout. Retries wait with exponential
	// backoff and jitter. It covers a request up to its response headers;
	// a body that fails later is the reader's to retry. Default
	// DefaultMaxAttempts.
	MaxAttempts int
	// Logger receives the SDK's warnings and this package's debug lines.
	// nil discards them. Credentials are never logged.
	Logger *slog.Logger
	// MultipartAbove is the largest body Create sends in one PutObject;
	// a larger one goes as a multipart upload in parts of
	// MultipartPartSize (or more, to fit 10,000 parts), completed with
	// If-None-Match: *. Defaults: MaxPutSize (5 GiB) and 64 MiB; tests
	// make them small.
	MultipartAbove, MultipartPartSize int64
}

// Stats are counters of the requests a Store sent since New.
type Stats struct {
	Gets      int64 // GetObject requests (one per GetRange)
	Lists     int64 // ListObjectsV2 requests (one per page)
	BytesRead int64 // body bytes handed to readers of GetRange
	Puts      int64 // PutObject requests (Create and Put)
	Heads     int64 // HeadObject requests
	Deletes   int64 // DeleteObject requests
}

// Store reads one S3 bucket: listings and ranged, version-pinned GETs; and
// writes it where a bucket is a shared cache tier (put.go). It satisfies
// index.Lister, blockcache.Source and tier.Objects. All methods may be called
// concurrently.
type Store struct {
	// Set once in New.
	client *s3.Client
	creds  aws.CredentialsProvider
	bucket string
	log    *slog.Logger
	// multipartAbove and partSize: Options.MultipartAbove and
	// MultipartPartSize, defaults applied.
	multipartAbove, partSize int64

	// Counters, updated atomically.
	gets, lists, bytesRead, puts, heads, deletes atomic.Int64
}

// New builds a Store from the SDK's default configuration chain
// (environment, shared config and credentials files, SSO, web identity,
// IMDS) with opts laid over it. It sends no request: call Check to find out
// whether the bucket is reachable.
func New(ctx context.Context, opts Options) (*Store, error) {
	if opts.Bucket == "" {
		return nil, errors.New("s3store: no bucket given")
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOptions(opts, log)...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = fallbackRegion
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.ForcePathStyle
		// A ranged GET carries no whole-object checksum to validate,
		// so the SDK would warn on every block fetched.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	log.Debug("S3 client configured", "bucket", opts.Bucket, "region", cfg.Region,
		"endpoint", opts.Endpoint, "path_style", opts.ForcePathStyle,
		"max_conns", opts.MaxConns, "timeout", opts.Timeout, "max_attempts", opts.MaxAttempts)
	st := &Store{client: client, creds: cfg.Credentials, bucket: opts.Bucket, log: log,
		multipartAbove: opts.MultipartAbove, partSize: opts.MultipartPartSize}
	if st.multipartAbove <= 0 {
		st.multipartAbove = MaxPutSize
	}
	if st.partSize <= 0 {
		st.partSize = defaultPartSize
	}
	return st, nil
}

// loadOptions turns opts into SDK configuration: our HTTP client and
// retryer (see retry.go) in place of the SDK's defaults.
func loadOptions(opts Options, log *slog.Logger) []func(*config.LoadOptions) error {
	lo := []func(*config.LoadOptions) error{
		config.WithHTTPClient(newHTTPClient(opts.MaxConns, opts.Timeout)),
		config.WithRetryer(func() aws.Retryer { return newRetryer(opts.MaxAttempts) }),
		config.WithLogger(sdkLogger{log}),
	}
	if opts.Region != "" {
		lo = append(lo, config.WithRegion(opts.Region))
	}
	if opts.Profile != "" {
		lo = append(lo, config.WithSharedConfigProfile(opts.Profile))
	}
	return lo
}

// Bucket returns the bucket the Store reads.
func (s *Store) Bucket() string { return s.bucket }

// Stats returns the request counters.
func (s *Store) Stats() Stats {
	return Stats{Gets: s.gets.Load(), Lists: s.lists.Load(), BytesRead: s.bytesRead.Load(),
		Puts: s.puts.Load(), Heads: s.heads.Load(), Deletes: s.deletes.Load()}
}

// Check verifies credentials, endpoint and bucket with one ListObjectsV2 of
// at most one key under prefix. The error wraps ErrAccessDenied,
// ErrUnreachable or ErrNoBucket when it is one of those, and the context's
// error when ctx ends first.
func (s *Store) Check(ctx context.Context, prefix string) error {
	// Resolve credentials first: the SDK reports a failed chain as an
	// untyped error, and "no credentials" deserves its own class.
	if _, err := s.creds.Retrieve(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("check s3://%s: %w", s.bucket, ctx.Err())
		}
		return fmt.Errorf("check s3://%s: %w: no usable AWS credentials: %w", s.bucket, ErrAccessDenied, err)
	}
	s.lists.Add(1)
	_, err := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
		Bucket:    aws.String(s.bucket),
		Prefix:    aws.String(prefix),
		Delimiter: aws.String("/"),
		MaxKeys:   aws.Int32(1),
	}, func(o *s3.Options) { o.RetryMaxAttempts = min(checkAttempts, o.Retryer.MaxAttempts()) })
	if err != nil {
		return fmt.Errorf("check s3://%s/%s: %w", s.bucket, prefix, translate(asTimeout(ctx, err), opList))
	}
	return nil
}

// sdkLogger hands the SDK's log lines to slog.
type sdkLogger struct{ log *slog.Logger }

// Logf implements logging.Logger.
func (l sdkLogger) Logf(c logging.Classification, format string, v ...any) {
	level := slog.LevelDebug
	if c == logging.Warn {
		level = slog.LevelWarn
	}
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, v...), "source", "aws-sdk")
	}
}
