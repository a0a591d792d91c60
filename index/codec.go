package index

import (
	"encoding/binary"
	"fmt"
	"time"
)

// codecV1 is the first byte of every listing entry, folder info, job and
// current value, of a schema 1 listing, and of a record without
// checksums. A value starting with a byte its decoder
// does not know is refused as corrupt: a future format gets a new codec
// version (and, if old code must not read the file, a new SchemaVersion).
const codecV1 = 1

// codecV2 is the first byte of a record with block checksums (Record.Sums
// not nil): version 1's fields, then one CRC-32C per block. Only records
// have a version 2; they are read in both versions.
const codecV2 = 2

// Stored times are limited to the years 1..9999: time.Unix overflows for
// seconds near the int64 limits, and within this range a decoded time always
// re-encodes to the same bytes.
const (
	minUnixSec = -62135596800  // 0001-01-01T00:00:00Z
	maxUnixSec = 253402300799  // 9999-12-31T23:59:59Z
	nanosInSec = 1_000_000_000 // nanoseconds must stay below this
)

// encoder appends values to a byte slice.
type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }

func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}

// time stores seconds and nanoseconds since the Unix epoch; the location and
// monotonic reading are dropped (decoded times are UTC). Times outside the
// years 1..9999 are clamped to that range, which the decoder enforces.
func (e *encoder) time(t time.Time) {
	sec, nsec := clampTime(t)
	e.varint(sec)
	e.uvarint(uint64(nsec))
}

// clampTime returns t as seconds and nanoseconds since the Unix epoch,
// clamped to the years 1..9999 that stored times keep to.
func clampTime(t time.Time) (sec int64, nsec int) {
	sec, nsec = t.Unix(), t.Nanosecond()
	switch {
	case sec < minUnixSec:
		return minUnixSec, 0
	case sec > maxUnixSec:
		return maxUnixSec, nanosInSec - 1
	}
	return sec, nsec
}

// decoder reads values from a byte slice. The first failure is kept in err
// and turns every later read into a no-op, so decode functions check once.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
}

func (d *decoder) byte1() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated value")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad unsigned varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// nonNegative reads a varint that must be >= 0 (sizes).
func (d *decoder) nonNegative(what string) int64 {
	v := d.varint()
	if v < 0 {
		d.fail("negative %s %d", what, v)
		return 0
	}
	return v
}

// count reads an element count. Every element takes at least one byte, so
// a count above the bytes left is corrupt; checking it first keeps a
// malformed value from making us allocate gigabytes.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail("count %d exceeds %d remaining bytes", v, len(d.b))
		return 0
	}
	return int(v)
}

// bytes reads n raw bytes; the result aliases d.b.
func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length %d exceeds %d remaining bytes", n, len(d.b))
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

// str reads a length-prefixed string. It copies, so the result outlives the
// bbolt transaction the input came from.
func (d *decoder) str() string { return string(d.bytes(d.uvarint())) }

