package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes parseSize accepts, longest first so that
// "GiB" is not read as "B".
var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// parseSize parses a byte count like 400GiB, 1.5T, 500MB or 1048576.
// Single letters are binary (K = KiB), as in most Unix tools.
func parseSize(flag, s string) (int64, error) {
	bad := fmt.Errorf("%s must be a size like 400GiB, 500MB or 1048576, got %q", flag, s)
	num, mult := strings.TrimSpace(s), 1.0
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) || v*mult >= math.MaxInt64 {
		return 0, bad
	}
	return int64(v * mult), nil
}

// minFree is --min-free: bytes, or a percentage of the cache filesystem.
type minFree struct {
	Bytes   int64
	Percent float64 // used when Bytes is 0
}

// parseMinFree parses --min-free: a size or a percentage like 5%.
func parseMinFree(s string) (minFree, error) {
	if p, ok := strings.CutSuffix(strings.TrimSpace(s), "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || v >= 100 || math.IsNaN(v) {
			return minFree{}, fmt.Errorf("--min-free must be a size or a percentage below 100%%, got %q", s)
		}
		return minFree{Percent: v}, nil
	}
	n, err := parseSize("--min-free", s)
	return minFree{Bytes: n}, err
}

// parseSizeIn parses a size flag that must lie within [lo, hi].
func parseSizeIn(flag, s string, lo, hi int64) (int64, error) {
	n, err := parseSize(flag, s)
	if err != nil {
		return 0, err
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%s must be %s to %s, got %q", flag, humanBytes(lo), humanBytes(hi), s)
	}
	return n, nil
}
