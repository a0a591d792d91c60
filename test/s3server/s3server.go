// Package s3server runs a real S3 server (versitygw with its posix backend)
// and a reverse proxy to put in front of it, which counts requests, models
// S3's latency and per-connection bandwidth, and injects faults; and Fake,
// an in-process server for keys that a file backend cannot store, whose
// synthetic buckets (CreateSynthBucket, synth.go) generate 10^6–10^7 keys
// and their bytes on the fly for the scale figures.
//
// StartServer and (*Server).StartProxy return an error and are stopped
// with Close: they serve programs (test/bench) as well as tests. Start and
// NewProxy are the helpers for tests: they fail the test on error, keep
// the data in t.TempDir() and close in t.Cleanup.
//
// Every server listens on 127.0.0.1 with a free port. Clients must use
// path-style addressing (ENDPOINT/BUCKET/KEY).
package s3server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"
)

// Server is a running versitygw.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string
	Dir       string // the posix root; each bucket is a folder in it

	proc *process // set by StartServer; nil when the Server describes a Fake
}

// Options configure StartServer.
type Options struct {
	// Bin is the versitygw binary; "" finds it as FindBinary does.
	Bin string
	// Dir is the posix root, an existing folder; each bucket is a folder
	// in it. Required.
	Dir string
	// Log is the file that versitygw's output is appended to; "" drops it.
	Log string
	// AccessKey and SecretKey are the root credentials; "" draws random
	// ones. Fixed keys let a program serve a Dir it keeps under the same
	// keys run after run.
	AccessKey, SecretKey string
	// Region is the server's region; default us-east-1.
	Region string
}

// process is the versitygw process of a Server.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // how it exited; set before done is closed
}

const (
	startTimeout = 20 * time.Second
	startTries   = 3
	putWorkers   = 16
)

// StartServer launches versitygw and waits until it answers. Close stops
// it; Dir is left as it is.
func StartServer(o Options) (*Server, error) {
	if o.Dir == "" {
		return nil, errors.New("s3server: Options.Dir is required")
	}
	if o.Bin == "" {
		bin, err := FindBinary()
		if err != nil {
			return nil, err
		}
		o.Bin = bin
	}
	s := &Server{AccessKey: o.AccessKey, SecretKey: o.SecretKey, Region: o.Region, Dir: o.Dir}
	if s.AccessKey == "" {
		s.AccessKey = "test" + randomHex(8)
	}
	if s.SecretKey == "" {
		s.SecretKey = randomHex(20)
	}
	if s.Region == "" {
		s.Region = "us-east-1"
	}
	// The free port is found by binding and releasing it, so another
	// process may take it in between; try a few times.
	var lastErr error
	for range startTries {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		addr := l.Addr().String()
		l.Close()
		s.Endpoint = "http://" + addr
		if s.proc, lastErr = launch(o, s, addr); lastErr == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("start versitygw (log %s): %w\n%s", o.Log, lastErr, tail(o.Log))
}

// launch starts versitygw for s on addr and waits for it to answer.
func launch(o Options, s *Server, addr string) (*process, error) {
	cmd := exec.Command(o.Bin, "--port", addr, "--region", s.Region, "--keep-alive", "--quiet",
		"posix", s.Dir)
	// Keys go through the environment so they do not show in ps.
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	if o.Log != "" {
		logFile, err := os.OpenFile(o.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		defer logFile.Close()
		cmd.Stdout, cmd.Stderr = logFile, logFile
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := waitReady(addr, p); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// waitReady polls addr until an HTTP request gets any answer; there is no
// other signal that versitygw has bound its port.
func waitReady(addr string, p *process) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("versitygw exited early: %v", p.err)
		case <-tick.C:
		}
	}
	return fmt.Errorf("versitygw did not answer on %s within %v", addr, startTimeout)
}

// stop kills the process and waits for it. A gentle SIGTERM would make
// versitygw wait for every client's idle keep-alive connection to close,
// and it keeps nothing in memory that its posix root lacks.
func (p *process) stop() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Close stops versitygw and waits for it to exit; later calls do nothing.
// A Server that describes a Fake has no process: Close does nothing.
func (s *Server) Close() error {
	if s.proc != nil {
		s.proc.stop()
	}
	return nil
}

// Pid is versitygw's process id, for a program that measures its CPU
// time; 0 when the Server describes a Fake.
func (s *Server) Pid() int {
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Start launches versitygw with random keys and its data in t.TempDir(),
// and stops it in t.Cleanup (printing the end of its log if t failed). It
// fails the test when versitygw is absent or does not start.
func Start(t testing.TB) *Server {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "versitygw.log")
	s, err := StartServer(Options{Bin: Binary(t), Dir: t.TempDir(), Log: logPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("versitygw log:\n%s", tail(logPath))
		}
	})
	return s
}

