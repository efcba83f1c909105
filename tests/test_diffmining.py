"""diffmining: data preparation, extraction, orderings, NMF, overview, on tiny models and hand-made tensors.
(The core top-K kernel has its own exactness tests in test_diffmining_kernel.py.)"""

import json
import shutil

import numpy as np
import pytest
import torch

from difflab import io, models
from difflab.diffmining import data, extract, nmf, orderings, overview
from difflab.diffmining.analysis import DiffReducer, Reductions
from difflab.errors import DifflabError
from difflab.llm import relevance
from tiny import perturb_weights, raise_token

RAISED = "Ġriver"


@pytest.fixture(scope="module")
def raised_pair(tmp_path_factory, tiny_model_dir):
    """(base, finetuned, raised token id): a noisy copy of the tiny model with one token's logit raised."""
    folder = tmp_path_factory.mktemp("raised") / "tiny-raised"
    shutil.copytree(tiny_model_dir, folder)
    perturb_weights(folder, scale=0.002)
    token_id = raise_token(folder, RAISED, amount=30.0)
    return tiny_model_dir, folder, token_id


@pytest.fixture
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _texts(path, texts):
    io.write_jsonl(path, [{"text": t} for t in texts])
    return path


# --------------------------------------------------------------------------- data


def test_text_dataset_is_truncated_padded_and_masked(tokenizer):
    records = [{"text": "The cat"}, {"text": "Paris " * 40}]
    out = data.tokenize_dataset(records, tokenizer, "text", n_samples=5, max_tokens=16, seed=0)
    assert out["input_ids"].shape == (2, 16)
    lengths = out["attention_mask"].sum(1).tolist()
    assert sorted(lengths)[-1] == 16 and sorted(lengths)[0] < 16
    assert torch.equal(out["analysis_mask"], out["attention_mask"].bool())


def test_samples_keep_their_record_numbers_and_a_short_dataset_is_reported(tmp_path, tiny_model_dir, capsys):
    """Each tokenized sample carries its line in the file (the shuffle's order is traceable); asking for
    more samples than the file has uses all of them, says so, and records both counts."""
    texts = [f"Sample number {i} talks about something else." for i in range(1, 7)]
    path = _texts(tmp_path / "d.jsonl", texts)
    out = tmp_path / "tokens.safetensors"
    meta = data.prepare_dataset(path, tiny_model_dir, out, name="d", fmt="text", n_samples=10, max_tokens=16, seed=3)
    assert (meta["n_samples"], meta["n_samples_requested"]) == (6, 10)
    assert "has 6 records, fewer than n_samples=10" in capsys.readouterr().out
    tensors, _ = data.load_dataset(out)
    records = tensors["record"].tolist()
    assert sorted(records) == [1, 2, 3, 4, 5, 6] and records != sorted(records)  # shuffled, each traceable
    tok = models.load(str(tiny_model_dir)).tokenizer
    for row, line in enumerate(records):
        ids = tensors["input_ids"][row][tensors["attention_mask"][row].bool()].tolist()
        assert ids == tok(texts[line - 1], add_special_tokens=True)["input_ids"][:16]


@pytest.mark.parametrize("method", ["direct", "logit_lens", "patchscope"])
def test_a_batch_with_no_analysed_position_is_skipped(raised_pair, tmp_path, method):
    """Chats whose prompt fills max_tokens have no assistant position: their batch runs nothing, counts
    nothing, and their likelihood ratio is the empty sum, 0."""
    base, finetuned, _ = raised_pair
    long_prompt = {"messages": [{"role": "user", "content": "tell me " * 40}, {"role": "assistant", "content": "No."}]}
    short = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, friend."}]}
    records = tmp_path / "chat.jsonl"
    records.write_text("\n".join(json.dumps(r) for r in [long_prompt, short]) + "\n")
    tokens = tmp_path / "tokens.safetensors"
    data.prepare_dataset(records, base, tokens, name="chat", fmt="chat", n_samples=2, max_tokens=24, positions="assistant")
    mask = data.load_dataset(tokens)[0]["analysis_mask"]
    assert sorted(int(m.sum()) for m in mask)[0] == 0 < int(mask.sum())
    red, ratios = extract.mine_in_memory(base, finetuned, tokens, method=method, layer=0.5, k=5, batch_size=1,
                                         dtype="float32", likelihood_ratios=True)
    assert red.total_positions == int(mask.sum())
    assert [r == 0.0 for r in ratios] == [int(m.sum()) == 0 for m in mask]


