// s3.go starts the run's S3 server (versitygw) and the proxy that models
// S3 in front of it, both from test/s3server.

package main

import (
	"time"

	"s3cachefs/test/s3server"
)

// Fixed keys: the server only listens on 127.0.0.1 for the run, and a rerun
// with -keep serves the same data under the same keys.
const (
	accessKey = "benchaccess"
	secretKey = "benchsecret0123456789"
	region    = "us-east-1"
	bucket    = "bench"
	prefix    = "tusz" // the dataset's folders live under s3://bench/tusz/
)

// startServer runs versitygw (bin) on the work dir's s3root and has it
// stopped at the end of the run.
func (b *bench) startServer(bin string) error {
	s, err := s3server.StartServer(s3server.Options{
		Bin: bin, Dir: b.path("s3root"), Log: b.path("logs", "versitygw.log"),
		AccessKey: accessKey, SecretKey: secretKey, Region: region,
	})
	if err != nil {
		return err
	}
	b.server = s
	b.clean.add("versitygw", s.Close)
	return nil
}

// startProxy puts the modelling proxy in front of the server: ttfb to the
// first byte of every response, rate bytes/s per client connection (0:
// unlimited), every request counted. It is closed at the end of the run.
func (b *bench) startProxy(ttfb time.Duration, rate float64) error {
	p, err := b.server.StartProxy(s3server.ProxyOptions{TTFB: ttfb, Rate: rate, Log: b.path("logs", "proxy.log")})
	if err != nil {
		return err
	}
	b.proxy = p
	b.clean.add("proxy", p.Close)
	return nil
}
