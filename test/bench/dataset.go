// dataset.go generates the benchmark dataset (seeded random bytes) and
// uploads it straight to versitygw, both cached in the work dir by a stamp
// so a rerun with -keep skips them.

package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"golang.org/x/sync/errgroup"
)

// spec describes a dataset. Its String is the cache stamp.
type spec struct {
	Train, Dev         int   // large files in train/ and dev/
	FileSize           int64 // bytes of each large file
	MetaTrain, MetaDev int   // small files in meta_train/ and meta_dev/
	Seed               uint64
}

// The dataset's folders, under s3://bench/tusz/ and WORK/dataset/.
const (
	trainDir     = "train"
	devDir       = "dev"
	metaTrainDir = "meta_train"
	metaDevDir   = "meta_dev"
)

// Small files are a few KB: between metaMin and metaMin+metaSpan bytes.
const (
	metaMin  = 2 << 10
	metaSpan = 4 << 10
)

func fullSpec() spec {
	return spec{Train: 48, Dev: 16, FileSize: 48 << 20, MetaTrain: 4667, MetaDev: 1832, Seed: 5}
}

func quickSpec() spec {
	return spec{Train: 8, Dev: 4, FileSize: 8 << 20, MetaTrain: 150, MetaDev: 50, Seed: 5}
}

func (s spec) String() string {
	return fmt.Sprintf("train=%d dev=%d size=%d meta_train=%d meta_dev=%d seed=%d",
		s.Train, s.Dev, s.FileSize, s.MetaTrain, s.MetaDev, s.Seed)
}

// folders lists every folder of the dataset with its file names.
func (s spec) folders() map[string][]string {
	names := func(n int, format string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf(format, i)
		}
		return out
	}
	return map[string][]string{
		trainDir:     names(s.Train, "train_%04d.npz"),
		devDir:       names(s.Dev, "dev_%04d.npz"),
		metaTrainDir: names(s.MetaTrain, "rec_%05d.json"),
		metaDevDir:   names(s.MetaDev, "rec_%05d.json"),
	}
}

// paths returns root/folder/name for every file of folder.
func (s spec) paths(root, folder string) []string {
	var out []string
	for _, name := range s.folders()[folder] {
		out = append(out, filepath.Join(root, folder, name))
	}
	return out
}

// allPaths returns every file of the dataset under root.
func (s spec) allPaths(root string) []string {
	var out []string
	for _, f := range []string{trainDir, devDir, metaTrainDir, metaDevDir} {
		out = append(out, s.paths(root, f)...)
	}
	return out
}

// bytesOf is the total size of folder's files.
func (s spec) bytesOf(dir string) int64 {
	switch dir {
	case trainDir:
		return int64(s.Train) * s.FileSize
	case devDir:
		return int64(s.Dev) * s.FileSize
	}
	return 0 // small files are reported by count, not bytes
}

// stamped reports whether the stamp file holds want.
func stamped(path, want string) bool {
	b, err := os.ReadFile(path)
	return err == nil && string(b) == want
}

// generate writes the dataset into dir unless its stamp says it is there.
func generate(ctx context.Context, dir string, s spec) error {
	stamp := dir + ".spec"
	if stamped(stamp, s.String()) {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(2) // the machine has 2 cores; others use them too
	fileNo := uint64(0)
	for _, folder := range []string{trainDir, devDir, metaTrainDir, metaDevDir} {
		if err := os.MkdirAll(filepath.Join(dir, folder), 0o755); err != nil {
			return err
		}
		for i, p := range s.paths(dir, folder) {
			size := s.FileSize
			if folder == metaTrainDir || folder == metaDevDir {
				size = metaMin + int64(rand.New(rand.NewPCG(s.Seed, uint64(i))).IntN(metaSpan))
			}
			seed := fileNo
			fileNo++
			g.Go(func() error {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return writeRandom(p, size, s.Seed, seed)
			})
		}
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("generate dataset: %w", err)
	}
	return os.WriteFile(stamp, []byte(s.String()), 0o644)
}

// writeRandom writes size seeded random bytes to path.
func writeRandom(path string, size int64, seed, file uint64) error {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	binary.LittleEndian.PutUint64(key[8:], file)
	src := rand.NewChaCha8(key)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, min(size, 1<<20))
	for left := size; left > 0; left -= int64(len(buf)) {
		buf = buf[:min(left, int64(len(buf)))]
		_, _ = src.Read(buf) // never fails
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// upload copies the dataset in dir to s3://bench/tusz/ on the server
// itself (not through the proxy) with `aws s3 sync`, as users upload,
// unless the stamp says the server's root already holds it.
func (b *bench) upload(ctx context.Context, dir string, s spec) error {
	stamp := b.path("s3root.spec")
	if stamped(stamp, s.String()) {
		return nil
	}
	if err := b.server.MakeBucket(ctx, bucket); err != nil {
		return err
	}
	for _, folder := range []string{trainDir, devDir, metaTrainDir, metaDevDir} {
		dest := fmt.Sprintf("s3://%s/%s/%s/", bucket, prefix, folder)
		if _, err := b.runCmd(ctx, awsCLI, b.awsArgs(b.server.Endpoint, "s3", "sync", "--no-progress",
			"--only-show-errors", filepath.Join(dir, folder), dest)...); err != nil {
			return fmt.Errorf("upload %s: %w", folder, err)
		}
	}
	return os.WriteFile(stamp, []byte(s.String()), 0o644)
}
