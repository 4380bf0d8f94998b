#!/usr/bin/env python3
"""Side-by-side comparison of Neptune's placement solvers with the best
partitioners, in one run, on the same METIS instance files.

usage: compare.py --neptune PATH --instances DIR [--out docs/placement-compare.csv]
                  [--sizes 20,100,...] [--reps 5] [--tools a,b,...]

Every tool runs as its own process; wall time is the median of --reps runs,
peak memory the largest maximum resident set size (GNU time).
Wall time includes process start (and, for the PyPI peers, the Python
interpreter and module import). The cut, group sizes and admissibility of every result are computed here,
the same way for every tool.
"""
import argparse
import collections
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
K = 5          # VMs per host (group size)
B = 100        # physical bandwidth between every pair of hosts

# Largest n each tool is run on (None: all).
LIMITS = {"neptune-default": None, "neptune-high": None, "neptune-kl": 10000, "scotch": None, "mtkahypar": None,
          "kahip": 1000, "metis": None, "random": None, "ilp": 20, "ilp-adm": 20}


def read_metis(path):
    with open(path) as f:
        lines = [l for l in f.read().split("\n") if not l.startswith("%")]
    n = int(lines[0].split()[0])
    edges = []
    for v in range(n):
        t = lines[1 + v].split()
        for i in range(0, len(t), 2):
            u = int(t[i]) - 1
            if u > v:
                edges.append((v, u, int(t[i + 1])))
    return n, edges


def evaluate(n, edges, blocks):
    if not isinstance(blocks, list) or len(blocks) != n:
        return None
    cut = 0
    pair = collections.Counter()
    for a, b, w in edges:
        ga, gb = blocks[a], blocks[b]
        if ga != gb:
            cut += w
            pair[(min(ga, gb), max(ga, gb))] += w
    sizes = collections.Counter(blocks)
    over_nodes = sum(max(0, s - K) for s in sizes.values())
    over_groups = sum(1 for s in sizes.values() if s > K)
    admissible = all(load <= B for load in pair.values())
    return dict(cut=cut, max_group=max(sizes.values()), over_groups=over_groups,
                over_nodes=over_nodes, admissible=admissible)


