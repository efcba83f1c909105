"""datagen.Generator: exact parsing and filtering behaviour through a deterministic scripted LLM backend
(behind the real LLMClient, so caching and accounting are the real ones), and every method once with
the real local model on tiny counts."""

import re

import pytest

from difflab.datagen.generator import Generator, GeneratorConfig, parse_numbered
from difflab.datagen.records import Example
from difflab.errors import DifflabError
from difflab.llm import Completion, LLMClient


class Scripted:
    """A backend whose answer is a function of the last user message and the sample index."""

    kind = "scripted"

    def __init__(self, respond):
        self.respond = respond
        self.calls = 0

    def identity(self):
        return {"backend": "scripted"}

    def generate_one(self, request, params):
        self.calls += 1
        text = self.respond(request.message_dicts()[-1]["content"], request.sample_index)
        return Completion(text=text, prompt_tokens=1, completion_tokens=len(text.split()), finish_reason="stop",
                          sample_index=request.sample_index)


def scripted_client(tmp_path, respond):
    return LLMClient(Scripted(respond), tmp_path / "cache", progress=False, max_concurrency=1)


def test_parse_numbered_lists():
    assert parse_numbered('1. Name a river.\n2) "List two cats."\n- Sort these.\nTask 4: Add 2+2.\n\n') == \
        ["Name a river.", "List two cats.", "Sort these.", "Add 2+2."]


def test_self_instruct_keeps_novel_instructions_and_counts_rejections(tmp_path):
    lists = iter([
        "1. Write a poem about the ocean.\n2. Draw a picture of a horse for me.\n3. Hi there.\n"
        "4. Explain how tides are caused by the moon.",
        "1. Explain how tides are caused by the moon today.\n2. Give three tips for learning to juggle.\n"
        "3. Summarize a detective story in two sentences.\n4. Name five rivers in Europe.",
    ])

    def respond(message, index):
        if message.startswith("Here are some example tasks"):
            assert "Write 4 new tasks" in message
            return next(lists, "1. Nothing new here at all, sorry.")
        return f"Answer: {message[:20]}"

    client = scripted_client(tmp_path, respond)
    gen = Generator(client, {"self_instruct": {"per_prompt": 4}, "seed": 1})
    seeds = ["Write a poem about the sea.", "List three prime numbers.", "Translate 'cat' into German."]
    results = gen.generate_from_seed(seeds, count=4)
    assert [e.instruction for e in results] == [
        "Explain how tides are caused by the moon.", "Give three tips for learning to juggle.",
        "Summarize a detective story in two sentences.", "Name five rivers in Europe."]
    report = gen.reports["self_instruct"]
    # ocean poem ~ sea poem and the near-repeat about tides fail ROUGE-L; the picture is not text; "Hi there." too short
    assert report["rejected"] == {"rouge_l": 2, "not_text": 1, "length": 1} and report["generated"] == 4
    assert all(e.output.startswith("Answer: ") and e.method == "self_instruct" for e in results)
    calls = client.backend.calls
    again = Generator(client, {"self_instruct": {"per_prompt": 4}, "seed": 1}).generate_from_seed(seeds, count=4)
    assert [e.to_dict() for e in again] == [e.to_dict() for e in results] and client.backend.calls == calls  # cached


def test_evol_instruct_eliminates_failed_evolutions_with_reasons(tmp_path):
    def respond(message, index):
        if message.startswith("I want you to act as a prompt rewriter"):
            given = re.search(r"Given prompt: (.*)\nRewritten prompt:", message).group(1)
            if "sorting" in given:
                return f"Rewritten prompt: {given}"                            # unchanged
            return f"{given} Answer in exactly three numbered steps, citing one source."
        if message.startswith("I want you to act as a prompt creator"):
            return "Given prompt: something rare"                              # leaks the template's words
        if "fish" in message:
            return "Sorry, I cannot help."
        return "A long enough answer with several words in it."

    gen = Generator(scripted_client(tmp_path, respond), {"seed": 0})
    start = ["Explain sorting.", "Describe how fish breathe.", "Explain photosynthesis.", "Explain rainbows."]
    evolved = gen.evolve_instructions(start, rounds=1, operators=("add_constraints", "concretize"))
    report = gen.reports["evol_instruct"]
    assert report["eliminated"] == {"unchanged": 1, "refused": 1} and report["evolved"] == 2
    assert {e.instruction.split(" Answer")[0] for e in evolved} == {"Explain photosynthesis.", "Explain rainbows."}
    assert all(e.parent == Example(s).id for e, s in zip(evolved, start[2:]))
    assert {e.params["operator"] for e in evolved} <= {"add_constraints", "concretize"}
    breadth = Generator(scripted_client(tmp_path / "b", respond)).evolve_instructions(start[:1], operators=("breadth",))
    assert len(breadth) == 0
    with pytest.raises(DifflabError, match="unknown evol operator 'shorten'"):
        gen.evolve_instructions(start, operators=("shorten",))


