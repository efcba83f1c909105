"""Local generation throughput: difflab's local backend vs transformers' `generate`, by precision,
batch size and decoding (greedy / top-k sampling), on the default model; plus model load time.

    .venv/bin/python benchmarks/bench_generation.py [--model results/models/smollm2-135m-instruct]

Prints a Markdown table of new tokens per second (64 new tokens per prompt, long-answer prompts so
rows rarely stop early; the prompt pass is included). Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from difflab import models  # noqa: E402
from difflab.llm.local import LocalBackend, timed_generate  # noqa: E402
from difflab.llm.types import Request, SamplingParams  # noqa: E402

TOPICS = ["a lighthouse keeper", "a lost robot", "a desert caravan", "a jazz pianist", "a mountain village",
          "a deep-sea diver", "a clockmaker", "a winter festival"]


def prompts(n: int) -> list[Request]:
    return [Request.chat([{"role": "user", "content": f"Write a long, detailed story about {TOPICS[i % 8]} "
                                                      f"(version {i})."}]) for i in range(n)]


def bench_difflab(backend: LocalBackend, batch: int, params: SamplingParams) -> float:
    backend.batch_size = batch
    requests = prompts(batch)
    timed_generate(backend, requests[:1], SamplingParams(max_new_tokens=4))  # warm-up
    out, seconds = timed_generate(backend, requests, params)
    return sum(c.completion_tokens for c in out) / seconds


def bench_hf_generate(model, tokenizer, batch: int, sample: bool) -> float:
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(r.message_dicts(), add_generation_prompt=True, tokenize=False)
             for r in prompts(batch)]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    kwargs = dict(max_new_tokens=64, min_new_tokens=64, do_sample=sample, pad_token_id=tokenizer.pad_token_id)
    if sample:
        kwargs.update(temperature=0.8, top_k=50)
    with torch.inference_mode():
        model.generate(**enc, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})
        start = time.perf_counter()
        model.generate(**enc, **kwargs)
    return batch * 64 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="results/models/smollm2-135m-instruct")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers generate baseline")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    start = time.perf_counter()
    models.load(args.model, {"models": {}})
    load_s = time.perf_counter() - start
    print(f"model load (folder -> ready, incl. fingerprint): {load_s:.2f} s; torch threads: {torch.get_num_threads()}")
    print()
    print("| engine | dtype | decoding | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|---|---|" + "---|" * len(batches))
    greedy = SamplingParams(max_new_tokens=64)
    sampled = SamplingParams(max_new_tokens=64, temperature=0.8, top_k=50)
    for dtype in args.dtypes.split(","):
        backend = LocalBackend(args.model, {"models": {}}, dtype=dtype, progress=False)
        for name, params in (("greedy", greedy), ("top-k sampling", sampled)):
            figures = [bench_difflab(backend, b, params) for b in batches]
            print(f"| difflab local | {dtype} | {name} | " + " | ".join(f"{f:.0f}" for f in figures) + " |", flush=True)
        if not args.no_hf:
            model, tokenizer = backend.model, backend.tokenizer
            for name, sample in (("greedy", False), ("top-k sampling", True)):
                figures = [bench_hf_generate(model, tokenizer, b, sample) for b in batches]
                print(f"| transformers generate | {dtype} | {name} | " + " | ".join(f"{f:.0f}" for f in figures) + " |",
                      flush=True)
        del backend


if __name__ == "__main__":
    main()
