#!/usr/bin/env python3
"""Idle cost and failure detection of a mesh of real `tern node` processes on loopback.

    python3 bench/idle_mesh.py --tern target/release/tern --nodes 10 30 50 100 [--idle 20]

For each N: writes one mesh.toml with N nodes on 127.0.0.1 (default limits unless
--limits is given), runs `tern cluster init`, starts N `tern node` processes (each its
own OS process, its log in the run directory), waits until every node's log says every
other node is up, lets the mesh settle for --settle s, then over --idle s measures

  * idle CPU: the sum of utime+stime of all node processes (/proc/PID/stat), as a
    percentage of one core;
  * UDP packets/s: the delta of Udp InDatagrams in /proc/net/snmp (the whole network
    namespace: anything else on loopback counts too, see the notes in the results);

then times a spawn_on fan-out to every node, one call per node (`bench/mesh/fanout.tern`)
and one call with the list (`bench/mesh/fanout_list.tern`), each run with `tern ctl spawn
--wait` on the first node, less `bench/mesh/nothing.tern` (the command's own cost; the
median of five each), then kill -9 one node (the middle one) and polls every node's log
until each says `node <victim> is down`: time to first and to last detection. Every process started
is killed at the end (also on error or Ctrl-C).
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

CLK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            total += int(parts[11]) + int(parts[12])  # utime, stime (fields 14, 15)
        except OSError:
            pass
    return total


def udp_in():
    with open("/proc/net/snmp") as f:
        lines = [l.split() for l in f if l.startswith("Udp:")]
    head, vals = lines[0], lines[1]
    return int(vals[head.index("InDatagrams")])


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def name(i):
    return f"n{i:03d}"


def up_names(path):
    """Peers the node's log says are up now (Up and Down alternate per peer)."""
    up = set()
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("node ") and line.rstrip().endswith(" is up"):
                    up.add(line.split()[1])
                elif line.startswith("node ") and line.rstrip().endswith(" is down"):
                    up.discard(line.split()[1])
    except OSError:
        pass
    return up


def line_count(path):
    with open(path, errors="replace") as f:
        return sum(1 for _ in f)


def says_down(path, victim, skip):
    """Whether the log says the victim is down after its first `skip` lines."""
    try:
        with open(path, errors="replace") as f:
            return any(l.rstrip() == f"node {victim} is down" for i, l in enumerate(f) if i >= skip)
    except OSError:
        return False


HERE = os.path.dirname(os.path.abspath(__file__))


def ctl_wall(tern, cfg, program, times=5):
    """Median wall time (s) of `tern ctl spawn PROGRAM --wait` on the first node."""
    walls = []
    for _ in range(times):
        t0 = time.time()
        r = subprocess.run([tern, "ctl", "--config", cfg, "spawn", "--on", name(0), program, "--wait"], capture_output=True, text=True, timeout=120)
        walls.append(time.time() - t0)
        if r.returncode != 0:
            raise RuntimeError(f"{os.path.basename(program)}: {r.stderr.strip() or r.stdout.strip()}")
    return sorted(walls)[len(walls) // 2]


def run(tern, n, idle, settle, limits, keep):
    d = tempfile.mkdtemp(prefix=f"idle-mesh-{n}-")
    procs = []
    try:
        text = '[mesh]\ncert_dir = "certs"\n\n'
        if limits:
            text += "[limits]\n" + "\n".join(limits) + "\n"
        for i, port in enumerate(free_ports(n)):
            text += f'\n[[node]]\nname = "{name(i)}"\naddr = "127.0.0.1:{port}"\n'
        cfg = os.path.join(d, "mesh.toml")
        with open(cfg, "w") as f:
            f.write(text)
        subprocess.run([tern, "cluster", "init", "--config", cfg], check=True, stdout=subprocess.DEVNULL)
        t0 = time.time()
        logs = []
        for i in range(n):
            log = os.path.join(d, f"{name(i)}.log")
            logs.append(log)
            out = open(log, "w")
            procs.append(subprocess.Popen([tern, "node", "--config", cfg, "--name", name(i)], stdout=out, stderr=subprocess.STDOUT))
        everyone = {name(i) for i in range(n)}
        deadline = time.time() + 60 + 3 * n
        while True:
            missing = sum(1 for i in range(n) if up_names(logs[i]) != everyone - {name(i)})
            if missing == 0:
                break
            if time.time() > deadline:
                raise RuntimeError(f"{missing} of {n} nodes do not see all the others up after {time.time() - t0:.0f} s")
            time.sleep(0.5)
        t_up = time.time() - t0
        time.sleep(settle)
        pids = [p.pid for p in procs]
        c0, u0, w0 = cpu_ticks(pids), udp_in(), time.time()
        time.sleep(idle)
        c1, u1, w1 = cpu_ticks(pids), udp_in(), time.time()
        wall = w1 - w0
        cpu = 100.0 * (c1 - c0) / CLK / wall
        pps = (u1 - u0) / wall
        base = ctl_wall(tern, cfg, os.path.join(HERE, "mesh", "nothing.tern"))
        fanout = ctl_wall(tern, cfg, os.path.join(HERE, "mesh", "fanout.tern")) - base
        fanout_list = ctl_wall(tern, cfg, os.path.join(HERE, "mesh", "fanout_list.tern")) - base
        # Failure detection: kill -9 the middle node.
        v = n // 2
        victim = name(v)
        before = [line_count(l) for l in logs]
        procs[v].send_signal(signal.SIGKILL)
        tk = time.time()
        procs[v].wait()
        others = [i for i in range(n) if i != v]
        seen = {}
        while len(seen) < len(others) and time.time() - tk < 60:
            for i in others:
                if i not in seen and says_down(logs[i], victim, before[i]):
                    seen[i] = time.time() - tk
            time.sleep(0.02)
        first = min(seen.values()) if seen else float("nan")
        last = max(seen.values()) if len(seen) == len(others) else float("nan")
        return dict(n=n, up_s=t_up, cpu=cpu, pps=pps, pair_pps=pps / (n * (n - 1)), first=first, last=last, detected=len(seen), of=len(others), fanout=fanout, fanout_list=fanout_list)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if keep:
            print(f"  (logs kept in {d})", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tern", default="target/release/tern")
    ap.add_argument("--nodes", type=int, nargs="+", default=[10, 30, 50, 100])
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--limits", nargs="*", default=[], help='lines for [limits], e.g. "heartbeat_ms = 200"')
    ap.add_argument("--keep", action="store_true", help="keep the run directories (logs)")
    a = ap.parse_args()
    print("| nodes | all up after | idle CPU (% of one core) | UDP packets/s | per ordered pair | spawn_on fan-out to all: one by one | as a list | kill -9 seen down: first | last (all nodes) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in a.nodes:
        try:
            r = run(a.tern, n, a.idle, a.settle, a.limits, a.keep)
        except Exception as e:  # noqa: BLE001 - a size that fails is reported, the next one runs
            print(f"| {n} | failed: {e} | | | | | | | |", flush=True)
            continue
        last = f"{r['last']:.2f} s" if r["detected"] == r["of"] else f"{r['detected']}/{r['of']} nodes in 60 s"
        print(
            f"| {n} | {r['up_s']:.1f} s | {r['cpu']:.1f} | {r['pps']:.0f} | {r['pair_pps']:.2f} | {1000 * r['fanout']:.0f} ms | {1000 * r['fanout_list']:.0f} ms | {r['first']:.2f} s | {last} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
