import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from difflab.llm import LLMClient, SamplingParams
from difflab.llm.cache import ResponseCache
from difflab.llm.local import LocalBackend, pick_next_tokens
from tiny import perturb_weights

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "The cat"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves falling softly on the river"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Python"}],
    [{"role": "user", "content": "Preheat the oven"}],
]
GREEDY = SamplingParams(max_new_tokens=10)
SAMPLED = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=0, seed=3)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return LocalBackend(str(tiny_model_dir), {"models": {}}, batch_size=3, dtype="float32", progress=False)


def _texts(client, chats, params, samples=1):
    return [c.text for c in client.chat(chats, params, samples=samples)]


def test_greedy_generation_is_batch_independent(backend):
    client = LLMClient(backend, progress=False)
    together = client.chat(CHATS, GREEDY)
    alone = [client.chat([chat], GREEDY)[0] for chat in CHATS]
    assert [c.text for c in together] == [c.text for c in alone]
    assert all(c.completion_tokens <= 10 for c in together)
    assert all(c.finish_reason in ("stop", "length") for c in together)
    assert any(c.text for c in together)


def test_sampling_is_seeded_per_request_and_sample_index(backend):
    client = LLMClient(backend, progress=False)
    first = _texts(client, CHATS, SAMPLED, samples=2)
    again = _texts(client, CHATS[::-1], SAMPLED, samples=2)  # other batch composition
    assert first == [t for pair in zip(again[-2::-2], again[-1::-2]) for t in pair]
    assert first[0::2] != first[1::2]  # sample index 1 differs from 0
    other_seed = _texts(client, CHATS, SamplingParams(max_new_tokens=10, temperature=1.0, top_k=0, seed=4))
    assert other_seed != first[0::2]


def test_max_new_tokens_and_stop_strings(backend):
    client = LLMClient(backend, progress=False)
    long = client.chat(CHATS[:1], SamplingParams(max_new_tokens=20))[0]
    assert long.completion_tokens == 20 and long.finish_reason == "length"
    stop = long.text[3:6]
    cut = client.chat(CHATS[:1], SamplingParams(max_new_tokens=20, stop=(stop,)))[0]
    assert cut.text == long.text[: long.text.index(stop)] and cut.finish_reason == "stop"


def test_raw_prompt_completion(backend):
    client = LLMClient(backend, progress=False)
    out = client.complete_prompts(["The stock market", "Python lists"], GREEDY)
    assert len(out) == 2 and out[0].prompt_tokens > 0


def test_top_k_one_and_tiny_top_p_equal_greedy():
    logits = torch.randn(6, 100, generator=torch.Generator().manual_seed(0))
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    greedy = logits.argmax(-1)
    assert torch.equal(pick_next_tokens(logits, SamplingParams(temperature=1.0, top_k=1), gens), greedy)
    assert torch.equal(pick_next_tokens(logits, SamplingParams(temperature=1.0, top_k=0, top_p=1e-6), gens), greedy)


def test_sampler_matches_softmax_over_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -5.0]])
    params = SamplingParams(temperature=0.7, top_k=4)
    gen = [torch.Generator().manual_seed(0)]
    draws = torch.stack([pick_next_tokens(logits, params, gen) for _ in range(20000)]).flatten()
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    expected = torch.zeros(6)
    expected[:4] = (logits[0, :4] / 0.7).softmax(-1)
    assert freq[4:].sum() == 0  # never outside the top k
    assert torch.allclose(freq, expected, atol=0.015)


def test_cache_makes_a_rerun_free(backend, tmp_path):
    client = LLMClient(backend, tmp_path / "cache", progress=False)
    first = _texts(client, CHATS, GREEDY)
    assert client.usage.backend_calls == len(CHATS) and client.usage.cache_hits == 0
    rerun = LLMClient(backend, tmp_path / "cache", progress=False)
    assert _texts(rerun, CHATS, GREEDY) == first
    assert rerun.usage.backend_calls == 0 and rerun.usage.cache_hits == len(CHATS)
    assert rerun.usage.completion_tokens == 0  # nothing paid twice
    # every sampling parameter and the sample index are part of the key
    rerun.chat(CHATS[:1], SamplingParams(max_new_tokens=11))
    rerun.chat(CHATS[:1], GREEDY, samples=2)
    assert rerun.usage.backend_calls == 2


