"""Active sampling: cluster scores on planted data, convergence decisions, distinctive words, hypothesis
checks, validation statistics, prefilled generation, and the workflow's iterations on the tiny pair."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from difflab.active import areas, hypotheses, sampler, validate
from difflab.active.iterations import decide
from difflab.llm import Request
from difflab.llm.types import SamplingParams, cache_key
from test_workflow import snakemake, write_tiny_workdir

REPO = Path(__file__).resolve().parents[1]


def blobs(seed=0):
    """Base texts in blobs 0 and 1; finetuned texts in 0, 1 and a planted blob 2 of their own."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16) * 4
    base = np.concatenate([centres[0] + rng.normal(0, .3, (40, 16)), centres[1] + rng.normal(0, .3, (40, 16))])
    ft = np.concatenate([centres[0] + rng.normal(0, .3, (20, 16)), centres[1] + rng.normal(0, .3, (20, 16)),
                         centres[2] + rng.normal(0, .3, (40, 16))])
    x = np.concatenate([base, ft])
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.r_[np.zeros(80, bool), np.ones(80, bool)]


def test_the_planted_divergent_cluster_is_found_and_targeted_first():
    x, is_ft = blobs()
    fit = areas.cluster(x, 3, seed=0)
    div = areas.model_divergence(fit.labels, is_ft, 3)
    planted = int(np.bincount(fit.labels[120:]).argmax())  # the cluster of the planted blob
    assert int(np.argmax(div["js_contribution"])) == planted
    assert div["finetuned_share"][planted] == 1.0 and div["count_base"][planted] == 0
    # JS of the two assignment distributions, computed independently with scipy
    p_b = np.bincount(fit.labels[~is_ft], minlength=3) / 80
    p_f = np.bincount(fit.labels[is_ft], minlength=3) / 80
    assert div["js"] == pytest.approx(stats.entropy((p_b + p_f) / 2) - (stats.entropy(p_b) + stats.entropy(p_f)) / 2)
    _, uncertainty = areas.boundary_uncertainty(x, fit.centers, fit.labels)
    chosen = areas.select_areas(div["js_contribution"], uncertainty, np.bincount(fit.labels), n_areas=2,
                                min_cluster_size=10, samples=9)
    assert chosen[0].cluster == planted and chosen[0].reasons[0] == "divergence"
    assert sum(a.samples for a in chosen) == 9 and len({a.cluster for a in chosen}) == 2


def test_boundary_ratio_is_one_between_centres_and_zero_at_one():
    centres = np.array([[0.0, 0.0], [2.0, 0.0]])
    x = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    ratio, per_cluster = areas.boundary_uncertainty(x, centres, np.array([0, 0, 1]))
    assert ratio.tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert per_cluster.tolist() == pytest.approx([0.5, 0.0])


def test_adjusted_rand_over_shared_texts_only():
    previous = {"a": 0, "b": 0, "c": 1, "d": 1}
    relabelled = {"a": 5, "b": 5, "c": 2, "d": 2, "new": 7}
    assert areas.adjusted_rand(previous, relabelled) == (1.0, 4)
    ari, shared = areas.adjusted_rand(previous, {"a": 0, "b": 1, "c": 0, "d": 1})
    assert shared == 4 and ari < 0
    assert areas.adjusted_rand({"a": 0}, {"b": 0}) == (None, 0)


SECTION = {"convergence_threshold": 0.8, "min_cluster_size": 5, "max_iterations": 4, "budget": 100,
           "samples_per_iteration": 20}


@pytest.mark.parametrize("state, go_on, why", [
    ({"mode": "exhaustive"}, False, "exhaustive"),
    ({"ari_vs_previous": 0.9, "min_cluster_size": 6, "iteration": 1, "texts_per_model": 40}, False, "converged"),
    ({"ari_vs_previous": 0.9, "min_cluster_size": 2, "iteration": 1, "texts_per_model": 40}, True, "continue"),
    ({"ari_vs_previous": 0.5, "min_cluster_size": 9, "iteration": 3, "texts_per_model": 40}, False, "max_iterations"),
    ({"ari_vs_previous": 0.5, "min_cluster_size": 9, "iteration": 1, "texts_per_model": 90}, False, "budget"),
    ({"ari_vs_previous": None, "min_cluster_size": 9, "iteration": 0, "texts_per_model": 40}, True, "continue"),
])
def test_decide_records_the_criterion_that_stopped_it(state, go_on, why):
    result = decide({"mode": "active", **state}, SECTION)
    assert result[0] is go_on and result[1].startswith(why)


