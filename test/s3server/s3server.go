// Package s3server runs a real S3 server (versitygw with its posix backend)
// for tests, and a counting reverse proxy to put in front of it.
//
// Every server listens on 127.0.0.1 with a free port, keeps its data in a
// fresh t.TempDir(), and is stopped in t.Cleanup. Clients must use
// path-style addressing (ENDPOINT/BUCKET/KEY).
package s3server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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
}

const (
	startTimeout = 20 * time.Second
	putWorkers   = 16
)

// Start launches versitygw and waits until it answers. It finds the binary
// through $VERSITYGW, then PATH, then $(go env GOPATH)/bin, and fails the
// test when it is absent.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	s := &Server{
		AccessKey: "test" + randomHex(t, 8),
		SecretKey: randomHex(t, 20),
		Region:    "us-east-1",
		Dir:       t.TempDir(),
	}
	logPath := filepath.Join(t.TempDir(), "versitygw.log")
	// The free port is found by binding and releasing it, so another
	// process may take it in between; try a few times.
	var lastErr error
	for range 3 {
		addr := freeAddr(t)
		s.Endpoint = "http://" + addr
		lastErr = s.launch(t, bin, addr, logPath)
		if lastErr == nil {
			return s
		}
	}
	t.Fatalf("start versitygw: %v\n%s", lastErr, tail(logPath))
	return nil
}

// launch starts the process and waits for it to answer; on success the
// process is stopped in t.Cleanup.
func (s *Server) launch(t testing.TB, bin, addr, logPath string) error {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "--port", addr, "--region", s.Region, "--keep-alive", "--quiet",
		"posix", s.Dir)
	// Keys go through the environment so they do not show in ps.
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := waitReady(addr, exited); err != nil {
		stop(cmd, exited)
		return err
	}
	t.Cleanup(func() {
		stop(cmd, exited)
		if t.Failed() {
			t.Logf("versitygw log:\n%s", tail(logPath))
		}
	})
	return nil
}

// waitReady polls addr until an HTTP request gets any answer; there is no
// other signal that versitygw has bound its port.
func waitReady(addr string, exited <-chan error) error {
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
		case err := <-exited:
			return fmt.Errorf("versitygw exited early: %v", err)
		case <-tick.C:
		}
	}
	return fmt.Errorf("versitygw did not answer on %s within %v", addr, startTimeout)
}

// stop kills the process and waits for it. A gentle SIGTERM would make
// versitygw wait for every client's idle keep-alive connection to close,
// and its data is a temporary directory that nobody reads afterwards.
func stop(cmd *exec.Cmd, exited <-chan error) {
	_ = cmd.Process.Kill()
	<-exited
}

// Binary returns the versitygw binary: $VERSITYGW, else on PATH, else in
// $(go env GOPATH)/bin; it fails the test when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("VERSITYGW"); p != "" {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "versitygw")
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	t.Fatal("versitygw not found ($VERSITYGW, PATH, $(go env GOPATH)/bin): run `make deps`")
	return ""
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// tail returns the last few KiB of the log at path, for failure messages.
func tail(path string) string {
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

// Client returns an SDK client for setting up test data. It ignores the
// environment and shared config: it uses the server's keys only.
func (s *Server) Client(t testing.TB) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		Region:       s.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// CreateBucket creates bucket name (at least 3 characters).
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	_, err := s.Client(t).CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)})
	if err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
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
