package main

import (
	"flag"
	"fmt"
	"strconv"
	"time"
)

// Typed flags. Every flag whose value has a form (a size, a duration, a
// mode, a bounded number, a URL) is a flag.Value that checks it when it is
// set, so a bad value is a command-line mistake found while parsing, with
// our message, whether it came as a flag or as a mount option (-o).

// typedValue is a flag.Value of T: parse turns the text into a T or says
// what is wrong with it, naming the flag.
type typedValue[T any] struct {
	dst   *T
	text  string // as given; the default's text for help
	parse func(string) (T, error)
	// err is what parse last refused: the flag package folds it into its
	// own `invalid value "x" for flag -name: ...`, and parseArgs shows
	// this instead (refusedValue).
	err error
}

func (v *typedValue[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		v.err = err
		return err
	}
	*v.dst, v.text, v.err = x, s, nil
	return nil
}

// String is the value as given. The flag package also calls it on a zero
// typedValue, to tell a default worth printing from none.
func (v *typedValue[T]) String() string { return v.text }

// refused returns the error of the last value refused, or nil.
func (v *typedValue[T]) refused() error { return v.err }

// typedFlag defines a flag of fs whose value parse reads, set to def,
// and returns where the value lands. def must parse.
func typedFlag[T any](fs *flag.FlagSet, name, def, usage string, parse func(string) (T, error)) *T {
	v := &typedValue[T]{dst: new(T), parse: parse}
	if err := v.Set(def); err != nil {
		panic(fmt.Sprintf("default of --%s: %v", name, err))
	}
	fs.Var(v, name, usage)
	return v.dst
}

// refusedValue returns the message of the typed flag of fs that refused
// its value, or nil if none did.
func refusedValue(fs *flag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if r, ok := f.Value.(interface{ refused() error }); ok && err == nil {
			err = r.refused()
		}
	})
	return err
}

// sizeIn parses a size flag that must lie within [lo, hi].
func sizeIn(name string, lo, hi int64) func(string) (int64, error) {
	return func(s string) (int64, error) { return parseSizeIn(name, s, lo, hi) }
}

// intIn parses a whole number within [lo, hi].
func intIn(name string, lo, hi int64) func(string) (int64, error) {
	return func(s string) (int64, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%s must be %d to %d, got %s", name, lo, hi, s)
		}
		return n, nil
	}
}

// intFlag defines a flag of a whole number within [lo, hi].
func intFlag(fs *flag.FlagSet, name string, def, lo, hi int64, usage string) *int64 {
	return typedFlag(fs, name, strconv.FormatInt(def, 10), usage, intIn("--"+name, lo, hi))
}

// durationIn parses a duration within [lo, hi]; hi 0 means no upper
// bound. want says the range in the message.
func durationIn(name string, lo, hi time.Duration, want string) func(string) (time.Duration, error) {
	return func(s string) (time.Duration, error) {
		d, err := time.ParseDuration(s)
		if err != nil || d < lo || hi > 0 && d > hi {
			return 0, fmt.Errorf("%s must be %s, got %s", name, want, s)
		}
		return d, nil
	}
}

// modeIn parses octal permission bits for flag name.
func modeIn(name string) func(string) (uint32, error) {
	return func(s string) (uint32, error) { return parseMode(name, s) }
}
