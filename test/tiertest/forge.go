// Package tiertest forges shared cache tier entries for tests and the
// bench, as someone who can write the tier could.
package tiertest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Forge returns a copy of entry (an object's bytes, then the tier's
// trailer, as blockcache/tier writes it) with one byte of the object
// flipped, and that block's CRC-32C in the trailer and the trailer's own
// CRC-32C rewritten to match: only the ETag's MD5 can tell.
func Forge(entry []byte) ([]byte, error) {
	b := bytes.Clone(entry)
	if len(b) < 8 {
		return nil, errors.New("not a tier entry: too short")
	}
	n := int(binary.LittleEndian.Uint64(b[len(b)-8:]))
	if n < 12 || n > len(b)-8 {
		return nil, fmt.Errorf("not a tier entry: a trailer of %d bytes", n)
	}
	trailer := b[len(b)-8-n : len(b)-8]
	body := trailer[:n-4]
	if !bytes.HasPrefix(body, []byte("s3ctier1")) {
		return nil, errors.New("not a tier entry: no magic")
	}
	p := 8 // the magic
	bad := false
	next := func() int {
		x, k := binary.Uvarint(body[p:])
		if k <= 0 {
			bad = true
			return 0
		}
		p += k
		return int(x)
	}
	bs := next()
	for range 3 { // bucket, key, ETag
		p += next()
	}
	size, count := next(), next()
	if bad || bs <= 0 || size != len(b)-8-n || count != (size+bs-1)/bs || len(body)-p != 4*count {
		return nil, errors.New("not a tier entry: a trailer of another layout")
	}
	if size == 0 {
		return nil, errors.New("an empty object has no byte to flip")
	}
	at := min(size/2, 512)
	b[at] ^= 0x10
	blk := at / bs
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	binary.LittleEndian.PutUint32(body[p+4*blk:], crc32.Checksum(b[blk*bs:min((blk+1)*bs, size)], castagnoli))
	binary.LittleEndian.PutUint32(trailer[n-4:], crc32.Checksum(body, castagnoli))
	return b, nil
}
