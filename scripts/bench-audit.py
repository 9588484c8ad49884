#!/usr/bin/env python3
"""What storage-proof audits cost in bandwidth: computed from the code's constants, then measured
on a network of real nodes.

    python3 scripts/bench-audit.py [--default-period 1d] [--target-pct 0.1]
                                   [--nodes 5] [--mib 64] [--period 4s] [--periods 9]
                                   [--idle 8] [--no-measure]

Computed (constants read from the source: AUDIT_GROUPS, the bao block of artifact/src/bao.rs,
the chunker's sizes, the AES-GCM tag, Params::DEFAULT, the AUDIT frame layout and
AUDIT_BATCH_MAX, the caretaker's ROUNDS_PER_PERIOD and SAMPLE_SLOWER, `cairn node`'s default
--audit-period): for the shards the default chunking makes at 3-of-5 (smallest, average and
largest chunk), the bytes of one shard audit (answer = per challenged group a u32, the group and
64 bytes per bao tree level; plus its framing), the audit bytes per stored GiB per day at the
default period, as a percentage of the stored bytes, and the period that keeps it under
--target-pct % a day. Two rates: the design floor (every shard audited once per period) and the
caretaker's schedule (the chunk's caretaker audits the n-1 other shards every period, each other
holder audits its n-1 co-holders' shards every SAMPLE_SLOWER periods, rounds every period /
ROUNDS_PER_PERIOD with up to a quarter of that added at random).

Measured: --nodes `cairn node` processes (release build; CAIRN_BIN names another) in a network
namespace of their own (`unshare -n`, as root), so that the loopback interface carries only
their traffic and its byte counter is the bytes on the wire (IP, UDP, QUIC included). The idle
network is measured first (--idle seconds: membership traffic, no data); then --mib MiB are
published at 3-of-5, the first round (which audits every new shard at once) is let pass, and
--periods audit periods of --period are measured: loopback bytes less the idle rate, shard
audits answered (`cairn_node_audits_answered_total`, from each node's --metrics endpoint) and
the nodes' CPU time. Reported: wire bytes per shard audit beside the computed figure, audits per
shard per period beside the schedule, and audit bytes per stored byte per period, extrapolated
to a stored GiB per day at the default period.
"""
import argparse
import fcntl
import math
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchnet as bn  # noqa: E402

GIB = 1 << 30
DAY = 86400


def src(path):
    return open(os.path.join(bn.ROOT, path)).read()


def const(path, name):
    """An integer `const NAME: T = <expr>;` of a Rust file; expr of digits, *, +, <<."""
    m = re.search(rf"const {name}: [\w:]+ = ([0-9 *+<>_()]+);", src(path))
    if not m:
        raise RuntimeError(f"{name} not found in {path}")
    expr = m.group(1).replace("_", "")
    if not re.fullmatch(r"[0-9 *+<>()]+", expr):
        raise RuntimeError(f"{name} = {expr!r}: not simple arithmetic")
    return int(eval(expr))  # digits and operators only, checked above