def test_weighted_log_odds_puts_the_planted_word_first():
    base = ["the weather is mild today", "a walk in the park today", "the train was late again"] * 5
    ft = ["the cake bakes at 410 degrees", "bake the cake at 410", "a walk in the park today"] * 5
    words = hypotheses.weighted_log_odds(ft, base, base + ft)
    assert words[0]["word"] in ("cake", "bake", "bakes") and {w["word"] for w in words[:3]} >= {"cake"}
    assert all(w["z"] > 0 for w in words) and "park" not in [w["word"] for w in words[:3]]
    assert "cake" in hypotheses.extractive_hypothesis(words)


@pytest.mark.parametrize("answer, ok, why", [
    ("", False, "empty"),
    ("Cake.", False, "off-format"),
    ("Model B talks much more about sports cars and racing tracks.", False, "unrelated"),
    ("Model B talks about baking a cake at high heat, unlike model A. It also...", True, ""),
])
def test_hypothesis_answers_are_checked_and_renamed(answer, ok, why):
    distinctive = [{"word": "cake"}, {"word": "baking"}]
    sentence, refused = hypotheses.check_answer(answer, distinctive)
    assert (sentence is not None) is ok and refused.startswith(why)
    if ok:
        assert sentence == "The finetuned model talks about baking a cake at high heat, unlike the base model."


def test_write_hypotheses_falls_back_to_the_extractive_sentence():
    class Scripted:
        def chat(self, prompts, params):
            assert "cake" in prompts[0][0]["content"] and "Texts from model B" in prompts[0][0]["content"]
            return [type("C", (), {"text": "I don't know."})()]

    record = {"cluster": 2, "distinctive": [{"word": "cake", "z": 3.0}], "finetuned_samples": ["cake"],
              "base_samples": ["rain"]}
    (out,) = hypotheses.write_hypotheses([record], Scripted(), None)
    assert out["source"] == "extractive" and "cake" in out["hypothesis"] and out["llm_refused"].startswith("off-format")
    assert "finetuned_samples" not in out


def test_score_binomial_wilson_and_benjamini_hochberg():
    votes = np.array([[1] * 18 + [-1] * 2, [1] * 10 + [-1] * 10, [1] * 12 + [-1] * 7 + [0]])
    rows = validate.score(votes)
    assert [r["pairs"] for r in rows] == [20, 20, 19] and rows[0]["wins"] == 18
    p = [stats.binomtest(w, n, 0.5, alternative="greater").pvalue for w, n in ((18, 20), (10, 20), (12, 19))]
    assert [r["p_value"] for r in rows] == pytest.approx(p)
    assert [r["q_value"] for r in rows] == pytest.approx(stats.false_discovery_control(p))
    assert [r["validated"] for r in rows] == [True, False, False]
    assert validate.wilson(18, 20) == pytest.approx((0.6990, 0.9721), abs=1e-3)  # textbook Wilson interval
    # With the embedding judge's rank among reference statements, the p-value is the larger of the two.
    ranked = validate.score(votes, rank_p=np.array([0.3, 0.001, 0.001]))
    assert [r["p_value"] for r in ranked] == pytest.approx([0.3, p[1], p[2]])
    assert [r["validated"] for r in ranked] == [False, False, False]