def test_retrained_model_is_a_new_call(tiny_model_copy, tmp_path):
    def run():
        b = LocalBackend(str(tiny_model_copy), {"models": {}}, dtype="float32", progress=False)
        client = LLMClient(b, tmp_path / "cache", progress=False)
        client.chat(CHATS[:2], GREEDY)
        return client.usage.backend_calls

    assert run() == 2
    assert run() == 0
    perturb_weights(tiny_model_copy)
    assert run() == 2


def test_usage_is_written(backend, tmp_path):
    client = LLMClient(backend, tmp_path / "cache", prompt_per_1m=1.0, completion_per_1m=2.0, progress=False)
    client.chat(CHATS, GREEDY)
    record = client.write_usage(tmp_path / "usage.json")
    usage = json.loads((tmp_path / "usage.json").read_text())["usage"]
    assert usage == record["usage"]
    assert usage["requests"] == len(CHATS) and usage["prompt_tokens"] > 0
    assert usage["cost"] == pytest.approx((usage["prompt_tokens"] + 2 * usage["completion_tokens"]) / 1e6)


WRITER = """
import sys
sys.path.insert(0, {src!r})
from difflab.llm.cache import ResponseCache
cache = ResponseCache({path!r})
for i in range(300):
    cache.put(f"{{i:064x}}", {{"text": "x" * 2000, "writer": {writer}}})
"""


def test_cache_is_safe_with_concurrent_writers(tmp_path):
    src = str(Path(__file__).resolve().parents[1] / "src")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(src=src, path=str(tmp_path), writer=w)])
             for w in range(3)]
    reader = ResponseCache(tmp_path)
    seen_partial = 0
    while any(p.poll() is None for p in procs):
        for i in range(0, 300, 17):
            entry = reader.get(f"{i:064x}")
            if entry is not None and len(entry["text"]) != 2000:
                seen_partial += 1
    assert all(p.wait() == 0 for p in procs)
    assert seen_partial == 0
    assert len(reader) == 300
    assert all(len(reader.get(f"{i:064x}")["text"]) == 2000 for i in range(300))
    assert not list(tmp_path.glob("*/*.tmp"))


REAL_CHATS = [[{"role": "user", "content": "What is the capital of France?"}],
              [{"role": "user", "content": "What is 2 plus 2? Answer with a number."}]]


@pytest.mark.slow
def test_real_model_local_generation_float32(smollm_dir, tmp_path):
    """float32 greedy on a left-padded batch gives the model's own answers, batch or not."""
    backend = LocalBackend(str(smollm_dir), {"models": {}}, batch_size=4, dtype="float32", progress=False)
    client = LLMClient(backend, tmp_path / "cache", progress=False)
    answers = client.chat(REAL_CHATS, SamplingParams(max_new_tokens=24))
    assert "Paris" in answers[0].text
    assert "4" in answers[1].text
    assert all(a.finish_reason == "stop" for a in answers)  # the end-of-turn token stops each answer
    assert [a.text for a in answers] == [client.chat([c], SamplingParams(max_new_tokens=24))[0].text
                                         for c in REAL_CHATS]


@pytest.mark.slow
def test_real_model_local_generation_default_precision(smollm_dir, tmp_path):
    """The default precision (bf16 where the CPU has it) answers coherently and stops by itself.
    (bf16 may flip near-tied greedy choices: the capital question's first token is a 0.08-nat tie.)"""
    backend = LocalBackend(str(smollm_dir), {"models": {}}, batch_size=4, progress=False)
    answers = LLMClient(backend, progress=False).chat(REAL_CHATS, SamplingParams(max_new_tokens=48))
    assert all(len(a.text.split()) >= 3 for a in answers)
    assert "4" in answers[1].text and answers[1].finish_reason == "stop"