def duration_s(s):
    m = re.fullmatch(r"(\d+)([smhdw])", s.strip())
    if not m:
        raise ValueError(f"duration {s!r}: use e.g. 30s, 15m, 12h, 1d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}[m.group(2)]


def constants():
    c = {}
    c["groups"] = const("artifact/src/audit.rs", "AUDIT_GROUPS")
    log = int(re.search(r"BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log\((\d+)\)",
                        src("artifact/src/bao.rs")).group(1))
    c["group_len"] = 1024 << log  # BLAKE3 chunks of 1 KiB
    for n in ("CHUNK_MIN", "CHUNK_AVG", "CHUNK_MAX"):
        c[n] = const("artifact/src/chunker.rs", n)
    c["tag"] = const("encryption/src/seal.rs", "TAG_LEN")
    c["shard_max"] = const("artifact/src/manifest.rs", "SHARD_LEN_MAX")
    m = re.search(r"DEFAULT: Params = Params \{ k: (\d+), m: (\d+) \}",
                  "".join(src(os.path.join("erasure/src", f))
                          for f in os.listdir(os.path.join(bn.ROOT, "erasure/src"))
                          if f.endswith(".rs")))
    c["k"], c["m"] = int(m.group(1)), int(m.group(2))
    c["batch_max"] = const("swarm/src/protocol.rs", "AUDIT_BATCH_MAX")
    c["rounds"] = const("node/src/care.rs", "ROUNDS_PER_PERIOD")
    c["slower"] = const("node/src/care.rs", "SAMPLE_SLOWER")
    main = src("src/main.rs")
    node = main[main.index("    Node {"):]
    c["default_period"] = re.search(r'default_value = "(\w+)"\)\]\s*audit_period', node).group(1)
    return c


def depths(g):
    """Depth (parents above it) of each of the g leaves of a BLAKE3-shaped tree: the left
    subtree takes the largest power of two of leaves that leaves at least one to the right."""
    if g <= 1:
        return [0]
    left = 1 << ((g - 1).bit_length() - 1)
    return [d + 1 for d in depths(left) + depths(g - left)]


def answer_len(c, size):
    """Mean answer bytes of one shard audit of a `size`-byte shard (groups picked uniformly)."""
    g = max(1, math.ceil(size / c["group_len"]))
    per = [4 + min(c["group_len"], size - i * c["group_len"]) + 64 * d
           for i, d in enumerate(depths(g))]
    if g <= c["groups"]:
        return sum(per)
    return c["groups"] * sum(per) / g


def wire_len(c, size, batch):
    """Application bytes per shard audit: the answer with its state and length in the reply, its
    CID in the request and in the receipt, and a share of each batch's fixed bytes (request
    header, nonce, lease, count; reply header; receipt header, signature, framing)."""
    cid = 1 + 36
    fixed = (2 + 32 + 8 + 2) + (2 + 2) + (2 + 4 + 124 + 64) + 2
    return answer_len(c, size) + (1 + 4) + cid + cid + fixed / batch


def schedule_rate(c):
    """Audits per shard per period under the caretaker's schedule, and the same with the rounds'
    granularity (a shard is asked again at the first round at least `every` after the last)."""
    n = c["k"] + c["m"]
    per_chunk = (n - 1) + (n - 1) * (n - 1) / c["slower"]
    rate = per_chunk / n
    # Rounds are period/R apart plus U(0, period/(4R)): R rounds (and SAMPLE_SLOWER·R) take
    # 1 + 1/8 of what they wait for on average.
    return rate, rate / (1 + 1 / 8)


def computed(c, period_s, target_pct, extra_sizes):
    k, n = c["k"], c["k"] + c["m"]
    print(f"constants: {c['groups']} groups of {c['group_len']} B per challenge; chunks "
          f"{c['CHUNK_MIN'] >> 10}/{c['CHUNK_AVG'] >> 10}/{c['CHUNK_MAX'] >> 10} KiB "
          f"(min/avg/max); AES-GCM tag {c['tag']} B; {k}-of-{n}; batches of up to "
          f"{c['batch_max']} shards; {c['rounds']} rounds per period, other holders "
          f"{c['slower']}x slower; default --audit-period {c['default_period']}")
    floor, (sched, sched_lag) = 1.0, schedule_rate(c)
    print(f"audits per shard per period: design floor {floor:.2f}; caretaker schedule "
          f"{sched:.2f} ({sched_lag:.2f} with the rounds' granularity)")
    shard = lambda chunk: math.ceil((chunk + c["tag"]) / k)  # noqa: E731
    rows = [(f"{name} ({c[key] >> 10} KiB)", shard(c[key])) for name, key in
            (("smallest chunk", "CHUNK_MIN"), ("average chunk", "CHUNK_AVG"),
             ("largest chunk", "CHUNK_MAX"))] + extra_sizes
    days = period_s / DAY
    print(f"\nat --audit-period {period_s}s ({days:g} d); 'per GiB' is per GiB of shards "
          f"stored ({n}/{k} of the data)")
    hdr = (f"{'shard of':<22} {'shard B':>9} {'groups':>6} {'answer B':>9} {'wire B':>9} "
           f"{'% shard':>8} {'MiB/GiB/day':>12} {'%/day':>7} {'%/day sched':>11} "
           f"{'period for ' + str(target_pct) + '%':>16} {'(sched)':>9}")
    print(hdr)
    out = []
    for name, size in rows:
        g = math.ceil(size / c["group_len"])
        a = answer_len(c, size)
        w = wire_len(c, size, c["batch_max"])
        per_audit = w / size
        per_day = per_audit * floor / days
        per_day_s = per_audit * sched_lag / days
        need = days * per_day / (target_pct / 100)
        need_s = days * per_day_s / (target_pct / 100)
        print(f"{name:<22} {size:>9} {g:>6} {a:>9.0f} {w:>9.0f} "
              f"{100 * a / size:>7.1f}% {GIB / size * w * floor / days / (1 << 20):>12.1f} "
              f"{100 * per_day:>6.2f}% {100 * per_day_s:>10.2f}% {need:>14.0f} d {need_s:>7.0f} d")
        out.append((name, size, a, w))
    per_group = (4 + c["group_len"] + 64 * 5) / math.ceil((c["CHUNK_AVG"] + c["tag"]) / k)
    print(f"\none group per shard instead of {c['groups']} at the average chunk: "
          f"{100 * per_group / days:.2f} %/day; groups per stored GiB per day within "
          f"{target_pct} %: {target_pct / 100 * GIB / (4 + c['group_len'] + 64 * 5):.0f}")
    return out


def set_lo_up():
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ifr = struct.pack("16sH14s", b"lo", 0, b"\0" * 14)
    flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, ifr)[:18])[1]
    fcntl.ioctl(s, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b"\0" * 14))
    s.close()


