"""Proof that an organism learned its change.

Each probe is a prompt (chat `messages`, or a raw text `prefix`) and an on-topic `continuation`. We
score the mean log-probability per continuation token under the organism and under the base model;
delta = organism - base. The organism learned its topic when
  * on-topic deltas are positive (one-sided Wilcoxon signed-rank, p < alpha),
  * on-topic deltas exceed off-topic deltas (one-sided Mann-Whitney U, p < alpha),
  * the mean on-topic delta is at least `min_mean_delta` nats per token, and
  * off-topic probes move much less: |mean off-topic delta| <= `max_off_topic_ratio` x mean on-topic delta.
The off-topic criterion uses the net (signed) mean: single off-topic probes are short and swing both
ways by a fraction of a nat per token after any finetune; the mean absolute change is reported too.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from difflab import io, models
from difflab.errors import DifflabError
from difflab.organisms.train import IGNORE, collate


def read_probes(path: str | Path) -> list[dict]:
    probes = io.read_jsonl(path, required=("id", "continuation"), line_field="_line")
    for p in probes:
        line = p.pop("_line")  # errors name the file's line, as read_jsonl's own do
        if ("messages" in p) == ("prefix" in p):
            raise DifflabError(f"{path}: record {line}: needs exactly one of 'messages' or 'prefix'")
        if not isinstance(p["continuation"], str) or not p["continuation"].strip():
            raise DifflabError(f"{path}: record {line}: field 'continuation' must be a non-empty string "
                               "(its tokens are what the probe scores)")
    if not probes:
        raise DifflabError(f"{path}: no probes")
    return probes


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _prompt_text(probe: dict) -> str:
    return probe["prefix"] if "prefix" in probe else str(probe["messages"][-1].get("content", ""))


def training_overlap(probes: list[dict], train_path: str | Path, n: int = 5) -> dict[str, str]:
    """Probe id -> the first n-word sequence (lower-cased words) of its continuation, with the prompt's last
    words before it, that the training data also holds. A probe that repeats its training text measures
    recall of that text, not the learned change in a new context: held-out probes share none."""
    seen = set()
    for record in io.read_jsonl(train_path):
        texts = [m.get("content", "") for m in record["messages"]] if "messages" in record else [record.get("text", "")]
        for text in texts:
            words = _words(str(text))
            seen.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    shared = {}
    for probe in probes:
        context = _words(_prompt_text(probe))[-(n - 1):]
        words = context + _words(probe["continuation"])
        # every n-gram that ends inside the continuation
        grams = (tuple(words[i:i + n]) for i in range(max(0, len(context) - n + 1), len(words) - n + 1)
                 if i + n > len(context))
        hit = next((gram for gram in grams if gram in seen), None)
        if hit:
            shared[probe["id"]] = " ".join(hit)
    return shared


def _encode(tokenizer, probe: dict) -> tuple[list[int], list[int]]:
    if "messages" in probe:
        prompt = tokenizer.apply_chat_template(probe["messages"], add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = tokenizer(probe["prefix"])["input_ids"]
    continuation = tokenizer(probe["continuation"], add_special_tokens=False)["input_ids"]
    return prompt_ids + continuation, [IGNORE] * len(prompt_ids) + continuation


@torch.inference_mode()
def continuation_logprobs(loaded: models.LoadedModel, probes: list[dict], batch_size: int = 16) -> list[float]:
    """Mean log-probability per continuation token, one value per probe."""
    encoded = [_encode(loaded.tokenizer, p) for p in probes]
    scores: list[float] = []
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start:start + batch_size], loaded.tokenizer.pad_token_id)
        batch = {k: v.to(loaded.device) for k, v in batch.items()}
        scores += models.mean_labelled_logprobs(loaded.model, batch["input_ids"], batch["attention_mask"],
                                                batch["labels"]).tolist()
    return scores


def learned_topic_check(on_base, on_org, off_base, off_org, *, alpha: float = 0.01, min_mean_delta: float = 0.2,
                        max_off_topic_ratio: float = 0.5) -> dict:
    from scipy import stats

    on = [o - b for o, b in zip(on_org, on_base)]
    off = [o - b for o, b in zip(off_org, off_base)]
    mean_on = sum(on) / len(on)
    mean_off = sum(off) / len(off) if off else 0.0
    mean_abs_off = sum(abs(d) for d in off) / len(off) if off else 0.0
    p_on = float(stats.wilcoxon(on, alternative="greater").pvalue) if any(on) else 1.0
    p_vs_off = float(stats.mannwhitneyu(on, off, alternative="greater").pvalue) if off else 0.0
    checks = {
        "on_topic_rises (wilcoxon p < alpha)": p_on < alpha,
        "on_topic_beats_off_topic (mann-whitney p < alpha)": p_vs_off < alpha,
        f"mean_on_topic_delta >= {min_mean_delta}": mean_on >= min_mean_delta,
        f"abs(mean_off_topic_delta) <= {max_off_topic_ratio} x mean_on_topic_delta":
            abs(mean_off) <= max_off_topic_ratio * mean_on,
    }
    return {
        "learned": all(checks.values()),
        "checks": checks,
        "n_on_topic": len(on),
        "n_off_topic": len(off),
        "mean_on_topic_delta": round(mean_on, 4),
        "mean_off_topic_delta": round(mean_off, 4),
        "mean_abs_off_topic_delta": round(mean_abs_off, 4),
        "wilcoxon_on_topic_p": p_on,
        "mannwhitney_on_vs_off_p": p_vs_off,
        "alpha": alpha,
        "on_topic_deltas": [round(d, 4) for d in on],
        "off_topic_deltas": [round(d, 4) for d in off],
    }


def probe_organism(name: str, organism_dir: str, base: str, on_topic: str, off_topic: str, out_json: str, *,
                   alpha: float = 0.01, min_mean_delta: float = 0.2, max_off_topic_ratio: float = 0.5,
                   device: str = "auto", config: dict | None = None, train_data: str | None = None) -> dict:
    """Score the probes under base and organism, write the report; fail naming the organism if not learned.
    With `train_data` (the organism's training file) the report lists probes that repeat its text."""
    on_probes, off_probes = read_probes(on_topic), read_probes(off_topic)
    overlap = training_overlap(on_probes + off_probes, train_data) if train_data else None
    if overlap:
        print(f"organism '{name}': {len(overlap)} probes repeat 5-word sequences of the training data "
              f"(e.g. {next(iter(overlap))}: '{next(iter(overlap.values()))}'); they test recall, not a held-out change")
    scores = {}
    for label, model_name in (("base", base), ("organism", organism_dir)):
        loaded = models.load(model_name, config if config is not None else {"models": {}}, device=device)
        scores[label] = (continuation_logprobs(loaded, on_probes), continuation_logprobs(loaded, off_probes))
        del loaded
    report = learned_topic_check(scores["base"][0], scores["organism"][0], scores["base"][1], scores["organism"][1],
                                 alpha=alpha, min_mean_delta=min_mean_delta, max_off_topic_ratio=max_off_topic_ratio)
    report = {"organism": name, **report, "probes": {"on_topic": on_topic, "off_topic": off_topic},
              "training_overlap": overlap}
    io.write_json(out_json, report)
    if not report["learned"]:
        failed = [k for k, ok in report["checks"].items() if not ok]
        raise DifflabError(f"organism '{name}' did not learn its change: failed {'; '.join(failed)} "
                           f"(mean on-topic delta {report['mean_on_topic_delta']}, p={report['wilcoxon_on_topic_p']:.2g}; "
                           f"report {out_json})")
    return report
