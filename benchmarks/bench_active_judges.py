"""Both validation judges on a finished active-sampling run: embedding similarity (against reference
statements) and the LLM judge (the configured llm client, shown each pair in random order).

    python benchmarks/bench_active_judges.py results/active/smollm2-135m-instruct/bake-temp

For each mode's hypotheses.json under the pair folder, and the control hypothesis, prints accuracy,
95% CI and BH q for each judge, and the seconds each judge took.
"""

from __future__ import annotations

import glob
import sys
import time
from pathlib import Path

from difflab import config, embed, io
from difflab.active import validate
from difflab.llm import SamplingParams, client_from_config


def main(pair_dir: str) -> None:
    cfg = config.load()
    section = cfg["active"]
    (heldout,) = glob.glob(f"{pair_dir}/heldout_*.jsonl")
    pairs = [p for p in io.read_jsonl(heldout) if p["finetuned"].strip() != p["base"].strip()]
    ft, bs = [p["finetuned"] for p in pairs], [p["base"] for p in pairs]
    client = client_from_config(cfg, progress=False)
    print(f"{len(pairs)} held-out pairs from {heldout}")
    for path in sorted(glob.glob(f"{pair_dir}/*/*/hypotheses.json")):
        found = io.read_json(path)
        statements = [h["hypothesis"] for h in found["hypotheses"]] + [section["control_hypothesis"]]
        names = [f"hypothesis {i}" for i in range(len(found["hypotheses"]))] + ["control"]
        start = time.perf_counter()
        votes, rank_p = validate.embedding_votes(statements, ft, bs, lambda t: embed.embed(t, normalize=True).numpy())
        emb = validate.score(votes, rank_p=rank_p)
        t_emb = time.perf_counter() - start
        start = time.perf_counter()
        llm = validate.score(validate.llm_votes(statements, ft, bs, client,
                                                SamplingParams(max_new_tokens=4, temperature=0.0), seed=section["seed"]))
        t_llm = time.perf_counter() - start
        print(f"\n{Path(path).parent.parent.name}: embedding judge {t_emb:.1f} s, LLM judge {t_llm:.1f} s")
        for name, statement, e, m in zip(names, statements, emb, llm):
            print(f"  {name}: {statement}")
            for judge, r in (("embedding", e), ("llm", m)):
                rank = f" rank p {r['p_rank']:.3g}" if "p_rank" in r else ""
                print(f"    {judge:9s} accuracy {r['accuracy']} of {r['pairs']} {r['ci95']}{rank} q {r['q_value']:.3g} "
                      f"validated {r['validated']}")


if __name__ == "__main__":
    main(sys.argv[1])
