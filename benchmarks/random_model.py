"""A model folder with another folder's config and tokenizer and random (seeded) weights.

    python benchmarks/random_model.py results/models/smollm2-135m-instruct /tmp/m0 [--seed 0]

For timing on a machine where the real weights cannot travel (the device tool carries at most 64 MiB):
a forward pass, a finetuning step or a diff costs the same whatever the weights are. Needs only the
source's config.json and tokenizer files.
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    config = AutoConfig.from_pretrained(args.source)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(args.out)
    AutoTokenizer.from_pretrained(args.source).save_pretrained(args.out)
    print(f"{args.out}: {sum(p.numel() for p in model.parameters()):,} parameters, random (seed {args.seed}), "
          f"config of {args.source}")


if __name__ == "__main__":
    main()
