"""Data preparation: datasets named in config -> token ids, attention mask and analysis mask.

A dataset is a local JSONL or Parquet file in `text` format (a `text` field) or `chat` format
(`messages`: a list of {role, content}; rendered with the base tokenizer's chat template). Samples
are shuffled with the seed, the first `n_samples` kept, each truncated/padded to
`max_tokens_per_sample`. The analysis mask says which positions count: all real tokens, only the
positions predicting the assistant's tokens of a chat, or those after the prompt; `n_positions` keeps
the first N selected positions of each sample, text or chat. A position counts by the token it predicts:
its logits are for the next token. Errors name the file, the record's own line (or Parquet row) and the field.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from jinja2 import TemplateError

from difflab import chat, io
from difflab.errors import DifflabError

FORMATS = ("text", "chat")
POSITIONS = ("all", "assistant", "after_prompt")


RECORD = "_record"  # each record's number in its file (JSONL line, Parquet row), for error messages
ROLES = ("system", "user", "assistant")  # plain-text turns (tool calls are not part of the analysis)


def read_records(path: str | Path, fmt: str) -> list[dict]:
    """Records of a JSONL or Parquet dataset, checked for the field its format needs. Each keeps its
    number in the file under RECORD (the JSONL line, or the Parquet row counted from 1)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DifflabError(f"{path}: dataset format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    field = "text" if fmt == "text" else "messages"
    if path.suffix == ".parquet":
        import pandas as pd

        if not path.is_file():
            raise DifflabError(f"file not found: {path}")
        frame = pd.read_parquet(path)
        if field not in frame.columns:
            raise DifflabError(f"{path}: no column '{field}' (columns: {', '.join(map(str, frame.columns))})")
        records = frame.to_dict("records")
        for i, record in enumerate(records, 1):
            record[RECORD] = i
    else:
        records = io.read_jsonl(path, required=[field], line_field=RECORD)
    for record in records:
        where = f"{path}: record {record[RECORD]}"
        value = record[field]
        if fmt == "text" and not (isinstance(value, str) and value.strip()):
            raise DifflabError(f"{where}: field 'text' must be a non-empty string")
        if fmt == "chat":
            record[field] = _checked_messages(value, where)
    return records


def _checked_messages(value, where: str) -> list[dict]:
    """A chat record's messages as plain {role, content} dicts; anything else is an error naming the field."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise DifflabError(f"{where}: field 'messages' must be a list of {{role, content}}")
    messages = list(value)
    if not messages:
        raise DifflabError(f"{where}: field 'messages' is empty")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise DifflabError(f"{where}: field 'messages[{i}]' must be an object with role and content")
        for key in ("role", "content"):
            if key not in m:
                raise DifflabError(f"{where}: field 'messages[{i}].{key}' is missing")
        if m["role"] not in ROLES:
            raise DifflabError(f"{where}: field 'messages[{i}].role' must be one of {', '.join(ROLES)}, not {m['role']!r}")
        if not isinstance(m["content"], str):
            raise DifflabError(f"{where}: field 'messages[{i}].content' must be a string, not {type(m['content']).__name__}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def tokenize_dataset(records: list[dict], tokenizer, fmt: str, *, n_samples: int, max_tokens: int,
                     seed: int = 0, positions: str = "all", n_positions: int | None = None,
                     source: str = "dataset") -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and analysis_mask [n, max_tokens] for the first n shuffled samples,
    and `record` [n]: each sample's number in its file (JSONL line, Parquet row), so that per-sample
    outputs (the likelihood ratios, Reductions.sequence) can be traced back to it."""
    if positions not in POSITIONS:
        raise DifflabError(f"{source}: positions must be one of {', '.join(POSITIONS)}, not '{positions}'")
    if positions != "all" and fmt != "chat":
        raise DifflabError(f"{source}: positions '{positions}' needs a chat dataset (format: chat)")
    if not records:
        raise DifflabError(f"{source}: the dataset is empty")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    chosen = [records[i] for i in order[:n_samples]]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    n = len(chosen)
    input_ids = torch.full((n, max_tokens), pad, dtype=torch.int64)
    attention = torch.zeros((n, max_tokens), dtype=torch.int64)
    analysis = torch.zeros((n, max_tokens), dtype=torch.bool)
    for row, record in enumerate(chosen):
        if fmt == "text":
            ids = tokenizer(record["text"], add_special_tokens=True)["input_ids"]
            wanted = [True] * len(ids)
        else:
            where = f"{source}: record {record.get(RECORD, order[row] + 1)}"
            try:
                rendered = chat.render_chat(tokenizer, record["messages"], where)
            except (TemplateError, ValueError) as exc:  # the template refused them (e.g. roles that do not alternate)
                raise DifflabError(f"{where}: field 'messages': the chat template cannot render them "
                                   f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
            ids = rendered.ids
            # A position counts by the token it predicts: position i's logits are for token i + 1.
            if positions == "assistant":
                wanted = rendered.assistant[1:] + [False]
            elif positions == "after_prompt":
                wanted = [i + 1 >= rendered.prompt_length for i in range(len(ids) - 1)] + [False]
            else:
                wanted = [True] * len(ids)
        if n_positions is not None:  # the first N selected positions of the sample, text or chat
            keep = set([i for i, w in enumerate(wanted) if w][:n_positions])
            wanted = [i in keep for i in range(len(ids))]
        ids, wanted = ids[:max_tokens], wanted[:max_tokens]
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        attention[row, : len(ids)] = 1
        analysis[row, : len(ids)] = torch.tensor(wanted, dtype=torch.bool)
    if not bool(analysis.any()):
        raise DifflabError(f"{source}: no positions left to analyse after truncation and the position slice")
    numbers = torch.tensor([int(r.get(RECORD, order[row] + 1)) for row, r in enumerate(chosen)], dtype=torch.int64)
    return {"input_ids": input_ids, "attention_mask": attention, "analysis_mask": analysis, "record": numbers}


def prepare_dataset(dataset_path: str | Path, model_dir: str | Path, out_path: str | Path, *, name: str,
                    fmt: str, n_samples: int, max_tokens: int, seed: int = 0, positions: str = "all",
                    n_positions: int | None = None) -> dict:
    """Rule diffmining_tokenize: tokenize a dataset with the base model's tokenizer; save safetensors."""
    from transformers import AutoTokenizer

    records = read_records(dataset_path, fmt)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if fmt == "chat" and not tokenizer.chat_template:
        raise DifflabError(f"{dataset_path}: chat dataset, but the tokenizer of {model_dir} has no chat template")
    tensors = tokenize_dataset(records, tokenizer, fmt, n_samples=n_samples, max_tokens=max_tokens, seed=seed,
                               positions=positions, n_positions=n_positions, source=str(dataset_path))
    meta = {"dataset": name, "source": str(dataset_path), "format": fmt, "n_records": len(records),
            "n_samples": int(tensors["input_ids"].shape[0]), "n_samples_requested": n_samples,
            "max_tokens": max_tokens, "seed": seed,
            "positions": positions, "n_positions": n_positions,
            "analysed_positions": int(tensors["analysis_mask"].sum()), "tokenizer": str(model_dir)}
    io.write_safetensors(out_path, tensors, {"meta": json.dumps(meta, sort_keys=True)})
    if len(records) < n_samples:  # the folder name says n_samples; run_metadata.json has both counts
        print(f"warning: {dataset_path} has {len(records)} records, fewer than n_samples={n_samples}: "
              f"all {len(records)} are used")
    print(f"{name}: {meta['n_samples']} samples, {meta['analysed_positions']} positions to analyse")
    return meta


def load_dataset(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a tokenized dataset written by prepare_dataset."""
    tensors, meta = io.read_safetensors(path)
    missing = {"input_ids", "attention_mask", "analysis_mask"} - set(tensors)
    if missing or "meta" not in meta:
        raise DifflabError(f"{path}: not a tokenized diffmining dataset (missing {', '.join(sorted(missing)) or 'meta'})")
    return tensors, json.loads(meta["meta"])
