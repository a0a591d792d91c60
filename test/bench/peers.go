// peers.go runs the baselines every s3cachefs figure is compared with: a
// single-connection GET, `aws s3 sync`, `rclone copy` and `rclone mount`.
// All of them go through the proxy.

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// rcloneRemote is the rclone remote configured through the environment.
const rcloneRemote = "benchs3"

// singleGet downloads key with one GetObject on one connection and
// discards the body, reading it with readBuf buffers.
func (b *bench) singleGet(ctx context.Context, key string) (int64, error) {
	c := b.server.ClientAt(b.proxy.Endpoint, 1)
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", key, err)
	}
	defer out.Body.Close()
	n, err := io.CopyBuffer(io.Discard, out.Body, make([]byte, readBuf))
	if err != nil {
		return n, fmt.Errorf("get %s: %w", key, err)
	}
	return n, nil
}

// awsSync runs `aws s3 sync` (default settings) of folder into dest.
func (b *bench) awsSync(ctx context.Context, folder, dest string) error {
	src := fmt.Sprintf("s3://%s/%s/%s/", bucket, prefix, folder)
	_, err := b.runCmd(ctx, awsCLI, b.awsArgs(b.proxy.Endpoint, "s3", "sync", "--no-progress",
		"--only-show-errors", src, dest)...)
	return err
}

// rcloneEnv configures the S3 remote for rclone through the environment,
// with no config file.
func (b *bench) rcloneEnv() []string {
	p := "RCLONE_CONFIG_" + strings.ToUpper(rcloneRemote) + "_"
	return []string{
		"RCLONE_CONFIG=" + b.path("home", "rclone.conf"),
		p + "TYPE=s3", p + "PROVIDER=Other", p + "ENDPOINT=" + b.proxy.Endpoint,
		p + "ACCESS_KEY_ID=" + accessKey, p + "SECRET_ACCESS_KEY=" + secretKey,
		p + "REGION=" + region, p + "FORCE_PATH_STYLE=true",
	}
}

// rclonePath is folder (or the dataset root for "") as an rclone path.
func rclonePath(folder string) string {
	p := fmt.Sprintf("%s:%s/%s", rcloneRemote, bucket, prefix)
	if folder != "" {
		p += "/" + folder
	}
	return p
}

// rcloneCopy runs `rclone copy --transfers 16` of folder into dest.
func (b *bench) rcloneCopy(ctx context.Context, folder, dest string) error {
	_, err := b.runCmdEnv(ctx, b.rcloneEnv(), rclone, "copy", "--transfers", "16", rclonePath(folder), dest)
	return err
}

// rcloneMount is a running `rclone mount`.
type rcloneMount struct {
	dir    string
	cmd    *exec.Cmd
	exited chan error
	c      *closer
}

// mountRclone mounts the dataset on WORK/tmp/NAME-mnt with
// --vfs-cache-mode full and its cache in cache, and waits for the mount.
func (b *bench) mountRclone(ctx context.Context, name, cache string) (*rcloneMount, error) {
	return b.mountRcloneAt(ctx, name, cache, rclonePath(""))
}

// mountRcloneAt is mountRclone of the rclone path remote.
func (b *bench) mountRcloneAt(ctx context.Context, name, cache, remote string) (*rcloneMount, error) {
	dir := b.path("tmp", name+"-mnt")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logPath := b.path("logs", name+".log")
	cmd := exec.Command(rclone, "mount", "--read-only", "--vfs-cache-mode", "full",
		"--cache-dir", cache, "--log-file", logPath, remote, dir)
	cmd.Env = b.childEnv(b.rcloneEnv()...)
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	m := &rcloneMount{dir: dir, cmd: cmd, exited: make(chan error, 1)}
	go func() { m.exited <- cmd.Wait() }()
	m.c = b.clean.add("rclone mount "+dir, m.unmount)
	deadline := time.Now().Add(30 * time.Second)
	for !isMounted(dir) {
		select {
		case err := <-m.exited:
			m.exited <- err // for unmount
			return nil, fmt.Errorf("rclone mount exited: %v\n%s", err, fileTail(logPath))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("rclone mount on %s not ready after 30s\n%s", dir, fileTail(logPath))
		}
	}
	return m, nil
}

// unmount is m's closer: fusermount3 -u (lazily if busy), then the process
// must exit, else it is killed.
func (m *rcloneMount) unmount() error {
	var err error
	if isMounted(m.dir) {
		if out, uerr := exec.Command("fusermount3", "-u", m.dir).CombinedOutput(); uerr != nil {
			err = fmt.Errorf("fusermount3 -u %s: %v: %s", m.dir, uerr, out)
			_ = exec.Command("fusermount3", "-uz", m.dir).Run()
		}
	}
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
		if err == nil {
			err = fmt.Errorf("rclone mount %s did not exit after unmount; killed", m.dir)
		}
	}
	_ = os.Remove(m.dir)
	return err
}

// fileTail is the end of the file at path, for errors.
func fileTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	return lastBytes(b, 3000)
}
