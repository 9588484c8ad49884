"""Helpers shared by scripts/bench-audit.py and scripts/bench-repair.py (python3, stdlib only).

A network of real `cairn node` processes on 127.0.0.1, one data directory each, every node with
its own Prometheus endpoint (`--metrics`); shard files read straight from the nodes' disks; the
constants the audit arithmetic needs, read from the source so that the figures follow the code.
"""
import base64
import glob
import os
import re
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The devnet's log filter: iroh's info-level spans cost several percent of a node's CPU.
NODE_LOG = ("warn,cairn=info,cairn_node=info,cairn_swarm=info,cairn_gateway=info,"
            "cairn_store=info,cairn_artifact=info")


def binary():
    """The release `cairn`, built unless CAIRN_BIN names one."""
    if os.environ.get("CAIRN_BIN"):
        return os.environ["CAIRN_BIN"]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "cairn",
                    "--manifest-path", os.path.join(ROOT, "Cargo.toml")], check=True)
    return os.path.join(ROOT, "target", "release", "cairn")


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(bin_, args, timeout=300):
    """Runs `cairn args...`; returns stdout; raises with stderr on failure."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CAIRN_DIR", "CAIRN_PEER", "CAIRN_NETWORK", "CAIRN_LOG")}
    p = subprocess.run([bin_] + args, capture_output=True, text=True, timeout=timeout,
                       env=env, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError(f"cairn {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p.stdout


class Node:
    def __init__(self, bin_, dir_, quota="8GiB"):
        self.bin, self.dir, self.proc = bin_, dir_, None
        self.metrics_port = free_tcp_port()
        run(bin_, ["--data-dir", dir_, "init", "--quota", quota])

    def start(self, node_args, bootstrap=None):
        addr_file = os.path.join(self.dir, "node.addr")
        if os.path.exists(addr_file):
            os.remove(addr_file)
        args = [self.bin, "--data-dir", self.dir, "node", "--listen", "127.0.0.1:0",
                "--metrics", f"127.0.0.1:{self.metrics_port}"] + list(node_args)
        if bootstrap:
            args += ["--bootstrap", bootstrap]
        env = dict(os.environ, CAIRN_LOG=NODE_LOG)
        for k in ("CAIRN_DIR", "CAIRN_PEER", "CAIRN_NETWORK"):
            env.pop(k, None)
        log = open(os.path.join(self.dir, "node.log"), "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=log, env=env)
        log.close()
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                a = open(addr_file).read().strip()
                if "@" in a:
                    self.addr = a
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"node in {self.dir} exited: see {self.dir}/node.log")
            time.sleep(0.02)
        raise RuntimeError(f"node in {self.dir} did not come up")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL (a crash: the node's files stay as they were)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def metrics(self):
        """The node's Prometheus counters and gauges without labels, as floats."""
        import urllib.request
        body = urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        out = {}
        for line in body.splitlines():
            if line.startswith("#") or "{" in line:
                continue
            name, _, value = line.partition(" ")
            out[name.removeprefix("cairn_node_")] = float(value)
        return out


def start_network(bin_, base, count, node_args, quota="8GiB"):
    nodes = []
    for i in range(count):
        n = Node(bin_, os.path.join(base, f"node-{i}"), quota)
        n.start(node_args, nodes[0].addr if nodes else None)
        nodes.append(n)
    # A node's first announcement can be lost (sent before its gossip neighbours are up): the
    # others then hear of it at its next one, 30 s later.
    deadline = time.time() + 60
    while True:
        out = run(bin_, ["--peer", nodes[0].addr, "peers"], timeout=60)
        m = re.match(r"(\d+) live nodes", out.strip())
        if m and int(m.group(1)) == count:
            return nodes
        if time.time() > deadline:
            raise RuntimeError(f"node 0 sees {out.strip()!r} after 60 s, want {count}")
        time.sleep(0.2)


# Shard files: a 64-byte header (store/src/shardfile.rs), the data, the bao outboard.
def header_len():
    src = open(os.path.join(ROOT, "store/src/shardfile.rs")).read()
    return int(re.search(r"pub const HEADER_LEN: usize = (\d+);", src).group(1))


HEADER_LEN = header_len()


def cid_digest(cid):
    """The 32-byte BLAKE3 digest of a shard CID (CIDv1 raw, base32 multibase)."""
    s = cid[1:].upper()
    raw = base64.b32decode(s + "=" * (-len(s) % 8))
    # version 1, codec raw (0x55), multihash blake3 (0x1e) of 32 bytes
    if raw[:4] != bytes([1, 0x55, 0x1e, 32]) or len(raw) != 36:
        return None
    return raw[4:]


def shard_file(node_dir, cid):
    return os.path.join(node_dir, "store", "shards", cid[-2:], cid)


def shard_ok(path, cid):
    """Whether the file is a complete shard file for `cid`: header checks out (magic, the
    length the header announces, the hash the CID names). The bytes themselves are checked by
    `cairn verify` at the end, nodes stopped."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            h = f.read(HEADER_LEN)
    except OSError:
        return None
    if len(h) < HEADER_LEN or h[:8] != b"CAIRNSHD":
        return None
    data_len = int.from_bytes(h[16:24], "little")
    ob_len = int.from_bytes(h[24:32], "little")
    if size != HEADER_LEN + data_len + ob_len or h[32:64] != cid_digest(cid):
        return None
    return data_len


def shards_on(node_dir):
    """{cid: data length} of every complete shard file in a node's store."""
    out = {}
    for p in glob.glob(os.path.join(node_dir, "store", "shards", "*", "*")):
        cid = os.path.basename(p)
        n = shard_ok(p, cid)
        if n is not None:
            out[cid] = n
    return out


def write_random(path, nbytes):
    with open(path, "wb") as f:
        left = nbytes
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def cap_of(add_output):
    m = re.search(r"^read capability: (\S+)", add_output, re.M)
    if not m:
        raise RuntimeError(f"no read capability in: {add_output}")
    return m.group(1)


def machine():
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}"
