#!/usr/bin/env python3
"""Writes the synthetic latency matrices of scenarios/data/synthetic/.

Coordinates are judged on matrices they were not tuned on: this suite is
the evidence (benches/coordinate_suite.sh scores every matrix here). Each
matrix stresses one thing real networks do and Euclidean coordinates find
hard; see README.md beside this script for the list.

Every matrix is a pure function of this file and the two measured matrices
it subsets (Python's `random` with fixed seeds, stdlib only):

    python3 scenarios/data/synthetic/generate.py [--check]

--check regenerates in memory and fails if a file differs (CI runs it).
Output format is the measured matrices' one: NAME.csv with `a,b,rtt_ms`,
one row per unordered pair a < b, 0-based ids; a pair left out is
unmeasured.
"""
import argparse
import csv
import math
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.dirname(HERE)


def read_matrix(name):
    """{(a, b): rtt_ms} and the node count of a measured matrix."""
    rtt = {}
    n = 0
    with open(os.path.join(DATA, name + ".csv")) as f:
        for row in csv.DictReader(f):
            a, b, r = int(row["a"]), int(row["b"]), float(row["rtt_ms"])
            rtt[(a, b)] = r
            n = max(n, a + 1, b + 1)
    return rtt, n


def read_nodes(name):
    with open(os.path.join(DATA, name + ".nodes.csv")) as f:
        return list(csv.DictReader(f))


def subset(name, ids):
    """The measured matrix restricted to `ids`, renumbered in their order."""
    rtt, _ = read_matrix(name)
    index = {old: new for new, old in enumerate(ids)}
    out = {}
    for (a, b), r in rtt.items():
        if a in index and b in index:
            x, y = sorted((index[a], index[b]))
            out[(x, y)] = r
    return len(ids), out


def random_subset(name, k, seed):
    _, n = read_matrix(name)
    ids = sorted(random.Random(seed).sample(range(n), k))
    return subset(name, ids)


def region_subset(name, lat, lon):
    """Nodes of a measured matrix inside a latitude and longitude box."""
    ids = [
        int(r["id"])
        for r in read_nodes(name)
        if r["lat"] and r["lon"]
        and lat[0] <= float(r["lat"]) <= lat[1]
        and lon[0] <= float(r["lon"]) <= lon[1]
    ]
    return subset(name, ids)


def plane(rng, n, clusters, width, spread):
    """n points around `clusters` centres in a width x width ms square."""
    centres = [(rng.uniform(0, width), rng.uniform(0, width)) for _ in range(clusters)]
    pts = []
    for _ in range(n):
        cx, cy = centres[rng.randrange(clusters)]
        pts.append((cx + rng.gauss(0, spread), cy + rng.gauss(0, spread)))
    return pts


def euclid_matrix(pts, access):
    """RTT = distance + both access delays."""
    n = len(pts)
    out = {}
    for a in range(n):
        for b in range(a + 1, n):
            d = math.dist(pts[a], pts[b])
            out[(a, b)] = d + access[a] + access[b]
    return n, out


def clusters_fixed(sizes, inside, between):
    """Clusters of the given sizes, `inside` ms within one, between[i][j]
    ms across clusters i and j."""
    label = [c for c, k in enumerate(sizes) for _ in range(k)]
    n = len(label)
    out = {}
    for a in range(n):
        for b in range(a + 1, n):
            ca, cb = label[a], label[b]
            out[(a, b)] = inside if ca == cb else between[min(ca, cb)][max(ca, cb)]
    return n, out


def hierarchical(seed):
    """8 regions of 20 hosts: continents apart, a few ms inside a region, and
    hosts' access delays 0.2-3 ms."""
    rng = random.Random(seed)
    pts = plane(rng, 160, 8, 250.0, 3.0)
    access = [rng.uniform(0.2, 3.0) for _ in pts]
    return euclid_matrix(pts, access)


def heavy_tail(seed):
    """A plain Internet-like layout whose pairs are inflated by route
    detours: 8 % of pairs by a log-normal factor (median 2x, up to 20x),
    capped at 4 s, so the matrix itself has a heavy tail."""
    rng = random.Random(seed)
    pts = plane(rng, 150, 6, 200.0, 15.0)
    access = [rng.uniform(0.5, 8.0) for _ in pts]
    n, out = euclid_matrix(pts, access)
    for k in sorted(out):
        if rng.random() < 0.08:
            out[k] = min(4000.0, out[k] * min(20.0, rng.lognormvariate(math.log(2.0), 0.8)))
    return n, out


def quantized(seed):
    """RTTs that tools report in whole 10 ms steps (rounded up)."""
    rng = random.Random(seed)
    pts = plane(rng, 120, 5, 150.0, 12.0)
    access = [rng.uniform(1.0, 20.0) for _ in pts]
    n, out = euclid_matrix(pts, access)
    return n, {k: 10.0 * max(1, math.ceil(v / 10.0)) for k, v in out.items()}


def triangle_violations(seed):
    """Routing that breaks the triangle inequality: 15 % of pairs take a
    detour 1.5-4x longer, 5 % a shortcut at 0.3-0.7x."""
    rng = random.Random(seed)
    pts = plane(rng, 150, 6, 200.0, 15.0)
    access = [rng.uniform(0.5, 5.0) for _ in pts]
    n, out = euclid_matrix(pts, access)
    for k in sorted(out):
        u = rng.random()
        if u < 0.15:
            out[k] *= rng.uniform(1.5, 4.0)
        elif u < 0.20:
            out[k] *= rng.uniform(0.3, 0.7)
    return n, out