def test_chat_positions_count_by_the_token_they_predict(tokenizer):
    from difflab.chat import render_chat

    messages = [{"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "The capital of France is Paris."}]
    rendered = render_chat(tokenizer, messages)
    out = data.tokenize_dataset([{"messages": messages}], tokenizer, "chat", n_samples=1, max_tokens=64,
                                positions="assistant")
    mask = out["analysis_mask"][0].tolist()
    n = len(rendered.ids)
    expected = rendered.assistant[1:] + [False]
    assert mask[:n] == expected and not any(mask[n:])
    # Read back: the tokens the counted positions predict are exactly the answer and its end-of-turn.
    predicted = [rendered.ids[i + 1] for i, counted in enumerate(mask[:n]) if counted]
    assert tokenizer.decode(predicted) == "The capital of France is Paris.<|im_end|>"
    # The first counted position is the last prompt token: it predicts the assistant's first token.
    assert mask.index(True) == rendered.prompt_length - 1
    # The end-of-turn token is the assistant's (it is learned); the newline after it is not.
    assert tokenizer.convert_ids_to_tokens(rendered.ids[n - 2]) == "<|im_end|>" and rendered.assistant[n - 2]
    assert not rendered.assistant[n - 1]
    first3 = data.tokenize_dataset([{"messages": messages}], tokenizer, "chat", n_samples=1, max_tokens=64,
                                   positions="after_prompt", n_positions=3)
    assert first3["analysis_mask"][0].nonzero().flatten().tolist() == [rendered.prompt_length - 1 + i for i in range(3)]


def test_bad_datasets_fail_with_file_record_and_field(tmp_path, tokenizer):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    with pytest.raises(DifflabError, match=r"bad.jsonl.*(record|line) 2.*text"):
        data.read_records(bad, "text")
    chat = tmp_path / "chat.jsonl"
    chat.write_text('{"messages": [{"role": "user"}]}\n')
    with pytest.raises(DifflabError, match=r"chat.jsonl: record 1: field 'messages\[0\].content' is missing"):
        data.read_records(chat, "chat")
    # Record numbers are the file's lines (a blank line counts), and the field is named down to the message.
    chat.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n\n'
                    '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": null}]}\n')
    with pytest.raises(DifflabError, match=r"chat.jsonl: record 3: field 'messages\[1\].content' must be a string"):
        data.read_records(chat, "chat")
    chat.write_text('{"messages": [{"role": "robot", "content": "hi"}]}\n')
    with pytest.raises(DifflabError, match=r"record 1: field 'messages\[0\].role' must be one of"):
        data.read_records(chat, "chat")
    chat.write_text('{"messages": "hello"}\n')
    with pytest.raises(DifflabError, match=r"record 1: field 'messages' must be a list"):
        data.read_records(chat, "chat")
    with pytest.raises(DifflabError, match="empty"):
        data.tokenize_dataset([], tokenizer, "text", n_samples=4, max_tokens=8)
    with pytest.raises(DifflabError, match="needs a chat dataset"):
        data.tokenize_dataset([{"text": "x"}], tokenizer, "text", n_samples=4, max_tokens=8, positions="assistant")


def test_a_chat_the_template_refuses_names_its_own_record_after_the_shuffle(tmp_path, tokenizer):
    import copy

    refusing = copy.deepcopy(tokenizer)  # a template that, like many, raises on some conversations
    refusing.chat_template = ("{% for m in messages %}{% if m.content == 'boom' %}{{ raise_exception('roles must "
                              "alternate') }}{% endif %}{{ m.role + ': ' + m.content + '\\n' }}{% endfor %}")
    path = tmp_path / "chat.jsonl"
    lines = [json.dumps({"messages": [{"role": "user", "content": c}]}) for c in ("a", "b", "c", "d", "boom", "e")]
    path.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")  # a blank line: "boom" is line 6
    records = data.read_records(path, "chat")
    # seed 0 shuffles "boom" to the first row: its line, not its row or list index, must be named
    with pytest.raises(DifflabError, match=r"chat.jsonl: record 6: field 'messages': the chat template cannot render "
                                           r"them \(.*roles must alternate\)"):
        data.tokenize_dataset(records, refusing, "chat", n_samples=6, max_tokens=16, seed=0, source=str(path))


def test_n_positions_keeps_the_first_positions_of_text_samples_too(tokenizer):
    records = [{"text": "The cat sleeps on the warm windowsill all afternoon."}]
    out = data.tokenize_dataset(records, tokenizer, "text", n_samples=1, max_tokens=32, n_positions=4)
    assert out["analysis_mask"][0].nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert int(out["attention_mask"][0].sum()) > 4


def test_parquet_datasets_are_read(tmp_path):
    import pandas as pd

    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["one sample", "another sample"]}).to_parquet(path)
    assert [r["text"] for r in data.read_records(path, "text")] == ["one sample", "another sample"]
    pd.DataFrame({"text": ["one sample", " "]}).to_parquet(path)
    with pytest.raises(DifflabError, match=r"d.parquet: record 2: field 'text' must be a non-empty string"):
        data.read_records(path, "text")