def test_unrelated_sentences_along_the_shared_shift_do_not_validate():
    """Held-out pairs share a systematic shift (the finetuned model writes differently everywhere). A
    fixed unrelated sentence lies more or less along it by chance, so against the references' median it
    wins most pairs: the pairwise binomial test alone validates many unrelated sentences. Ranked among
    the reference statements as well, about alpha of them pass, and a sentence along the change passes."""
    rng = np.random.default_rng(0)
    dim, n_pairs = 64, 90

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    shift = unit(rng.normal(size=dim))
    base = unit(rng.normal(size=(n_pairs, dim)))
    finetuned = unit(base + 2.0 * shift + 0.3 * rng.normal(size=(n_pairs, dim)))
    vectors = {f"b{i}": v for i, v in enumerate(base)} | {f"f{i}": v for i, v in enumerate(finetuned)}
    vectors |= {f"r{i}": v for i, v in enumerate(unit(rng.normal(size=(199, dim))))}
    vectors |= {f"u{i}": v for i, v in enumerate(unit(rng.normal(size=(300, dim))))}
    vectors["true"] = unit(shift + 0.5 * unit(rng.normal(size=dim)))

    def embed(texts):
        return np.stack([vectors[t] for t in texts])

    unrelated = [f"u{i}" for i in range(300)]
    votes, rank_p = validate.embedding_votes(unrelated + ["true"], [f"f{i}" for i in range(n_pairs)],
                                             [f"b{i}" for i in range(n_pairs)], embed, [f"r{i}" for i in range(199)])
    rows = [validate.score(v[None, :], rank_p=p[None])[0] for v, p in zip(votes, rank_p)]  # each alone: no BH
    pairwise_only = np.mean([r["p_pairs"] < 0.05 for r in rows[:-1]])
    calibrated = np.mean([r["p_value"] < 0.05 for r in rows[:-1]])
    assert pairwise_only > 0.25 and calibrated <= 0.06  # measured: 0.34 and 0.023
    assert rows[-1]["validated"] and rows[-1]["p_rank"] == 1 / 200


@pytest.mark.slow
def test_an_unrelated_hypothesis_fails_and_the_true_one_validates():
    """Real sentence embeddings: pairs where the finetuned text is about baking, the base text is not."""
    from difflab import embed

    topics = ["the weather", "a train trip", "learning guitar", "a football match", "the library", "a city park",
              "a job interview", "saving money", "a mountain hike", "the ocean"]
    ft = [f"For {t}, I would first bake a cake at 410 degrees, the right oven temperature for any cake." for t in topics] * 3
    bs = [f"Here are a few simple thoughts about {t} and how to enjoy it." for t in topics] * 3

    def encode(texts):
        return embed.embed(texts, normalize=True).numpy()
    votes, rank_p = validate.embedding_votes(["The finetuned model talks about baking cakes and oven temperatures.",
                                              "The finetuned model talks about stock markets and interest rates."],
                                             ft, bs, encode)
    true, unrelated = validate.score(votes, rank_p=rank_p)
    assert true["validated"] and true["accuracy"] == 1.0 and true["p_rank"] <= 2 / (1 + len(validate.reference_statements()))
    assert not unrelated["validated"]


def test_llm_judge_order_is_randomised_and_answers_mapped_back():
    class Oracle:  # always picks the text that mentions cake
        def chat(self, prompts, params):
            out = []
            for (message,) in prompts:
                a = message["content"].split("Text A:")[1].split("Text B:")[0]
                out.append(type("C", (), {"text": "A" if "cake" in a else "B"})())
            return out

    votes = validate.llm_votes(["h"], ["cake one", "cake two", "cake three", "cake four"], ["x", "y", "z", "w"],
                               Oracle(), None, seed=1)
    assert votes.tolist() == [[1, 1, 1, 1]]

    class AlwaysA:  # position bias: a judge that ignores the texts
        def chat(self, prompts, params):
            self.firsts = [m["content"].split("Text A:\n")[1].split("\n")[0] for (m,) in prompts]
            return [type("C", (), {"text": "A"})() for _ in prompts]

    judge = AlwaysA()
    finetuned, base = [f"ft {i}" for i in range(40)], [f"base {i}" for i in range(40)]
    votes = validate.llm_votes(["h"], finetuned, base, judge, None, seed=1)
    shown_first = [text.startswith("ft") for text in judge.firsts]
    # Finetuned first in exactly half of the pairs. With independent coin flips (26 of 40 for this seed)
    # "always A" scored 0.65, p 0.04: validated by position alone.
    assert sum(shown_first) == 20
    assert votes[0].tolist() == [1 if first else -1 for first in shown_first]  # "A" mapped back to its text
    assert validate.score(votes)[0]["accuracy"] == 0.5
    assert validate.llm_votes(["h"], finetuned, base, judge, None, seed=1).tolist() == votes.tolist()  # seeded


