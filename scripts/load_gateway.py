#!/usr/bin/env python3
"""Hostile loads against a local Cairn gateway, with a legitimate client measured under each.

Driven by scripts/load-gateway.sh, which starts the devnet and the gateway. Standard library
only. Every target is 127.0.0.1; the attacker's sockets are bound to 127.0.0.2 (another source
address on loopback), the legitimate client's to 127.0.0.1. Every phase is bounded in sockets
and time and releases its sockets before the next one starts.

Prints one line per phase: gateway RSS and threads while under the load, and the time a
legitimate client took for a public config.json GET and for /healthz (or what went wrong).
"""

import argparse
import socket
import threading
import time

ATTACKER = "127.0.0.2"
CLIENT = "127.0.0.1"


def proc(pid):
    """(RSS MiB, threads) of the gateway process."""
    rss = thr = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
            elif line.startswith("Threads:"):
                thr = int(line.split()[1])
    return rss, thr


def connect(port, src, rcvbuf=None, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((src, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def timed_get(port, path, src=CLIENT, limit=40.0):
    """Milliseconds for a full GET of `path` (headers and Content-Length bytes), or why not."""
    t0 = time.monotonic()
    try:
        s = connect(port, src, timeout=limit)
    except OSError as e:
        return f"connect failed ({e.__class__.__name__})"
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            left = limit - (time.monotonic() - t0)
            if left <= 0:
                return f"no headers in {limit:.0f} s"
            s.settimeout(left)
            b = s.recv(65536)
            if not b:
                return "closed before headers"
            buf += b
        head, body = buf.split(b"\r\n\r\n", 1)
        status = head.split(b" ", 2)[1].decode()
        length = None
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while length is not None and len(body) < length:
            left = limit - (time.monotonic() - t0)
            if left <= 0:
                return f"{status}, body incomplete after {limit:.0f} s"
            s.settimeout(left)
            b = s.recv(65536)
            if not b:
                return f"{status}, body cut short"
            body += b
        ms = (time.monotonic() - t0) * 1000
        return f"{ms:.0f} ms" if status == "200" else f"{status} in {ms:.0f} ms"
    except socket.timeout:
        return f"no answer in {limit:.0f} s"
    except OSError as e:
        return f"failed ({e.__class__.__name__})"
    finally:
        s.close()


def report(name, args, extra="", extra_fn=None):
    rss, thr = proc(args.pid)
    cfg = timed_get(args.port, f"/{args.repo}/resolve/main/config.json")
    hz = timed_get(args.port, "/healthz")
    if extra_fn:
        extra += extra_fn()
    print(
        f"{name:<44} RSS {rss:>6} MiB  threads {thr:>5}  config.json {cfg:<24} healthz {hz:<20}{extra}",
        flush=True,
    )


def open_stalled(args, n, path, rng):
    """n sockets that send a GET and never read (tiny receive buffers)."""
    socks = []
    hdr = f"range: bytes={rng}\r\n" if rng else ""
    req = f"GET {path} HTTP/1.1\r\nhost: x\r\n{hdr}\r\n".encode()
    for _ in range(n):
        try:
            s = connect(args.port, ATTACKER, rcvbuf=4096)
            s.sendall(req)
            socks.append(s)
        except OSError:
            break
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        except OSError:
            pass


def pipelined_flood(args, make_request, total, conns, budget):
    """`total` requests pipelined over `conns` connections from the attacker address; returns
    the number of answers read within `budget` seconds."""
    answered = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + budget

    def worker(count):
        try:
            s = connect(args.port, ATTACKER, timeout=budget)
        except OSError:
            return
        data = b"".join(make_request(i) for i in range(count))
        data += b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        sender = threading.Thread(target=lambda: _send(s, data), daemon=True)
        sender.start()
        seen = 0
        tail = b""
        try:
            while time.monotonic() < deadline:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                b = s.recv(1 << 20)
                if not b:
                    break
                # The tail is shorter than the pattern: nothing in it was counted twice.
                chunk = tail + b
                seen += chunk.count(b"HTTP/1.1 ")
                tail = chunk[-8:]
        except OSError:
            pass
        with lock:
            answered[0] += max(0, seen - 1)
        s.close()

    per = total // conns
    threads = [threading.Thread(target=worker, args=(per,), daemon=True) for _ in range(conns)]
    for t in threads:
        t.start()
    return threads, answered


def _send(s, data):
    try:
        s.sendall(data)
    except OSError:
        pass


def metrics_size(port):
    s = connect(port, CLIENT, timeout=60)
    s.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    n = 0
    try:
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            n += len(b)
    except OSError:
        pass
    s.close()
    return n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--private", required=True)
    p.add_argument("--range-readers", type=int, default=530)
    p.add_argument("--full-readers", type=int, default=32)
    p.add_argument("--method-requests", type=int, default=30000)
    p.add_argument("--method-len", type=int, default=4096)
    p.add_argument("--denied-requests", type=int, default=110000)
    p.add_argument("--idle", type=int, default=1100)
    p.add_argument("--hold", type=float, default=8.0, help="seconds each load is held before measuring")
    args = p.parse_args()
    weights = f"/{args.repo}/resolve/main/weights.bin"

    report("idle gateway (baseline)", args)

    # Item 5: Range GETs of 16 MiB that are never read.
    socks = open_stalled(args, args.range_readers, weights, f"0-{16 * 1024 * 1024 - 1}")
    time.sleep(args.hold)
    report(f"5: {len(socks)} stalled 16 MiB Range GETs", args)
    close_all(socks)
    time.sleep(2)
    report("5: ... after they closed", args)

    # Item 5: full-file GETs that are never read.
    socks = open_stalled(args, args.full_readers, weights, None)
    time.sleep(args.hold)
    report(f"5: {len(socks)} stalled full-file GETs", args)
    close_all(socks)
    time.sleep(2)
    report("5: ... after they closed", args)

    # Item 6: made-up method names, pipelined.
    before = metrics_size(args.port)
    pad = "Q" * max(0, args.method_len - 8)
    threads, answered = pipelined_flood(
        args,
        lambda i: f"M{i:07d}{pad} /healthz HTTP/1.1\r\nhost: x\r\n\r\n".encode(),
        args.method_requests,
        10,
        60,
    )
    time.sleep(1)
    report(f"6: {args.method_requests} made-up methods (during)", args)
    for t in threads:
        t.join(65)
    after = metrics_size(args.port)
    report(
        "6: ... after",
        args,
        f"  answered {answered[0]}  /metrics {before} -> {after} bytes",
    )

    # Item 7: a flood of anonymous requests for a private repository (each denied).
    priv = f"/{args.private}/resolve/main/config.json"
    threads, answered = pipelined_flood(
        args,
        lambda i: f"GET {priv} HTTP/1.1\r\nhost: x\r\n\r\n".encode(),
        args.denied_requests,
        10,
        90,
    )
    time.sleep(1)
    report(f"7: {args.denied_requests} anonymous denied GETs (during)", args)
    for t in threads:
        t.join(95)
    report("7: ... after", args, f"  answered {answered[0]}")

    # Item 9: idle connections from one address.
    idle = []
    for _ in range(args.idle):
        try:
            idle.append(connect(args.port, ATTACKER, timeout=5))
        except OSError:
            break
    time.sleep(1)
    # The legitimate client first (report measures it), then a new connection from the same
    # address as the idle ones.
    report(f"9: {len(idle)} idle connections from one address", args,
           extra_fn=lambda: f"  healthz from that address {timed_get(args.port, '/healthz', src=ATTACKER)}")
    close_all(idle)


if __name__ == "__main__":
    main()