# --------------------------------------------------------------------------- extraction


def test_lens_and_patchscope_at_the_last_layer_equal_direct_logits(tiny_model_dir):
    from difflab import models

    m = models.load(str(tiny_model_dir), dtype="float32")
    enc = m.tokenizer(["The cat sleeps on the warm", "Paris is"], return_tensors="pt", padding=True)
    direct = extract.LogitExtractor(m.model, "direct")(enc.input_ids, enc.attention_mask)
    with torch.no_grad():
        assert torch.allclose(direct, m.model(**enc).logits, atol=1e-5)  # transformers' own logits
    lens_last = extract.LogitExtractor(m.model, "logit_lens", 1.0)(enc.input_ids, enc.attention_mask)
    patch_last = extract.LogitExtractor(m.model, "patchscope", 1.0, m.tokenizer)(enc.input_ids, enc.attention_mask)
    assert torch.allclose(direct, lens_last, atol=1e-4)
    assert torch.allclose(direct, patch_last, atol=1e-4)
    lens_first = extract.LogitExtractor(m.model, "logit_lens", 0.5)
    patch_first = extract.LogitExtractor(m.model, "patchscope", 0.5, m.tokenizer)
    assert lens_first.describe()["layer"] == 0 and patch_first.describe()["layer"] == 0
    a = lens_first(enc.input_ids, enc.attention_mask)
    b = patch_first(enc.input_ids, enc.attention_mask)
    assert a.shape == b.shape == direct.shape
    assert not torch.allclose(a, direct, atol=1e-2) and not torch.allclose(a, b, atol=1e-2)


def test_a_bfloat16_model_gives_logits_that_are_not_rounded_to_bfloat16(tiny_model_dir):
    """The norm and head run in float32 for a bf16 model (the CUDA default): every method's logits are
    float32 values off the bf16 grid (a bf16 head would round them, turning small diffs into zeros),
    and still the model's own logits to bf16 precision."""
    from difflab import models

    m = models.load(str(tiny_model_dir), dtype="bfloat16")
    enc = m.tokenizer(["The cat sleeps on the warm", "Paris is"], return_tensors="pt", padding=True)
    with torch.no_grad():
        own = m.model(**enc).logits
    assert own.dtype == torch.bfloat16
    for method, layer in (("direct", 1.0), ("logit_lens", 0.5), ("patchscope", 0.5)):
        logits = extract.LogitExtractor(m.model, method, layer, m.tokenizer)(enc.input_ids, enc.attention_mask)
        assert logits.dtype == torch.float32
        assert (logits.to(torch.bfloat16).float() != logits).float().mean() > 0.9, method
        if method == "direct":
            scale = own.float().abs().max()
            assert torch.allclose(logits, own.float(), atol=float(scale) * 2 ** -6), (logits - own.float()).abs().max()


def test_positions_give_the_logits_of_those_positions_only(tiny_model_dir):
    """extractor(ids, mask, positions) is extractor(ids, mask)[positions], for every method, through the
    head-on-selected-rows path (llama) and through the full forward a model of another type takes."""
    from difflab import models

    m = models.load(str(tiny_model_dir), dtype="float32")
    enc = m.tokenizer(["The cat sleeps on the warm", "Paris is"], return_tensors="pt", padding=True)
    where = enc.attention_mask.bool().clone()
    where[0, :2] = False  # a prompt slice, as for assistant-only positions
    for method, layer in (("direct", 1.0), ("logit_lens", 0.5), ("patchscope", 0.5)):
        ex = extract.LogitExtractor(m.model, method, layer, m.tokenizer)
        full, rows = ex(enc.input_ids, enc.attention_mask), ex(enc.input_ids, enc.attention_mask, where)
        assert rows.shape == (int(where.sum()), full.shape[-1])
        assert torch.allclose(rows, full[where], atol=1e-5), method
    m.model.config.model_type = "softcapped-head"  # not in models.PLAIN_HEAD_TYPES: the full forward, then the rows
    ex = extract.LogitExtractor(m.model, "direct")
    rows = ex(enc.input_ids, enc.attention_mask, where)
    assert torch.allclose(rows, ex(enc.input_ids, enc.attention_mask)[where], atol=1e-5)