// FindBinary returns the versitygw binary: $VERSITYGW, else on PATH, else
// in $(go env GOPATH)/bin.
func FindBinary() (string, error) {
	if p := os.Getenv("VERSITYGW"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "versitygw")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	return "", errors.New("versitygw not found ($VERSITYGW, PATH, $(go env GOPATH)/bin): run `make deps`")
}

// Binary is FindBinary for tests: it fails the test when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := FindBinary()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// tail returns the last few KiB of the log at path, for failure messages.
func tail(path string) string {
	if path == "" {
		return "(no log)"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(bytes.TrimSpace(b))
}

// Env returns the variables a child process needs to reach the server
// with the SDK's default chain: credentials and region. It also turns off
// the EC2 metadata lookup, so a child never probes the network for
// credentials. The endpoint is not included: pass it explicitly.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"AWS_DEFAULT_REGION=" + s.Region,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Client returns an SDK client of the server, ClientAt(s.Endpoint, 0), for
// setting up test data.
func (s *Server) Client(t testing.TB) *s3.Client {
	return s.ClientAt(s.Endpoint, 0)
}

// ClientAt returns an SDK client that signs with the server's keys and
// sends to endpoint: the server's own, or a Proxy's in front of it. It
// opens at most conns connections (0: no limit), asks for no compression,
// computes and checks checksums only where S3 requires them (whole-body
// checksums cost CPU that the bench's peers do not pay), and ignores the
// environment and shared config.
func (s *Server) ClientAt(endpoint string, conns int) *s3.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxConnsPerHost = conns
	tr.DisableCompression = true
	return s3.New(s3.Options{
		BaseEndpoint:               aws.String(endpoint),
		Region:                     s.Region,
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		HTTPClient:                 &http.Client{Transport: tr},
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
	})
}

// MakeBucket creates bucket name (at least 3 characters) unless it is
// there already, as when a program serves a Dir it kept.
func (s *Server) MakeBucket(ctx context.Context, name string) error {
	c := s.ClientAt(s.Endpoint, 0)
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(name)}); err == nil {
		return nil
	}
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return nil
}

// CreateBucket is MakeBucket for tests.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	if err := s.MakeBucket(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

// Put stores data under bucket/key.
func (s *Server) Put(t testing.TB, bucket, key string, data []byte) {
	t.Helper()
	if err := put(context.Background(), s.Client(t), bucket, key, data); err != nil {
		t.Fatal(err)
	}
}

// PutMany stores every object of objs in bucket, 16 at a time.
func (s *Server) PutMany(t testing.TB, bucket string, objs map[string][]byte) {
	t.Helper()
	client := s.Client(t)
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(putWorkers)
	for key, data := range objs {
		g.Go(func() error { return put(ctx, client, bucket, key, data) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func put(ctx context.Context, client *s3.Client, bucket, key string, data []byte) error {
	_, err := client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data),
	})
	if err != nil {
		return fmt.Errorf("put s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}
