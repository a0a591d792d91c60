package index

import "fmt"

// Entry kinds in an entry value.
const (
	entryFolder = 0
	entryFile   = 1
)

// encodeEntry encodes e (without its name, which is the bbolt key, nor the
// file's key, which is the folder's prefix plus the name):
//
//	byte     codec version (1)
//	byte     kind: 0 folder, 1 file
//	         files only: varint Size (>= 0), string ETag, time LastModified
//
// where string and time are as in codec.go.
func encodeEntry(e Entry) []byte { return appendEntry(nil, e) }

// appendEntry appends the encoding of e to b.
func appendEntry(b []byte, e Entry) []byte {
	if e.IsDir {
		return append(b, codecV1, entryFolder)
	}
	o := e.Object
	enc := encoder{b: append(b, codecV1, entryFile)}
	enc.varint(o.Size)
	enc.str(o.ETag)
	enc.time(o.LastModified)
	return enc.b
}

// entryIsDir reports whether the entry value b is a folder's, without
// decoding the rest (decodeEntry checks it).
func entryIsDir(b []byte) bool { return len(b) >= 2 && b[1] == entryFolder }

// decodeEntry decodes the value of entry name in the folder of prefix. It
// never panics; malformed input yields an error wrapping ErrCorrupt. A
// file's Name shares its memory with its Key: one allocation, not two.
func decodeEntry(prefix string, name, b []byte) (Entry, error) {
	d := decoder{b: b}
	d.version()
	var e Entry
	switch kind := d.byte1(); {
	case d.err != nil:
	case kind == entryFolder:
		e = Entry{Name: string(name), IsDir: true}
	case kind == entryFile:
		key := prefix + string(name)
		e = Entry{Name: key[len(prefix):]}
		e.Object = Object{Key: key, Size: d.nonNegative("size"), ETag: d.str(), LastModified: d.time()}
	default:
		d.fail("unknown entry kind %d", kind)
	}
	if err := d.end(); err != nil {
		return Entry{}, fmt.Errorf("listing %q entry %q: %w", prefix, name, err)
	}
	return e, nil
}

// encodeFolderInfo encodes a folder's FolderInfo:
//
//	byte     codec version (1)
//	time     ListedAt
//	uvarint  Gen (> 0)
//	uvarint  Entries
func encodeFolderInfo(info FolderInfo) []byte {
	e := encoder{b: make([]byte, 0, 24)}
	e.b = append(e.b, codecV1)
	e.time(info.ListedAt)
	e.uvarint(info.Gen)
	e.uvarint(uint64(info.Entries))
	return e.b
}

// decodeFolderInfo decodes a value written by encodeFolderInfo. It never
// panics; malformed input, a zero Gen or a count past int64 wraps
// ErrCorrupt.
func decodeFolderInfo(b []byte) (FolderInfo, error) {
	d := decoder{b: b}
	d.version()
	info := FolderInfo{ListedAt: d.time(), Gen: d.uvarint()}
	n := d.uvarint()
	switch {
	case d.err != nil:
	case info.Gen == 0:
		d.fail("generation 0")
	case n > 1<<62:
		d.fail("entry count %d", n)
	}
	info.Entries = int64(n)
	if err := d.end(); err != nil {
		return FolderInfo{}, fmt.Errorf("folder info: %w", err)
	}
	return info, nil
}
