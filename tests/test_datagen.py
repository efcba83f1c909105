"""datagen: records and exports, quality filters (lengths, exact and MinHash near-duplicates, custom),
ROUGE-L novelty, PII redaction on a table of positive and negative cases, and the metrics."""

import json
import random

import numpy as np
import pytest

from difflab.datagen import filters, metrics, privacy
from difflab.datagen.records import Example, Results
from difflab.errors import DifflabError


def ex(instruction, output="An answer.", **kw):
    return Example(instruction=instruction, output=output, **kw)


# --------------------------------------------------------------------------- records


def test_results_round_trip_jsonl_and_parquet_and_export(tmp_path):
    results = Results([ex("Name three rivers.", "Nile, Amazon, Danube.", method="seed"),
                       ex("Translate to French.", "Bonjour.", input="Hello.", method="template",
                          params={"template": "t1"}, meta={"constraints": {"length": True}})])
    assert results[0].id == Example("Name three rivers.", output="Nile, Amazon, Danube.").id  # follows the content
    for name in ("r.jsonl", "r.parquet"):
        back = Results.load(results.save(tmp_path / name))
        assert [e.to_dict() for e in back] == [e.to_dict() for e in results]
    messages = [json.loads(x) for x in results.export(tmp_path / "m.jsonl", "messages", system="Be brief.").read_text().splitlines()]
    assert messages[1]["messages"] == [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "Translate to French.\n\nHello."},
                                       {"role": "assistant", "content": "Bonjour."}]
    alpaca = [json.loads(x) for x in results.export(tmp_path / "a.jsonl", "alpaca").read_text().splitlines()]
    assert alpaca[1] == {"instruction": "Translate to French.", "input": "Hello.", "output": "Bonjour."}
    assert results.to_pandas().shape == (2, 8) and len(results.by_method("template")) == 1
    with pytest.raises(DifflabError, match="format must be one of"):
        results.export(tmp_path / "x.jsonl", "sharegpt")


def test_split_is_seeded_and_sized():
    results = Results(ex(f"Instruction number {i}.") for i in range(50))
    train, val = results.split(0.2, seed=3)
    assert len(train) == 40 and len(val) == 10 and not {e.id for e in train} & {e.id for e in val}
    assert [e.id for e in val] == [e.id for e in results.split(0.2, seed=3)[1]]
    assert [e.id for e in val] != [e.id for e in results.split(0.2, seed=4)[1]]


def test_a_bad_record_names_file_record_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "ok", "output": "x"}\n{"instruction": "", "output": "y"}\n')
    with pytest.raises(DifflabError, match=r"bad.jsonl: record 2: field 'instruction' must be a non-empty string"):
        Results.load(path)


# --------------------------------------------------------------------------- filters


WORDS = ("river mountain cloud engine garden violin market planet window ladder candle bridge forest "
         "signal harbor pencil castle desert rocket meadow").split()


def sentence(rng, n=40):
    return " ".join(rng.choice(WORDS) + str(rng.randint(0, 99)) for _ in range(n))


def test_quality_filter_removes_by_length_exact_and_near_duplicates_and_reports():
    rng = random.Random(0)
    originals = [sentence(rng) for _ in range(300)]
    near = []
    for text in originals[:40]:  # one word changed in a 40-word instruction: Jaccard of 3-shingles ~0.85
        words = text.split()
        words[20] = "zebra"
        near.append(" ".join(words))
    examples = [ex(t) for t in originals] + [ex(t) for t in near]
    examples += [ex(originals[5].upper() + "!!!")]                 # exact duplicate once normalized
    examples += [ex("Too short"), ex("A fine instruction here.", output="")]
    kept, report = filters.QualityFilter().apply(examples)
    assert report.removed == {"length": 2, "exact_duplicate": 1, "near_duplicate": 40}
    assert report.input == 343 and report.kept == 300 == len(kept)
    assert [e.instruction for e in kept] == originals                # the first occurrence is the one kept


def test_custom_filters_and_empty_results_warn_but_never_fail(caplog):
    qf = filters.QualityFilter(near_dup_threshold=None).register("no_urls", lambda e: "http" not in e.output)
    kept, report = qf.apply([ex("Give me a link please.", "http://x.org"), ex("Say hello to me.", "Hello!")])
    assert len(kept) == 1 and report.removed["no_urls"] == 1
    with pytest.raises(DifflabError, match="already registered"):
        qf.register("no_urls", lambda e: True)
    kept, report = qf.apply([])
    assert len(kept) == 0 and report.warnings == ["no examples to filter"]
    kept, report = qf.apply([ex("x")])
    assert len(kept) == 0 and report.warnings == ["all 1 examples were filtered out"]


def test_rouge_l_novelty_is_the_self_instruct_rule():
    novelty = filters.RougeNovelty(0.7, kept=["Write a poem about the sea."])
    assert novelty.add_if_novel("Write a poem about the ocean.") == (False, pytest.approx(5 / 6))
    accepted, score = novelty.add_if_novel("List three prime numbers.")
    assert accepted and score < 0.3 and len(novelty.kept) == 2


# --------------------------------------------------------------------------- privacy


