"""Logit extraction (three strategies behind one interface) and the diff jobs built on it.

    direct       the model's final logits
    logit_lens   the hidden state after decoder layer L, through the final norm and lm_head
                 (the layers above L are never run)
    patchscope   the same latent patched into layer L of an identity prompt ("cat -> cat; ...; ?")
                 whose KV prefix is computed once and cached; one token is decoded from it

`mine_in_memory` runs base and finetuned on each batch and reduces the diff at once (only the
reductions are written); `save_logits` + `reduce_saved_logits` put each model's logits on disk in
fp16 first (refusing to start when they would not fit the free disk).
"""

from __future__ import annotations

import copy
import inspect
import json
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from difflab import io, models
from difflab.diffmining.analysis import DiffReducer, Reductions
from difflab.diffmining.data import load_dataset
from difflab.errors import DifflabError

METHODS = ("direct", "logit_lens", "patchscope")
IDENTITY_PROMPT = "cat -> cat\n1135 -> 1135\nhello -> hello\n?"


def resolve_layer(layer: float | int, n_layers: int) -> int:
    """Decoder layer index for a relative depth in (0, 1] (0.75 -> 75% deep) or an absolute index."""
    if isinstance(layer, float) and 0 < layer <= 1:
        return min(n_layers - 1, max(0, round(layer * n_layers) - 1))
    index = int(layer)
    if not 0 <= index < n_layers:
        raise DifflabError(f"layer {layer} is outside the model's {n_layers} decoder layers")
    return index


class _StopForward(Exception):
    pass


def identity_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of patchscope's identity prompt: its text, after a BOS token where the tokenizer puts
    one before a text (as the dataset's samples get it; a model trained with BOS reads a prompt
    without one out of distribution), never an EOS the tokenizer may append."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and tokenizer(prompt)["input_ids"][:1] == [bos] and ids[:1] != [bos]:
        ids = [bos] + ids
    return ids


