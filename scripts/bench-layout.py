#!/usr/bin/env python3
"""Shard layouts on this disk, beside `cp` + sync of the same bytes in the same run.

    python3 scripts/bench-layout.py [--dir D] [--mib 430] [--shard-kib 391] [--batch 40] [--runs 3]

What a node's store does for a first `cairn add` of 256 MiB (3-of-5: ~430 MiB in ~1100 shards,
a window of 8 chunks = 40 shards per durable batch), written three ways:

- files:  a file per shard (the store today): create, write, close; one syncfs per batch;
          deletion is one unlink per shard.
- log:    append-only log files with an index elsewhere (Storj's hashstore): one write per shard
          into the open log, one fdatasync per batch; deletion is compaction (not timed).
- cp:     the baseline: one file of the same bytes written and fdatasynced once.

Prints MB/s of each and its ratio to the baseline, median of --runs, and the time to delete the
shard files. The files go under --dir (default: a temporary directory in /work, the disk the
store uses).
"""
import argparse
import ctypes
import os
import shutil
import statistics
import tempfile
import time

libc = ctypes.CDLL("libc.so.6", use_errno=True)


def syncfs(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs")
    finally:
        os.close(fd)


def files(d, blobs, batch):
    t = time.perf_counter()
    for i, b in enumerate(blobs):
        fd = os.open(os.path.join(d, f"s{i:06}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b)
        os.close(fd)
        if (i + 1) % batch == 0:
            syncfs(d)
    syncfs(d)
    return time.perf_counter() - t


def log(d, blobs, batch):
    t = time.perf_counter()
    fd = os.open(os.path.join(d, "log"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    for i, b in enumerate(blobs):
        os.write(fd, b)
        if (i + 1) % batch == 0:
            os.fdatasync(fd)
    os.fdatasync(fd)
    os.close(fd)
    return time.perf_counter() - t


def cp(d, blobs, _batch):
    whole = b"".join(blobs)
    t = time.perf_counter()
    fd = os.open(os.path.join(d, "copy"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    view = memoryview(whole)
    while view:
        n = os.write(fd, view[: 64 << 20])
        view = view[n:]
    os.fdatasync(fd)
    os.close(fd)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/work")
    ap.add_argument("--mib", type=int, default=430)
    ap.add_argument("--shard-kib", type=int, default=391)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    n = a.mib * 1024 // a.shard_kib
    blobs = [os.urandom(a.shard_kib * 1024) for _ in range(n)]
    total = n * a.shard_kib * 1024
    times = {"cp": [], "files": [], "log": []}
    unlink = []
    for _ in range(a.runs):
        # Alternate the three in each run, so a noisy moment hits all of them.
        for name, f in (("cp", cp), ("files", files), ("log", log)):
            d = tempfile.mkdtemp(prefix="cairn-layout.", dir=a.dir)
            try:
                times[name].append(f(d, blobs, a.batch))
                if name == "files":
                    t = time.perf_counter()
                    for i in range(n):
                        os.unlink(os.path.join(d, f"s{i:06}"))
                    syncfs(d)
                    unlink.append(time.perf_counter() - t)
            finally:
                shutil.rmtree(d, ignore_errors=True)
    base = statistics.median(times["cp"])
    print(f"{n} shards of {a.shard_kib} KiB ({total / 1e6:.0f} MB), a sync per {a.batch}, median of {a.runs}")
    for name in ("cp", "files", "log"):
        m = statistics.median(times[name])
        print(f"  {name:6} {total / m / 1e6:8.1f} MB/s   x cp {base / m:5.2f}   ({', '.join(f'{t:.2f}' for t in times[name])} s)")
    print(f"  delete {n} shard files + syncfs: median {statistics.median(unlink) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
