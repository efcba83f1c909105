import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def tiny_model_copy(tmp_path, tiny_model_dir) -> Path:
    """A private copy a test may 'retrain' (change the weights of)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny-copy"))


@pytest.fixture
def tiny_config(tmp_path, tiny_model_dir) -> dict:
    """A validated config whose models and LLM are the tiny model; everything under tmp_path."""
    from difflab import config

    return config.check({
        "results_dir": str(tmp_path / "results"),
        "models": {"tiny": {"source": "path", "path": str(tiny_model_dir)}},
        "default_model": "tiny",
        "llm": {"model": "tiny", "cache_dir": str(tmp_path / "cache"), "local": {"dtype": "float32", "batch_size": 4}},
        "sampling": {"max_new_tokens": 12},
    })


@pytest.fixture(scope="session")
def smollm_dir(tmp_path_factory) -> Path:
    """The real default model, converted from the wheel's GGUF (once per session)."""
    from difflab import config, models

    cfg = config.load()
    name = cfg["default_model"]
    built = REPO / cfg["results_dir"] / "models" / name
    if built.is_dir() and (built / models.METADATA_FILE).is_file():
        return built
    out = tmp_path_factory.mktemp("models") / name
    models.materialize(name, cfg["models"][name], out)
    return out
