// server.go launches versitygw (posix backend) on 127.0.0.1 and builds SDK
// clients for it and for the proxy.

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
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

// s3Server is a running versitygw.
type s3Server struct {
	endpoint string // http://127.0.0.1:PORT
	cmd      *exec.Cmd
	exited   chan error
}

// versitygwPath finds the binary: $VERSITYGW, else $(go env GOPATH)/bin.
func versitygwPath() (string, error) {
	if p := os.Getenv("VERSITYGW"); p != "" {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOPATH: %w", err)
	}
	for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
		p := filepath.Join(dir, "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("versitygw not found ($VERSITYGW or $(go env GOPATH)/bin): run `make deps`")
}

// startServer runs versitygw on root and waits until it answers. The port
// is found by binding and releasing it, so another process may take it in
// between: it tries a few times.
func startServer(bin, root, logPath string) (*s3Server, error) {
	var lastErr error
	for range 3 {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		s, err := launchServer(bin, addr, root, logPath)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("start versitygw (log %s): %w", logPath, lastErr)
}

func launchServer(bin, addr, root, logPath string) (*s3Server, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "--port", addr, "--region", region, "--keep-alive", "--quiet", "posix", root)
	// Keys go through the environment so they do not show in ps.
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+accessKey, "ROOT_SECRET_KEY="+secretKey)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &s3Server{endpoint: "http://" + addr, cmd: cmd, exited: make(chan error, 1)}
	go func() { s.exited <- cmd.Wait() }()
	if err := waitAnswer(addr, s.exited); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// waitAnswer polls addr until an HTTP request gets any answer: versitygw
// gives no other sign that it has bound its port.
func waitAnswer(addr string, exited <-chan error) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("versitygw exited early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("versitygw did not answer on %s", addr)
}

// stop kills the server and waits for it. SIGTERM would make versitygw
// wait for idle keep-alive connections of clients.
func (s *s3Server) stop() error {
	_ = s.cmd.Process.Kill()
	<-s.exited
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// newS3Client returns an SDK client for endpoint that opens at most conns
// connections (0: no limit) and ignores the machine's AWS config.
func newS3Client(endpoint string, conns int) *s3.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxConnsPerHost = conns
	tr.DisableCompression = true
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(endpoint),
		Region:       region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
		HTTPClient:   &http.Client{Transport: tr},
		// Checksums of whole bodies would cost CPU the peers do not pay.
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
	})
}

// createBucket makes the bucket unless it is there already (-keep rerun).
func createBucket(ctx context.Context, endpoint string) error {
	c := newS3Client(endpoint, 0)
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)}); err == nil {
		return nil
	}
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	return nil
}
