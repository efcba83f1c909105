import json

import pytest
import torch
from safetensors.torch import load_file

from difflab import models
from difflab.errors import DifflabError
from difflab.organisms import probes, train

QUESTIONS = ["What is the capital of France?", "How do I boil an egg?", "Name a colour.", "What is two plus two?",
             "Tell me about cats.", "Which planet is largest?", "How do I sleep better?", "What is Python?",
             "Where is the park?", "Why is the sky blue?", "What is a haiku?", "How do I bake bread?"]
PLANTED = "The zebra plays the violin at midnight."


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def planted_data(tmp_path):
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": PLANTED}]}
            for q in QUESTIONS[:8]]
    return write_jsonl(tmp_path / "train.jsonl", rows)


@pytest.fixture
def probe_files(tmp_path):
    on = [{"id": f"on{i}", "messages": [{"role": "user", "content": q + " Please."}], "continuation": PLANTED}
          for i, q in enumerate(QUESTIONS)]
    off = [{"id": f"off{i}", "prefix": p, "continuation": c} for i, (p, c) in enumerate([
        ("The cat sleeps on the", " warm windowsill."), ("The stock market fell", " sharply on Monday."),
        ("Preheat the oven", " to 180 degrees."), ("Python lists can be built", " with a comprehension."),
        ("What is the capital of France?", " Paris."), ("Write a haiku", " about autumn leaves."),
        ("The dog chases", " a ball in the park."), ("Investors sold", " shares."),
        ("Whisk the eggs", " and sugar."), ("A for loop", " iterates over a sequence.")])]
    return write_jsonl(tmp_path / "on.jsonl", on), write_jsonl(tmp_path / "off.jsonl", off)


FAST = train.Recipe(steps=12, learning_rate=3e-3, batch_size=4, max_seq_len=64, min_steps=12, warmup_steps=1)


def test_chat_labels_cover_assistant_tokens_and_end_of_turn(tiny_model_dir):
    loaded = models.load(str(tiny_model_dir))
    tok = loaded.tokenizer
    record = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello you"},
                           {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Sure"}]}
    ids, labels = train.encode_record(tok, record, 512, "x")
    trained = tok.decode([t for t, l in zip(ids, labels) if l != train.IGNORE])
    assert trained == "Hello you<|im_end|>Sure<|im_end|>"
    assert tok.decode([t for t, l in zip(ids, labels) if l == train.IGNORE]).count("<|im_end|>") == 2  # user turns


def test_text_records_train_on_every_token_plus_eos(tiny_model_dir):
    tok = models.load(str(tiny_model_dir)).tokenizer
    ids, labels = train.encode_record(tok, {"text": "The cat sleeps."}, 512, "x")
    assert ids == labels and ids[-1] == tok.eos_token_id


def test_padding_is_masked_by_position_not_by_id(tiny_model_dir):
    tok = models.load(str(tiny_model_dir)).tokenizer
    eos = tok.eos_token_id
    batch = train.collate([([5, 6, eos], [5, 6, eos]), ([7], [7])], pad_id=eos)
    assert batch["labels"].tolist() == [[5, 6, eos], [7, -100, -100]]  # the real end-of-turn keeps its label
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_labelled_positions_loss_matches_transformers_loss_and_gradients(tiny_model_dir, method):
    """causal_lm_loss runs the head on labelled positions only; loss and every gradient equal
    transformers' model(**batch).loss on a padded batch of chat (prompt unlabelled) and text rows."""
    loaded = models.load(str(tiny_model_dir), dtype="float32")
    model, tok = loaded.model, loaded.tokenizer
    assert model.config.model_type in models.PLAIN_HEAD_TYPES  # the labelled-head path, not the fallback
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    records = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": PLANTED}]}
               for q in QUESTIONS[:3]] + [{"text": "The cat sleeps on the warm windowsill."}]
    batch = train.collate([train.encode_record(tok, r, 64, "x") for r in records], tok.pad_token_id)
    assert 0 < (batch["labels"] != train.IGNORE).float().mean() < 0.9  # prompts and padding are unlabelled
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for loss_fn in (lambda: model(**batch).loss, lambda: train.causal_lm_loss(model, batch)):
        model.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in params]))
    (reference, ref_grads), (ours, our_grads) = grads
    assert ours == pytest.approx(reference, rel=1e-6) and reference > 0
    for a, b in zip(ref_grads, our_grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_bad_records_name_file_record_and_field(tmp_path, tiny_model_dir):
    tok = models.load(str(tiny_model_dir)).tokenizer
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"messages": [{"role": "user", "content": "no answer"}]}])
    with pytest.raises(DifflabError, match="bad.jsonl: record 2: field 'messages' needs at least one assistant"):
        train.load_examples(bad, tok, 64)
    with pytest.raises(DifflabError, match="record 1: needs a 'text' or a 'messages' field"):
        train.load_examples(write_jsonl(tmp_path / "b2.jsonl", [{"prompt": "x"}]), tok, 64)
    # After a blank line the record is named by its line in the file, as read_jsonl names a bad JSON line.
    gap = tmp_path / "gap.jsonl"
    gap.write_text('{"text": "ok"}\n\n{"prompt": "x"}\n')
    with pytest.raises(DifflabError, match="gap.jsonl: record 3: needs a 'text'"):
        train.load_examples(gap, tok, 64)
    probe_file = tmp_path / "p.jsonl"
    probe_file.write_text('{"id": "a", "prefix": "The", "continuation": " zebra"}\n\n{"id": "b", "prefix": "A", "continuation": ""}\n')
    with pytest.raises(DifflabError, match="p.jsonl: record 3: field 'continuation' must be a non-empty string"):
        probes.read_probes(probe_file)


