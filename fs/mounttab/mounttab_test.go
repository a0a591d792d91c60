package mounttab

import (
	"slices"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	line := `36 35 0:45 /sub /mnt/with\040space ro,nosuid,nodev,relatime shared:1 - fuse.s3cachefs s3://bucket/p\134q/ ro,user_id=0,group_id=0`
	e, ok := ParseLine(line)
	want := Entry{ID: "36", Root: "/sub", Point: "/mnt/with space", Options: "ro,nosuid,nodev,relatime",
		FSType: FSType, Source: `s3://bucket/p\q/`, Super: "ro,user_id=0,group_id=0", Owner: 0}
	if !ok || e != want {
		t.Fatalf("parsed %+v, %v\nwant   %+v", e, ok, want)
	}
	if got := e.AllOptions(); !slices.Equal(got, []string{"ro", "nosuid", "nodev", "relatime", "ro", "user_id=0", "group_id=0"}) {
		t.Errorf("AllOptions = %q", got)
	}
	e, ok = ParseLine(`36 35 0:45 / /m rw - fuse.s3cachefs s3://b ro,user_id=65534,group_id=65534`)
	if !ok || e.Owner != 65534 {
		t.Fatalf("parsed %+v, %v; want owner 65534", e, ok)
	}
	if e, ok = ParseLine(`36 35 0:45 / /m rw - ext4 /dev/sda1 rw`); !ok || e.Owner != -1 || e.FSType != "ext4" {
		t.Fatalf("parsed %+v, %v; want owner -1", e, ok)
	}
	if e, ok = ParseLine(`36 35 0:45 / /m rw - tmpfs tmpfs`); !ok || e.Super != "" || len(e.AllOptions()) != 1 {
		t.Fatalf("parsed %+v, %v; want no superblock options", e, ok)
	}
	// A "-" before the seventh field is a mount point, not the separator.
	if e, ok = ParseLine(`36 35 0:45 / - rw - ext4 /dev/sda1 rw`); !ok || e.Point != "-" || e.FSType != "ext4" {
		t.Fatalf("parsed %+v, %v; want the mount point -", e, ok)
	}
	for _, bad := range []string{"garbage", "", "1 2 3 4 5 6 -", `36 35 0:45 / /m rw - ext4`} {
		if e, ok := ParseLine(bad); ok {
			t.Errorf("parsed %q as %+v", bad, e)
		}
	}
}

func TestParseAndAt(t *testing.T) {
	table := "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n" +
		"garbage\n" +
		"40 22 0:45 / /mnt rw - fuse.s3cachefs s3://a ro\n" +
		"41 40 0:46 / /mnt rw - fuse.s3cachefs s3://b ro\n"
	es, err := Parse(strings.NewReader(table))
	if err != nil || len(es) != 3 {
		t.Fatalf("Parse = %+v, %v; want 3 entries", es, err)
	}
	if e, ok := At(es, "/mnt"); !ok || e.Source != "s3://b" {
		t.Errorf("At(/mnt) = %+v, %v; want the mount on top, s3://b", e, ok)
	}
	if _, ok := At(es, "/nowhere"); ok {
		t.Error("At(/nowhere) found a mount")
	}
}

// TestRead: this process's own table has its root.
func TestRead(t *testing.T) {
	es, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := At(es, "/"); !ok {
		t.Errorf("no mount at / among %d entries", len(es))
	}
}

// FuzzParseLine: no line makes the parser panic, and an entry it returns
// has a type and a mount point.
func FuzzParseLine(f *testing.F) {
	f.Add(`36 35 0:45 / /mnt/with\040space rw shared:1 - fuse.s3cachefs s3://b ro,user_id=0`)
	f.Add(`1 2 3 4 5 6 - a b`)
	f.Add(`\\\ \0 \01 \777`)
	f.Fuzz(func(t *testing.T, line string) {
		if e, ok := ParseLine(line); ok && (e.FSType == "" || e.Point == "") {
			t.Fatalf("parsed %q as %+v", line, e)
		}
	})
}