class LogitExtractor:
    """`extractor(input_ids, attention_mask)` -> float32 logits [B, T, V] by the chosen method;
    `extractor(input_ids, attention_mask, positions)` -> [P, V] for the P positions where the bool mask
    `positions` [B, T] is set (row-major order, as torch.nonzero): the head (and patchscope's decode)
    then runs on those positions only.

    The final norm and the head run in float32 whatever the model's dtype: a bfloat16 head rounds
    each logit to 8 significant bits (0.06 at a logit of 12), so the small diffs of a finetune would
    mostly become exact zeros and the top-K cuts ties. That holds for the model types in
    models.PLAIN_HEAD_TYPES; others (a soft-capped or scaled head) take their own forward's logits.
    A bf16 head's float32 copy is kept while the extractor lives (2 GiB for a 128k x 4096 head)."""

    def __init__(self, model, method: str = "direct", layer: float | int = 0.75, tokenizer=None,
                 identity_prompt: str = IDENTITY_PROMPT):
        if method not in METHODS:
            raise DifflabError(f"extraction method must be one of {', '.join(METHODS)}, not '{method}'")
        self.model = model
        self.method = method
        self.decoder = decoder = model.get_decoder()
        self.layers = decoder.layers
        self.norm = decoder.norm
        self.lm_head = model.get_output_embeddings()
        self.layer = resolve_layer(layer, len(self.layers)) if method != "direct" else None
        self.plain_head = getattr(model.config, "model_type", None) in models.PLAIN_HEAD_TYPES
        self._head_weight = None  # the head's weight in float32, where the model's is not
        forward_args = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        self.decoder_cache_arg = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
        if method == "patchscope":
            if tokenizer is None:
                raise DifflabError("patchscope needs the tokenizer to build its identity prompt")
            self._prepare_patchscope(tokenizer, identity_prompt)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def describe(self) -> dict:
        out = {"method": self.method, "n_layers": len(self.layers)}
        if self.layer is not None:
            out["layer"] = self.layer
        if self.method == "patchscope":
            out["identity_prompt"] = self.identity_prompt
        return out

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        where = None if positions is None else positions.to(device=self.device, dtype=torch.bool)
        if self.method == "direct":
            if self.plain_head:
                last = self._hidden_after_layer(len(self.layers) - 1, input_ids=input_ids, attention_mask=attention_mask)
                return self._logits(last if where is None else last[where])
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
            return (logits if where is None else logits[where]).float()
        latents = self._hidden_after_layer(self.layer, input_ids=input_ids, attention_mask=attention_mask)
        latents = latents if where is None else latents[where]
        if self.method == "logit_lens":
            return self._logits(latents)
        return self._patchscope(latents)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """norm + head in float32 (see the class docstring)."""
        weight = self.lm_head.weight
        if weight.dtype != torch.float32:
            if self._head_weight is None:
                self._head_weight = weight.float()
            weight = self._head_weight
        bias = getattr(self.lm_head, "bias", None)
        normed = self.norm(hidden.float())
        return torch.nn.functional.linear(normed.float(), weight, None if bias is None else bias.float())

    def _hidden_after_layer(self, layer: int, **inputs) -> torch.Tensor:
        """Output of decoder layer `layer` for decoder(**inputs); the forward pass stops there."""
        captured = {}

        def grab(_module, _args, output):
            captured["h"] = output[0] if isinstance(output, tuple) else output
            raise _StopForward

        handle = self.layers[layer].register_forward_hook(grab)
        try:
            self.decoder(**inputs)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured["h"]

    # ------------------------------------------------------------------ patchscope
    def _prepare_patchscope(self, tokenizer, identity_prompt: str) -> None:
        from transformers import DynamicCache

        self.identity_prompt = identity_prompt
        ids = torch.tensor([identity_prompt_ids(tokenizer, identity_prompt)], device=self.device)
        if ids.shape[1] < 2:
            raise DifflabError("the patchscope identity prompt must be at least two tokens long")
        self.prefix_len = ids.shape[1] - 1
        self.placeholder = ids[:, -1:]
        self.prefix_cache = DynamicCache()
        with torch.no_grad():
            self.model(input_ids=ids[:, :-1], use_cache=True, **{self.cache_arg: self.prefix_cache})

    def _patchscope(self, latents: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """Logits [..., V] of one decoded token per latent [..., H]."""
        flat = latents.reshape(-1, latents.shape[-1])
        out = [flat.new_zeros(0, self.lm_head.weight.shape[0], dtype=torch.float32)]  # no latents: no logits
        for start in range(0, flat.shape[0], chunk):
            part = flat[start:start + chunk]
            n = part.shape[0]
            cache = copy.deepcopy(self.prefix_cache)
            cache.batch_repeat_interleave(n)

            def patch(_module, _args, output, part=part):
                h = output[0] if isinstance(output, tuple) else output
                h = h.clone()
                h[:, -1, :] = part.to(h.dtype)
                return (h, *output[1:]) if isinstance(output, tuple) else h

            inputs = dict(input_ids=self.placeholder.expand(n, 1),
                          attention_mask=torch.ones(n, self.prefix_len + 1, dtype=torch.long, device=self.device),
                          position_ids=torch.full((n, 1), self.prefix_len, device=self.device), use_cache=True)
            handle = self.layers[self.layer].register_forward_hook(patch)
            try:
                if self.plain_head:
                    last = self._hidden_after_layer(len(self.layers) - 1, **inputs, **{self.decoder_cache_arg: cache})
                    logits = self._logits(last[:, -1, :])
                else:
                    logits = self.model(**inputs, **{self.cache_arg: cache}).logits[:, -1, :].float()
            finally:
                handle.remove()
            out.append(logits)
        return torch.cat(out).reshape(*latents.shape[:-1], -1)


# --------------------------------------------------------------------------- tokenizer agreement


def shared_vocabulary(base_tokenizer, ft_tokenizer, base_logits_dim: int, ft_logits_dim: int,
                      names: tuple[str, str] = ("base", "finetuned")) -> dict:
    """The ids both models' logits cover; stops when the tokenizers disagree on a shared id, naming the
    two models (`names`: their folders)."""
    base_vocab = {i: t for t, i in base_tokenizer.get_vocab().items()}
    ft_vocab = {i: t for t, i in ft_tokenizer.get_vocab().items()}
    shared_tokens = min(len(base_vocab), len(ft_vocab))
    for i in range(shared_tokens):
        if base_vocab.get(i) != ft_vocab.get(i):
            raise DifflabError(
                f"the tokenizers of the base model ({names[0]}) and the finetuned model ({names[1]}) disagree on token id {i} "
                f"({base_vocab.get(i)!r} vs {ft_vocab.get(i)!r}): their logits cannot be compared")
    shared = min(base_logits_dim, ft_logits_dim)
    if len(base_vocab) != len(ft_vocab):  # a finetune that added tokens (perhaps into padded rows of the
        shared = min(shared, shared_tokens)  # same logits width): its new ids are not compared
    return {"base_tokenizer_size": len(base_vocab), "finetuned_tokenizer_size": len(ft_vocab),
            "base_logits_dim": base_logits_dim, "finetuned_logits_dim": ft_logits_dim,
            "shared_vocab_size": shared,
            "vocab_sizes_differ": base_logits_dim != ft_logits_dim or len(base_vocab) != len(ft_vocab)}


def _logits_dim(model) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


# --------------------------------------------------------------------------- jobs


def _batches(tensors: dict, batch_size: int):
    n = tensors["input_ids"].shape[0]
    for start in range(0, n, batch_size):
        yield start, {k: v[start:start + batch_size] for k, v in tensors.items()}


def _next_logprob(logits: torch.Tensor, ids: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """log p(next token) at the positions (seq, pos), from their full-vocabulary logits [P, V]
    (the last position of a row has no next token: its value is never counted)."""
    nxt = torch.clamp(pos + 1, max=ids.shape[1] - 1)
    target = ids[seq, nxt].to(logits.device).unsqueeze(-1)
    return torch.log_softmax(logits.float(), -1).gather(-1, target).squeeze(-1).cpu()


def _sum_log_ratio(lp_ft: torch.Tensor, lp_base: torch.Tensor, batch: dict, seq: torch.Tensor,
                   pos: torch.Tensor) -> torch.Tensor:
    """Per sample: sum over the positions (seq, pos) that have a real next token of lp_ft - lp_base."""
    ids, attention = batch["input_ids"], batch["attention_mask"].bool()
    has_next = pos + 1 < ids.shape[1]
    scored = has_next & attention[seq, torch.where(has_next, pos + 1, pos)]
    per_position = (lp_ft.double() - lp_base.double()) * scored
    return torch.zeros(ids.shape[0], dtype=torch.float64).index_add_(0, seq, per_position)


def _sequence_log_ratio(lf: torch.Tensor, lb: torch.Tensor, batch: dict) -> torch.Tensor:
    """Per sample: sum over analysed positions of log p_ft(next token) - log p_base(next token).
    lf, lb: the full-vocabulary logits [P, V] of the analysed positions (batch["analysis_mask"], row-major order)."""
    seq, pos = torch.nonzero(batch["analysis_mask"], as_tuple=True)
    ids = batch["input_ids"]
    return _sum_log_ratio(_next_logprob(lf, ids, seq, pos), _next_logprob(lb, ids, seq, pos), batch, seq, pos)


def _load_pair(base_dir, ft_dir, device, dtype):
    base = models.load(str(base_dir), device=device, dtype=dtype)
    ft = models.load(str(ft_dir), device=base.device, dtype=base.dtype)
    vocab = shared_vocabulary(base.tokenizer, ft.tokenizer, _logits_dim(base.model), _logits_dim(ft.model),
                              names=(str(base_dir), str(ft_dir)))
    return base, ft, vocab


def _analysed_vocab(vocab: dict, vocab_size_limit: int | None) -> int:
    shared = vocab["shared_vocab_size"]
    return min(shared, vocab_size_limit) if vocab_size_limit else shared


def mine_in_memory(base_dir: str | Path, ft_dir: str | Path, data_path: str | Path, *, method: str = "direct",
                   layer: float | int = 0.75, k: int = 20, batch_size: int = 16, device: str = "auto",
                   dtype: str = "auto", vocab_size_limit: int | None = None,
                   likelihood_ratios: bool = False, identity_prompt: str = IDENTITY_PROMPT) -> tuple[Reductions, list]:
    """Both models on each batch; diffs reduced inline. Returns (reductions, per-sample log ratios)."""
    tensors, data_meta = load_dataset(data_path)
    base, ft, vocab = _load_pair(base_dir, ft_dir, device, dtype)
    extract_base = LogitExtractor(base.model, method, layer, base.tokenizer, identity_prompt)
    extract_ft = LogitExtractor(ft.model, method, layer, ft.tokenizer, identity_prompt)
    size = _analysed_vocab(vocab, vocab_size_limit)
    reducer = DiffReducer(size, k)
    ratios = []
    started = time.perf_counter()
    for start, batch in tqdm(list(_batches(tensors, batch_size)), desc="diff batches", unit="batch"):
        where = batch["analysis_mask"].bool()  # logits of the analysed positions only: [P, V]
        if not where.any():  # e.g. chats whose prompt fills max_tokens_per_sample: nothing to run or count
            ratios.extend([0.0] * where.shape[0] if likelihood_ratios else [])
            continue
        lb = extract_base(batch["input_ids"], batch["attention_mask"], where)
        lf = extract_ft(batch["input_ids"], batch["attention_mask"], where)
        if likelihood_ratios:
            ratios.extend(_sequence_log_ratio(lf, lb, batch).tolist())
        diff = lf[:, :size] - lb[:, :size]
        del lf, lb
        seq, pos = torch.nonzero(where, as_tuple=True)
        reducer.update_rows(diff, (seq + start).to(torch.int32), pos.to(torch.int32))
    meta = _run_meta(base, ft, vocab, extract_base, data_meta, size, k, time.perf_counter() - started)
    return reducer.result(meta), ratios


def _run_meta(base, ft, vocab, extractor, data_meta, size, k, seconds) -> dict:
    return {"base": {"path": str(base.path), "fingerprint": base.fingerprint},
            "finetuned": {"path": str(ft.path), "fingerprint": ft.fingerprint},
            "device": base.device, "dtype": base.dtype, "extraction": extractor.describe(), "vocabulary": vocab,
            "analysed_vocab_size": size, "k": k, "dataset": data_meta, "seconds": round(seconds, 2)}


def logits_bytes(n_samples: int, n_tokens: int, vocab: int) -> int:
    """Bytes of one model's fp16 logits on disk (a full-vocab position of 49152 ids is 96 KiB)."""
    return n_samples * n_tokens * vocab * 2


def _declared_vocab(model_dir) -> int | None:
    """The vocabulary size a model's config.json declares (None if it cannot be read: models.load then
    reports the model, naming it)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(models.resolve(str(model_dir)))).get_text_config().vocab_size
    except (OSError, ValueError, AttributeError):
        return None


def save_logits(model_dir: str | Path, data_path: str | Path, out_path: str | Path, *, method: str = "direct",
                layer: float | int = 0.75, batch_size: int = 16, device: str = "auto", dtype: str = "auto",
                vocab_size_limit: int | None = None, identity_prompt: str = IDENTITY_PROMPT) -> dict:
    """One model's logits for a tokenized dataset, fp16, to a safetensors file (refused if the disk is too small)."""
    tensors, data_meta = load_dataset(data_path)
    n, t = tensors["input_ids"].shape
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def stored(logits_dim: int) -> int:
        vocab = min(logits_dim, vocab_size_limit) if vocab_size_limit else logits_dim
        need = logits_bytes(n, t, vocab) + n * t * 4  # and the float32 next-token log-probs
        free = shutil.disk_usage(out_path.parent).free
        if need > free:
            raise DifflabError(
                f"{out_path}: the logits need {need / 2**30:.1f} GiB ({n} samples x {t} tokens x {vocab} ids in fp16) "
                f"but only {free / 2**30:.1f} GiB is free; set {'a smaller ' if vocab_size_limit else ''}vocab_size_limit, "
                f"fewer samples, or in_memory: true")
        return vocab

    # Checked from the model's config first, so that a refusal does not wait for the weights to load;
    # checked again with the head's real width (a model may pad its head past config.vocab_size).
    declared = _declared_vocab(model_dir)
    if declared:
        stored(declared)
    loaded = models.load(str(model_dir), device=device, dtype=dtype)
    vocab = stored(_logits_dim(loaded.model))
    extractor = LogitExtractor(loaded.model, method, layer, loaded.tokenizer, identity_prompt)
    meta = {"model": {"path": str(loaded.path), "fingerprint": loaded.fingerprint}, "device": loaded.device,
            "dtype": loaded.dtype, "extraction": extractor.describe(), "logits_dim": _logits_dim(loaded.model),
            "stored_vocab": vocab, "dataset": data_meta}
    # Written batch by batch into the file (memory-mapped), so the logits never have to fit in memory;
    # next_logprob, from the full vocabulary, serves the likelihood ratios where the logits are cut.
    specs = {"logits": (torch.float16, (n, t, vocab)), "next_logprob": (torch.float32, (n, t))}
    with io.safetensors_writer(out_path, specs, {"meta": json.dumps(meta, sort_keys=True)}) as out:
        for start, batch in tqdm(list(_batches(tensors, batch_size)), desc=f"logits {Path(model_dir).name}", unit="batch"):
            ids = batch["input_ids"]
            full = extractor(ids, batch["attention_mask"])
            seq, pos = torch.nonzero(torch.ones(ids.shape, dtype=torch.bool), as_tuple=True)
            out["next_logprob"][start:start + ids.shape[0]] = _next_logprob(full.reshape(-1, full.shape[-1]), ids, seq, pos).view(ids.shape)
            out["logits"][start:start + ids.shape[0]] = full[..., :vocab].half().cpu()
            del full
    return meta


def reduce_saved_logits(base_logits: str | Path, ft_logits: str | Path, base_dir: str | Path, ft_dir: str | Path,
                        data_path: str | Path, *, k: int = 20, batch_size: int = 16,
                        likelihood_ratios: bool = False) -> tuple[Reductions, list]:
    """Diff two saved logit files batch by batch (memory-mapped) and reduce them."""
    from safetensors import safe_open
    from transformers import AutoTokenizer

    tensors, data_meta = load_dataset(data_path)
    with safe_open(str(base_logits), framework="pt") as fb, safe_open(str(ft_logits), framework="pt") as ff:
        meta_b, meta_f = json.loads(fb.metadata()["meta"]), json.loads(ff.metadata()["meta"])
        vocab = shared_vocabulary(AutoTokenizer.from_pretrained(base_dir), AutoTokenizer.from_pretrained(ft_dir),
                                  meta_b["logits_dim"], meta_f["logits_dim"], names=(str(base_dir), str(ft_dir)))
        size = min(vocab["shared_vocab_size"], meta_b["stored_vocab"], meta_f["stored_vocab"])
        reducer = DiffReducer(size, k)
        ratios = []
        started = time.perf_counter()
        sb, sf = fb.get_slice("logits"), ff.get_slice("logits")
        for start, batch in _batches(tensors, batch_size):
            stop = start + batch["input_ids"].shape[0]
            lb, lf = sb[start:stop].float(), sf[start:stop].float()
            if likelihood_ratios:  # from the full-vocabulary log-probs stored beside the (maybe cut) logits
                seq, pos = torch.nonzero(batch["analysis_mask"], as_tuple=True)
                lp_b, lp_f = (f.get_slice("next_logprob")[start:stop][seq, pos] for f in (fb, ff))
                ratios.extend(_sum_log_ratio(lp_f, lp_b, batch, seq, pos).tolist())
            reducer.update(lf[..., :size] - lb[..., :size], batch["analysis_mask"], sequence_offset=start)
    meta = {"base": meta_b["model"], "finetuned": meta_f["model"], "device": meta_b["device"], "dtype": meta_b["dtype"],
            "extraction": meta_b["extraction"], "vocabulary": vocab, "analysed_vocab_size": size, "k": k,
            "dataset": data_meta, "logits_on_disk": True, "seconds": round(time.perf_counter() - started, 2)}
    return reducer.result(meta), ratios
