#!/usr/bin/python3
"""Generate a small sample of the EEG cache dataset: real .npz files.

    gen_dataset.py OUTDIR [--train N] [--dev N] [--seed S]

writes OUTDIR/train/*.npz and OUTDIR/dev/*.npz shaped like the real cache
(windows of 19-channel EEG as float32 plus per-window labels), and a
manifest.json in each split listing every file with its size and sha256.

The output is byte-for-byte the same for the same arguments: the arrays come
from a seeded generator and the ZIP entries carry a fixed timestamp (numpy's
own savez stamps the current time). File sizes vary between about 1 and 6 MiB
and are never a multiple of 1 MiB, so block-boundary reads get exercised.
"""

import argparse
import hashlib
import json
import os
import sys
import zipfile

import numpy as np

MIB = 1 << 20
CHANNELS = 19
SAMPLES = 256  # samples per window
WINDOW_BYTES = CHANNELS * SAMPLES * 4  # one float32 window
ZIP_DATE = (2025, 9, 19, 0, 0, 0)


def write_npz(path, arrays):
    """Write arrays to path as an uncompressed .npz with fixed timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)


def make_arrays(rng, windows):
    x = rng.standard_normal((windows, CHANNELS, SAMPLES), dtype=np.float32)
    y = (rng.random(windows) < 0.1).astype(np.int8)
    # A trailing odd-length array makes sizes land off block boundaries.
    offsets = rng.integers(0, 1 << 30, size=int(rng.integers(1, 500)), dtype=np.int64)
    return {"x": x, "y": y, "offsets": offsets}


def make_split(rng, outdir, split, count, min_mib, max_mib):
    folder = os.path.join(outdir, split)
    os.makedirs(folder, exist_ok=True)
    entries = []
    for i in range(count):
        target = rng.uniform(min_mib, max_mib) * MIB
        windows = max(1, int(target // WINDOW_BYTES))
        name = "%s_s%03d_t%03d.npz" % ("aaaa%04x" % int(rng.integers(0, 1 << 16)), i + 1, i % 7)
        path = os.path.join(folder, name)
        while True:
            arrays = make_arrays(rng, windows)
            write_npz(path, arrays)
            size = os.path.getsize(path)
            if size % MIB != 0:
                break
            windows += 1  # an exact multiple of 1 MiB: make another
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        entries.append({
            "file": name,
            "size": size,
            "sha256": digest,
            "windows": windows,
            "seizure_windows": int(arrays["y"].sum()),
        })
    manifest = {"split": split, "count": len(entries), "files": entries}
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    return entries


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("outdir")
    p.add_argument("--train", type=int, default=6, help="files in train/ (default 6)")
    p.add_argument("--dev", type=int, default=3, help="files in dev/ (default 3)")
    p.add_argument("--seed", type=int, default=20250919)
    p.add_argument("--min-mib", type=float, default=1.0)
    p.add_argument("--max-mib", type=float, default=6.0)
    args = p.parse_args(argv)
    if not 0 < args.min_mib <= args.max_mib:
        p.error("need 0 < --min-mib <= --max-mib")
    rng = np.random.default_rng(args.seed)
    total = 0
    for split, count in (("train", args.train), ("dev", args.dev)):
        entries = make_split(rng, args.outdir, split, count, args.min_mib, args.max_mib)
        total += sum(e["size"] for e in entries)
        print("%s: %d files" % (split, len(entries)))
    print("total: %.1f MiB in %s" % (total / MIB, args.outdir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
