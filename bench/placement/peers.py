#!/usr/bin/env python3
"""Runs one Python-packaged peer partitioner on a METIS graph and writes the
block of every vertex, one per line (0-based), to OUT.

usage: peers.py TOOL GRAPH K SEED OUT [--pair-capacity B]
TOOL: mtkahypar | mtkahypar-q | kahip | ilp | ilp-adm | random
"""
import random
import sys
import time

TIME_LIMIT = 120  # seconds for one ILP


def read_metis(path):
    with open(path) as f:
        lines = [l for l in f.read().split("\n") if not l.startswith("%")]
    head = lines[0].split()
    n, m = int(head[0]), int(head[1])
    fmt = head[2] if len(head) > 2 else "0"
    ew = fmt.zfill(3)[2] == "1"
    xadj, adj, w = [0], [], []
    for v in range(n):
        toks = lines[1 + v].split()
        step = 2 if ew else 1
        for i in range(0, len(toks), step):
            adj.append(int(toks[i]) - 1)
            w.append(int(toks[i + 1]) if ew else 1)
        xadj.append(len(adj))
    return n, xadj, adj, w


def edges_of(n, xadj, adj, w):
    out = []
    for v in range(n):
        for i in range(xadj[v], xadj[v + 1]):
            u = adj[i]
            if u > v:
                out.append((v, u, w[i]))
    return out


def mtkahypar_run(path, k, seed, preset_name):
    import mtkahypar

    mk = mtkahypar.initialize(2, False)
    ctx = mk.context_from_preset(getattr(mtkahypar.PresetType, preset_name))
    ctx.set_partitioning_parameters(k, 0.0, mtkahypar.Objective.CUT)
    ctx.logging = False
    mtkahypar.set_seed(seed)
    g = mk.graph_from_file(path, ctx, mtkahypar.FileFormat.METIS)
    pg = g.partition(ctx)
    return [pg.block_id(v) for v in range(g.num_nodes())]


def kahip_run(path, k, seed):
    import kahip

    n, xadj, adj, w = read_metis(path)
    _cut, blocks = kahip.kaffpa([1] * n, xadj, w, adj, k, 0.0, True, seed, kahip.STRONG)
    return list(blocks)


