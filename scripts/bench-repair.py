#!/usr/bin/env python3
"""Time to full redundancy after losing two nodes, beside a fetch of the same artifact.

    python3 scripts/bench-repair.py [--nodes 7] [--mib 256] [--period 2s] [--kill 2] [--within 240]

A network of --nodes `cairn node` processes on 127.0.0.1 (release build; CAIRN_BIN names
another), each auditing its co-holders every --period and repairing what it finds lost. It
publishes --mib MiB of random bytes at 3-of-5, waits two periods (the first audit round of a
new artifact asks every shard of it), fetches it once with `cairn get` (the baseline: the
network's read throughput in the same run, audits running), then SIGKILLs --kill nodes (never
node 0, everyone's bootstrap) and measures:

- lost shards: those whose only copy was on a killed node (read from the nodes' disks: the
  shard files of the killed nodes that no live node has);
- detection: kill to the first repair the nodes report (`cairn_node_repairs_total`);
- full redundancy: kill to the moment every lost shard is back, as a complete shard file
  (header, length, hash in the header equal to the CID's) on a live node, polled every 0.25 s;
- the nodes' own count: `repairs_done` and `repair_bytes` summed over the live nodes
  (Prometheus, then `cairn node status --json`), which must equal the lost shards;
- repair throughput: the bytes of re-created shards over the time to full redundancy, over the
  time from the first repair, and up to half of them back, beside the fetch throughput as a
  ratio; with the times at which half and 90 % of the lost bytes were back.

Then the artifact is fetched again from the live nodes (compared byte for byte), the nodes are
stopped and `cairn verify` reads back every shard of every live node against its CID.
"""
import argparse
import filecmp
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchnet as bn  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=7)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--period", default="2s")
    ap.add_argument("--kill", type=int, default=2)
    ap.add_argument("--within", type=float, default=240, help="seconds allowed for repair")
    ap.add_argument("--dir", default="/tmp", help="parent of the working directory")
    a = ap.parse_args()

    bin_ = bn.binary()
    work = tempfile.mkdtemp(prefix="cairn-bench-repair.", dir=a.dir)
    nodes = []
    try:
        src = os.path.join(work, "model.bin")
        nbytes = a.mib << 20
        bn.write_random(src, nbytes)
        nodes = bn.start_network(bin_, os.path.join(work, "net"), a.nodes,
                                 ["--audit-period", a.period])
        peer = nodes[0].addr
        pub = os.path.join(work, "publisher")
        bn.run(bin_, ["--data-dir", pub, "init"])
        t0 = time.time()
        cap = bn.cap_of(bn.run(bin_, ["--data-dir", pub, "--peer", peer, "add", src,
                                      "-k", "3", "-m", "2"]))
        publish_s = time.time() - t0
        held = [bn.shards_on(n.dir) for n in nodes]
        stored = sum(sum(h.values()) for h in held)
        nshards = sum(len(h) for h in held)
        period_s = float(a.period.rstrip("s")) if a.period.endswith("s") else None
        time.sleep(2 * (period_s or 2))

        out = os.path.join(work, "out.bin")
        t0 = time.time()
        bn.run(bin_, ["--peer", peer, "get", cap, "model.bin", "-o", out])
        fetch_s = time.time() - t0
        assert filecmp.cmp(src, out, shallow=False), "the fetch differs from the file"
        os.remove(out)

        killed = list(range(a.nodes - a.kill, a.nodes))
        live = [i for i in range(a.nodes) if i not in killed]
        before = {"repairs_total": 0.0, "repair_bytes_total": 0.0}
        for i in live:
            m = nodes[i].metrics()
            for k in before:
                before[k] += m.get(k, 0.0)
        t_kill = time.time()
        for i in killed:
            nodes[i].kill()
        on_live = set().union(*(held[i] for i in live))
        lost = {c: n for i in killed for c, n in held[i].items() if c not in on_live}
        lost_bytes = sum(lost.values())

        missing = set(lost)
        back_bytes = {}  # seconds after the kill -> bytes of lost shards back by then
        first_repair = None
        done_at = None
        samples = []
        while time.time() - t_kill < a.within:
            now = time.time() - t_kill
            for c in list(missing):
                if any(bn.shard_ok(bn.shard_file(nodes[i].dir, c), c) is not None for i in live):
                    missing.discard(c)
            reps = rbytes = 0.0
            for i in live:
                m = nodes[i].metrics()
                reps += m.get("repairs_total", 0.0)
                rbytes += m.get("repair_bytes_total", 0.0)
            reps -= before["repairs_total"]
            rbytes -= before["repair_bytes_total"]
            samples.append((now, len(lost) - len(missing), reps, rbytes))
            back_bytes[now] = lost_bytes - sum(lost[c] for c in missing)
            if first_repair is None and (reps > 0 or len(missing) < len(lost)):
                first_repair = now
            if not missing:
                done_at = now
                break
            time.sleep(0.25)

        # The nodes' own counters once the files are all there: they may still be recording.
        time.sleep(1.0)
        status = [json.loads(bn.run(bin_, ["--data-dir", nodes[i].dir, "node", "status",
                                           "--json"])) for i in live]
        repairs = sum(s["repairs_done"] for s in status) - before["repairs_total"]
        repair_bytes = sum(s["repair_bytes"] for s in status) - before["repair_bytes_total"]
        audits = sum(s["audits_done"] for s in status)

        # Read back from the live nodes, then check every shard on their disks.
        out2 = os.path.join(work, "out2.bin")
        t0 = time.time()
        bn.run(bin_, ["--peer", peer, "get", cap, "model.bin", "-o", out2])
        fetch2_s = time.time() - t0
        same = filecmp.cmp(src, out2, shallow=False)
        os.remove(out2)
        for n in nodes:
            n.stop()
        verified = []
        for i in live:
            v = bn.run(bin_, ["--data-dir", nodes[i].dir, "verify"], timeout=600)
            verified.append(v.strip().splitlines()[-1] if v.strip() else "")
        all_ok = all(v.startswith("all ") and v.endswith(" shards verified") for v in verified)
        after = [bn.shards_on(nodes[i].dir) for i in live]
        lost_on_live = sum(1 for c in lost if any(c in h for h in after))
        copies = sum(len(h) for h in after)
        distinct = len(set().union(*after))

        mb = 1e6
        print(f"hardware: {bn.machine()}")
        print(f"file: {a.mib} MiB random; {a.nodes} node processes on 127.0.0.1, 3-of-5, "
              f"--audit-period {a.period}; {nshards} shards, {stored / mb:.1f} MB stored")
        print(f"publish: {publish_s:.2f} s, {nbytes / publish_s / mb:.1f} MB/s")
        print(f"fetch (baseline): {fetch_s:.2f} s, {nbytes / fetch_s / mb:.1f} MB/s")
        print(f"killed nodes {killed} (SIGKILL): {len(lost)} shards lost, "
              f"{lost_bytes / mb:.1f} MB")
        if done_at is None:
            print(f"NOT back to full redundancy within {a.within:.0f} s: "
                  f"{len(missing)} of {len(lost)} shards still missing")
        else:
            fetch_rate = nbytes / fetch_s

            def when(frac):
                return min(t for t, b in back_bytes.items() if b >= frac * lost_bytes)

            t50, t90 = when(0.5), when(0.9)
            print(f"after the kill: first repair seen at {first_repair:.2f} s, half the lost "
                  f"bytes back at {t50:.2f} s, 90 % at {t90:.2f} s, full redundancy at "
                  f"{done_at:.2f} s")
            for label, t_from, t_to, share in (
                    ("kill to full redundancy", 0.0, done_at, 1.0),
                    ("first repair to full redundancy", first_repair, done_at, 1.0),
                    ("first repair to half back", first_repair, t50,
                     back_bytes[t50] / lost_bytes)):
                r = share * lost_bytes / max(t_to - t_from, 1e-9)
                print(f"repair throughput, {label}: {r / mb:.1f} MB/s of re-created shards "
                      f"({r / fetch_rate:.3f} x fetch; shards read to re-create them: k = 3 "
                      f"per chunk)")
        print(f"nodes report {repairs:.0f} repairs, {repair_bytes / mb:.1f} MB "
              f"(lost: {len(lost)}, {lost_bytes / mb:.1f} MB); audits done so far: {audits}")
        print(f"fetch after repair, 2 nodes down: {fetch2_s:.2f} s, "
              f"{nbytes / fetch2_s / mb:.1f} MB/s, identical: {same}")
        print(f"cairn verify on the {len(live)} live nodes: "
              f"{'every shard verified' if all_ok else verified}; "
              f"lost shards now verified on a live node: {lost_on_live} of {len(lost)}")
        print(f"shard files on the live nodes: {copies} copies of {distinct} distinct shards "
              f"(of {nshards} published; more copies than shards = shards placed twice)")
        print("timeline (s after kill, lost shards back, repairs the nodes report, MB they "
              "report), at every change:")
        last = None
        for s in samples:
            if last is None or s[1:] != last[1:] or s is samples[-1]:
                print(f"  {s[0]:6.2f}  {s[1]:5d}  {s[2]:5.0f}  {s[3] / mb:8.1f}")
            last = s
        ok = done_at is not None and same and all_ok and lost_on_live == len(lost)
        return 0 if ok else 1
    finally:
        for n in nodes:
            try:
                n.stop()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
