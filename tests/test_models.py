import json
import time

import pytest
import torch

from difflab import models
from difflab.errors import DifflabError
from tiny import perturb_weights


def test_materialize_from_path_makes_a_loadable_folder(tmp_path, tiny_model_dir):
    out = tmp_path / "models" / "tiny"
    meta = models.materialize("tiny", {"source": "path", "path": str(tiny_model_dir)}, out)
    assert (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file()
    assert json.loads((out / "difflab_model.json").read_text())["fingerprint"] == meta["fingerprint"]
    assert meta["has_chat_template"] and meta["pad_token"] == meta["eos_token"] == "<|im_end|>"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    loaded = models.load(str(out))
    assert loaded.device == "cpu" and loaded.dtype == "float32"
    assert loaded.model.dtype == torch.float32
    assert loaded.fingerprint == meta["fingerprint"]
    assert loaded.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith(
        "<|im_start|>user")


def test_load_by_configured_name(tiny_config):
    out = models.models_dir(tiny_config) / "tiny"
    models.materialize("tiny", tiny_config["models"]["tiny"], out)
    assert models.load("tiny", tiny_config).path == out


def test_fingerprint_changes_when_weights_change(tiny_model_copy):
    before = models.fingerprint(tiny_model_copy)
    assert models.fingerprint(tiny_model_copy) == before
    perturb_weights(tiny_model_copy)
    assert models.fingerprint(tiny_model_copy) != before


def test_unknown_name_is_one_line(tiny_config):
    with pytest.raises(DifflabError, match="unknown model 'nonesuch' \\(configured models: tiny"):
        models.resolve("nonesuch", tiny_config)


def test_configured_but_unbuilt_model_says_how_to_build(tiny_config):
    with pytest.raises(DifflabError, match="not built yet: run `snakemake"):
        models.resolve("tiny", tiny_config)


def test_folder_without_weights(tmp_path, tiny_config):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(DifflabError, match="no weights"):
        models.resolve(str(tmp_path / "empty"), tiny_config)


def test_missing_path(tiny_config):
    with pytest.raises(DifflabError, match="model path not found: ./no/such/model"):
        models.resolve("./no/such/model", tiny_config)


def test_uncached_hub_id_fails_fast_without_network(tiny_config):
    start = time.perf_counter()
    with pytest.raises(DifflabError, match="nor in the local Hugging Face cache"):
        models.resolve("someone/not-cached-model", tiny_config)
    assert time.perf_counter() - start < 30  # no network attempt hanging


def test_missing_gguf_package():
    with pytest.raises(DifflabError, match="package 'no_such_pkg' that carries the GGUF is not installed"):
        models.gguf_location({"source": "gguf_package", "package": "no_such_pkg", "file": "x.gguf"})


def test_dtype_choice():
    assert models.choose_dtype("auto", "cpu", "analysis") == "float32"
    assert models.choose_dtype("auto", "cuda", "analysis") == "bfloat16"
    expected = "bfloat16" if models.cpu_has_native_bf16() else "float32"
    assert models.choose_dtype("auto", "cpu", "generation") == expected
    assert models.choose_dtype("float16", "cpu") == "float16"
    with pytest.raises(DifflabError):
        models.choose_dtype("int3", "cpu")


def test_device_choice():
    assert models.choose_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert models.choose_device("auto") == "cpu"
        with pytest.raises(DifflabError, match="no CUDA GPU"):
            models.choose_device("cuda")


@pytest.mark.slow
def test_real_gguf_conversion(smollm_dir):
    """The default model, dequantized from the wheel's GGUF, answers a factual question."""
    meta = json.loads((smollm_dir / "difflab_model.json").read_text())
    assert meta["n_parameters"] > 130_000_000 and meta["vocab_size"] == 49152
    assert meta["eos_token"] == meta["pad_token"] == "<|im_end|>"
    assert (smollm_dir / "chat_template.jinja").is_file() or meta["has_chat_template"]
    loaded = models.load(str(smollm_dir))
    tok = loaded.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = loaded.model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_gpt_encoding_is_offline():
    encoding = models.gpt_encoding()
    assert encoding.n_vocab > 100_000
    assert encoding.decode(encoding.encode("logit diff mining")) == "logit diff mining"
    with pytest.raises(DifflabError, match="tiktoken encoding 'nope' is not installed"):
        models.gpt_encoding("nope")


def test_organism_names_resolve_to_their_folders(tiny_config, tiny_model_dir):
    tiny_config["organisms"]["definitions"] = {"zebra": {"description": "d", "data": "x.jsonl"}}
    with pytest.raises(DifflabError, match="organism 'zebra' is configured but not built yet"):
        models.resolve("zebra", tiny_config)
    out = models.models_dir(tiny_config).parent / "organisms" / "zebra"
    models.materialize("zebra", {"source": "path", "path": str(tiny_model_dir)}, out)
    assert models.resolve("zebra", tiny_config) == out


def test_token_decoder_reads_like_the_transformers_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(tiny_model_dir)
    fast = models.TokenDecoder(tiny_model_dir)  # tokenizer.json through `tokenizers`
    assert len(fast) == len(auto) == 400
    ids = list(range(len(auto)))
    assert [fast.decode([i]) for i in ids] == [auto.decode([i], clean_up_tokenization_spaces=False) for i in ids]
    assert fast.decode([ids[5], ids[6]]) == auto.decode([ids[5], ids[6]], clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("model_type", ["llama", "not-a-plain-head"])
def test_labelled_logprobs_are_the_full_forwards_log_probabilities(tiny_model_dir, model_type):
    """The head on labelled positions only (llama) and the fallback through the model's own forward
    (any other type) both give log_softmax(logits)[next token] at exactly the labelled positions."""
    loaded = models.load(str(tiny_model_dir), dtype="float32")
    model = loaded.model
    model.config.model_type = model_type
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, (3, 9), generator=gen)
    attention = torch.ones_like(input_ids)
    attention[1, 6:] = attention[2, 4:] = 0  # right padding
    labels = input_ids.clone()
    labels[:, :3] = models.IGNORE  # a prompt
    labels[attention == 0] = models.IGNORE
    with torch.no_grad():
        logp, rows = models.labelled_logprobs(model, input_ids, attention, labels)
        full = model(input_ids=input_ids, attention_mask=attention).logits.float().log_softmax(-1)
    expected = [(r, full[r, t - 1, labels[r, t]].item()) for r in range(3) for t in range(1, 9)
                if labels[r, t] != models.IGNORE]
    assert rows.tolist() == [r for r, _ in expected] == [0] * 6 + [1] * 3 + [2] * 1
    assert logp.tolist() == pytest.approx([v for _, v in expected], abs=1e-5)
