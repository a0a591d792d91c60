#!/usr/bin/python3
"""Read a mounted copy of the test dataset the ways trainers do, and compare
every byte with the local copy.

    check.py MOUNT DATASET ROUNDS

Runs inside a gVisor sandbox (see gvisor_test.go). Prints one line,
"CHECK " and a JSON object of counts; exits 0 even on mismatches (the test
asserts on the counts), non-zero only if the check itself broke.
"""

import hashlib
import json
import mmap
import os
import random
import sys

import numpy as np


def main():
    mount, dataset, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = {"files": 0, "reads": 0, "wrong_reads": 0, "errors": [],
           "listed_ok": True, "stat_ok": True, "walked": 0,
           "ranged": 0, "wrong_ranged": 0, "npz": 0, "wrong_npz": 0,
           "seek_end_wrong": 0, "mmap": ""}
    want = {}
    for split in ("train", "dev"):
        with open(os.path.join(dataset, split, "manifest.json")) as f:
            manifest = json.load(f)
        for e in manifest["files"]:
            want[split + "/" + e["file"]] = (e["size"], e["sha256"])
        names = sorted(n for n in os.listdir(os.path.join(mount, split)))
        expect = sorted(["manifest.json"] + [e["file"] for e in manifest["files"]])
        if names != expect:
            out["listed_ok"] = False
            out["errors"].append("listing of %s: %s" % (split, names[:5]))
    out["files"] = len(want)
    for rel, (size, _) in want.items():
        st = os.stat(os.path.join(mount, rel))
        if st.st_size != size:
            out["stat_ok"] = False
            out["errors"].append("stat %s: size %d, want %d" % (rel, st.st_size, size))
    for _, _, files in os.walk(mount):
        out["walked"] += len(files)
    # Many whole reads in quick succession: cold first, then cached.
    for _ in range(rounds):
        for rel, (_, digest) in sorted(want.items()):
            try:
                with open(os.path.join(mount, rel), "rb") as f:
                    data = f.read()
            except OSError as e:  # close(2) errors land here too
                out["errors"].append("read %s: %s" % (rel, e))
                continue
            out["reads"] += 1
            if hashlib.sha256(data).hexdigest() != digest:
                out["wrong_reads"] += 1
    # Random ranged reads, as numpy opening an NPZ at its end does.
    rng = random.Random(7)
    names = sorted(want)
    for _ in range(200):
        rel = rng.choice(names)
        size = want[rel][0]
        off = rng.randrange(size)
        n = rng.randrange(1, 3 << 20)
        with open(os.path.join(dataset, rel), "rb") as f:
            f.seek(off)
            expect = f.read(n)
        fd = os.open(os.path.join(mount, rel), os.O_RDONLY)
        try:
            got = os.pread(fd, n, off)
        finally:
            os.close(fd)
        out["ranged"] += 1
        if got != expect:
            out["wrong_ranged"] += 1
    # lseek(SEEK_END) must land at the size: zipfile, and so numpy.load,
    # finds an NPZ's directory that way.
    for rel in names:
        fd = os.open(os.path.join(mount, rel), os.O_RDONLY)
        try:
            if os.lseek(fd, 0, os.SEEK_END) != want[rel][0]:
                out["seek_end_wrong"] += 1
        finally:
            os.close(fd)
    for rel in names:
        if not rel.endswith(".npz") or out["seek_end_wrong"]:
            continue
        out["npz"] += 1
        with np.load(os.path.join(mount, rel)) as got, np.load(os.path.join(dataset, rel)) as exp:
            if sorted(got.files) != sorted(exp.files) or any(
                    not np.array_equal(got[k], exp[k]) for k in exp.files):
                out["wrong_npz"] += 1
    # mmap of a file on the mount: reported, not required (gVisor refuses it).
    fd = os.open(os.path.join(mount, names[0]), os.O_RDONLY)
    try:
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mm:
            out["mmap"] = "ok" if mm[:4096] == open(os.path.join(dataset, names[0]), "rb").read(4096) else "wrong bytes"
    except OSError as e:
        out["mmap"] = "refused: " + os.strerror(e.errno)
    finally:
        os.close(fd)
    print("CHECK " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