def ilp_run(path, k_groups, pair_capacity=None):
    """Exact optimum for small n. Without pair capacity: the clique
    formulation (x_uv = 1 when u and v share a host; each node has exactly
    K - 1 partners; triangle inequalities). With a pair capacity B: a labelled
    formulation (y_vg node v on host g, z for cut edges per host pair) whose
    host-pair loads are bounded by B."""
    import highspy
    import numpy as np

    n, xadj, adj, w = read_metis(path)
    size = -(-n // k_groups)  # K: nodes per host (n = K * groups here)
    size = n // k_groups
    edges = edges_of(n, xadj, adj, w)
    wmap = {(a, b): c for a, b, c in edges}
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(TIME_LIMIT))
    h.setOptionValue("mip_rel_gap", 0.0)
    inf = highspy.kHighsInf
    if pair_capacity is None:
        idx = {}
        for i in range(n):
            for j in range(i + 1, n):
                idx[(i, j)] = len(idx)
                # maximise sum w x  <=> minimise -w x
                h.addVar(0.0, 1.0)
        nv = len(idx)
        h.changeColsIntegrality(nv, np.arange(nv, dtype=np.int32), np.array([highspy.HighsVarType.kInteger] * nv))
        h.changeColsCost(nv, np.arange(nv, dtype=np.int32), np.array([-float(wmap.get(key, 0)) for key in idx]))
        key = lambda a, b: idx[(min(a, b), max(a, b))]
        for v in range(n):
            cols = [key(v, u) for u in range(n) if u != v]
            h.addRow(size - 1, size - 1, len(cols), np.array(cols, dtype=np.int32), np.ones(len(cols)))
        for i in range(n):
            for j in range(i + 1, n):
                for l in range(j + 1, n):
                    a, b, c = key(i, j), key(j, l), key(i, l)
                    for (p, q, r) in ((a, b, c), (a, c, b), (b, c, a)):
                        h.addRow(-inf, 1.0, 3, np.array([p, q, r], dtype=np.int32), np.array([1.0, 1.0, -1.0]))
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return "timeout"
        x = h.getSolution().col_value
        same = lambda a, b: x[key(a, b)] > 0.5
        blocks = [-1] * n
        g = 0
        for v in range(n):
            if blocks[v] < 0:
                for u in range(n):
                    if u == v or same(u, v):
                        blocks[u] = g
                g += 1
        return blocks
    # Labelled formulation with pair capacities. Its LP relaxation is weak
    # (spread every node evenly over the hosts and no edge is cut), so
    # without help HiGHS times out at n = 20. Two kinds of help, both exact:
    # the optimum without pair capacities (the clique formulation, which
    # solves in seconds) is a lower bound, and an optimal placement when it
    # happens to be admissible; and symmetry breaking: the hosts are
    # interchangeable, so number them by their smallest node.
    free_opt = ilp_run(path, k_groups)
    lower = None
    if isinstance(free_opt, list):
        lower = sum(c for a, b, c in edges if free_opt[a] != free_opt[b])
        loads = {}
        for a, b, c in edges:
            ga, gb = free_opt[a], free_opt[b]
            if ga != gb:
                key = (min(ga, gb), max(ga, gb))
                loads[key] = loads.get(key, 0) + c
        if all(x <= pair_capacity for x in loads.values()):
            return free_opt
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("time_limit", float(TIME_LIMIT))
        h.setOptionValue("mip_rel_gap", 0.0)
    G = k_groups
    y = lambda v, g: v * G + g
    nv = n * G
    for _ in range(nv):
        h.addVar(0.0, 1.0)
    zs = {}
    for (a, b, c) in edges:
        for g in range(G):
            for g2 in range(G):
                if g != g2:
                    zs[(a, b, g, g2)] = nv + len(zs)
                    h.addVar(0.0, 1.0)
    tot = nv + len(zs)
    h.changeColsIntegrality(nv, np.arange(nv, dtype=np.int32), np.array([highspy.HighsVarType.kInteger] * nv))
    costs = np.zeros(tot)
    for (a, b, g, g2), col in zs.items():
        costs[col] = wmap[(a, b)]
    h.changeColsCost(tot, np.arange(tot, dtype=np.int32), costs)
    for v in range(n):
        h.addRow(1, 1, G, np.array([y(v, g) for g in range(G)], dtype=np.int32), np.ones(G))
    for g in range(G):
        h.addRow(size, size, n, np.array([y(v, g) for v in range(n)], dtype=np.int32), np.ones(n))
    # Symmetry breaking: host g's smallest node is smaller than host g+1's.
    # So node v is on a host g <= v, and on host g >= 1 only if a node
    # before it is on host g - 1.
    for v in range(n):
        for g in range(v + 1, G):
            h.changeColBounds(y(v, g), 0.0, 0.0)
    for v in range(1, n):
        for g in range(1, min(v, G - 1) + 1):
            cols = [y(v, g)] + [y(u, g - 1) for u in range(v)]
            vals = [1.0] + [-1.0] * v
            h.addRow(-inf, 0.0, len(cols), np.array(cols, dtype=np.int32), np.array(vals))
    if lower is not None:
        cols = sorted(zs.values())
        h.addRow(float(lower), inf, len(cols), np.array(cols, dtype=np.int32),
                 np.array([costs[c] for c in cols]))
    for (a, b, g, g2), col in zs.items():
        # z >= y_ag + y_bg2 - 1
        h.addRow(-1.0, inf, 3, np.array([col, y(a, g), y(b, g2)], dtype=np.int32), np.array([1.0, -1.0, -1.0]))
    for g in range(G):
        for g2 in range(g + 1, G):
            cols, vals = [], []
            for (a, b, c) in edges:
                for (p, q) in ((g, g2), (g2, g)):
                    cols.append(zs[(a, b, p, q)])
                    vals.append(float(c))
            h.addRow(-inf, float(pair_capacity), len(cols), np.array(cols, dtype=np.int32), np.array(vals))
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:
        return None
    if status != highspy.HighsModelStatus.kOptimal:
        return "timeout"
    x = h.getSolution().col_value
    return [max(range(G), key=lambda g: x[y(v, g)]) for v in range(n)]


def main():
    tool, path, k, seed, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    cap = None
    if "--pair-capacity" in sys.argv:
        cap = int(sys.argv[sys.argv.index("--pair-capacity") + 1])
    t0 = time.perf_counter()
    if tool == "mtkahypar":
        blocks = mtkahypar_run(path, k, seed, "DEFAULT")
    elif tool == "mtkahypar-q":
        blocks = mtkahypar_run(path, k, seed, "QUALITY")
    elif tool == "kahip":
        blocks = kahip_run(path, k, seed)
    elif tool == "ilp":
        blocks = ilp_run(path, k)
    elif tool == "ilp-adm":
        blocks = ilp_run(path, k, cap)
    elif tool == "random":
        n = read_metis(path)[0]
        size = -(-n // k)
        blocks = [i // size for i in range(n)]
        random.Random(seed).shuffle(blocks)
    else:
        sys.exit(f"unknown tool {tool}")
    # In-process time (without interpreter start and imports), for compare.py.
    print(f"solve_time_s={time.perf_counter() - t0:.6f}")
    with open(out, "w") as f:
        if blocks is None:
            f.write("infeasible\n")
        elif blocks == "timeout":
            f.write("timeout\n")
        else:
            f.write("\n".join(str(b) for b in blocks) + "\n")


if __name__ == "__main__":
    main()
