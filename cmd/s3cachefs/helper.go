package main

// s3cachefs as a mount helper. For `mount -t fuse.s3cachefs SOURCE DIR -o
// OPTIONS` (or an /etc/fstab line, or a systemd mount unit), mount(8) runs
// /sbin/mount.fuse3, which runs `s3cachefs SOURCE DIR -o OPTIONS` through
// /bin/sh. What the two hand on, as util-linux 2.38 and fuse3 3.14 do it:
//
//   - mount(8) turns `defaults` into `rw` and always passes `rw` or `ro`;
//     it keeps `x-*`, `_netdev`, `user` and `comment=` to itself, passes
//     the VFS flags it knows (noexec, noatime, sync, ...) and the rest
//     unchanged, quotes included (`prefetch="train,dev"` stays one option).
//   - mount.fuse3 drops nofail, auto, noauto, user, nouser, users and
//     _netdev, handles setuid=USER and drop_privileges itself, and adds
//     `dev` and `suid` unless `nodev` / `nosuid` were given.
//   - mount(8) removes PATH and HOME from the environment and mount.fuse3
//     sets HOME=/root (unless setuid=), so /bin/sh finds the helper on its
//     built-in default path (dash: /usr/local/sbin:/usr/local/bin:/usr/sbin:
//     /usr/bin:/sbin:/bin) and the AWS SDK reads root's ~/.aws; every other
//     variable, AWS_* included, reaches the helper.
//
// So an option is either a flag of `s3cachefs mount` spelt with '_' for '-'
// (cache_dir=DIR, force_path_style, passthrough=false), or one of the
// filesystem-independent options below, or refused.

import (
	"flag"
	"fmt"
	"strings"
)

// mountOptions is what -o lists said beyond the flags they set.
type mountOptions struct {
	NoExec bool // noexec: the kernel refuses to execute files of the mount
}

// ignoredOptions are the usual filesystem-independent options that change
// nothing for a read-only s3cachefs mount: the mount is always ro, nosuid
// and nodev whatever rw, dev or suid say (mount(8) and mount.fuse3 pass
// those on every mount); atime and sync options do not matter where
// nothing is written; the fstab and systemd ones are for mount(8) and
// systemd, and reach the helper only when it is run by hand.
var ignoredOptions = map[string]bool{
	"defaults": true, "ro": true, "rw": true,
	"dev": true, "nodev": true, "suid": true, "nosuid": true,
	"auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"user": true, "nouser": true, "users": true, "owner": true, "group": true,
	"async": true, "sync": true, "dirsync": true,
	"atime": true, "noatime": true, "diratime": true, "nodiratime": true,
	"relatime": true, "norelatime": true, "strictatime": true, "nostrictatime": true,
	"lazytime": true, "nolazytime": true, "iversion": true, "noiversion": true,
	"mand": true, "nomand": true, "silent": true, "loud": true,
	// Always on: the kernel checks the modes every file shows.
	"default_permissions": true,
}

// ignoredPrefixes start options that are for mount(8) and systemd only:
// x-systemd.*, x-mount.*, X-mount.mkdir, comment=systemd.automount.
var ignoredPrefixes = []string{"x-", "X-", "comment="}

// applyMountOptions takes every `-o LIST` (and `-oLIST`) out of args, sets
// the mount flag each option names on fs, and returns the other arguments
// and what the options said beyond flags. It runs before fs.Parse, so a
// flag on the command line wins over the same flag given as an option.
func applyMountOptions(fs *flag.FlagSet, args []string) ([]string, mountOptions, error) {
	mustNotShadowOptions(fs)
	var mo mountOptions
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		var list string
		switch {
		case a == "--":
			return append(rest, args[i:]...), mo, nil
		case a == "-o":
			if i+1 == len(args) {
				return nil, mo, usagef("-o needs a list of mount options, e.g. -o cache_dir=DIR,force_path_style")
			}
			i++
			list = args[i]
		case strings.HasPrefix(a, "-o") && fs.Lookup(flagName(a)) == nil:
			list = a[2:]
		default:
			rest = append(rest, a)
			if takesValue(fs, a) && i+1 < len(args) {
				i++
				rest = append(rest, args[i])
			}
			continue
		}
		opts, err := splitOptions(list)
		if err != nil {
			return nil, mo, err
		}
		for _, opt := range opts {
			if err := mo.apply(fs, opt); err != nil {
				return nil, mo, err
			}
		}
	}
	return rest, mo, nil
}

// apply applies one option.
func (mo *mountOptions) apply(fs *flag.FlagSet, opt string) error {
	name, value, hasValue := strings.Cut(opt, "=")
	switch {
	case opt == "":
		return nil
	case !hasValue && ignoredOptions[name]:
		return nil
	case !hasValue && (name == "noexec" || name == "exec"):
		mo.NoExec = name == "noexec"
		return nil
	}
	for _, p := range ignoredPrefixes {
		if strings.HasPrefix(opt, p) {
			return nil
		}
	}
	f := fs.Lookup(strings.ReplaceAll(name, "_", "-"))
	if f == nil {
		return usagef("unknown mount option %q: options are the flags of \"s3cachefs mount\" with _ for - "+
			"(cache_dir=DIR, endpoint_url=URL, force_path_style, ...) and the usual ro, noexec, allow_other, _netdev, nofail, x-systemd.*", opt)
	}
	switch {
	case !hasValue && isBoolFlag(f):
		value = "true"
	case !hasValue:
		return usagef("mount option %s needs a value: %s=...", name, name)
	}
	if err := fs.Set(f.Name, value); err != nil {
		return usagef("mount option %s: invalid value %q: %v", name, value, err)
	}
	return nil
}

// splitOptions splits a comma-separated option list. A comma inside double
// quotes (prefetch="train,dev", the form fstab needs, as mount(8) keeps
// quoted commas) or after a backslash (prefetch=train\,dev, libfuse's
// form) belongs to the value; the quotes and the backslash are removed.
func splitOptions(list string) ([]string, error) {
	var opts []string
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(list); i++ {
		switch c := list[i]; {
		case c == '\\' && i+1 < len(list) && strings.IndexByte(`,"\`, list[i+1]) >= 0:
			i++
			cur.WriteByte(list[i])
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			opts = append(opts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if quoted {
		return nil, usagef("mount options %q: a \" is not closed", list)
	}
	return append(opts, cur.String()), nil
}

// mustNotShadowOptions panics if a flag of fs would be read as one of the
// filesystem-independent options (a flag named sync, say): mount(8) and
// mount.fuse3 pass some of those on every mount, so such a flag must get
// another name. Every test that parses mount flags runs this check.
func mustNotShadowOptions(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		for _, name := range []string{f.Name, strings.ReplaceAll(f.Name, "-", "_")} {
			shadowed := ignoredOptions[name] || name == "noexec" || name == "exec" || name == "o"
			for _, p := range ignoredPrefixes {
				shadowed = shadowed || strings.HasPrefix(name+"=", p)
			}
			if shadowed {
				panic(fmt.Sprintf("flag --%s has the name of a mount option of its own", f.Name))
			}
		}
	})
}

// flagName is the name in a command-line argument like --name=value.
func flagName(arg string) string {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return name
}

// takesValue reports whether arg is a flag of fs whose value is the next
// argument (--cache-dir DIR), so that a value "-o" is not read as options.
func takesValue(fs *flag.FlagSet, arg string) bool {
	if len(arg) < 2 || arg[0] != '-' || strings.Contains(arg, "=") {
		return false
	}
	f := fs.Lookup(flagName(arg))
	return f != nil && !isBoolFlag(f)
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
