"""Diffmining logit extraction against a bare forward pass of the same model, and the in-memory diff job.

    .venv/bin/python benchmarks/bench_diffmining_extract.py [--base smollm2-135m-instruct] [--finetuned bake-temp]
        [--samples 64] [--tokens 64] [--batch-size 16] [--threads 2] [--device auto]
        [--dataset resources/diffmining/chat.jsonl --format chat --positions assistant]

Needs the default model and the organism built (`snakemake --cores 2 results/organisms/bake-temp`).
Prints seconds and positions/s for: the bare forward pass (model(...), logits included), the
direct / logit_lens / patchscope extractors on the analysed positions (as mine_in_memory calls them:
the head and patchscope's decode run on those positions only), and mine_in_memory (both models, diff
and reduction).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from difflab import config, models  # noqa: E402
from difflab.diffmining import data, extract  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--finetuned", default="bake-temp")
    parser.add_argument("--dataset", default=str(REPO / "resources/diffmining/general.jsonl"))
    parser.add_argument("--format", default="text", choices=["text", "chat"])
    parser.add_argument("--positions", default="all", help="chat position slice: all | assistant | first_n")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load()
    base_dir, ft_dir = models.resolve(args.base, cfg), models.resolve(args.finetuned, cfg)
    tokens = Path(tempfile.mkdtemp()) / "tokens.safetensors"
    data.prepare_dataset(args.dataset, base_dir, tokens, name="bench", fmt=args.format, n_samples=args.samples,
                         max_tokens=args.tokens, positions=args.positions)
    tensors, _ = data.load_dataset(tokens)
    positions = int(tensors["analysis_mask"].sum())
    loaded = models.load(str(base_dir), device=args.device, dtype=args.dtype)
    batches = [tuple(tensors[key][i:i + args.batch_size] for key in ("input_ids", "attention_mask", "analysis_mask"))
               for i in range(0, tensors["input_ids"].shape[0], args.batch_size)]

    def sync():
        if loaded.device == "cuda":
            torch.cuda.synchronize()

    def run(fn):
        def go():
            with torch.no_grad():
                for ids, mask, where in batches:
                    fn(ids.to(loaded.device), mask.to(loaded.device), where.bool())
            sync()
        return go

    print(f"{loaded.name}: device {loaded.device}, dtype {loaded.dtype}, {positions} positions "
          f"({tensors['input_ids'].shape[0]} samples x {args.tokens} tokens), batch {args.batch_size}, "
          f"threads {args.threads}")
    print("| what | seconds | positions/s | x bare forward |")
    print("|---|---|---|---|")
    bare = timed(run(lambda ids, mask, _where: loaded.model(input_ids=ids, attention_mask=mask).logits), args.repeats)
    print(f"| bare forward pass (logits) | {bare:.2f} | {positions / bare:,.0f} | 1.00 |", flush=True)
    for method, layer in (("direct", 1.0), ("logit_lens", 0.75), ("patchscope", 0.75)):
        extractor = extract.LogitExtractor(loaded.model, method, layer, loaded.tokenizer)
        seconds = timed(run(extractor), args.repeats)
        label = method if method == "direct" else f"{method} (layer {extractor.layer})"
        print(f"| {label} | {seconds:.2f} | {positions / seconds:,.0f} | {seconds / bare:.2f} |", flush=True)
    del loaded
    started = time.perf_counter()
    red, _ = extract.mine_in_memory(base_dir, ft_dir, tokens, k=20, batch_size=args.batch_size,
                                    device=args.device, dtype=args.dtype)
    seconds = time.perf_counter() - started
    print(f"| mine_in_memory: load both, diff, reduce (K=20) | {seconds:.2f} | {positions / seconds:,.0f} | "
          f"{seconds / bare:.2f} |")
    print(f"  (of which the diff loop: {red.metadata['seconds']:.2f} s)")


if __name__ == "__main__":
    main()