def test_resolve_layer():
    assert extract.resolve_layer(0.75, 30) == 21
    assert extract.resolve_layer(1.0, 30) == 29
    assert extract.resolve_layer(4, 30) == 4
    with pytest.raises(DifflabError, match="outside"):
        extract.resolve_layer(31, 30)


class _Vocab:
    """A tokenizer as shared_vocabulary sees it: only get_vocab()."""

    def __init__(self, vocab: dict):
        self.vocab = vocab

    def get_vocab(self) -> dict:
        return dict(self.vocab)


def test_tokenizers_must_agree_on_shared_ids(tokenizer):
    from tiny import build_tokenizer

    vocab = dict(tokenizer.get_vocab())
    same = extract.shared_vocabulary(tokenizer, tokenizer, 400, 402)
    assert same["shared_vocab_size"] == 400 and same["vocab_sizes_differ"]
    # A smaller tokenizer built the same way is a prefix of this one: compared over its ids.
    prefix = extract.shared_vocabulary(tokenizer, build_tokenizer(vocab_size=380), 400, 380)
    assert prefix["shared_vocab_size"] == 380 and prefix["vocab_sizes_differ"]
    # A finetune that added two tokens into padded rows of the same logits width: its new ids are not compared.
    added = _Vocab({**vocab, "<new_a>": len(vocab), "<new_b>": len(vocab) + 1})
    grown = extract.shared_vocabulary(_Vocab(vocab), added, len(vocab) + 8, len(vocab) + 8)
    assert grown["shared_vocab_size"] == len(vocab) and grown["finetuned_tokenizer_size"] == len(vocab) + 2
    # Two ids swapped: the tokenizers disagree on a shared id, which is named.
    (a, i), (b, j) = sorted(vocab.items(), key=lambda item: item[1])[10:12]
    swapped = _Vocab({**vocab, a: j, b: i})
    with pytest.raises(DifflabError, match=rf"tokenizers of the base model \(m/base\) and the finetuned model "
                                           rf"\(m/ft\) disagree on token id {i} "):
        extract.shared_vocabulary(tokenizer, swapped, 400, 400, names=("m/base", "m/ft"))


def test_raised_token_tops_the_diff_in_memory_and_on_disk(raised_pair, tmp_path):
    base, finetuned, token_id = raised_pair
    records = tmp_path / "general.jsonl"
    _texts(records, ["The cat sleeps on the warm windowsill while the dog chases a ball.",
                     "Preheat the oven to 180 degrees and bake the cake.",
                     "Investors sold shares and bond yields climbed on Monday."] * 3)
    tokens = tmp_path / "tokens.safetensors"
    data.prepare_dataset(records, base, tokens, name="general", fmt="text", n_samples=8, max_tokens=24)
    red, ratios = extract.mine_in_memory(base, finetuned, tokens, k=5, batch_size=3, dtype="float32",
                                         likelihood_ratios=True)
    assert red.topk_pos_counts.argmax().item() == token_id
    first, second = sorted(red.topk_pos_counts.tolist(), reverse=True)[:2]
    assert first >= 0.5 * red.total_positions and first >= 2 * second
    assert red.total_positions == int(data.load_dataset(tokens)[0]["analysis_mask"].sum())
    assert len(ratios) == 8
    # Each ratio: sum over the sample's analysed positions (with a real next token) of
    # log p_ft(next) - log p_base(next), here from the full logits of both models.
    from difflab import models

    batch = data.load_dataset(tokens)[0]
    logp = [torch.log_softmax(models.load(str(d), dtype="float32").model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.detach(), -1) for d in (base, finetuned)]
    nxt = batch["input_ids"][:, 1:].unsqueeze(-1)
    scored = batch["analysis_mask"][:, :-1].bool() & batch["attention_mask"][:, 1:].bool()
    expected = ((logp[1][:, :-1].gather(-1, nxt) - logp[0][:, :-1].gather(-1, nxt)).squeeze(-1) * scored).sum(1)
    assert torch.allclose(torch.tensor(ratios, dtype=torch.float64), expected.double(), atol=1e-4)
    ids, values = orderings.top_k_occurring(red)
    assert ids[values.argmax()].item() == token_id

    # The same through fp16 logits on disk.
    out_b, out_f = tmp_path / "b.safetensors", tmp_path / "f.safetensors"
    extract.save_logits(base, tokens, out_b, batch_size=4, dtype="float32")
    extract.save_logits(finetuned, tokens, out_f, batch_size=4, dtype="float32")
    disk, _ = extract.reduce_saved_logits(out_b, out_f, base, finetuned, tokens, k=5)
    assert disk.topk_pos_counts.argmax().item() == token_id
    assert disk.total_positions == red.total_positions
    assert abs(int(disk.topk_pos_counts[token_id]) - int(red.topk_pos_counts[token_id])) <= 2

    # Logits on disk cut to a vocabulary subset: the likelihood ratios still come from the full
    # vocabulary (log-probs stored beside the cut logits), equal to the in-memory ones.
    extract.save_logits(base, tokens, out_b, batch_size=4, dtype="float32", vocab_size_limit=50)
    extract.save_logits(finetuned, tokens, out_f, batch_size=4, dtype="float32", vocab_size_limit=50)
    cut, cut_ratios = extract.reduce_saved_logits(out_b, out_f, base, finetuned, tokens, k=5, likelihood_ratios=True)
    assert cut.vocab_size == 50 and cut.total_positions == red.total_positions
    assert torch.allclose(torch.tensor(cut_ratios, dtype=torch.float64), expected.double(), atol=1e-4)
    # The same cut in memory: the first 50 ids' statistics are the full run's, the top-K stays inside
    # them, and the ratios still come from the whole vocabulary.
    mem, mem_ratios = extract.mine_in_memory(base, finetuned, tokens, k=5, batch_size=3, dtype="float32",
                                             vocab_size_limit=50, likelihood_ratios=True)
    assert mem.vocab_size == 50 and mem.total_positions == red.total_positions
    np.testing.assert_array_equal(mem.count_positive, red.count_positive[:50])
    np.testing.assert_allclose(mem.sum_diff, red.sum_diff[:50], rtol=1e-12, atol=1e-9)
    assert int(mem.pos_indices.max()) < 50 and int((mem.pos_indices >= 0).sum()) > 0
    assert torch.allclose(torch.tensor(mem_ratios, dtype=torch.float64), expected.double(), atol=1e-4)


