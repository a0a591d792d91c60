package test

import (
	"context"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// sourceFiles returns the generated dataset as the mount shows it once it
// is uploaded: path relative to the mount root ("train/x.npz") → bytes.
func sourceFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(suite.dataset, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(suite.dataset, p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("the generated dataset is empty")
	}
	return files
}

// sortedNames returns the keys of files in order, so tests read in a
// reproducible order.
func sortedNames[V any](files map[string]V) []string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// npzNames returns the .npz paths of files under split ("train", "dev").
func npzNames(files map[string][]byte, split string) []string {
	var out []string
	for _, n := range sortedNames(files) {
		if strings.HasPrefix(n, split+"/") && strings.HasSuffix(n, ".npz") {
			out = append(out, n)
		}
	}
	return out
}

// entry is a file or folder as S3 lists it or the mount shows it.
type entry struct {
	dir   bool
	size  int64
	mtime time.Time
}

// listPrefix lists every key under the mounted prefix with the SDK, all
// pages, straight from the server, and returns the tree a mount of it
// must show: files by path relative to the prefix, and every folder above
// them.
func (e *env) listPrefix(t *testing.T) map[string]entry {
	t.Helper()
	tree := map[string]entry{}
	p := s3.NewListObjectsV2Paginator(e.srv.Client(t), &s3.ListObjectsV2Input{
		Bucket: aws.String(bucket), Prefix: aws.String(prefix + "/"),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list s3://%s/%s/: %v", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			rel := strings.TrimPrefix(aws.ToString(o.Key), prefix+"/")
			tree[rel] = entry{size: aws.ToInt64(o.Size), mtime: aws.ToTime(o.LastModified)}
			for d := path.Dir(rel); d != "."; d = path.Dir(d) {
				tree[d] = entry{dir: true}
			}
		}
	}
	return tree
}

// walkMount returns the tree under root as the kernel shows it.
func walkMount(t *testing.T, root string) map[string]entry {
	t.Helper()
	tree := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			tree[filepath.ToSlash(rel)] = entry{dir: true}
		} else {
			tree[filepath.ToSlash(rel)] = entry{size: info.Size(), mtime: info.ModTime()}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return tree
}
