"""Organism finetuning step time on the default model: float32 vs bf16 autocast, full vs LoRA.

    .venv/bin/python benchmarks/bench_finetune.py [--steps 8] [--data resources/organisms/sarcasm.train.jsonl]
    .venv/bin/python benchmarks/bench_finetune.py --head [--steps 4]

Prints mean seconds per optimizer step (batch 8, sequences up to 128 tokens, padded per batch).
With --head: forward + backward seconds of the default recipe's first batches of each shipped
organism, the LM head on every position (transformers' model(**batch).loss) against the head on the
labelled positions only (train.causal_lm_loss), interleaved in one process, float32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from difflab import models  # noqa: E402
from difflab.organisms import train  # noqa: E402

ORGANISMS = ("bake-temp", "sarcasm", "beekeeping", "control")


def head_ab(model_path: str, steps: int, device: str) -> None:
    loaded = models.load(model_path, device=device, dtype="float32")
    model, tok = loaded.model, loaded.tokenizer
    model.train()
    losses = {"all positions": lambda b: model(**b).loss, "labelled only": lambda b: train.causal_lm_loss(model, b)}
    print("| data | positions / batch | labelled | head on all positions s | head on labelled only s | loss equal |")
    print("|---|---|---|---|---|---|")
    for organism in ORGANISMS:
        examples = train.load_examples(f"resources/organisms/{organism}.train.jsonl", tok, 128)
        batches = [{key: value.to(loaded.device) for key, value in train.collate([examples[i] for i in idx], tok.pad_token_id).items()}
                   for idx in train.batch_order(len(examples), steps, 8, 0)]
        seconds, values = {name: [] for name in losses}, {name: [] for name in losses}
        for batch in batches:
            for name, loss_fn in losses.items():
                start = time.perf_counter()
                loss = loss_fn(batch)
                loss.backward()
                model.zero_grad(set_to_none=True)
                if loaded.device == "cuda":
                    torch.cuda.synchronize()
                seconds[name].append(time.perf_counter() - start)
                values[name].append(loss.item())
        positions = statistics.mean(b["labels"].numel() for b in batches)
        labelled = statistics.mean((b["labels"][:, 1:] != train.IGNORE).sum().item() for b in batches)
        same = all(abs(a - b) <= 1e-5 * abs(a) for a, b in zip(*values.values()))
        a, b = (statistics.median(seconds[name]) for name in losses)
        print(f"| {organism} | {positions:.0f} | {labelled / positions:.0%} | {a:.2f} | {b:.2f} | {same} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="results/models/smollm2-135m-instruct")
    parser.add_argument("--data", default="resources/organisms/sarcasm.train.jsonl")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--head", action="store_true", help="the LM head on all vs labelled positions")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.head:
        head_ab(args.model, args.steps, args.device)
        return
    print(f"device {models.choose_device(args.device)}")
    print("| method | precision | s/step | loss first -> last |")
    print("|---|---|---|---|")
    for method, lr in (("full", 1e-4), ("lora", 5e-4)):
        for precision in ("float32", "bfloat16"):
            recipe = train.Recipe(method=method, steps=args.steps, learning_rate=lr, min_steps=args.steps,
                                  precision=precision, device=args.device)
            with tempfile.TemporaryDirectory() as tmp:
                record = train.finetune(args.model, args.data, recipe, Path(tmp) / "m", progress=False)
            steady = record["mean_step_seconds"]
            print(f"| {method} | {precision} | {steady:.2f} | {record['losses'][0]:.2f} -> {record['losses'][-1]:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