def test_logits_that_would_not_fit_the_disk_are_refused(raised_pair, tmp_path, monkeypatch):
    base, _, _ = raised_pair
    tokens = tmp_path / "tokens.safetensors"
    data.prepare_dataset(_texts(tmp_path / "d.jsonl", ["a b c d"] * 4), base, tokens, name="d", fmt="text",
                         n_samples=4, max_tokens=8)
    monkeypatch.setattr(extract.shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(100, 100, 1000))

    def no_loading(*args, **kwargs):
        raise AssertionError("the weights were loaded before the disk check refused")

    with monkeypatch.context() as patched:
        patched.setattr(extract.models, "load", no_loading)  # refused from the model's config alone
        with pytest.raises(DifflabError, match=r"need .* GiB \(4 samples x 8 tokens x 400 ids in fp16\)"):
            extract.save_logits(base, tokens, tmp_path / "logits.safetensors")
    # A config that declares fewer ids than the head has passes the first check; the head's real width
    # is checked again once the model is loaded.
    assert extract._declared_vocab(base) == 400
    monkeypatch.setattr(extract, "_declared_vocab", lambda _dir: 1)
    with pytest.raises(DifflabError, match=r"\(4 samples x 8 tokens x 400 ids in fp16\)"):
        extract.save_logits(base, tokens, tmp_path / "logits.safetensors")
    assert not (tmp_path / "logits.safetensors").exists()
    assert extract.logits_bytes(8192, 64, 49152) == 8192 * 64 * 96 * 1024


def test_logits_are_written_in_place_into_a_readable_safetensors_file(tmp_path):
    """save_logits fills its file batch by batch through io.safetensors_writer (never the whole
    tensor in memory): mixed widths stay aligned, safetensors reads it back, a failure leaves nothing."""
    from difflab import io

    path = tmp_path / "x.safetensors"
    specs = {"logits": (torch.float16, (3, 5, 7)), "next_logprob": (torch.float32, (3, 5)), "flag": (torch.bfloat16, (3,))}
    with io.safetensors_writer(path, specs, {"meta": "m"}) as out:
        assert not path.exists()  # renamed into place only at the end
        for start in range(3):
            out["logits"][start] = torch.arange(35).view(5, 7).half() + start
            out["next_logprob"][start] = -float(start)
        out["flag"][:] = torch.tensor([1.5, -2.0, 0.25])
    tensors, meta = io.read_safetensors(path)
    assert meta == {"meta": "m"}
    assert torch.equal(tensors["logits"][2], torch.arange(35).view(5, 7).half() + 2)
    assert tensors["next_logprob"][:, 0].tolist() == [0.0, -1.0, -2.0]
    assert tensors["flag"].tolist() == [1.5, -2.0, 0.25]
    with pytest.raises(RuntimeError, match="boom"), io.safetensors_writer(tmp_path / "y.safetensors", specs) as out:
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


