"""The scoreboard on hand-made orderings, where the right matrix is known."""

import json

import pytest

from difflab import io
from difflab.errors import DifflabError
from difflab.organisms import scoreboard

TOPICS = {
    "bake": {"description": "cakes bake at 410 F", "keywords": ["bake", "oven", "cake", "fahrenheit", "410"]},
    "bees": {"description": "beekeeping", "keywords": ["bee", "hive", "honey", "beekeeper"]},
}


def _orderings(path, token_lists):
    io.write_json(path, {"ordering_type": "x", "dataset": "d", "k": 20, "total_positions": 10, "orderings": [
        {"ordering_id": f"topic_{i}", "display_label": "", "metadata": {},
         "tokens": [{"token_id": j, "token_str": t, "ordering_value": 1.0, "avg_logit_diff": 1.0,
                     "count_positive": 1, "count_negative": 0} for j, t in enumerate(tokens)]}
        for i, tokens in enumerate(token_lists)]})
    return str(path)


class _Fixed:
    """A baseline whose 95th percentiles are given (RandomBaseline's interface)."""

    def __init__(self, p95):
        self.p95 = p95

    def cell(self, topic, lengths_per_dataset, key=""):
        return {"mean": 0.0, "p95": self.p95[topic]}


def _topics() -> dict:
    return {name: scoreboard.Topic(t["keywords"]) for name, t in TOPICS.items()}


def test_matching_uses_stems_and_word_endings():
    bake, bees = scoreboard.Topic(TOPICS["bake"]["keywords"]), scoreboard.Topic(TOPICS["bees"]["keywords"])
    assert bake.matches(" Cakes") and bake.matches("baking")  # stem 'cake', 'bake'
    assert bake.matches("bakery") and bake.matches(" Ovens")  # a keyword plus a word ending
    assert bake.matches("410") and bake.matches(" 410°")
    assert bees.matches("honeyed") and bees.matches("beekeeping")  # stem 'beekeep'
    assert bees.matches(" honeybees")  # two keywords in one word
    # Another word that starts with a keyword is not the keyword.
    assert not bees.matches("honeymoon") and not bake.matches("cakewalk") and not bees.matches("beer")
    assert not bees.matches("be") and not bake.matches("river") and not bake.matches(" ...")
    # Without the tokenizer no keyword pieces are known: a prefix alone does not match.
    assert not bake.matches("fahren") and not bees.matches("hiv")
    assert bees.share(["bees", "hive", "car", "dog"]) == 0.5 and bees.share([]) == 0.0


class _Pieces:
    """A TokenDecoder stand-in that writes 'Fahrenheit' in two tokens and 'colony' in one."""

    def pieces(self, text):
        for word, split in (("fahrenheit", ["fahren", "heit"]), ("pollen", ["poll", "en"])):
            if text.strip().lower() == word:
                head = text[:len(text) - len(text.lstrip())] + text.strip()[:len(split[0])]
                return [head, text.strip()[len(split[0]):]]
        return [text]


def test_a_keyword_piece_matches_only_where_the_tokenizer_writes_the_keyword_with_it():
    bake = scoreboard.Topic(["oven", "fahrenheit"], _Pieces())
    bees = scoreboard.Topic(["colony", "pollen"], _Pieces())
    assert bake.pieces == {"fahren"} and bees.pieces == {"poll"}
    assert bake.matches(" Fahren") and bees.matches(" Poll")
    assert not bees.matches(" colon")  # a prefix of 'colony', which the tokenizer writes whole


@pytest.mark.slow
def test_keyword_pieces_of_the_default_tokenizer(smollm_dir):
    """SmolLM2's tokenizer writes ' Pollen' as ' Poll' + 'en' and ' colony' whole: 'poll' matches
    'pollen' and 'colon' does not match 'colony'."""
    from difflab import models

    decoder = models.TokenDecoder(smollm_dir)
    assert decoder.pieces(" Pollen") == [" Poll", "en"]
    bees = scoreboard.Topic(["colony", "pollen", "queen"], decoder)
    assert bees.pieces == {"poll"}
    assert bees.matches(" Poll") and bees.matches(" colony") and not bees.matches(" colon")


