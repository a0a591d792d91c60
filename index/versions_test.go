package index

import (
	"errors"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestSetCurrentReturnsStaleOnce(t *testing.T) {
	db := openTest(t)
	if _, ok, err := db.Current("k"); ok || err != nil {
		t.Fatalf("Current before any SetCurrent = %v, %v", ok, err)
	}
	steps := []struct {
		id    string
		stale []string
	}{
		{"v1", nil},
		{"v1", nil}, // idempotent
		{"v2", []string{"v1"}},
		{"v2", nil}, // v1 is not returned a second time
		{"v1", []string{"v2"}},
	}
	for i, s := range steps {
		stale, err := db.SetCurrent("k", s.id)
		if err != nil || !slices.Equal(stale, s.stale) {
			t.Errorf("step %d: SetCurrent(k, %s) = %q, %v; want %q", i, s.id, stale, err, s.stale)
		}
		if id, ok, err := db.Current("k"); err != nil || !ok || id != s.id {
			t.Errorf("step %d: Current = %q, %v, %v; want %q", i, id, ok, err, s.id)
		}
	}
	// Keys are independent.
	if stale, err := db.SetCurrent("k2", "v9"); err != nil || stale != nil {
		t.Errorf("SetCurrent(k2) = %q, %v", stale, err)
	}
	if id, _, _ := db.Current("k"); id != "v1" {
		t.Errorf("Current(k) = %q after setting k2", id)
	}
}

func TestSetCurrentRefusesEmpty(t *testing.T) {
	db := openTest(t)
	for _, c := range [][2]string{{"", "v"}, {"k", ""}} {
		if _, err := db.SetCurrent(c[0], c[1]); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetCurrent(%q, %q): err = %v, want ErrInvalid", c[0], c[1], err)
		}
	}
}

func TestCurrentRefusesCorruptValue(t *testing.T) {
	db := openTest(t)
	for _, v := range [][]byte{{}, {2, 1, 'a'}, {1, 0}, {1, 5, 'a'}, {1, 1, 'a', 0}} {
		err := db.bolt.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketCurrent).Put([]byte("k"), v) })
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := db.Current("k"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Current of %v: err = %v, want ErrCorrupt", v, err)
		}
		if _, err := db.SetCurrent("k", "v"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("SetCurrent over %v: err = %v, want ErrCorrupt", v, err)
		}
	}
}