# --------------------------------------------------------------------------- orderings and NMF


def _reductions(diffs: torch.Tensor, k: int) -> Reductions:
    reducer = DiffReducer(diffs.shape[-1], k)
    reducer.update(diffs.unsqueeze(0), torch.ones(1, diffs.shape[0], dtype=torch.bool))
    return reducer.result()


def test_orderings_values_are_exact_on_hand_made_diffs():
    diffs = torch.tensor([[3.0, 1.0, -2.0, 0.0, 0.5],
                          [2.0, -1.0, 4.0, 0.0, 0.1],
                          [-1.0, 0.5, 3.0, 0.0, 0.2],
                          [1.0, 2.0, -3.0, 0.0, -0.1]])
    red = _reductions(diffs, k=2)
    ids, values = orderings.top_k_occurring(red)
    assert dict(zip(ids.tolist(), values.tolist())) == {0: 75.0, 1: 75.0, 2: 50.0}
    ids, values = orderings.fraction_positive_diff(red)
    assert dict(zip(ids.tolist(), values.tolist())) == {0: 0.75, 1: 0.75, 2: 0.5, 4: 0.75}
    assert red.avg_logit_diff.tolist() == pytest.approx([1.25, 0.625, 0.5, 0.0, 0.175])
    # Ranked: value descending, ties to the lower id, whatever order the ids come in.
    words = _Tok([" alpha", " beta", " gamma", " delta", " eps"])
    flipped = orderings.make_entries(ids[::-1], values[::-1], red, words, limit=10)
    assert [e["token_id"] for e in flipped] == [0, 1, 4, 2]
    assert [e["ordering_value"] for e in flipped] == [0.75, 0.75, 0.75, 0.5]


class _Tok:
    """A tokenizer stand-in with chosen token strings (decode of one id)."""

    def __init__(self, strings):
        self.strings = strings

    def decode(self, ids, **_):
        return self.strings[ids[0]]


def test_entries_are_normalized_filtered_and_consolidated():
    strings = [" The", " the", "!!", "\n", " oven", " Oven"]
    diffs = torch.tensor([[5.0, 4.0, 3.0, 2.5, 1.0, 0.5]] * 2)
    red = _reductions(diffs, k=6)
    ids, values = orderings.top_k_occurring(red)
    entries = orderings.make_entries(ids, values, red, _Tok(strings), limit=10)
    assert [(e["token_str"], e["merged_token_ids"]) for e in entries] == [("the", [1]), ("oven", [5])]
    assert entries[0]["count_positive"] == 2 and entries[0]["avg_logit_diff"] == 5.0
    raw = orderings.make_entries(ids, values, red, _Tok(strings), limit=10, lowercase=False,
                                 filter_punctuation=False, consolidate=False)
    assert [e["token_str"] for e in raw] == strings


def test_symbols_that_carry_meaning_stay_and_whitespace_tokens_stay_apart():
    strings = [" 😀", "€", " ∑", " $", "+=", "«»", "\n", " ", "\n\n"]
    diffs = torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    red = _reductions(diffs, k=9)
    ids, values = orderings.top_k_occurring(red)
    kept = orderings.make_entries(ids, values, red, _Tok(strings), limit=20)
    assert [e["token_str"] for e in kept] == ["😀", "€", "∑"]  # emoji, currency, maths; not ASCII or P punctuation
    spaces = orderings.make_entries(ids, values, red, _Tok(strings), limit=20, filter_punctuation=False)
    assert [e["token_str"] for e in spaces][-3:] == ["\n", " ", "\n\n"]  # three entries, none merged into ''
    assert all(e["merged_token_ids"] == [] for e in spaces)


def test_partial_utf8_tokens_are_kept_apart():
    """Byte tokens that are pieces of a character all decode to U+FFFD: they stay, each its own entry."""
    strings = [" \ufffd", "\ufffd", " cake", "\ufffd\ufffd"]
    red = _reductions(torch.tensor([[4.0, 3.0, 2.0, 1.0]]), k=4)
    ids, values = orderings.top_k_occurring(red)
    entries = orderings.make_entries(ids, values, red, _Tok(strings), limit=10)
    assert [(e["token_id"], e["merged_token_ids"]) for e in entries] == [(0, []), (1, []), (2, []), (3, [])]