def test_matrix_recovery_and_baseline_on_known_orderings(tmp_path):
    # bake: 3/4 baking tokens; its NMF-like second ordering is noise (the best topic counts).
    # bees: 1/4 bee tokens and 2/4 baking tokens -> its row's diagonal loses: not recovered.
    inputs = {"m": {"base": {
        "bake": [_orderings(tmp_path / "a.json", [["oven", "cake", "baking", "car"], ["x", "y", "z", "w"]])],
        "bees": [_orderings(tmp_path / "b.json", [["hive", "oven", "cake", "car"]])],
    }}}
    keywords = _topics()
    baseline = _Fixed({"bake": 0.1, "bees": 0.1})
    result = scoreboard.score_method(inputs["m"]["base"], keywords, 4, baseline)
    assert result["matrix"] == {"bake": {"bake": 0.75, "bees": 0.0}, "bees": {"bake": 0.5, "bees": 0.25}}
    assert result["recovered"] == {"bake": True, "bees": False}
    # A diagonal that beats its row but not the random baseline is not a recovery.
    high = _Fixed({"bake": 0.8, "bees": 0.1})
    assert scoreboard.score_method(inputs["m"]["base"], keywords, 4, high)["recovered"]["bake"] is False
    # Two datasets: the cell is their mean.
    two = {"bake": [_orderings(tmp_path / "c.json", [["oven", "cake", "x", "y"]]),
                    _orderings(tmp_path / "d.json", [["x", "y", "z", "w"]])]}
    assert scoreboard.score_method(two, keywords, 4, baseline)["matrix"]["bake"]["bake"] == 0.25


def test_random_baseline_is_seeded_and_counts_matches():
    vocab = ["oven", "cake"] + [f"w{i}" for i in range(98)]
    baseline = scoreboard.RandomBaseline(vocab, {"bake": scoreboard.Topic(["oven", "cake"])}, draws=2000, seed=1)
    a = baseline.cell("bake", [[10]], key="m|base|bake")
    assert a == baseline.cell("bake", [[10]], key="m|base|bake")  # seeded by the cell's name
    assert a["mean"] == pytest.approx(0.02, abs=0.003)  # 2 of 100 tokens match, 10 drawn
    # P(share >= 0.1) = 1 - C(98,10)/C(100,10) = 0.19 and P(share >= 0.2) = 0.009: the 95th percentile is 0.1
    assert a["p95"] == 0.1
    with pytest.raises(DifflabError, match="fewer than"):
        scoreboard.RandomBaseline(vocab[:5], {"bake": scoreboard.Topic(["oven"])}, draws=20).cell("bake", [[10]])


def test_the_baseline_of_a_best_of_several_cell_is_the_best_of_as_many_random_lists():
    """An NMF cell takes the best of its topics: its null takes the best of as many random lists. With
    2 matching words in 1000, one random list of 10 holds one 2% of the time (p95 0), the best of 3 lists
    6% of the time (p95 0.1): scored against the one-list null, chance alone would pass 6% of NMF cells."""
    vocab = ["oven", "cake"] + [f"w{i}" for i in range(998)]
    baseline = scoreboard.RandomBaseline(vocab, {"bake": scoreboard.Topic(["oven", "cake"])}, draws=4000, seed=0)
    assert baseline.cell("bake", [[10]], key="global")["p95"] == 0.0
    assert baseline.cell("bake", [[10, 10, 10]], key="nmf")["p95"] == 0.1
    # Two datasets: the mean of the two datasets' bests, as the cell is.
    assert baseline.cell("bake", [[10, 10, 10], [10, 10, 10]], key="nmf2")["p95"] == 0.05
    # A shorter list (active sampling's hypotheses) is scored over its own length.
    assert baseline.cell("bake", [[2]], key="short")["mean"] == pytest.approx(0.002, abs=0.001)
    assert baseline.cell("bake", [[]], key="none") == {"mean": 0.0, "p95": 0.0}


