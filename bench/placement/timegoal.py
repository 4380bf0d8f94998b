#!/usr/bin/env python3
"""Timing check of the time goal (Neptune's default vs Scotch) on a loaded
machine: the two tools' runs alternate, so a burst of load from other
processes hits both alike, and beside the median wall time the median CPU
time (user + system) of the process is recorded, which other processes
inflate much less.

usage: timegoal.py --neptune PATH --instances DIR [--sizes 1000,10000] [--reps 21]
                   [--out docs/placement-time-goal.csv]
"""
import argparse
import csv
import os
import re
import resource
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
K = 5
B = 100


def run(cmd):
    """(wall seconds, CPU seconds of the child, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {p.stderr.decode(errors='replace')[-200:]}")
    return wall, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--neptune", required=True)
    ap.add_argument("--instances", required=True)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "docs", "placement-time-goal.csv"))
    a = ap.parse_args()
    sizes = {int(s) for s in a.sizes.split(",")}
    pat = re.compile(r"arcs-n(\d+)-a(\d+)-i(\d+)\.graph$")
    rows = []
    for name in sorted(os.listdir(a.instances)):
        m = pat.match(name)
        if not m or int(m[1]) not in sizes:
            continue
        n, arcs = int(m[1]), int(m[2])
        inst = os.path.join(a.instances, name)
        with tempfile.TemporaryDirectory() as work:
            grf = os.path.join(work, "g.grf")
            subprocess.run(["gcv", "-ic", inst, grf], check=True, capture_output=True)
            cmds = {
                "neptune-default": [a.neptune, "placement", "solve", inst, "--group-size", str(K),
                                    "--link-capacity", str(B), "--seed", str(a.seed), "--output", "json"],
                "scotch": ["scotch_gpart", str(-(-n // K)), grf, os.path.join(work, "out.map"), "-b0.0"],
            }
            walls = {t: [] for t in cmds}
            cpus = {t: [] for t in cmds}
            for _ in range(a.reps):
                for tool, cmd in cmds.items():
                    w, c = run(cmd)
                    walls[tool].append(w)
                    cpus[tool].append(c)
        for tool in cmds:
            rows.append(dict(instance=name, n=n, arcs=arcs, tool=tool, status="ok", reps=a.reps,
                             time_s=round(statistics.median(walls[tool]), 4),
                             cpu_s=round(statistics.median(cpus[tool]), 4)))
            print(f"{name:28} {tool:16} wall={rows[-1]['time_s']:>8}s cpu={rows[-1]['cpu_s']:>8}s", flush=True)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["instance", "n", "arcs", "tool", "status", "reps", "time_s", "cpu_s"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