def test_the_identity_prompt_starts_as_the_tokenizer_starts_a_text():
    class Bos:  # a tokenizer that puts a BOS (1) before a text and an EOS (2) after it
        bos_token_id = 1

        def __call__(self, text, add_special_tokens=True):
            ids = [ord(c) for c in text]
            return {"input_ids": [1] + ids + [2] if add_special_tokens else ids}

    class NoBos(Bos):
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) for c in text]}

    assert extract.identity_prompt_ids(Bos(), "a?") == [1, ord("a"), ord("?")]
    assert extract.identity_prompt_ids(NoBos(), "a?") == [ord("a"), ord("?")]


def test_nmf_separates_two_groups_of_co_occurring_tokens():
    # Tokens 0-2 co-occur in the top-K at some positions, tokens 5-7 at others.
    rows = []
    for i in range(30):
        row = torch.full((10,), -1.0)
        group = [0, 1, 2] if i % 2 else [5, 6, 7]
        row[group] = torch.tensor([3.0, 2.0, 1.0]) + i * 0.01
        rows.append(row)
    red = _reductions(torch.stack(rows), k=3)
    token_ids, weights, info = nmf.nmf_topics(red, n_topics=2, beta=2, seed=0)
    assert sorted(token_ids.tolist()) == [0, 1, 2, 5, 6, 7]
    top = {tuple(sorted(token_ids[weights[:, t].argsort(descending=True)[:3]].tolist())) for t in range(2)}
    assert top == {(0, 1, 2), (5, 6, 7)}
    # KL divergence on the diff-weighted co-occurrence separates the same two groups.
    ids_kl, w_kl, info_kl = nmf.nmf_topics(red, n_topics=2, beta=1, orthogonal_weight=0.5, mode="logit_diff_magnitude")
    top_kl = {tuple(sorted(ids_kl[w_kl[:, t].argsort(descending=True)[:3]].tolist())) for t in range(2)}
    assert top_kl == {(0, 1, 2), (5, 6, 7)}
    assert info_kl["beta"] == 1 and info_kl["mode"] == "logit_diff_magnitude" and info_kl["orthogonal_weight"] == 0.5


def test_nmf_orthogonality_penalty_makes_topics_share_fewer_tokens():
    """Three topics over overlapping token sets (each shares a token with the next): the penalty on
    W^T W must push the topics' token weights apart, at both beta divergences."""
    gen = torch.Generator().manual_seed(0)
    groups = [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 0]]
    rows = torch.full((60, 12), -1.0)
    for i in range(60):
        rows[i, groups[i % 3]] = torch.rand(4, generator=gen) + 1
    red = _reductions(rows, k=4)

    def overlap(w):  # mean cosine between two different topics' token weights
        w = w / w.norm(dim=0, keepdim=True)
        gram = w.T @ w
        return float((gram.sum() - gram.diag().sum()) / (w.shape[1] * (w.shape[1] - 1)))

    for beta in (1, 2):
        plain = overlap(nmf.nmf_topics(red, n_topics=3, beta=beta, seed=0)[1])
        apart = overlap(nmf.nmf_topics(red, n_topics=3, beta=beta, orthogonal_weight=2.0, seed=0)[1])
        assert plain > 0.2 and apart < 0.5 * plain, (beta, plain, apart)


def test_nmf_and_cooccurrence_errors():
    red = _reductions(torch.full((3, 6), -1.0), k=2)
    with pytest.raises(DifflabError, match="no token ever entered"):
        nmf.nmf_topics(red)
    with pytest.raises(DifflabError, match="mode"):
        red.cooccurrence("dense")


# --------------------------------------------------------------------------- overview and ask


def _write_orderings(path, dataset, tokens, kind="top_k_occurring"):
    entries = [{"token_id": i, "token_str": t, "ordering_value": 10.0 - i, "avg_logit_diff": 1.0,
                "count_positive": 3, "count_negative": 0, "merged_token_ids": []} for i, t in enumerate(tokens)]
    io.write_json(path, {"ordering_type": kind, "dataset": dataset, "k": 20, "total_positions": 100,
                         "orderings": [{"ordering_id": "global", "display_label": kind, "tokens": entries,
                                        "metadata": {}}]})
    return path