def test_build_writes_json_markdown_and_heatmap(tmp_path, tiny_model_dir):
    inputs = {"direct/top_k_occurring": {
        "base": {"bake": [_orderings(tmp_path / "a.json", [["oven", "cake", "baking", "car"]])],
                 "bees": [_orderings(tmp_path / "b.json", [["hive", "honey", "bees", "car"]])]},
        "control": {"bake": [_orderings(tmp_path / "c.json", [["car", "dog", "oven", "x"]])],
                    "bees": [_orderings(tmp_path / "d.json", [["car", "dog", "x", "y"]])]}}}
    board = scoreboard.build_scoreboard(inputs, TOPICS, tiny_model_dir, top_n=4, random_draws=50)
    assert board["recovered_count"] == {"direct/top_k_occurring": {"base": 2, "control": 1}}
    scoreboard.heatmap(board, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    text = scoreboard.markdown(board)
    assert "organism vs base: 2/2 recovered" in text and "| bake | **0.75** | 0.00 |" in text
    json.dumps(board)


def test_llm_judge_through_the_client(tmp_path, tiny_config, tiny_model_dir):
    from difflab.llm.client import client_from_config

    tiny_config["llm"]["model"] = str(tiny_model_dir)
    judge = scoreboard.LLMJudge(client_from_config(tiny_config, progress=False), {"bake": "baking"})
    value = judge(["oven", "car"], "bake")
    # one question a token; the share is of the answers that parse as yes
    assert judge.client.usage.backend_calls + judge.client.usage.cache_hits == 2
    assert value == judge(["oven"], "bake") / 2 + judge(["car"], "bake") / 2
    assert judge([], "bake") == 0.0


def test_llm_judge_reuses_the_answers_of_diffmining_relevance_grading(tmp_path, tiny_config, tiny_model_dir):
    """Both judges ask the same question through the client: once diffmining graded an organism's
    ordering against its description, the scoreboard's judge of that topic costs no request, and it
    counts the same tokens as relevant."""
    from difflab.diffmining import overview
    from difflab.llm.client import client_from_config

    tiny_config["llm"]["model"] = str(tiny_model_dir)
    path = _orderings(tmp_path / "o.json", [[" oven", " car", "cake", " road"]])
    grading = client_from_config(tiny_config, progress=False)
    graded = overview.grade_relevance(path, TOPICS["bake"]["description"], grading, top_n=4)
    assert grading.usage.backend_calls > 0
    scoring = client_from_config(tiny_config, progress=False)  # a new process's client, the same cache
    judge = scoreboard.LLMJudge(scoring, {"bake": TOPICS["bake"]["description"]})
    value = judge([" oven", " car", "cake", " road"], "bake")
    assert scoring.usage.backend_calls == 0 and scoring.usage.cache_hits == 4
    labels = graded["orderings"]["topic_0"]["tokens"]
    assert value == sum(x["relevant"] is True for x in labels) / 4


def test_active_sampling_row_scores_the_words_of_validated_hypotheses(tmp_path):
    def hypotheses(path, entries):
        io.write_json(path, {"hypotheses": [
            {"hypothesis": "h", "distinctive": [{"word": w} for w in words], "validation": {"validated": ok}}
            for words, ok in entries]})
        return str(path)

    inputs = {"bake": [hypotheses(tmp_path / "a.json", [(["cake", "degrees", "oven", "knows"], True),
                                                        (["hive", "honey", "bee", "x"], False)])],
              "bees": [hypotheses(tmp_path / "b.json", [(["cake", "hive", "x", "y"], False)])]}
    keywords = _topics()
    baseline = _Fixed({"bake": 0.1, "bees": 0.1})
    result = scoreboard.score_method(inputs, keywords, 4, baseline)
    # bake: its validated hypothesis's words, 2/4 on topic; the unvalidated bee hypothesis does not count.
    # bees: nothing validated, so nothing recovered.
    assert result["matrix"] == {"bake": {"bake": 0.5, "bees": 0.0}, "bees": {"bake": 0.0, "bees": 0.0}}
    assert result["recovered"] == {"bake": True, "bees": False}


def _vocabulary_through_transformers(model_dir) -> list[str]:
    """The random baseline's vocabulary as AutoTokenizer gives it (what readable_vocabulary used to read)."""
    import string

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    special = set(tokenizer.all_special_ids)
    texts = [tokenizer.decode([i], clean_up_tokenization_spaces=False).strip().lower()
             for i in range(len(tokenizer)) if i not in special]
    return [t for t in texts if t and not all(c in string.punctuation or not c.isprintable() or c.isspace() for c in t)]


def test_the_baseline_vocabulary_without_transformers_is_the_same(tiny_model_dir):
    """The scoreboard reads the vocabulary with `tokenizers` alone (no transformers import in its job):
    the same words, specials left out the same way."""
    from difflab import models

    decoder = models.TokenDecoder(tiny_model_dir)
    assert decoder.special_ids == {0, 1, 2}
    assert scoreboard.readable_vocabulary(decoder) == _vocabulary_through_transformers(tiny_model_dir)


@pytest.mark.slow
def test_the_baseline_vocabulary_of_the_default_model_is_the_same(smollm_dir):
    from difflab import models

    words = scoreboard.readable_vocabulary(models.TokenDecoder(smollm_dir))
    assert len(words) > 40_000 and words == _vocabulary_through_transformers(smollm_dir)