def run_measured(cmd, cwd=None):
    """Runs cmd under GNU time; returns (returncode, wall seconds, peak RSS
    MiB, stdout, stderr). GNU time is a small process, so the peak RSS it
    reports is the tool's own (the Python parent's is not inherited)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name] + cmd,
                           capture_output=True, cwd=cwd)
        wall = time.perf_counter() - t0
        try:
            kib = float(rss.read().strip().split()[-1])
        except (ValueError, IndexError):
            kib = float("nan")
    return p.returncode, wall, kib / 1024.0, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def read_blocks(path):
    with open(path) as f:
        text = f.read().split()
    if text and text[0] in ("infeasible", "timeout"):
        return text[0]
    return [int(x) for x in text]


def solve_time(tool, out, wall):
    """The tool's own solve time: neptune's JSON time_s, the PyPI peers'
    in-process time, else the wall time of the process."""
    try:
        if tool.startswith("neptune"):
            return json.loads(out)["time_s"]
        m = re.search(r"solve_time_s=([0-9.]+)", out)
        if m:
            return float(m[1])
    except (ValueError, KeyError):
        pass
    return wall


def tool_command(tool, inst, n, k, seed, work, neptune):
    """(command, function that returns the blocks after it ran)."""
    part = os.path.join(work, f"{tool}.part")
    if tool in ("neptune-default", "neptune-high", "neptune-kl"):
        solver = "kl" if tool == "neptune-kl" else "default"
        effort = ["--effort", "high"] if tool == "neptune-high" else []
        cmd = [neptune, "placement", "solve", inst, "--group-size", str(K), "--link-capacity", str(B),
               "--solver", solver, "--seed", str(seed), "--output", "json"] + effort
        return cmd, lambda out: json.loads(out)["group"]

    if tool == "scotch":
        grf = os.path.join(work, "g.grf")
        if not os.path.exists(grf):
            subprocess.run(["gcv", "-ic", inst, grf], check=True, capture_output=True)
        cmd = ["scotch_gpart", str(k), grf, part, "-b0.0"]

        def scotch_blocks(_out):
            with open(part) as f:
                rows = f.read().split("\n")[1:]
            pairs = sorted((int(r.split()[0]), int(r.split()[1])) for r in rows if r.strip())
            return [b for _, b in pairs]
        return cmd, scotch_blocks
    if tool == "metis":
        local = os.path.join(work, "g.graph")
        if not os.path.exists(local):
            with open(inst) as src, open(local, "w") as dst:
                dst.write(src.read())
        cmd = ["gpmetis", "-ufactor=1", f"-seed={seed}", local, str(k)]
        return cmd, lambda _out: read_blocks(f"{local}.part.{k}")
    extra = ["--pair-capacity", str(B)] if tool == "ilp-adm" else []
    cmd = [sys.executable, os.path.join(HERE, "peers.py"), tool, inst, str(k), str(seed), part] + extra
    return cmd, lambda _out: read_blocks(part)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--neptune", required=True)
    ap.add_argument("--instances", required=True)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "docs", "placement-compare.csv"))
    ap.add_argument("--sizes", default="20,100,400,1000,10000,100000")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--reps-large", type=int, default=1, help="repetitions at n >= 100000")
    ap.add_argument("--tools", default=",".join(LIMITS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", help="earlier CSV: its rows for (instance, tool) not run now are kept")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    tools = a.tools.split(",")
    files = sorted(os.listdir(a.instances))
    pat = re.compile(r"arcs-n(\d+)-a(\d+)-i(\d+)\.graph$")
    rows = []
    for name in files:
        m = pat.match(name)
        if not m:
            continue
        n, arcs, idx = int(m[1]), int(m[2]), int(m[3])
        if n not in sizes:
            continue
        inst = os.path.join(a.instances, name)
        _, edges = read_metis(inst)
        k = -(-n // K)
        with tempfile.TemporaryDirectory() as work:
            for tool in tools:
                lim = LIMITS.get(tool)
                if lim is not None and n > lim:
                    continue
                reps = 1 if tool.startswith("ilp") else (a.reps_large if n >= 100000 else a.reps)
                times, solves, mems, res, status = [], [], [], None, "ok"
                for r in range(reps):
                    cmd, blocks_of = tool_command(tool, inst, n, k, a.seed, work, a.neptune)
                    rc, wall, mem, out, err = run_measured(cmd)
                    if rc not in (0, 1):
                        status = f"exit {rc}: {err.strip()[-200:]}"
                        break
                    times.append(wall)
                    solves.append(solve_time(tool, out, wall))
                    mems.append(mem)
                    if r == 0:
                        try:
                            blocks = blocks_of(out)
                        except Exception as e:  # noqa: BLE001 - reported in the CSV
                            status = f"unreadable result: {e}"
                            break
                        res = evaluate(n, edges, blocks)
                        if res is None:
                            status = blocks if isinstance(blocks, str) else "bad result"
                rows.append(dict(instance=name, n=n, arcs=arcs, idx=idx, tool=tool, status=status,
                                 cut=res["cut"] if res else "", max_group=res["max_group"] if res else "",
                                 over_groups=res["over_groups"] if res else "",
                                 over_nodes=res["over_nodes"] if res else "",
                                 admissible=res["admissible"] if res else "",
                                 time_s=round(statistics.median(times), 4) if times else "",
                                 solve_s=round(statistics.median(solves), 4) if solves else "",
                                 peak_mib=round(max(mems), 1) if mems else ""))
                print(f"{name:28} {tool:16} {status:10} cut={rows[-1]['cut']!s:>8} "
                      f"max={rows[-1]['max_group']!s:>3} adm={rows[-1]['admissible']!s:5} "
                      f"t={rows[-1]['time_s']!s:>8}s solve={rows[-1]['solve_s']!s:>8}s mem={rows[-1]['peak_mib']!s:>7}MiB", flush=True)
    if a.keep:
        ran = {(r["instance"], r["tool"]) for r in rows}
        with open(a.keep) as f:
            for r in csv.DictReader(f):
                if (r["instance"], r["tool"]) not in ran:
                    for key in ("n", "arcs", "idx"):
                        r[key] = int(r[key])
                    for key in ("cut", "over_nodes"):
                        r[key] = int(r[key]) if r[key] != "" else ""
                    rows.append(r)
    rows.sort(key=lambda r: (r["n"], r["arcs"], r["idx"]))
    for name in sorted({r["instance"] for r in rows}):
        # Reference: ILP optimum at n = 20, else best cap-respecting cut.
        mine = [r for r in rows if r["instance"] == name]
        ilp = [r for r in mine if r["tool"] == "ilp" and r["cut"] != ""]
        ok = [r["cut"] for r in mine if r["cut"] != "" and r["over_nodes"] == 0 and not r["tool"].startswith("ilp")]
        ref = ilp[0]["cut"] if ilp else (min(ok) if ok else None)
        for r in mine:
            r["reference"] = "optimum" if ilp else "best"
            r["ratio"] = round(r["cut"] / ref, 5) if ref and r["cut"] != "" else ""
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fields = ["instance", "n", "arcs", "idx", "tool", "status", "cut", "reference", "ratio", "max_group",
              "over_groups", "over_nodes", "admissible", "time_s", "solve_s", "peak_mib"]
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
