package blockcache

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strconv"

	"s3cachefs/index"
)

// ObjectID names the cache file of one object version. It is a hash of
// (bucket, key, version, size), so it never contains a byte of the key.
func ObjectID(bucket string, obj index.Object) string {
	h := sha256.New()
	for _, s := range []string{bucket, obj.Key, obj.Version(), strconv.FormatInt(obj.Size, 10)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// objectPath is where the cache file of id lives under dir.
func objectPath(dir, id string) string {
	return filepath.Join(FilesDir(dir), id[:2], id)
}

// Bucket is the bucket the cache's object IDs are of: ObjectID(c.Bucket(),
// obj) names obj's cache file.
func (c *Cache) Bucket() string { return c.opts.Bucket }

// Dir is the cache directory (Options.Dir).
func (c *Cache) Dir() string { return c.opts.Dir }

// FilePath is where the cache file of object version id lives. Only blocks
// its record lists hold valid bytes; a caller that reads it directly
// checks them itself.
func (c *Cache) FilePath(id string) string { return objectPath(c.opts.Dir, id) }
