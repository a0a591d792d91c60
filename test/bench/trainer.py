"""The trainer of the bench's `trainer` figure, and its dataset.

    trainer.py gen DIR FILES MIN_MIB MAX_MIB SEED
        writes FILES NPZ files of MIN_MIB..MAX_MIB MiB (seeded, mixed sizes)
        to DIR, and DIR.json: each file's array bytes, for the check below.
    trainer.py epochs DIR EPOCHS SEED
        reads every NPZ file of DIR once per epoch as a PyTorch training
        loop does: a DataLoader with 4 workers, shuffled, numpy.load per
        sample, every member read in full. Prints one JSON line per epoch:
        {"epoch": N, "seconds": S, "bytes": B, "samples": K}.

Run with /usr/bin/python3 (Debian's python3-numpy and python3-torch).
"""

import json
import os
import sys
import time

import numpy as np

# Columns of each file's "x" array (float32): the rows make up its size.
COLUMNS = 1024


def gen(out, files, min_mib, max_mib, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    manifest = {}
    for i in range(files):
        size = int(rng.integers(min_mib << 20, (max_mib << 20) + 1))
        rows = max(1, size // (COLUMNS * 4))
        x = rng.standard_normal((rows, COLUMNS), dtype=np.float32)
        y = rng.integers(0, 10, size=rows, dtype=np.int64)
        meta = np.frombuffer(("sample %d" % i).encode(), dtype=np.uint8)
        name = "rec_%04d.npz" % i
        np.savez(os.path.join(out, name), x=x, y=y, meta=meta)
        manifest[name] = int(x.nbytes + y.nbytes + meta.nbytes)
    with open(out.rstrip("/") + ".json", "w") as f:
        json.dump(manifest, f)


class Files:
    """One sample per NPZ file: numpy.load, then every member in full."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with np.load(self.paths[i]) as z:
            return sum(int(z[k].nbytes) for k in z.files)


def epochs(folder, count, seed):
    import torch
    from torch.utils.data import DataLoader

    paths = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".npz"))
    g = torch.Generator()
    g.manual_seed(seed)
    loader = DataLoader(Files(paths), batch_size=None, shuffle=True, num_workers=4, generator=g)
    for epoch in range(1, count + 1):
        start = time.monotonic()
        total = samples = 0
        for n in loader:
            total += int(n)
            samples += 1
        took = time.monotonic() - start
        print(json.dumps({"epoch": epoch, "seconds": took, "bytes": total, "samples": samples}), flush=True)


def main(argv):
    if len(argv) == 6 and argv[0] == "gen":
        gen(argv[1], int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5]))
    elif len(argv) == 4 and argv[0] == "epochs":
        epochs(argv[1], int(argv[2]), int(argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
