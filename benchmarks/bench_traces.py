"""Traces throughput and selection quality on synthetic search trees.

    python benchmarks/bench_traces.py                       # 10k, 100k and 1M programs, 3 quality seeds
    python benchmarks/bench_traces.py --sizes 10000 --seeds 0 1

Throughput: each size runs in its own process (so its peak RSS is its own): extract (networkx tree,
root-to-leaf traces), backprop, encode (ngram: tiktoken n-grams hashed, TF-IDF, SVD 64) and cluster
(k by silhouette on a 5000-trace sample; MiniBatchKMeans above 20k traces), timed per stage, then
programs per second through all four. Generating the tree is not counted. A second table reads the
same programs back from SQLite and from PostgreSQL (when a server URL is given with --postgres, or
DIFFLAB_TEST_POSTGRES_URL is set) in pages of 10 000.

Quality: on trees with planted families of near-duplicates, the clustered, value-weighted selection
vs the top-N by value and a random N, each of the same size: families covered and mean value.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def one_size(n: int, families: int, postgres: str | None) -> dict:
    import pandas as pd

    from difflab.traces import db, encode, select, synth, tree

    t0 = time.perf_counter()
    records = synth.generate_tree(n, n_families=families, seed=0)
    programs = db.normalize_frame(pd.DataFrame(records).drop(columns=["family"]))
    generate_s = time.perf_counter() - t0
    if n > 100_000:  # only the database reads (<= 100k) need the records again
        del records
    times = {}
    t = time.perf_counter()
    traces, report = tree.extract_traces(programs)
    times["extract"] = time.perf_counter() - t
    t = time.perf_counter()
    nodes = tree.backpropagate(programs)
    tree.trace_values(programs, nodes, traces)
    times["backprop"] = time.perf_counter() - t
    t = time.perf_counter()
    features, _ = encode.encode_traces(programs, traces, encode.get_encoder("ngram"), fields=["code", "reasoning"])
    times["encode"] = time.perf_counter() - t
    t = time.perf_counter()
    labels, _, info = select.cluster(features, n_clusters="auto")
    times["cluster"] = time.perf_counter() - t
    total = sum(times.values())
    result = {"programs": n, "traces": report["traces"], "mean_length": report["mean_length"],
              "clusters": info["n_clusters"], "method": info["method"], "generate_s": round(generate_s, 1),
              **{f"{k}_s": round(v, 2) for k, v in times.items()}, "total_s": round(total, 2),
              "programs_per_s": round(n / total), "peak_rss_gb": None}
    if n <= 100_000:  # database reads
        with tempfile.TemporaryDirectory() as tmp:
            dump = synth.write_jsonl(records, os.path.join(tmp, "dump.jsonl"))
            for name, url in (("sqlite", os.path.join(tmp, "p.sqlite")), ("postgres", postgres)):
                if not url:
                    continue
                t = time.perf_counter()
                db.import_dump(url, dump)
                import_s = time.perf_counter() - t
                t = time.perf_counter()
                back = db.read_programs(url, page_size=10000)
                read_s = time.perf_counter() - t
                assert len(back) == n
                result[f"{name}_import_rows_per_s"] = round(n / import_s)
                result[f"{name}_read_rows_per_s"] = round(n / read_s)
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--families", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quality-programs", type=int, default=3000)
    parser.add_argument("--postgres", default=os.environ.get("DIFFLAB_TEST_POSTGRES_URL"),
                        help="server URL whose database the read benchmark may fill (a fresh database is made)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print(json.dumps(one_size(args.one, args.families, args.postgres)))
        return

    postgres = None
    if args.postgres:
        import asyncio

        import asyncpg

        async def fresh():
            conn = await asyncpg.connect(args.postgres)
            await conn.execute("DROP DATABASE IF EXISTS difflab_bench WITH (FORCE)")
            await conn.execute("CREATE DATABASE difflab_bench")
            await conn.close()

        asyncio.run(fresh())
        postgres = args.postgres.rsplit("/", 1)[0] + "/difflab_bench"

    print("## throughput: extract + backprop + encode (ngram) + cluster\n")
    print("| programs | traces | mean length | k | extract s | backprop s | encode s | cluster s | total s | programs/s | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    reads = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--families", str(args.families)]
        if postgres:
            cmd += ["--postgres", postgres]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {n} | failed: {out.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['programs']:,} | {r['traces']:,} | {r['mean_length']} | {r['clusters']} ({r['method']}) | "
              f"{r['extract_s']} | {r['backprop_s']} | {r['encode_s']} | {r['cluster_s']} | {r['total_s']} | "
              f"{r['programs_per_s']:,} | {r['peak_rss_gb']} |", flush=True)
        if "sqlite_read_rows_per_s" in r:
            reads.append(r)
    if reads:
        print("\n## database: import (upsert) and paged read, rows/s\n")
        print("| programs | SQLite import | SQLite read | PostgreSQL import | PostgreSQL read |")
        print("|---|---|---|---|---|")
        for r in reads:
            print(f"| {r['programs']:,} | {r['sqlite_import_rows_per_s']:,} | {r['sqlite_read_rows_per_s']:,} | "
                  f"{r.get('postgres_import_rows_per_s', '-'):,} | {r.get('postgres_read_rows_per_s', '-'):,} |")

    from difflab.traces import evaluate

    print(f"\n## selection quality ({args.quality_programs} programs, 30 planted families, per_cluster 2)\n")
    print("| seed | traces | picked | families: clustered / top value / random | mean value: clustered / top value / random |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        r = evaluate.evaluate_tree(args.quality_programs, n_families=30, seed=seed)
        c, t, rd = r["clustered"], r["top_value"], r["random"]
        print(f"| {seed} | {r['traces']} | {r['picked']} | {c['families']} / {t['families']} / {rd['families']} | "
              f"{c['mean_value']} / {t['mean_value']} / {rd['mean_value']} |", flush=True)


if __name__ == "__main__":
    main()
