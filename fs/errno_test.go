package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"s3cachefs/index"
)

func TestToErrno(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"not exist", fmt.Errorf("lookup: %w", iofs.ErrNotExist), syscall.ENOENT},
		{"os not exist", &os.PathError{Op: "open", Path: "x", Err: os.ErrNotExist}, syscall.ENOENT},
		{"stale", fmt.Errorf("get: %w", index.ErrStale), syscall.ESTALE},
		{"stale beats errno", fmt.Errorf("%w: %w", index.ErrStale, syscall.ENOSPC), syscall.ESTALE},
		{"canceled", fmt.Errorf("wait: %w", context.Canceled), syscall.EINTR},
		{"deadline", fmt.Errorf("wait: %w", context.DeadlineExceeded), syscall.ETIMEDOUT},
		{"permission", fmt.Errorf("open: %w", iofs.ErrPermission), syscall.EACCES},
		{"invalid", fmt.Errorf("folder: %w", iofs.ErrInvalid), syscall.EINVAL},
		{"no space", fmt.Errorf("write block: %w", &os.PathError{Op: "write", Path: "c", Err: syscall.ENOSPC}), syscall.ENOSPC},
		{"quota", fmt.Errorf("write: %w", syscall.EDQUOT), syscall.EDQUOT},
		{"too many files", fmt.Errorf("open cache file: %w", syscall.EMFILE), syscall.EMFILE},
		{"bare errno", syscall.EIO, syscall.EIO},
		{"network errno", fmt.Errorf("get: %w", &net.OpError{Op: "read", Err: syscall.ECONNRESET}), syscall.EIO},
		{"zero errno", fmt.Errorf("odd: %w", syscall.Errno(0)), syscall.EIO},
		{"unknown", errors.New("S3 said 500 five times"), syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := toErrno(tc.err); got != tc.want {
				t.Errorf("toErrno(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestErrnoLogging(t *testing.T) {
	var buf bytes.Buffer
	m := &shared{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}

	if got := m.errno("lookup", "a/missing", fmt.Errorf("x: %w", iofs.ErrNotExist)); got != syscall.ENOENT {
		t.Fatalf("got %v, want ENOENT", got)
	}
	if got := m.errno("read", "a/int", context.Canceled); got != syscall.EINTR {
		t.Fatalf("got %v, want EINTR", got)
	}
	if buf.Len() != 0 {
		t.Fatalf("ENOENT and EINTR were logged at info or above: %q", buf.String())
	}
	if got := m.errno("read", "a/broken.npz", errors.New("boom")); got != syscall.EIO {
		t.Fatalf("got %v, want EIO", got)
	}
	if out := buf.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "a/broken.npz") {
		t.Fatalf("unexpected error not logged as a warning with its path: %q", out)
	}
}