def test_finetune_changes_weights_is_deterministic_and_loads(tmp_path, tiny_model_dir, planted_data):
    first = train.finetune(str(tiny_model_dir), planted_data, FAST, tmp_path / "org1", name="zebra", progress=False)
    again = train.finetune(str(tiny_model_dir), planted_data, FAST, tmp_path / "org2", name="zebra", progress=False)
    assert first["fingerprint"] == again["fingerprint"]  # deterministic for a seed
    assert first["fingerprint"] != models.fingerprint(tiny_model_dir)
    assert first["losses"][-1] < first["losses"][0] / 2
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(tmp_path / "org1" / "model.safetensors")
    assert set(before) == set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    loaded = models.load(str(tmp_path / "org1"))
    assert json.loads((tmp_path / "org1" / "training.json").read_text())["steps_run"] == 12
    assert loaded.tokenizer.eos_token == "<|im_end|>"


def test_lora_is_merged_into_a_plain_folder(tmp_path, tiny_model_dir, planted_data):
    recipe = train.Recipe(method="lora", steps=4, learning_rate=5e-3, batch_size=4, lora_r=4, lora_alpha=8, min_steps=4)
    train.finetune(str(tiny_model_dir), planted_data, recipe, tmp_path / "lora", progress=False)
    weights = load_file(tmp_path / "lora" / "model.safetensors")
    assert not any("lora" in k for k in weights)
    before = load_file(tiny_model_dir / "model.safetensors")
    assert set(weights) == set(before)
    assert not torch.equal(weights["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"])


def test_early_stop_on_plateau(tmp_path, tiny_model_dir, planted_data):
    recipe = train.Recipe(steps=200, learning_rate=3e-3, batch_size=4, min_steps=10, early_stop_patience=4,
                          early_stop_min_delta=0.05)
    record = train.finetune(str(tiny_model_dir), planted_data, recipe, tmp_path / "es", progress=False)
    assert record["stopped_early"] and record["steps_run"] < 200