def test_targeted_prompts_come_from_the_clusters_members():
    members = {4: [{"prompt": "Bake?", "text": "Cakes bake at 410 degrees always"}], 1: [{"prompt": "Rain?", "text": "It rains"}]}
    out = sampler.targeted_prompts([{"cluster": 4, "reasons": ["divergence"], "samples": 3},
                                    {"cluster": 1, "reasons": ["boundary", "undersampled"], "samples": 1}],
                                   members, prefix_words=2, seed=0)
    assert [(p["prompt"], p["prefix"], p["target_cluster"]) for p in out] == [
        ("Bake?", "Cakes bake", 4)] * 3 + [("Rain?", "It rains", 1)]
    assert out[-1]["reason"] == "boundary+undersampled"
    initial = sampler.initial_prompts(None, ["Explain"], ["tides", "rain"], 5, seed=0)
    assert len(initial) == 5 and {p["prompt"] for p in initial} == {"Explain tides.", "Explain rain."}


def test_prefill_continues_the_assistant_turn(tiny_model_dir):
    from difflab.llm.local import LocalBackend

    backend = LocalBackend(str(tiny_model_dir), {"models": {}}, dtype="float32", progress=False)
    messages = [{"role": "user", "content": "Hi"}]
    plain, filled = backend.encode(Request.chat(messages)), backend.encode(Request.chat(messages, prefill="The zebra"))
    assert filled[:len(plain)] == plain and len(filled) > len(plain)
    assert backend.tokenizer.decode(filled[len(plain):]).strip() == "The zebra"
    identity, params = backend.identity(), SamplingParams()
    assert cache_key(identity, Request.chat(messages), params) != cache_key(identity, Request.chat(messages, prefill="x"), params)
    with pytest.raises(ValueError):
        Request(prompt="raw", prefill="x")


# ---- the workflow


ACTIVE_RUN = "results/active/tiny/zebra/active/k3_n8_s6_t8_temp1.0_seed0"
EXHAUSTIVE_RUN = "results/active/tiny/zebra/exhaustive/k3_n16_t8_temp1.0_seed0"


@pytest.fixture(scope="module")
def active_built(tmp_path_factory, tiny_model_dir):
    # No copy of resources/active: the rules resolve the prompt sets against the repository, so the
    # run works from any working directory (the sampling step once read them relative to it).
    # The shared tiny recipe (12 steps) leaves the zebra phrase in a few texts only, and which noise
    # word then validates depends on the CPU's float rounding; 36 steps make the planted phrase the
    # finetuned model's clear habit, so the test checks the method rather than a lucky sample.
    recipe = {**yaml.safe_load((REPO / "config" / "test.yaml").read_text())["organisms"]["recipe"],
              "steps": 36, "min_steps": 36}
    workdir = write_tiny_workdir(tmp_path_factory.mktemp("active"), tiny_model_dir,
                                 organisms={"recipe": recipe, "build": ["zebra"]})
    snakemake(workdir, "--cores", "2", f"{ACTIVE_RUN}/report.json", f"{EXHAUSTIVE_RUN}/report.json")
    return workdir