func (d *decoder) time() time.Time {
	sec, nsec := d.varint(), d.uvarint()
	if d.err != nil {
		return time.Time{}
	}
	if sec < minUnixSec || sec > maxUnixSec || nsec >= nanosInSec {
		d.fail("time out of range (%d s, %d ns)", sec, nsec)
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// version checks the leading codec version byte.
func (d *decoder) version() {
	if v := d.byte1(); d.err == nil && v != codecV1 {
		d.fail("unknown codec version %d", v)
	}
}

// end fails if bytes are left over: a value is exactly one encoding.
func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// encodeRecord encodes r (without its ID, which is the bbolt key):
//
//	byte     codec version (1; 2 when r.Sums is not nil)
//	string   Key
//	string   Version
//	varint   Size (>= 0)
//	varint   BlockSize (> 0)
//	time     LastAccess
//	uvarint  number of blocks, which must equal NumBlocks(Size, BlockSize)
//	bytes    presence bitmap, ceil(blocks/8) bytes, block i is bit i%8 of
//	         byte i/8; unused high bits of the last byte are zero
//	uint32s  version 2 only: the checksum of each block, 4 bytes little
//	         endian each, one per block (0: not known), and nothing after
func encodeRecord(r Record) ([]byte, error) {
	if err := checkRecordShape(r); err != nil {
		return nil, err
	}
	n := r.Present.Len()
	e := encoder{b: make([]byte, 0, 48+len(r.Key)+len(r.Version)+int(n/8)+1+4*len(r.Sums))}
	if r.Sums == nil {
		e.b = append(e.b, codecV1)
	} else {
		e.b = append(e.b, codecV2)
	}
	e.str(r.Key)
	e.str(r.Version)
	e.varint(r.Size)
	e.varint(r.BlockSize)
	e.time(r.LastAccess)
	e.uvarint(uint64(n))
	for i := int64(0); i < bitmapBytes(n); i++ {
		e.b = append(e.b, byte(r.Present.words[i/8]>>(8*(i%8))))
	}
	for _, sum := range r.Sums {
		e.b = binary.LittleEndian.AppendUint32(e.b, sum)
	}
	return e.b, nil
}

// checkRecordShape checks that r's geometry is consistent, so that a stored
// record always decodes.
func checkRecordShape(r Record) error {
	if r.ID == "" {
		return fmt.Errorf("%w: empty record ID", ErrInvalid)
	}
	if r.Size < 0 || r.BlockSize <= 0 {
		return fmt.Errorf("%w: record %s: size %d, block size %d", ErrInvalid, r.ID, r.Size, r.BlockSize)
	}
	if n := NumBlocks(r.Size, r.BlockSize); r.Present.Len() != n {
		return fmt.Errorf("%w: record %s: presence tracks %d blocks, object has %d", ErrInvalid, r.ID, r.Present.Len(), n)
	}
	if r.Sums != nil && int64(len(r.Sums)) != r.Present.Len() {
		return fmt.Errorf("%w: record %s: %d checksums for %d blocks", ErrInvalid, r.ID, len(r.Sums), r.Present.Len())
	}
	return nil
}

// bitmapBytes is how many bytes hold n bits, without overflowing for huge n.
func bitmapBytes(n int64) int64 { return n/8 + min(n%8, 1) }

// decodeRecord decodes a value written by encodeRecord for id. It never
// panics; malformed input yields an error wrapping ErrCorrupt.
func decodeRecord(id string, b []byte) (Record, error) {
	d := decoder{b: b}
	v := d.byte1()
	if d.err == nil && v != codecV1 && v != codecV2 {
		d.fail("unknown codec version %d", v)
	}
	r := Record{ID: id, Key: d.str(), Version: d.str()}
	r.Size = d.nonNegative("size")
	r.BlockSize = d.varint()
	r.LastAccess = d.time()
	n := d.uvarint()
	if d.err == nil && r.BlockSize <= 0 {
		d.fail("block size %d", r.BlockSize)
	}
	if d.err == nil && n != uint64(NumBlocks(r.Size, r.BlockSize)) {
		d.fail("%d blocks for size %d and block size %d", n, r.Size, r.BlockSize)
	}
	if d.err == nil {
		r.Present = decodeBitmap(&d, int64(n))
	}
	if d.err == nil && v == codecV2 {
		if len(d.b)%4 != 0 || uint64(len(d.b))/4 != n {
			d.fail("%d bytes of checksums for %d blocks", len(d.b), n)
		} else {
			r.Sums = make([]uint32, n)
			for i := range r.Sums {
				r.Sums[i] = binary.LittleEndian.Uint32(d.bytes(4))
			}
		}
	}
	if err := d.end(); err != nil {
		return Record{}, fmt.Errorf("record %s: %w", id, err)
	}
	return r, nil
}

// decodeBitmap reads the presence bitmap of n blocks.
func decodeBitmap(d *decoder, n int64) Blocks {
	nb := bitmapBytes(n)
	if nb > int64(len(d.b)) {
		d.fail("bitmap of %d bytes exceeds %d remaining", nb, len(d.b))
		return Blocks{}
	}
	raw := d.bytes(uint64(nb))
	if n%8 != 0 && raw[nb-1]>>(n%8) != 0 {
		d.fail("bits set past block %d", n)
		return Blocks{}
	}
	p := NewBlocks(n)
	for i, c := range raw {
		p.words[i/8] |= uint64(c) << (8 * (i % 8))
	}
	return p
}

// encodeJob encodes j (without its ID, which is the bbolt key):
//
//	byte     codec version (1)
//	time     Created
//	byte     State (< 4)
//	uvarint  len(Paths), then each path as string
//	string   Error
//	uvarint  len(Failed), then each key as string
//
// It fails with ErrInvalid for an ID that cannot be a key (see checkID) or
// an unknown State, so a stored job always decodes.
func encodeJob(j Job) ([]byte, error) {
	if err := checkID("job", j.ID); err != nil {
		return nil, err
	}
	if j.State >= numJobStates {
		return nil, fmt.Errorf("%w: job %s: unknown state %d", ErrInvalid, j.ID, j.State)
	}
	if j.Shard < 0 || j.Shards < 0 || (j.Shards > 0 && j.Shard >= j.Shards) || (j.Shards == 0 && j.Shard != 0) {
		return nil, fmt.Errorf("%w: job %s: shard %d of %d", ErrInvalid, j.ID, j.Shard, j.Shards)
	}
	e := encoder{b: make([]byte, 0, 32+len(j.Error)+32*(len(j.Paths)+len(j.Failed)))}
	e.b = append(e.b, codecV1)
	e.time(j.Created)
	e.b = append(e.b, byte(j.State))
	e.strs(j.Paths)
	e.str(j.Error)
	e.strs(j.Failed)
	if j.Shards > 0 {
		// Added after version 1 was out: a job without it ends here.
		e.uvarint(uint64(j.Shard))
		e.uvarint(uint64(j.Shards))
	}
	return e.b, nil
}

// strs stores a count and then each string.
func (e *encoder) strs(ss []string) {
	e.uvarint(uint64(len(ss)))
	for _, s := range ss {
		e.str(s)
	}
}

// strs reads what encoder.strs wrote; none decodes as nil.
func (d *decoder) strs() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	ss := make([]string, 0, n)
	for range n {
		ss = append(ss, d.str())
	}
	return ss
}

// decodeJob decodes a value written by encodeJob for id. It never panics;
// malformed input yields an error wrapping ErrCorrupt.
func decodeJob(id string, b []byte) (Job, error) {
	d := decoder{b: b}
	d.version()
	j := Job{ID: id, Created: d.time()}
	if j.State = JobState(d.byte1()); d.err == nil && j.State >= numJobStates {
		d.fail("unknown job state %d", j.State)
	}
	j.Paths = d.strs()
	j.Error = d.str()
	j.Failed = d.strs()
	if d.err == nil && len(d.b) > 0 {
		j.Shard, j.Shards = int(d.uvarint()), int(d.uvarint())
		if d.err == nil && (j.Shards < 1 || j.Shard >= j.Shards) {
			d.fail("shard %d of %d", j.Shard, j.Shards)
		}
	}
	if err := d.end(); err != nil {
		return Job{}, fmt.Errorf("job %s: %w", id, err)
	}
	return j, nil
}

// encodeCurrent encodes the value of the current bucket: codec version (1),
// then the cache ID as string.
func encodeCurrent(id string) []byte {
	e := encoder{b: make([]byte, 0, 2+len(id))}
	e.b = append(e.b, codecV1)
	e.str(id)
	return e.b
}

// decodeCurrent decodes a value written by encodeCurrent; callers name the
// key in their error. It never panics; malformed input, including an empty
// ID, wraps ErrCorrupt.
func decodeCurrent(b []byte) (string, error) {
	d := decoder{b: b}
	d.version()
	id := d.str()
	if d.err == nil && id == "" {
		d.fail("empty cache ID")
	}
	if err := d.end(); err != nil {
		return "", err
	}
	return id, nil
}
