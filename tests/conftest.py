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


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """URL of a real PostgreSQL server: the one .ci/run started (DIFFLAB_TEST_POSTGRES_URL), else our own."""
    import tempfile

    import pgserver

    url = os.environ.get("DIFFLAB_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if pgserver.bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs PostgreSQL: .ci/run installs and starts it")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    where = tempfile.mkdtemp(prefix="difflab-pg-", dir="/tmp")
    try:
        yield pgserver.start(where)
    finally:
        pgserver.stop(where)
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the test server, dropped afterwards."""
    import asyncio
    import uuid

    import asyncpg

    name = f"difflab_test_{uuid.uuid4().hex[:12]}"
    admin = postgres_server

    async def run(sql):
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    yield admin.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