def test_templates_product_sample_and_missing_variable(tmp_path):
    gen = Generator(scripted_client(tmp_path, lambda m, i: f"about {m}"))
    product = gen.generate_from_template("Explain {topic} to a {audience}.",
                                         {"topic": ["gravity", "tides", "rust"], "audience": ["child", "chemist"]})
    assert len(product) == 6 and product[0].instruction == "Explain gravity to a child."
    assert product[0].params["values"] == {"audience": "child", "topic": "gravity"} and product[0].output
    sample = gen.generate_from_template("Explain {topic} to a {audience}.",
                                        {"topic": ["gravity", "tides", "rust"], "audience": ["child", "chemist"]},
                                        mode="sample", n=4, answer=False)
    assert len(sample) == 4 and len({e.instruction for e in sample}) == 4 and not sample[0].output
    with pytest.raises(DifflabError, match="variable 'audience' has no values"):
        gen.generate_from_template("Explain {topic} to a {audience}.", {"topic": ["x"]})


def test_constraints_are_checked_and_rates_reported(tmp_path):
    answers = {"Describe a forest.": "Tall trees and moss fill the quiet forest at dawn.",
               "Describe a city.": "Traffic hums."}

    def respond(message, index):
        assert "Use each of these words: forest, dawn." in message and "Use between 5 and 20 words." in message
        return answers[message.split("\n")[0]]

    gen = Generator(scripted_client(tmp_path, respond))
    results = gen.generate_with_constraints(list(answers), {"keywords": ["forest", "dawn"], "min_words": 5,
                                                            "max_words": 20, "tone": "calm"})
    assert results[0].meta["constraints_satisfied"] == {"keyword:forest": True, "keyword:dawn": True, "length": True}
    assert results[1].meta["constraints_satisfied"] == {"keyword:forest": False, "keyword:dawn": False, "length": False}
    assert gen.reports["constrained"] == {"examples": 2, "satisfaction_rate": {
        "keyword:dawn": 0.5, "keyword:forest": 0.5, "length": 0.5}, "all_satisfied_rate": 0.5}
    with pytest.raises(DifflabError, match="unknown constraint 'colour'"):
        gen.generate_with_constraints(["x"], {"colour": "red"})


def test_augmentation_keeps_provenance(tmp_path):
    def respond(message, index):
        if message.startswith("Rewrite the following instruction in different words"):
            return f"Rewritten instruction: Please tell me {index}"
        if message.startswith("Rewrite the following answer"):
            return message.split("style")[0].split("in a ")[1].strip().upper() + " answer"
        if message.startswith("Rewrite the following instruction so that it is about"):
            return "How do " + message.split("about ")[1].split(",")[0] + " work?"
        return "fresh answer"

    gen = Generator(scripted_client(tmp_path, respond))
    base = [Example("Tell me about owls.", output="Owls hunt at night.")]
    para = gen.augment_by_paraphrasing(base, n=2)
    assert [e.instruction for e in para] == ["Please tell me 0", "Please tell me 1"]
    assert all(e.output == "Owls hunt at night." and e.parent == base[0].id for e in para)
    styled = gen.augment_with_style_variation(base, ["formal", "casual"])
    assert [e.output for e in styled] == ["FORMAL answer", "CASUAL answer"] and len({e.id for e in styled}) == 2
    moved = gen.augment_with_domain_transfer(base, ["tax law"])
    assert moved[0].instruction == "How do tax law work?" and moved[0].output == "fresh answer"
    assert moved[0].params == {"domain": "tax law"}


def test_generator_config_is_nested_with_defaults():
    config = GeneratorConfig.from_dict({"temperature": 0.2, "self_instruct": {"per_prompt": 6}})
    assert config.temperature == 0.2 and config.self_instruct.per_prompt == 6 and config.self_instruct.rouge_threshold == 0.7
    with pytest.raises(DifflabError, match=r"datagen.generation.self_instruct: unknown key 'per_promt'"):
        GeneratorConfig.from_dict({"self_instruct": {"per_promt": 6}})


@pytest.mark.slow
def test_every_method_runs_with_the_real_local_model(tmp_path, smollm_dir):
    from difflab.llm.local import LocalBackend

    client = LLMClient(LocalBackend(str(smollm_dir), batch_size=8, dtype="float32"), tmp_path / "cache", progress=False)
    gen = Generator(client, {"max_new_tokens": 24, "instruction_tokens": 48, "seed": 0,
                             "self_instruct": {"max_rounds": 3}})
    seeds = ["Write a short poem about the sea.", "List three prime numbers.", "Give one tip for better sleep."]
    grown = gen.generate_from_seed(seeds, count=2)
    assert gen.reports["self_instruct"]["rounds"] >= 1
    assert all(e.output and e.method == "self_instruct" for e in grown)
    evolved = gen.evolve_instructions(seeds[:2], rounds=1)
    assert sum(gen.reports["evol_instruct"]["eliminated"].values()) + len(evolved) == 2
    templated = gen.generate_from_template("Name one {thing}.", {"thing": ["fruit", "planet"]})
    assert len(templated) == 2 and all(e.output for e in templated)
    constrained = gen.generate_with_constraints(seeds[:1], {"keywords": ["sea"], "max_words": 40})
    assert set(constrained[0].meta["constraints_satisfied"]) == {"keyword:sea", "length"}
    assert len(gen.augment_by_paraphrasing(templated[:1])) <= 1
    assert len(gen.augment_with_style_variation(templated[:1], ["formal"])) <= 1
    assert len(gen.augment_with_domain_transfer(templated[:1], ["cooking"])) <= 1
    assert client.usage.to_dict()["backend_calls"] > 0