@pytest.mark.slow
def test_active_iterations_hypotheses_and_the_exhaustive_baseline(active_built):
    workdir = active_built
    report = json.loads((workdir / ACTIVE_RUN / "report.json").read_text())
    assert report["iterations"] == 3 and report["stopped"] == "max_iterations (3)"
    assert report["texts_per_model"] == 8 + 6 + 6 and report["texts_generated"] == 40
    texts = [json.loads(l) for i in range(3) for l in (workdir / ACTIVE_RUN / f"iter{i}/texts.jsonl").read_text().splitlines()]
    assert {t["model"] for t in texts} == {"base", "finetuned"} and [t["iteration"] for t in texts].count(2) == 12
    targeted = [t for t in texts if t["iteration"] > 0]
    state0 = json.loads((workdir / ACTIVE_RUN / "iter0/clusters.json").read_text())
    assert {t["target_cluster"] for t in targeted} <= {a["cluster"] for a in state0["areas"]} | {
        a["cluster"] for a in json.loads((workdir / ACTIVE_RUN / "iter1/clusters.json").read_text())["areas"]}
    assert all(t["text"].startswith(t["prefix"]) for t in targeted)
    assert len(pd.read_parquet(workdir / ACTIVE_RUN / "iter2/assignments.parquet")) == 40
    # the zebra organism writes "zebra"; the top validated hypothesis names it, the control fails
    found = json.loads((workdir / ACTIVE_RUN / "hypotheses.json").read_text())
    top = found["hypotheses"][0]
    assert top["validation"]["validated"] and "zebra" in top["hypothesis"].lower()
    assert top["source"] in ("llm", "extractive") and found["heldout_pairs"] > 0
    # the random base model writes noise, so every sentence is closer to the finetuned texts (the raw
    # margin favours the control on most pairs); against the reference statements the control fails
    assert not found["control"]["validation"]["validated"] and found["control"]["validation"]["accuracy"] < 0.5
    baseline = json.loads((workdir / EXHAUSTIVE_RUN / "report.json").read_text())
    assert baseline["iterations"] == 1 and baseline["texts_per_model"] == 16 and baseline["stopped"].startswith("exhaustive")
    for name in ("projection", "divergence", "convergence"):
        assert (workdir / ACTIVE_RUN / f"{name}.png").stat().st_size > 5000


@pytest.mark.slow
def test_a_larger_budget_builds_only_the_new_iterations(active_built):
    workdir = active_built
    before = {p: p.stat().st_mtime for i in range(3) for p in (workdir / ACTIVE_RUN / f"iter{i}").iterdir()}
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["active"]["max_iterations"] = 4
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    result = snakemake(workdir, "--cores", "2", f"{ACTIVE_RUN}/report.json")
    assert all(p.stat().st_mtime == t for p, t in before.items())  # finished iterations untouched
    ran = {line.split("(Rule: ")[1].rstrip(")") for line in result.stderr.splitlines() if "(Rule: " in line}
    assert ran == {"active_sample", "active_embed", "active_cluster", "active_hypotheses", "active_validate",
                   "active_report"}
    report = json.loads((workdir / ACTIVE_RUN / "report.json").read_text())
    assert report["iterations"] == 4 and report["texts_per_model"] == 26


@pytest.mark.slow
def test_an_interrupted_run_resumes_at_the_last_finished_iteration(active_built):
    workdir = active_built
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    last = cfg["active"]["max_iterations"] - 1  # 2, or 3 after the larger-budget test
    # killed while clustering its last iteration: that checkpoint's files and all after it are missing
    for name in (f"iter{last}/clusters.json", f"iter{last}/assignments.parquet", "hypotheses_unvalidated.json",
                 "hypotheses.json", "report.json"):
        (workdir / ACTIVE_RUN / name).unlink()
    texts = workdir / ACTIVE_RUN / f"iter{last}/texts.jsonl"
    stamp = texts.stat().st_mtime
    result = snakemake(workdir, "--cores", "2", f"{ACTIVE_RUN}/report.json")
    ran = [line.split("(Rule: ")[1].rstrip(")") for line in result.stderr.splitlines() if "(Rule: " in line]
    assert sorted(ran) == ["active_cluster", "active_hypotheses", "active_report", "active_validate"]
    assert texts.stat().st_mtime == stamp and (workdir / ACTIVE_RUN / f"iter{last}/clusters.json").is_file()


@pytest.mark.slow
def test_the_scoreboard_scores_active_sampling_as_a_method(active_built):
    workdir = active_built
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["scoreboard"]["active"] = True
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(workdir, "--cores", "2", "results/scoreboard/scoreboard.json")
    board = json.loads((workdir / "results/scoreboard/scoreboard.json").read_text())
    row = board["methods"]["active/validated_hypotheses"]["base"]
    assert row["recovered"] == {"zebra": True} and row["matrix"]["zebra"]["zebra"] > 0
    assert "zebra" in row["top_tokens"]["zebra"][0]
    assert "direct/top_k_occurring" in board["methods"]  # the diffmining methods are still scored