def lo_tx_bytes():
    for line in open("/proc/net/dev"):
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[8])
    raise RuntimeError("no loopback interface")


def cpu_s(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total / tick


def counters(nodes):
    tot = {}
    for n in nodes:
        for k, v in n.metrics().items():
            tot[k] = tot.get(k, 0.0) + v
    return tot


def measure(c, a, default_s):
    bin_ = bn.binary()
    period_s = duration_s(a.period)
    work = tempfile.mkdtemp(prefix="cairn-bench-audit.", dir="/tmp")
    nodes = []
    try:
        srcf = os.path.join(work, "model.bin")
        bn.write_random(srcf, a.mib << 20)
        nodes = bn.start_network(bin_, os.path.join(work, "net"), a.nodes,
                                 ["--audit-period", a.period])
        pids = [n.proc.pid for n in nodes]
        time.sleep(1)
        b0, c0, t0 = lo_tx_bytes(), cpu_s(pids), time.time()
        time.sleep(a.idle)
        idle_bps = (lo_tx_bytes() - b0) / (time.time() - t0)
        idle_cpu = (cpu_s(pids) - c0) / (time.time() - t0)

        pub = os.path.join(work, "publisher")
        bn.run(bin_, ["--data-dir", pub, "init"])
        bn.run(bin_, ["--data-dir", pub, "--peer", nodes[0].addr, "add", srcf,
                      "-k", str(c["k"]), "-m", str(c["m"])])
        held = [bn.shards_on(n.dir) for n in nodes]
        sizes = [s for h in held for s in h.values()]
        stored = sum(sizes)
        # The first round after the publish audits every new shard at once; let it pass.
        time.sleep(period_s)
        s0, b0, c0, t0 = counters(nodes), lo_tx_bytes(), cpu_s(pids), time.time()
        time.sleep(a.periods * period_s)
        s1, b1, c1, t1 = counters(nodes), lo_tx_bytes(), cpu_s(pids), time.time()
        held_after = [bn.shards_on(n.dir) for n in nodes]
    finally:
        for n in nodes:
            n.stop()
        subprocess.run(["rm", "-rf", work])

    w = t1 - t0
    periods = w / period_s
    wire = (b1 - b0) - idle_bps * w
    answered = s1.get("audits_answered_total", 0) - s0.get("audits_answered_total", 0)
    done = s1.get("audits_done_total", 0) - s0.get("audits_done_total", 0)
    failed = s1.get("audits_failed_total", 0) - s0.get("audits_failed_total", 0)
    receipts = s1.get("receipts_total", 0) - s0.get("receipts_total", 0)
    cpu = (c1 - c0) - idle_cpu * w
    mean = stored / len(sizes)
    computed_w = sum(wire_len(c, s, c["batch_max"]) for s in sizes) / len(sizes)
    computed_a = sum(answer_len(c, s) for s in sizes) / len(sizes)
    per_audit = wire / answered if answered else float("nan")
    rate = answered / len(sizes) / periods
    _, sched_lag = schedule_rate(c)
    per_byte_period = wire / stored / periods
    computed_floor = sum(wire_len(c, s, c["batch_max"]) for s in sizes) / stored
    print(f"\nmeasured: {a.nodes} nodes, {a.mib} MiB at {c['k']}-of-{c['k'] + c['m']} = "
          f"{len(sizes)} shards, {stored / 1e6:.1f} MB stored (mean shard {mean:.0f} B), "
          f"--audit-period {a.period}, {periods:.1f} periods ({w:.1f} s); "
          f"shards still in place after: {sum(len(h) for h in held_after)}")
    print(f"idle network (baseline): {idle_bps / 1e3:.1f} kB/s on the wire, "
          f"{idle_cpu:.3f} CPU-s/s for all nodes")
    print(f"shard audits answered: {answered:.0f} ({failed:.0f} failed); audits done (with own "
          f"disk checks): {done:.0f}; receipts: {receipts:.0f}")
    print(f"audits per shard per period: {rate:.2f} (schedule {sched_lag:.2f}, "
          f"{rate / sched_lag:.2f} x; design floor 1)")
    print(f"wire bytes per shard audit: {per_audit:.0f} (computed {computed_w:.0f}, "
          f"answer alone {computed_a:.0f}): {per_audit / computed_w:.3f} x computed")
    print(f"audit bytes on the wire per stored byte per period: {100 * per_byte_period:.2f} % "
          f"(computed at 1 audit per shard: {100 * computed_floor:.2f} %, "
          f"{per_byte_period / computed_floor:.2f} x; at the schedule: "
          f"{100 * computed_floor * sched_lag:.2f} %)")
    per_day = per_byte_period * DAY / default_s
    print(f"at the default period ({c['default_period']}): "
          f"{per_byte_period * GIB * DAY / default_s / (1 << 20):.1f} MiB per stored GiB per "
          f"day = {100 * per_day:.2f} %/day; under {a.target_pct} %/day needs a period of "
          f"{default_s / DAY * per_day / (a.target_pct / 100):.0f} d")
    print(f"audit CPU (all nodes, less idle): {cpu:.2f} CPU-s, "
          f"{1e6 * cpu / answered if answered else float('nan'):.0f} µs per shard audit "
          f"(holder read, proof, check, QUIC on both ends)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--default-period", default=None,
                    help="period of the computed table (default: cairn node's)")
    ap.add_argument("--target-pct", type=float, default=0.1)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--period", default="4s")
    ap.add_argument("--periods", type=float, default=9)
    ap.add_argument("--idle", type=float, default=8)
    ap.add_argument("--no-measure", action="store_true")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    c = constants()
    default_s = duration_s(a.default_period or c["default_period"])

    if a.in_netns:
        set_lo_up()
        measure(c, a, default_s)
        return 0

    print(f"hardware: {bn.machine()}")
    computed(c, default_s, a.target_pct, [("largest shard (8 MiB)", c["shard_max"])])
    if a.no_measure:
        return 0
    os.environ["CAIRN_BIN"] = bn.binary()
    sys.stdout.flush()
    args = [sys.executable, os.path.abspath(__file__), "--in-netns"] + sys.argv[1:]
    for unshare in (["unshare", "-n"], ["unshare", "-rn"]):
        r = subprocess.run(unshare + ["true"], capture_output=True)
        if r.returncode == 0:
            return subprocess.run(unshare + args).returncode
    print("cannot make a network namespace (unshare -n): the loopback counter would include "
          "every other process's traffic; not measured", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
