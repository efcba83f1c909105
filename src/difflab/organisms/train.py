"""Finetune a causal LM on text or chat JSONL: full finetune or LoRA (merged), deterministic for a seed.

Data: `{"text": ...}` records train on every token (plus the end-of-sequence token); `{"messages":
[...]}` records train on assistant tokens only, the end-of-turn token included. That token is also
the pad token, so padding is masked by position (from each sequence's length), never by id. Batches
are padded to their longest sequence, and the LM head runs on the labelled positions only
(`causal_lm_loss`). Training stops early when the smoothed loss plateaus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from difflab import chat, io, models
from difflab.errors import DifflabError

IGNORE = models.IGNORE
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclasses.dataclass
class Recipe:
    method: str = "full"  # full | lora
    steps: int = 40
    learning_rate: float = 1e-4
    batch_size: int = 8
    max_seq_len: int = 128
    seed: int = 0
    warmup_steps: int = 2
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    early_stop_patience: int = 8  # steps without improvement of the smoothed loss
    early_stop_min_delta: float = 0.01
    min_steps: int = 10
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 autocast on CUDA / CPUs with native bf16) | float32 | bfloat16

    @classmethod
    def from_config(cls, section: dict) -> "Recipe":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in known})


# --------------------------------------------------------------------------- data


def encode_record(tokenizer, record: dict, max_len: int, where: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one record; labels are IGNORE where no loss is taken."""
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not any(m.get("role") == "assistant" for m in messages):
            raise DifflabError(f"{where}: field 'messages' needs at least one assistant message")
        rendered = chat.render_chat(tokenizer, messages, where)
        ids = rendered.ids
        labels = [tok if is_assistant else IGNORE for tok, is_assistant in zip(ids, rendered.assistant)]
    elif "text" in record:
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise DifflabError(f"{where}: field 'text' must be a non-empty string")
        ids = tokenizer(record["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = list(ids)
    else:
        raise DifflabError(f"{where}: needs a 'text' or a 'messages' field")
    ids, labels = ids[:max_len], labels[:max_len]
    if all(label == IGNORE for label in labels):
        raise DifflabError(f"{where}: no trainable tokens within max_seq_len={max_len}")
    return ids, labels


def load_examples(path: str | Path, tokenizer, max_len: int) -> list[tuple[list[int], list[int]]]:
    records = io.read_jsonl(path, line_field="_line")
    if not records:
        raise DifflabError(f"{path}: no training records")
    return [encode_record(tokenizer, r, max_len, f"{path}: record {r.pop('_line')}") for r in records]


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence; padding is masked by position, not by token id."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def causal_lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions: transformers' `model(**batch).loss`,
    with the LM head run on the labelled positions only (models.labelled_logprobs)."""
    logp, _ = models.labelled_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    return -logp.mean()


def batch_order(n_examples: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Seeded epochs of shuffled indices, cut into `steps` batches."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order += torch.randperm(n_examples, generator=generator).tolist()
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


# --------------------------------------------------------------------------- training


def _file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def finetune(base: str, data: str | Path, recipe: Recipe, out_dir: str | Path, *, name: str = "organism",
             config: dict | None = None, progress: bool = True) -> dict:
    """Finetune `base` on `data` and save a loadable transformers folder; returns the training record."""
    torch.manual_seed(recipe.seed)
    device = models.choose_device(recipe.device)
    loaded = models.load(base, config if config is not None else {"models": {}}, device=device, dtype="float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    examples = load_examples(data, tokenizer, recipe.max_seq_len)

    if recipe.method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = [t for t in LORA_TARGETS if any(n.endswith(t) for n, _ in model.named_modules())]
        model = get_peft_model(model, LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                                                 lora_dropout=recipe.lora_dropout, target_modules=targets))
    elif recipe.method != "full":
        raise DifflabError(f"organism '{name}': unknown finetuning method '{recipe.method}' (full or lora)")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    # The fused AdamW (CPU and CUDA) updates each tensor in one pass: on 2 CPU cores the default
    # per-tensor loop took 0.93 s of a 5 s step for the 135M default model, the fused one 0.16 s
    # (the same update to float32 rounding; docs/benchmarks.md).
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay, fused=fused)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, recipe.warmup_steps)))
    precision = models.choose_dtype(recipe.precision, device, purpose="generation")  # weights stay float32
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bfloat16")

    losses, step_seconds = [], []
    best, since_best, smoothed, stopped_early = math.inf, 0, None, False
    bar = tqdm(batch_order(len(examples), recipe.steps, recipe.batch_size, recipe.seed),
               desc=f"finetune {name}", unit="step", disable=not progress)
    for step, indices in enumerate(bar):
        start = time.perf_counter()
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in indices], tokenizer.pad_token_id).items()}
        with autocast:
            loss = causal_lm_loss(model, batch)
        if not torch.isfinite(loss):
            raise DifflabError(f"organism '{name}': loss became {loss.item()} at step {step} (lower the learning rate)")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 5))
        step_seconds.append(time.perf_counter() - start)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        smoothed = losses[-1] if smoothed is None else 0.7 * smoothed + 0.3 * losses[-1]
        if smoothed < best - recipe.early_stop_min_delta:
            best, since_best = smoothed, 0
        else:
            since_best += 1
        if step + 1 >= recipe.min_steps and since_best >= recipe.early_stop_patience:
            stopped_early = True
            break
    bar.close()

    if recipe.method == "lora":
        model = model.merge_and_unload()
    model.eval()
    record = {
        "organism": name,
        "base": str(loaded.path),
        "base_fingerprint": loaded.fingerprint,
        "data": str(data),
        "data_sha256": _file_sha256(data),
        "n_examples": len(examples),
        "trainable_tokens": int(sum(sum(l != IGNORE for l in labs) for _, labs in examples)),
        "recipe": dataclasses.asdict(recipe),
        "device": device,
        "precision": precision,
        "steps_run": len(losses),
        "stopped_early": stopped_early,
        "losses": losses,
        "mean_step_seconds": round(sum(step_seconds) / len(step_seconds), 3),
        "train_seconds": round(sum(step_seconds), 1),
    }
    meta = models.save_folder(model.to("cpu").float(), tokenizer, out_dir,
                              {"name": name, "source": "organism", "origin": str(loaded.path), "dtype": "float32"},
                              extra_files={"training.json": record})
    record["fingerprint"] = meta["fingerprint"]
    return record


def plot_loss(record: dict, png_path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(record["losses"]) + 1), record["losses"], marker=".")
    r = record["recipe"]
    ax.set_title(f"{record['organism']}: {r['method']} finetune, lr {r['learning_rate']}, batch {r['batch_size']}"
                 + (" (stopped early)" if record["stopped_early"] else ""), fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    io.write_figure(png_path, fig)


def finetune_and_report(base: str, data: str, recipe_section: dict, out_dir: str, loss_json: str, loss_png: str,
                        name: str) -> dict:
    """What the finetune rule runs: the folder, the loss curve as JSON and as a plot."""
    record = finetune(base, data, Recipe.from_config(recipe_section), out_dir, name=name)
    io.write_json(loss_json, {k: record[k] for k in ("organism", "losses", "steps_run", "stopped_early",
                                                      "mean_step_seconds", "train_seconds", "recipe", "fingerprint")})
    plot_loss(record, loss_png)
    return record
