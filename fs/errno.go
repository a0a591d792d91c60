package fs

import (
	"context"
	"errors"
	iofs "io/fs"
	"syscall"

	"s3cachefs/index"
)

// toErrno is the one place errors become what the kernel tells the
// program. Sentinels are tested with errors.Is, never by text; anything
// unknown is EIO, the errno a read(2) caller expects from a failed device.
func toErrno(err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.Is(err, index.ErrStale):
		return syscall.ESTALE
	// The kernel cancels a request's context when the caller is
	// interrupted; EINTR is what such a caller expects.
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, context.DeadlineExceeded):
		return syscall.ETIMEDOUT
	case errors.As(err, &errno):
		return passthrough(errno)
	case errors.Is(err, iofs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, iofs.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, iofs.ErrInvalid):
		return syscall.EINVAL
	default:
		return syscall.EIO
	}
}

// passthrough returns errno itself when it says something true about the
// local file operation (disk full, out of descriptors, ...). Errnos from
// the network under an S3 request (ECONNRESET, EPIPE, ...) would mislead a
// reader of a file: those, and a zero errno, become EIO.
func passthrough(errno syscall.Errno) syscall.Errno {
	switch errno {
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EIO,
		syscall.ENOENT, syscall.ENOTDIR, syscall.EISDIR, syscall.ENAMETOOLONG,
		syscall.EACCES, syscall.EPERM, syscall.EINVAL, syscall.EFBIG,
		syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM,
		syscall.ESTALE, syscall.EINTR, syscall.ETIMEDOUT:
		return errno
	default:
		return syscall.EIO
	}
}

// errno maps err for op on path and logs what is not routine: a missing
// name is a normal answer, an interrupted caller a debug note, anything
// else a warning.
func (m *shared) errno(op, path string, err error) syscall.Errno {
	errno := toErrno(err)
	switch errno {
	case 0, syscall.ENOENT:
	case syscall.EINTR:
		m.log.Debug("interrupted", "op", op, "path", path, "err", err)
	default:
		m.log.Warn("failed", "op", op, "path", path, "errno", errno.Error(), "err", err)
	}
	return errno
}
