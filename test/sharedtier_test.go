package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"s3cachefs/test/s3server"
	"s3cachefs/test/tiertest"
)

// sharedTier is where the daemons of a test keep their shared cache tier:
// a folder (folderTier) or a bucket on a second versitygw (bucketTier).
type sharedTier interface {
	// flags are the mount flags that name the tier; option the same as
	// one -o list.
	flags() []string
	option() string
	// entries are the tier's entries now (paths or keys).
	entries(t *testing.T) []string
	// poison rewrites an entry: a byte of the object changed, and the
	// block's CRC-32C in the trailer (and the trailer's own) recomputed
	// to match, so that only the ETag's MD5 can tell.
	poison(t *testing.T, entry string)
	// claims is how many claims the tier holds now.
	claims(t *testing.T) int
	// disconnect makes the tier unreachable under the daemons.
	disconnect(t *testing.T)
}

// forEachTier runs test once with a folder tier and once with a bucket
// tier, each in an env of its own.
func forEachTier(t *testing.T, test func(t *testing.T, e *env, tier sharedTier)) {
	for _, kind := range []struct {
		name string
		new  func(t *testing.T, e *env) sharedTier
	}{{"folder", newFolderTier}, {"bucket", newBucketTier}} {
		t.Run(kind.name, func(t *testing.T) {
			e := newEnv(t)
			test(t, e, kind.new(t, e))
		})
	}
}

// folderTier is a tier in a local folder (as a shared filesystem would be).
type folderTier struct{ dir string }

func newFolderTier(t *testing.T, e *env) sharedTier {
	dir := filepath.Join(t.TempDir(), "tier")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &folderTier{dir: dir}
}

func (f *folderTier) flags() []string { return []string{"--shared-cache", f.dir} }
func (f *folderTier) option() string  { return "shared_cache=" + f.dir }

func (f *folderTier) entries(t *testing.T) []string {
	paths, err := filepath.Glob(filepath.Join(f.dir, "s3cachefs-tier-v1", "objects", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

func (f *folderTier) poison(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, poisonEntry(t, b), 0o664); err != nil {
		t.Fatal(err)
	}
}

func (f *folderTier) claims(t *testing.T) int {
	held, _ := filepath.Glob(filepath.Join(f.dir, "s3cachefs-tier-v1", "claims", "*"))
	return len(held)
}

func (f *folderTier) disconnect(t *testing.T) {
	if err := os.RemoveAll(f.dir); err != nil {
		t.Fatal(err)
	}
}

// bucketTier is a tier in bucket "tier", under the prefix near/cache, of
// a versitygw of its own, with keys of its own: the daemons reach it
// with --shared-profile tier (from a credentials file), its endpoint and
// path-style addressing, while the source is reached as always.
type bucketTier struct {
	srv    *s3server.Server
	client *s3.Client
}

const (
	tierBucket = "tier"
	tierPrefix = "near/cache"
	tierRoot   = tierPrefix + "/s3cachefs-tier-v1/"
)

func newBucketTier(t *testing.T, e *env) sharedTier {
	srv := s3server.Start(t)
	srv.CreateBucket(t, tierBucket)
	creds := filepath.Join(t.TempDir(), "credentials")
	profile := fmt.Sprintf("[tier]\naws_access_key_id = %s\naws_secret_access_key = %s\n", srv.AccessKey, srv.SecretKey)
	if err := os.WriteFile(creds, []byte(profile), 0o600); err != nil {
		t.Fatal(err)
	}
	e.extraEnv = append(e.extraEnv, "AWS_SHARED_CREDENTIALS_FILE="+creds)
	return &bucketTier{srv: srv, client: srv.Client(t)}
}

func (b *bucketTier) flags() []string {
	return []string{"--shared-cache", "s3://" + tierBucket + "/" + tierPrefix, "--shared-endpoint-url", b.srv.Endpoint,
		"--shared-force-path-style", "--shared-profile", "tier"}
}

func (b *bucketTier) option() string {
	return fmt.Sprintf("shared_cache=s3://%s/%s,shared_endpoint_url=%s,shared_force_path_style,shared_profile=tier", tierBucket, tierPrefix, b.srv.Endpoint)
}

func (b *bucketTier) list(t *testing.T, prefix string) []string {
	var keys []string
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: aws.String(tierBucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

func (b *bucketTier) entries(t *testing.T) []string { return b.list(t, tierRoot+"objects/") }

func (b *bucketTier) claims(t *testing.T) int { return len(b.list(t, tierRoot+"claims/")) }

func (b *bucketTier) poison(t *testing.T, key string) {
	ctx := context.Background()
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(tierBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(tierBucket), Key: aws.String(key),
		Body: bytes.NewReader(poisonEntry(t, data))})
	if err != nil {
		t.Fatal(err)
	}
}

func (b *bucketTier) disconnect(t *testing.T) { b.srv.Close() }

// poisonEntry is tiertest.Forge of entry.
func poisonEntry(t *testing.T, entry []byte) []byte {
	t.Helper()
	b, err := tiertest.Forge(entry)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
