package main

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"0": 0, "1048576": 1 << 20, "400GiB": 400 << 30, "1.5T": 3 << 39, "500MB": 500e6,
		"2K": 2048, "7B": 7, "1 GiB": 1 << 30,
	}
	for in, want := range good {
		if got, err := parseSize("--x", in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "-1G", "1X", "NaN", "Inf", "1e30T", "1.2.3M"} {
		if _, err := parseSize("--x", in); err == nil || !strings.Contains(err.Error(), "--x") {
			t.Errorf("parseSize(%q) = %v; want an error naming the flag", in, err)
		}
	}
}

func TestParseMinFree(t *testing.T) {
	if m, err := parseMinFree("5%"); err != nil || m.Percent != 5 || m.Bytes != 0 {
		t.Errorf("5%% = %+v, %v", m, err)
	}
	if m, err := parseMinFree("10GiB"); err != nil || m.Bytes != 10<<30 {
		t.Errorf("10GiB = %+v, %v", m, err)
	}
	for _, in := range []string{"100%", "-1%", "x%", "lots"} {
		if _, err := parseMinFree(in); err == nil {
			t.Errorf("parseMinFree(%q) accepted", in)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"400GiB", "1.5T", "0", "9223372036854775807", "1e18", "-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize("--max-cache-size", s)
		if err == nil && n < 0 {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
		if err != nil && !strings.Contains(err.Error(), "--max-cache-size") {
			t.Fatalf("error without the flag: %v", err)
		}
	})
}