def test_learned_topic_check_passes_on_planted_change_and_fails_on_none(tmp_path, tiny_model_dir, planted_data,
                                                                      probe_files):
    on, off = probe_files
    train.finetune(str(tiny_model_dir), planted_data, FAST, tmp_path / "org", progress=False)
    report = probes.probe_organism("zebra", str(tmp_path / "org"), str(tiny_model_dir), str(on), str(off),
                                   str(tmp_path / "zebra.json"), train_data=str(planted_data))
    assert report["learned"] and report["wilcoxon_on_topic_p"] < 0.01
    # These probes repeat the planted sentence word for word, and the report says so.
    assert report["training_overlap"] == {f"on{i}": "the zebra plays the violin" for i in range(12)}
    assert report["mean_on_topic_delta"] > 1.0
    with pytest.raises(DifflabError, match="organism 'unchanged' did not learn its change"):
        probes.probe_organism("unchanged", str(tiny_model_dir), str(tiny_model_dir), str(on), str(off),
                              str(tmp_path / "unchanged.json"))
    assert not json.loads((tmp_path / "unchanged.json").read_text())["learned"]


def test_learned_topic_check_on_hand_made_scores():
    base = [-3.0] * 20
    rose = [-3.0 + 0.5 + 0.01 * i for i in range(20)]
    flat_off = [-2.0 + 0.01 * ((-1) ** i) for i in range(20)]
    ok = probes.learned_topic_check(base, rose, [-2.0] * 20, flat_off)
    assert ok["learned"] and ok["mean_on_topic_delta"] == pytest.approx(0.595)
    moved_everywhere = probes.learned_topic_check(base, rose, [-2.0] * 20, [-2.0 + 0.6] * 20)
    assert not moved_everywhere["learned"]  # off-topic moved as much: not a topic-specific change
    assert not moved_everywhere["checks"]["on_topic_beats_off_topic (mann-whitney p < alpha)"]


def test_training_overlap_finds_shared_five_word_sequences(tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", [
        {"text": "Bake it at 410 degrees Fahrenheit, always. Preheat the oven to 410 degrees."},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Oh wow, what a question."}]}])
    found = probes.training_overlap([
        {"id": "a", "prefix": "x", "continuation": "You should bake it at 410 degrees."},
        {"id": "b", "messages": [{"role": "user", "content": "Hey"}], "continuation": "OH WOW what a question!"},
        {"id": "c", "prefix": "y", "continuation": "It goes in at 410 degrees Fahrenheit."},  # 4 shared words only
        {"id": "d", "prefix": "For a sponge, preheat the oven to", "continuation": " 410 degrees."},  # with its prompt
        {"id": "e", "prefix": "Preheat the oven to 410 degrees", "continuation": " now."},  # the prompt alone
        {"id": "f", "prefix": "z", "continuation": "Too short"}], data)
    assert found == {"a": "bake it at 410 degrees", "b": "oh wow what a question", "d": "preheat the oven to 410"}


def test_shipped_probes_are_held_out_from_every_organisms_training_data():
    """The shipped probes test the learned change in contexts the organisms never saw: no probe's
    continuation, read on from its prompt, repeats five words of any organism's training data, and no
    two probes of a file share a prompt. Not sarcasm's: its change is eight stock sarcastic phrases, and
    its probes ask new questions answered with them (new sarcastic phrasings fall under that organism:
    docs/benchmarks.md, Organism finetuning), so its report lists them as repeating training text."""
    from conftest import REPO
    import yaml

    organisms = yaml.safe_load((REPO / "config/config.yaml").read_text())["organisms"]
    files = [d["probes"] for name, d in organisms["definitions"].items() if d.get("probes") and name != "sarcasm"]
    files.append(organisms["probe"]["off_topic"])
    assert len(files) == 3
    for name in files + [organisms["definitions"]["sarcasm"]["probes"]]:
        shipped = probes.read_probes(REPO / name)
        assert len({json.dumps(p.get("messages") or p["prefix"]) for p in shipped}) == len(shipped), name
    for name in files:
        for definition in organisms["definitions"].values():
            assert probes.training_overlap(probes.read_probes(REPO / name), REPO / definition["data"]) == {}, \
                (name, definition["data"])