PII_CASES = [
    # (text, expected redaction)
    ("Mail jane.doe+ml@example.co.uk today", "Mail [EMAIL] today"),
    ("Call +1 415-555-2671 now", "Call [PHONE] now"),
    ("Ring +44 20 7946 0958 tomorrow", "Ring [PHONE] tomorrow"),
    ("Card 4111 1111 1111 1111 expires", "Card [CREDIT_CARD] expires"),
    ("Card 4111-1111-1111-1112 expires", "Card 4111-1111-1111-1112 expires"),      # fails Luhn
    ("Server 192.168.10.4 is down", "Server [IP] is down"),
    ("Version 300.1.2.9 released", "Version 300.1.2.9 released"),                  # not an address
    ("Link-local fe80::1ff:fe23:4567:890a here", "Link-local [IP] here"),
    ("Pay to DE89 3704 0044 0532 0130 00 please", "Pay to [IBAN] please"),
    ("Pay to DE89 3704 0044 0532 0130 01 please", "Pay to DE89 3704 0044 0532 0130 01 please"),  # bad check digits
    ("SSN 536-90-4399 on file", "SSN [NATIONAL_ID] on file"),
    ("SSN 666-12-3456 is never issued", "SSN 666-12-3456 is never issued"),
    ("DNI 12345678Z vale", "DNI [NATIONAL_ID] vale"),
    ("DNI 12345678A no vale", "DNI 12345678A no vale"),
    ("CF RSSMRA85T10A562S ok", "CF [NATIONAL_ID] ok"),
    ("The year 2024 had 365 days and order 12345678 shipped", "The year 2024 had 365 days and order 12345678 shipped"),
    ("", ""),
]


@pytest.mark.parametrize("text, expected", PII_CASES)
def test_pii_redaction_table(text, expected):
    redacted, counts = privacy.Redactor().redact(text)
    assert redacted == expected
    assert sum(counts.values()) == expected.count("[")


def test_redacting_results_never_keeps_the_original_and_counts():
    results = Results([ex("Email bob@corp.com about card 4111111111111111", "Done, bob@corp.com."),
                       ex("Say hi to everyone.", "Hi!")])
    clean, report = privacy.redact_results(results, privacy.Redactor(types=("email", "credit_card")))
    assert report == {"examples": 2, "examples_with_pii": 1, "redacted": {"email": 2, "credit_card": 1}}
    text = json.dumps([e.to_dict() for e in clean])
    assert "bob@corp.com" not in text and "4111111111111111" not in text
    assert clean[0].id != results[0].id and clean[0].meta["pii_redacted"] == {"email": 2, "credit_card": 1}
    with pytest.raises(DifflabError, match="unknown PII type"):
        privacy.Redactor(types=("passport",))


# --------------------------------------------------------------------------- metrics


def test_distinct_n_self_bleu_and_vendi():
    assert metrics.distinct_n(["a b a b", "a b c"], ns=(1, 2)) == {"distinct_1": round(3 / 7, 4), "distinct_2": 0.6}
    same = ["the cat sat on the mat today"] * 5
    varied = ["the cat sat on the mat today", "quantum fields obey gauge symmetry", "bake bread at dawn slowly",
              "rivers carve canyons over ages", "violins need rosin for grip"]
    assert metrics.self_bleu(same) == 1.0 and metrics.self_bleu(varied) < 0.1
    assert metrics.vendi_score(np.ones((6, 4))) == pytest.approx(1.0)
    assert metrics.vendi_score(np.eye(5)) == pytest.approx(5.0)


def test_embedding_diversity_readability_and_topics():
    close = ["A cat sleeps on the sofa.", "A kitten naps on the couch.", "The cat is asleep on the sofa."]
    far = ["A cat sleeps on the sofa.", "Interest rates rose by half a point.", "Photosynthesis makes sugar."]
    low, high = metrics.embedding_diversity(close), metrics.embedding_diversity(far)
    assert low["mean_pairwise_cosine_distance"] < high["mean_pairwise_cosine_distance"]
    assert low["vendi_score"] < high["vendi_score"] <= 3.0
    easy = metrics.readability(["The cat sat. The dog ran. We had fun."])
    hard = metrics.readability(["Notwithstanding considerable methodological heterogeneity, comprehensive "
                                "epidemiological investigations consistently demonstrated statistically "
                                "significant associations."])
    assert easy["flesch_reading_ease"] > hard["flesch_reading_ease"]
    texts = [f"The oven bakes bread and cake at {i} degrees" for i in range(10)] + \
            [f"The rocket orbits the planet and moon at {i} kilometres" for i in range(10)]
    found = metrics.topics(texts, n_topics=2)
    groups = {tuple(found["assignment"][:10]), tuple(found["assignment"][10:])}
    assert found["n_topics"] == 2 and len({g[0] for g in groups}) == 2 and all(len(set(g)) == 1 for g in groups)


def test_perplexity_under_a_local_model_and_skipped_metrics(tiny_model_dir, monkeypatch):
    results = Results([ex("Say a word.", "zebra zebra zebra"), ex("Count to three.", "one two three")])
    report = metrics.compute(results, ["basic", "distinct", "perplexity"], perplexity_model=str(tiny_model_dir))
    assert len(report["perplexity"]["per_example"]) == 2 and report["perplexity"]["mean"] > 1.0
    assert report["basic"]["examples"] == 2 and report["basic"]["output"]["words"]["mean"] == 3
    real_find_spec = metrics.importlib.util.find_spec
    monkeypatch.setattr(metrics.importlib.util, "find_spec", lambda name: None if name == "textstat" else real_find_spec(name))
    report = metrics.compute(results, ["readability", "perplexity"])
    assert "textstat" in report["skipped"]["readability"] and "readability" not in report
    assert report["skipped"]["perplexity"] == "no perplexity model configured"
