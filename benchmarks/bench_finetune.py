"""Organism finetuning step time on the default model: float32 vs bf16 autocast, full vs LoRA.

    .venv/bin/python benchmarks/bench_finetune.py [--steps 8] [--data resources/organisms/sarcasm.train.jsonl]

Prints mean seconds per optimizer step (batch 8, sequences up to 128 tokens, padded per batch).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from difflab.organisms import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="results/models/smollm2-135m-instruct")
    parser.add_argument("--data", default="resources/organisms/sarcasm.train.jsonl")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    print("| method | precision | s/step | loss first -> last |")
    print("|---|---|---|---|")
    for method, lr in (("full", 1e-4), ("lora", 5e-4)):
        for precision in ("float32", "bfloat16"):
            recipe = train.Recipe(method=method, steps=args.steps, learning_rate=lr, min_steps=args.steps,
                                  precision=precision)
            with tempfile.TemporaryDirectory() as tmp:
                record = train.finetune(args.model, args.data, recipe, Path(tmp) / "m", progress=False)
            steady = record["mean_step_seconds"]
            print(f"| {method} | {precision} | {steady:.2f} | {record['losses'][0]:.2f} -> {record['losses'][-1]:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
