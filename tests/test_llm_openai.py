"""The openai backend against real OpenAI-compatible servers on loopback: llm-katan serving the tiny
model, and a proxy in front of it that injects 429/500 and dropped connections. The evidence is the
server's own request count (its stats file)."""


import pytest

from difflab.errors import DifflabError
from difflab.llm import LLMClient, SamplingParams
from difflab.llm.openai_backend import OpenAIBackend
from servers import FaultyProxy, KatanServer, free_port
from tiny import perturb_weights

KEY = "sk-difflab-test-key-0000"
PARAMS = SamplingParams(max_new_tokens=8)
CHATS = [[{"role": "user", "content": f"Say something about topic number {i}."}] for i in range(6)]


@pytest.fixture(scope="module")
def katan(tmp_path_factory, tiny_model_dir):
    server = KatanServer(tiny_model_dir, tmp_path_factory.mktemp("katan"), api_key=KEY)
    yield server
    server.stop()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("DIFFLAB_TEST_KEY", KEY)
    return "DIFFLAB_TEST_KEY"


def make_client(base_url, api_key_env, cache_dir, model_path="", **kwargs):
    backend = OpenAIBackend(base_url, "tiny", api_key_env, timeout_s=30, model_path=str(model_path))
    return LLMClient(backend, cache_dir, max_concurrency=4, backoff_initial_s=0.05, backoff_max_s=0.5,
                     progress=False, **kwargs)


def test_answers_then_a_rerun_makes_zero_requests(katan, api_key, tmp_path):
    start = katan.request_count()
    client = make_client(katan.base_url, api_key, tmp_path / "cache")
    answers = client.chat(CHATS, PARAMS)
    assert len(answers) == len(CHATS) and all(a.completion_tokens > 0 for a in answers)
    assert katan.request_count() - start == len(CHATS)

    rerun = make_client(katan.base_url, api_key, tmp_path / "cache")
    assert [a.text for a in rerun.chat(CHATS, PARAMS)] == [a.text for a in answers]
    assert katan.request_count() - start == len(CHATS)  # zero new requests
    assert rerun.usage.cache_hits == len(CHATS)

    rerun.chat(CHATS[:2], PARAMS, samples=2)  # sample index 1 is a new call; index 0 is cached
    assert katan.request_count() - start == len(CHATS) + 2


def test_retrained_model_makes_new_requests(tmp_path_factory, tiny_model_copy, api_key, tmp_path):
    def serve_and_ask():
        server = KatanServer(tiny_model_copy, tmp_path_factory.mktemp("katan-retrain"), api_key=KEY)
        try:
            make_client(server.base_url, api_key, tmp_path / "cache", model_path=tiny_model_copy).chat(CHATS[:3], PARAMS)
            return server.request_count()
        finally:
            server.stop()

    assert serve_and_ask() == 3
    assert serve_and_ask() == 0
    perturb_weights(tiny_model_copy)
    assert serve_and_ask() == 3


def test_429_storm_and_dropped_connections_deliver_every_answer_once(katan, api_key, tmp_path):
    proxy = FaultyProxy(katan.base_url, n_429=10, n_500=3, drop_every=4)
    try:
        start = katan.request_count()
        client = make_client(proxy.base_url, api_key, tmp_path / "cache", max_retries=12)
        answers = client.chat(CHATS, PARAMS)
    finally:
        proxy.stop()
    assert len(answers) == len(CHATS) and all(a.completion_tokens > 0 for a in answers)
    assert proxy.faults["429"] == 10 and proxy.faults["500"] == 3 and proxy.faults["drop"] >= 1
    assert katan.request_count() - start == len(CHATS)  # each answer generated exactly once
    assert client.usage.retries == sum(proxy.faults.values())
    assert client.usage.backend_calls == len(CHATS)


def test_refused_key_is_one_line_without_the_key(katan, monkeypatch, tmp_path):
    monkeypatch.setenv("WRONG_KEY", "sk-wrong-canary-1234")
    client = make_client(katan.base_url, "WRONG_KEY", tmp_path / "cache")
    with pytest.raises(DifflabError) as info:
        client.chat(CHATS[:1], PARAMS)
    message = str(info.value)
    assert "refused the API key from $WRONG_KEY (HTTP 401)" in message
    assert "sk-wrong-canary" not in message and "\n" not in message
    assert client.usage.retries == 0  # a refused key is not retried


def test_missing_key_variable(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(DifflabError, match="environment variable NO_SUCH_KEY_VAR is not set"):
        OpenAIBackend("http://127.0.0.1:1/v1", "tiny", "NO_SUCH_KEY_VAR")


def test_unreachable_base_url(api_key, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = make_client(url, api_key, tmp_path / "cache", max_retries=2)
    with pytest.raises(DifflabError, match=f"cannot reach {url}"):
        client.chat(CHATS[:1], PARAMS)
    assert client.usage.retries == 2
    assert not list((tmp_path / "cache").glob("*/*.json"))