def slow_access(seed):
    """A quarter of the hosts behind slow access links: DSL (15-40 ms),
    cellular (40-120 ms) or satellite (250-600 ms)."""
    rng = random.Random(seed)
    pts = plane(rng, 150, 6, 200.0, 15.0)
    access = []
    for _ in pts:
        u = rng.random()
        if u < 0.12:
            access.append(rng.uniform(15.0, 40.0))
        elif u < 0.22:
            access.append(rng.uniform(40.0, 120.0))
        elif u < 0.25:
            access.append(rng.uniform(250.0, 600.0))
        else:
            access.append(rng.uniform(0.3, 3.0))
    return euclid_matrix(pts, access)


def country_coarse(seed):
    """Country-level data: 173 hosts in 45 countries, each pair given its
    two countries' RTT (geolocation-grade precision, 1 ms steps), and 40 %
    of pairs never measured."""
    rng = random.Random(seed)
    countries = plane(rng, 45, 7, 280.0, 25.0)
    home = [rng.randrange(45) for _ in range(173)]
    base = {}
    for a in range(45):
        for b in range(a, 45):
            d = math.dist(countries[a], countries[b])
            base[(a, b)] = round(max(2.0, 1.2 * d + rng.uniform(2.0, 10.0)))
    out = {}
    for a in range(173):
        for b in range(a + 1, 173):
            if rng.random() < 0.4:
                continue
            ca, cb = sorted((home[a], home[b]))
            out[(a, b)] = float(base[(ca, cb)])
    return 173, out


def home_office(seed):
    """99 hosts on home and office links: access delays log-normal (median
    8 ms, some over 100 ms), 6 % of pairs through congested paths (up to
    3.7 s), 10 % through detours, reported in 10 ms steps."""
    rng = random.Random(seed)
    pts = plane(rng, 99, 4, 180.0, 20.0)
    access = [min(400.0, rng.lognormvariate(math.log(8.0), 1.0)) for _ in pts]
    n, out = euclid_matrix(pts, access)
    for k in sorted(out):
        u = rng.random()
        if u < 0.06:
            out[k] = min(3700.0, out[k] * rng.lognormvariate(math.log(4.0), 1.0))
        elif u < 0.16:
            out[k] *= rng.uniform(1.3, 3.0)
    return n, {k: 10.0 * max(1, math.ceil(v / 10.0)) for k, v in out.items()}


def home_structured(seed):
    """99 home and office hosts whose worst delays belong to hosts and
    routes rather than to single pairs: access delays log-normal (median
    8 ms); 5 % of hosts bufferbloated (every path through them 0.3-3.5 s
    slower); a quarter of hosts badly peered with one other region (every
    path to it 1.5-3x longer); 2 % of pairs congested on their own; all
    reported in 10 ms steps."""
    rng = random.Random(seed)
    regions = 4
    centres = [(rng.uniform(0, 180.0), rng.uniform(0, 180.0)) for _ in range(regions)]
    region = [rng.randrange(regions) for _ in range(99)]
    pts = [(centres[r][0] + rng.gauss(0, 20.0), centres[r][1] + rng.gauss(0, 20.0)) for r in region]
    access = [min(400.0, rng.lognormvariate(math.log(8.0), 1.0)) for _ in pts]
    for h in range(99):
        if rng.random() < 0.05:
            access[h] += rng.uniform(300.0, 3500.0)
    peering = {}
    for h in range(99):
        if rng.random() < 0.25:
            other = rng.choice([r for r in range(regions) if r != region[h]])
            peering[h] = (other, rng.uniform(1.5, 3.0))
    n, out = euclid_matrix(pts, access)
    for (a, b) in sorted(out):
        for x, y in ((a, b), (b, a)):
            if x in peering and peering[x][0] == region[y]:
                out[(a, b)] *= peering[x][1]
        if rng.random() < 0.02:
            out[(a, b)] = min(3700.0, out[(a, b)] * rng.lognormvariate(math.log(3.0), 0.8))
    return n, {k: min(3700.0, 10.0 * max(1, math.ceil(v / 10.0))) for k, v in out.items()}


def suite():
    """(name, (nodes, {(a, b): rtt_ms})) for every matrix of the suite."""
    return [
        ("wp-random100-a", random_subset("wonderproxy250", 100, 11)),
        ("wp-random100-b", random_subset("wonderproxy250", 100, 12)),
        ("wp-europe", region_subset("wonderproxy250", (35.0, 72.0), (-11.0, 40.0))),
        ("pl-random150", random_subset("planetlab490", 150, 13)),
        (
            "clusters-3x6",
            clusters_fixed([6, 6, 6], 2.0, [[0, 90.0, 160.0], [0, 0, 230.0]]),
        ),
        ("clusters-8x20", hierarchical(21)),
        ("heavy-tail", heavy_tail(22)),
        ("quantized-10ms", quantized(23)),
        ("triangle-violations", triangle_violations(24)),
        ("slow-access", slow_access(25)),
        ("country-coarse", country_coarse(26)),
        ("home-office", home_office(27)),
        ("home-structured", home_structured(28)),
    ]


def render(n, rtt):
    lines = ["a,b,rtt_ms"]
    for (a, b) in sorted(rtt):
        lines.append("%d,%d,%.3f" % (a, b, rtt[(a, b)]))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if a written matrix differs")
    args = ap.parse_args()
    stale = []
    for name, (n, rtt) in suite():
        path = os.path.join(HERE, name + ".csv")
        text = render(n, rtt)
        if args.check:
            try:
                with open(path) as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
            continue
        with open(path, "w") as f:
            f.write(text)
        print("%-20s %4d nodes %6d pairs" % (name, n, len(rtt)))
    if stale:
        sys.exit("generate.py: stale or missing: %s; run scenarios/data/synthetic/generate.py" % ", ".join(stale))


if __name__ == "__main__":
    main()
