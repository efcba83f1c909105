"""Datagen: near-duplicate filtering throughput, local generation throughput, REINFORCE vs random search.

    python benchmarks/bench_datagen.py                      # everything (needs results/models/ built)
    python benchmarks/bench_datagen.py --skip-generation --skip-rl

1. QualityFilter on 10k and 100k synthetic records, 10% of them planted near-duplicates (one word of a
   40-word instruction changed): records/s and how many near-duplicates it removed.
2. The local model answering 32 template instructions (64 new tokens, fresh cache): examples/minute.
3. RLTuner with the ClassificationTask (held-out topic classification, resources/datagen/rl_heldout.jsonl)
   for REINFORCE and random search on the same budget, over several seeds: best reward, and the mean
   reward of the last third of the evaluations, mean and standard deviation over seeds. Both agents
   share one LLM cache, so a grid point either has tried is not generated twice.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def bench_filter(n: int, seed: int = 0) -> dict:
    from difflab.datagen.filters import QualityFilter
    from difflab.datagen.records import Example

    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    originals = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(int(n * 0.9))]
    planted = []
    for text in rng.sample(originals, n - len(originals)):
        parts = text.split()
        parts[rng.randrange(40)] = "changed"
        planted.append(" ".join(parts))
    examples = [Example(instruction=t, output="ok") for t in originals + planted]
    t = time.perf_counter()
    kept, report = QualityFilter().apply(examples)
    seconds = time.perf_counter() - t
    return {"records": n, "planted": len(planted), "removed": report.removed["near_duplicate"],
            "seconds": round(seconds, 2), "records_per_s": round(n / seconds)}


def local_client(cache_dir: str):
    from difflab import config
    from difflab.llm import client_from_config

    cfg = config.load(overrides={"llm": {"cache_dir": cache_dir}})
    model = REPO / cfg["results_dir"] / "models" / cfg["llm"]["model"]
    if not model.is_dir():
        raise SystemExit(f"build the model first: .venv/bin/snakemake --cores 2 {model.relative_to(REPO)}")
    cfg["llm"]["model"] = str(model)
    return client_from_config(cfg, progress=False)


def bench_generation(n: int = 32) -> dict:
    from difflab.datagen.generator import Generator

    with tempfile.TemporaryDirectory() as cache:
        gen = Generator(local_client(cache), {"max_new_tokens": 64, "temperature": 0.7})
        topics = ["rainbows", "volcanoes", "tides", "magnets", "bees", "glaciers", "batteries", "clouds"]
        audiences = ["child", "student", "farmer", "pilot"]
        t = time.perf_counter()
        results = gen.generate_from_template("Explain {topic} to a {audience} in two sentences.",
                                             {"topic": topics, "audience": audiences}, n=n)
        seconds = time.perf_counter() - t
        usage = gen.client.usage.to_dict()
    return {"examples": len(results), "seconds": round(seconds, 1),
            "examples_per_minute": round(60 * len(results) / seconds, 1),
            "completion_tokens": usage["completion_tokens"]}


def bench_rl(budget: int, seeds: list[int], per_label: int) -> dict:
    from difflab.datagen import rl

    task = rl.ClassificationTask(REPO / "resources/datagen/rl_heldout.jsonl", per_label=per_label)
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        client = local_client(cache)
        for name in ("random", "reinforce"):
            best, last = [], []
            for seed in seeds:
                space = rl.ParamSpace()
                agent = rl.ReinforceAgent(space, seed=seed, batch=4) if name == "reinforce" else \
                    rl.RandomSearchAgent(space, seed=seed)
                tuner = rl.RLTuner(lambda p: task.reward(client, p), agent)
                t = time.perf_counter()
                result = tuner.run(budget)
                rewards = [h["reward"] for h in tuner.history]
                best.append(result["reward"])
                last.append(float(np.mean(rewards[-max(1, budget // 3):])))
                print(f"  {name} seed {seed}: best {result['reward']:.3f} at {result['params']}, "
                      f"last-third mean {last[-1]:.3f}, {time.perf_counter() - t:.0f} s", flush=True)
            out[name] = {"best_mean": round(float(np.mean(best)), 3), "best_std": round(float(np.std(best)), 3),
                         "last_third_mean": round(float(np.mean(last)), 3),
                         "last_third_std": round(float(np.std(last)), 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--skip-rl", action="store_true")
    parser.add_argument("--budget", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-label", type=int, default=4)
    args = parser.parse_args()

    print("## near-duplicate filtering (QualityFilter: lengths, exact, MinHash LSH 128 perms, 3-word shingles)\n")
    print("| records | planted near-duplicates | removed | seconds | records/s |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        r = bench_filter(n)
        print(f"| {r['records']:,} | {r['planted']:,} | {r['removed']:,} | {r['seconds']} | {r['records_per_s']:,} |",
              flush=True)
    if not args.skip_generation:
        r = bench_generation()
        print(f"\n## local generation: {r['examples']} answers, 64 new tokens: {r['seconds']} s, "
              f"{r['examples_per_minute']} examples/minute ({r['completion_tokens']} completion tokens)", flush=True)
    if not args.skip_rl:
        print(f"\n## RL tuning: budget {args.budget} evaluations, seeds {args.seeds}, {args.per_label} sentences "
              f"per label\n", flush=True)
        r = bench_rl(args.budget, args.seeds, args.per_label)
        print("\n| agent | best reward (mean +- std) | last-third mean reward (mean +- std) |")
        print("|---|---|---|")
        for name, v in r.items():
            print(f"| {name} | {v['best_mean']} +- {v['best_std']} | {v['last_third_mean']} +- {v['last_third_std']} |")


if __name__ == "__main__":
    main()