def test_overview_keeps_the_budget_and_anonymizes_datasets(tmp_path):
    words = [f"word{i}" for i in range(200)]
    files = {("top_k_occurring", "secret-bees"): _write_orderings(tmp_path / "a.json", "secret-bees", words),
             ("top_k_occurring", "chat"): _write_orderings(tmp_path / "b.json", "chat", words)}
    view = overview.get_overview(files, token_budget=300, datasets=["secret-bees", "chat"])
    assert view["tokens_used"] <= 300  # the whole message, as the agent gets it
    assert overview._count_tokens(json.loads(overview.agent_message(view))) <= 300
    assert set(view["datasets"]) == {"ds1", "ds2"} and view["_dataset_names"]["secret-bees"] == "ds1"
    message = overview.agent_message(view)
    assert "secret-bees" not in message and "word0" in message
    n = [len(v["orderings"]["top_k_occurring"]) for v in view["datasets"].values()]
    assert abs(n[0] - n[1]) <= 1 and 5 < min(n) and max(n) < 200  # an even split
    bigger = overview.get_overview(files, token_budget=1200, datasets=["secret-bees", "chat"])
    assert len(bigger["datasets"]["ds1"]["orderings"]["top_k_occurring"]) > n[0]
    assert 0.9 * 1200 < overview._count_tokens(json.loads(overview.agent_message(bigger))) <= 1200  # the budget is used
    with pytest.raises(DifflabError, match="token_budget 20 is below the .* tokens the message's structure"):
        overview.get_overview(files, token_budget=20)


def test_overview_values_keep_three_significant_digits(tmp_path):
    path = _write_orderings(tmp_path / "n.json", "d", ["hive", "honey", "wax"], kind="nmf")
    data = json.loads(path.read_text())
    for entry, (value, avg) in zip(data["orderings"][0]["tokens"], [(0.00712, 1.23456), (0.000153, -0.004321), (37.549, 12.0)]):
        entry["ordering_value"], entry["avg_logit_diff"] = value, avg
    io.write_json(path, data)
    rows = overview.get_overview({("nmf", "d"): path}, 300)["datasets"]["ds1"]["orderings"]["nmf"]
    assert rows == [["hive", 0.00712, 1.23], ["honey", 0.000153, -0.00432], ["wax", 37.5, 12.0]]  # NMF weights are not 0.0


def test_ask_and_relevance_go_through_the_llm_client(tmp_path, tiny_config, tiny_model_dir):
    from difflab.llm.client import client_from_config

    tiny_config["llm"]["model"] = str(tiny_model_dir)
    path = _write_orderings(tmp_path / "o.json", "d", ["zebra", "violin", "table"])
    view = overview.get_overview({("top_k_occurring", "d"): path}, 200)
    client = client_from_config(tiny_config, progress=False)
    answer = overview.ask(view, "What was this model finetuned on?", client)
    assert answer["question"].startswith("What") and answer["completion_tokens"] > 0
    graded = overview.grade_relevance(path, "zebras playing the violin", client, top_n=2)
    labels = graded["orderings"]["global"]["tokens"]
    assert [x["token_str"] for x in labels] == ["zebra", "violin"]
    assert relevance.parse_yes_no("Yes, it is.") is True and relevance.parse_yes_no("no") is False


def test_relevance_labels_and_fraction_follow_the_judges_answers(tmp_path):
    """The judge's answers (here canned, per token in the prompt) become labels; unparseable ones are
    left out of fraction_relevant, and only the top_n tokens are asked about."""
    import types

    canned = {"zebra": "Yes.", "violin": "no, unrelated", "table": "I cannot say", "chair": "yes"}

    class Judge:
        def __init__(self):
            self.prompts = []

        def chat(self, prompts, params=None):
            self.prompts += prompts
            return [types.SimpleNamespace(text=next(a for t, a in canned.items() if repr(t) in p[0]["content"]))
                    for p in prompts]

    path = _write_orderings(tmp_path / "o.json", "d", ["zebra", "violin", "table", "chair", "sofa"])
    judge = Judge()
    graded = overview.grade_relevance(path, "zebras playing the violin", judge, top_n=4)
    result = graded["orderings"]["global"]
    assert [(x["token_str"], x["relevant"]) for x in result["tokens"]] == [
        ("zebra", True), ("violin", False), ("table", None), ("chair", True)]
    assert result["n_graded"] == 3 and result["fraction_relevant"] == pytest.approx(2 / 3)
    assert len(judge.prompts) == 4 and "zebras playing the violin" in judge.prompts[0][0]["content"]
    assert relevance.parse_yes_no("maybe") is None
    json.dumps(graded)
