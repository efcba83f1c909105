"""libgen with a deterministic scripted LLM (exact prompts in, canned answers out) behind the real
LLMClient: the summarization hierarchy on 1, 7, 100 and 1,000 instructions, token-cut batches, the
repair loop, scoring on hand-made boards, and the whole pipeline on the shipped hexgrid domain, where
a scripted model that uses what the docs offer must score what the sandbox measures."""

import json
import re
from pathlib import Path

import pytest

from difflab import config as difflab_config
from difflab import io
from difflab.errors import DifflabError
from difflab.libgen import api, hierarchy, prompts, score, stages
from difflab.libgen.domain import Domain
from difflab.libgen.sandbox import Sandbox
from difflab.llm import Completion, LLMClient, SamplingParams

REPO = Path(__file__).resolve().parents[1]
HEXGRID = REPO / "resources/libgen/hexgrid"


class Scripted:
    """Backend answering `respond(system, user)`; it records every prompt it was sent."""

    kind = "scripted"

    def __init__(self, respond, context_tokens=8192):
        self.respond = respond
        self.context_tokens = context_tokens
        self.prompts = []

    def identity(self):
        return {"backend": "scripted"}

    def describe(self):
        return {"backend": "scripted"}

    def count_tokens(self, text):
        return len(text.split())

    def generate_one(self, request, params):
        messages = request.message_dicts()
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = messages[-1]["content"]
        self.prompts.append(user)
        text = self.respond(system, user)
        return Completion(text=text, prompt_tokens=self.count_tokens(system + user),
                          completion_tokens=self.count_tokens(text), finish_reason="stop")


def client_for(respond, context_tokens=8192, cache=None):
    return LLMClient(Scripted(respond, context_tokens), cache, progress=False, max_concurrency=4)


def default_settings(**overrides) -> dict:
    cfg = difflab_config.load()
    return difflab_config.deep_merge(cfg["libgen"]["settings"], overrides)


# ---------------------------------------------------------------------------- stage 1 hierarchy
def summarize(system, user):
    if user.startswith("The foundation library"):
        n = int(re.search(r"Below are (\d+) tasks", user).group(1))
        return f"- operation for {n} tasks"
    n = int(re.search(r"Below are (\d+) summaries", user).group(1))
    return f"- merged {n} summaries"


@pytest.mark.parametrize("count, depth, per_level", [(1, 1, [1]), (7, 1, [1]), (100, 2, [10, 1]),
                                                      (1000, 3, [100, 10, 1])])
def test_hierarchy_depth_and_coverage(count, depth, per_level):
    client = client_for(summarize)
    discovery = hierarchy.Discovery(
        client, SamplingParams(max_new_tokens=32), batch_size=10, meta_batch_size=10,
        batch_prompt=lambda items: prompts.BATCH.format(foundation="hexgrid", api="Tile", n=len(items),
                                                        tasks=prompts.numbered(items)),
        meta_prompt=lambda items: prompts.META.format(n=len(items), summaries=prompts.numbered(items)))
    ids = [f"t{i}" for i in range(count)]
    levels = discovery.run([(i, f"Draw shape number {i}.") for i in ids])
    assert len(levels) == depth and [len(level) for level in levels] == per_level
    cover = hierarchy.coverage(levels, ids)
    assert cover["complete"] and cover["read_twice"] == 0 and cover["reach_top"] == count
    assert sorted(i for s in levels[0] for i in s.members) == sorted(ids)
    # exact prompts in: the first batch holds the first min(10, count) instructions, numbered
    first = client.backend.prompts[0]
    assert first == prompts.BATCH.format(foundation="hexgrid", api="Tile", n=min(10, count),
                                         tasks=prompts.numbered(f"Draw shape number t{i}." for i in range(min(10, count))))
    assert client.usage.requests == sum(per_level)  # (identical meta prompts are generated once)


def test_batches_are_cut_to_the_context_of_a_small_model():
    client = client_for(summarize, context_tokens=120)
    params = SamplingParams(max_new_tokens=20)
    discovery = hierarchy.Discovery(
        client, params, batch_size=100, meta_batch_size=10,
        batch_prompt=lambda items: prompts.BATCH.format(foundation="hexgrid", api="Tile", n=len(items),
                                                        tasks=prompts.numbered(items)),
        meta_prompt=lambda items: prompts.META.format(n=len(items), summaries=prompts.numbered(items)))
    instructions = [(f"t{i}", "Paint a long line of several red tiles across row number " + str(i)) for i in range(30)]
    levels = discovery.run(instructions)
    sizes = [len(s.members) for s in levels[0]]
    assert max(sizes) < 30 and sum(sizes) == 30 and len(sizes) > 1
    for prompt in client.backend.prompts:
        assert client.count_tokens(prompt) + params.max_new_tokens <= 120
    assert hierarchy.coverage(levels, [i for i, _ in instructions])["complete"]
    with pytest.raises(DifflabError, match="instruction 1 needs"):
        discovery.run([("x", "word " * 500)])


# ---------------------------------------------------------------------------- parsing and scoring
def test_proposal_parsing_tolerates_loose_markdown():
    text = ("Intro\n## module `shapes`\n```python\ndef draw_line(start: Tile, direction: str, length: int, color: str):\n"
            "def ring(center, radius, color='red') -> Shape:\n```\n### Module: fills\n- `def fill_row(row, color)`\n"
            "def draw_line(x):\n## Notes\nnone\n")
    modules = api.parse_proposal(text, reserved=("hexgrid",))
    assert [(m.name, [(s.name, s.params) for s in m.signatures]) for m in modules] == [
        ("shapes", [("draw_line", ["start", "direction", "length", "color"]), ("ring", ["center", "radius", "color"])]),
        ("fills", [("fill_row", ["row", "color"])])]
    assert api.parse_proposal("Lines, rings and fills would help.") == []


def test_scores_on_hand_made_boards():
    expected = [[0, 0, "red"], [0, 1, "red"], [1, 1, "blue"], [2, 2, "green"]]
    assert score.compare_states(expected, expected) == {"exact": True, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    half = score.compare_states(expected, [[0, 0, "red"], [0, 1, "red"], [5, 5, "red"], [1, 1, "green"]])
    assert half["exact"] is False and half["precision"] == 0.5 and half["recall"] == 0.5 and half["f1"] == 0.5
    assert score.compare_states(expected, [])["f1"] == 0.0 and score.compare_states(expected, None)["f1"] == 0.0
    assert score.compare_states([], [])["exact"] is True
    assert score.usability("from x import y\nfor i in range(3):\n    if i:\n        y(i)\n") == {"loc": 4, "complexity": 3}
    assert score.usability("def (:") == {"loc": None, "complexity": None}


# ---------------------------------------------------------------------------- the whole pipeline, scripted
LINE_CODE = '''from hexgrid import Tile


def draw_line(start, direction, length, color):
    tile = start
    for _ in range(length):
        tile.draw(color)
        tile = tile.neighbor(direction)
'''
RING_CODE = '''

def ring(center, radius, color):
    from hexgrid import current_game
    for tile in current_game().tiles():
        if tile.distance_to(center) == radius:
            tile.draw(color)
'''
DISK_CODE = '''from hexgrid import current_game


def fill_disk(center, radius, color):
    for tile in current_game().tiles():
        if tile.distance_to(center) <= radius:
            tile.draw(color)
'''
PROPOSAL = ("# hexlib\n## module `shapes`\nLines and rings.\n```python\ndef draw_line(start, direction, length, color):\n"
            "def ring(center, radius, color):\n```\n")


def params_of(solution):
    """What a capable model would read off an instruction, taken here from its reference program."""
    r, c = re.search(r"Tile\((\d+), (\d+)\)", solution).groups()
    color = re.search(r'draw\("(\w+)"\)', solution).group(1)
    return int(r), int(c), color


def make_model(domain):
    by_instruction = {t["instruction"]: t for t in domain.tasks()}

    def respond(system, user):
        if user.startswith("The foundation library"):
            return "- lines of tiles in a direction\n- rings around a tile\n- filled hexagons"
        if user.startswith("Below are"):
            return "- lines\n- rings\n- filled hexagons"
        if user.startswith("Design the API"):
            return "## module `shapes`\n```python\ndef draw_line(start, direction, length, color):\n```\n"
        if user.startswith("Here is the current API proposal"):
            return "Gaps:\n- rings\nRedundancies:\n- none\nRevised proposal:\n" + PROPOSAL
        if user.startswith("Write the Python module `hexlib/shapes.py`"):
            return f"```python\n{LINE_CODE}```"  # forgets ring: the smoke check must catch it
        if user.startswith("This module `hexlib/shapes.py` failed its check"):
            assert "hexlib.shapes.ring is not defined" in user
            return f"```python\n{LINE_CODE}{RING_CODE}```"
        if user.startswith("Write the Python module `hexlib/extension1.py`"):
            return f"```python\n{DISK_CODE}```"
        if user.startswith("Write a short usage guide"):
            return "draw_line draws a line; ring draws a ring."
        if user.startswith("The package `hexlib`"):
            if "fill_disk" in user:
                return "Nothing new is needed."
            return "## module `extension1`\n```python\ndef fill_disk(center, radius, color):\n```"
        if user.startswith("Task: "):
            task = by_instruction[user[len("Task: "):].split("\nWrite the program.")[0]]
            family, solution = task["family"], task["solution"]
            head = "from hexlib import *\n\nwith Game() as game:\n    "
            if family == "line" and "draw_line(" in system:
                r, c, color = params_of(solution)
                n = int(re.search(r"range\((\d+)\)", solution).group(1))
                d = re.search(r'neighbor\("(\w+)"\)', solution).group(1)
                return f"```python\n{head}draw_line(Tile({r}, {c}), '{d}', {n}, '{color}')\n```"
            if family in ("ring", "disk"):
                r, c, color = params_of(solution)
                k = int(re.search(r"[=<]= (\d+)", solution).group(1))
                name = "ring" if family == "ring" else "fill_disk"
                if f"{name}(" in system:
                    return f"```python\n{head}{name}(Tile({r}, {c}), {k}, '{color}')\n```"
            if family == "single":
                return "```python\nfrom hexlib import *\nTile(0, 0).draw('red')\n```"  # no game: RuntimeError
            return "I do not know how to do that."
        raise AssertionError(f"unexpected prompt: {user[:80]}")

    return respond


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("libgen")
    settings = default_settings(batch_size=25, meta_batch_size=3, refinement_iterations=2, refinement_sample_size=8,
                                max_extension_cycles=3, workers=2)
    sandbox = Sandbox.from_config(settings["sandbox"])
    stage0 = root / "stage0"
    summary0 = stages.stage0_foundation(HEXGRID, stage0, settings, sandbox=sandbox)
    domain = stages.load_domain(stage0)
    client = client_for(make_model(domain), cache=root / "cache")
    out = {"root": root, "settings": settings, "domain": domain, "client": client, "stage0": summary0}
    out["stage1"] = stages.stage1_discover(stage0, root / "stage1", settings, {}, client=client)
    out["stage2"] = stages.stage2_refine(stage0, root / "stage1/api_proposal_v1.md", root / "stage2", settings, {},
                                         client=client)
    out["stage3"] = stages.stage3_implement(stage0, root / "stage2/api_proposal_final.md", root / "stage3", settings,
                                            {}, client=client, sandbox=sandbox)
    out["stage4"] = stages.stage4_document(stage0, root / "stage3/generated_lib", root / "stage4", settings, {},
                                           client=client)
    out["stage5"] = stages.validate_stage(stage0, root / "stage3/generated_lib", root / "stage4/system_prompt.txt",
                                          root / "stage5", settings, {}, client=client, sandbox=sandbox)
    out["baseline"] = stages.validate_stage(stage0, None, None, root / "baseline", settings, {}, client=client,
                                            sandbox=sandbox, stage="baseline")
    previous, library, cycles = root / "stage5", root / "stage3/generated_lib", []
    for n in range(1, settings["max_extension_cycles"] + 1):
        folder = root / f"stage6/cycle{n}"
        state = stages.extension_cycle(n, stage0, previous, library, folder, settings, {}, client=client,
                                       sandbox=sandbox)
        cycles.append(folder)
        if state["decision"] != "continue":
            break
        previous, library = folder, folder / "library"
    out["cycles"] = cycles
    out["report"] = stages.write_report(root, cycles, root / "report", settings)
    return out


def test_stage0_checks_every_reference_program(pipeline):
    s = pipeline["stage0"]
    assert s["tasks"] == 180 and s["references_checked"] == 180 and s["splits"] == {"train": 120, "dev": 30, "test": 30}
    assert {"Game", "Tile", "Shape", "DIRECTIONS"} <= set(s["foundation_names"])
    assert "def current_game()" in (pipeline["root"] / "stage0/foundation_api.md").read_text()


def test_stage1_reads_all_120_training_instructions(pipeline):
    s = pipeline["stage1"]
    assert s["instructions"] == 120 and s["summaries_per_level"] == [5, 2, 1] and s["depth"] == 3
    assert s["coverage"]["complete"] and s["batch_sizes"] == [25, 25, 25, 25, 20]
    assert s["usage"]["backend_calls"] == 5 + 2 + 1 + 1 and s["proposal_signatures"] == 1
    summaries = io.read_jsonl(pipeline["root"] / "stage1/summaries.jsonl")
    assert len(summaries) == 8 and summaries[-1]["level"] == 3 and len(summaries[-1]["covers"]) == 120


def test_stage2_refines_on_different_samples(pipeline):
    rounds = io.read_jsonl(pipeline["root"] / "stage2/refinement.jsonl")
    assert len(rounds) == 2 and all(r["accepted"] for r in rounds) and rounds[0]["gaps"] == ["rings"]
    assert not set(rounds[0]["tasks"]) & set(rounds[1]["tasks"])
    final = (pipeline["root"] / "stage2/api_proposal_final.md").read_text()
    assert "def ring(center, radius, color):" in final
    assert (pipeline["root"] / "stage2/api_proposal_v3.md").exists()


def test_stage3_repairs_the_module_the_smoke_check_rejected(pipeline):
    s = pipeline["stage3"]
    assert s["modules_accepted"] == 1 and s["repairs"] == 1 and s["functions_accepted"] == 2
    modules = io.read_json(pipeline["root"] / "stage3/modules.json")["results"]
    assert modules[0]["attempts"] == 2 and modules[0]["accepted"]
    init = (pipeline["root"] / "stage3/generated_lib/hexlib/__init__.py").read_text()
    assert "from hexgrid import *" in init and "from .shapes import *" in init


def test_stage4_documents_the_generated_functions(pipeline):
    reference = (pipeline["root"] / "stage4/dsl_reference.md").read_text()
    assert "def draw_line(start, direction, length, color)" in reference and "class Tile(row, col)" in reference
    system = (pipeline["root"] / "stage4/system_prompt.txt").read_text()
    assert "from hexlib import *" in system and "def ring(center, radius, color)" in system


def count(domain, families):
    return sum(t["family"] in families for t in domain.tasks("dev"))


def test_stage5_scores_what_the_sandbox_measured(pipeline):
    domain = pipeline["domain"]
    report = io.read_json(pipeline["root"] / "stage5/validation_report.json")
    solved = count(domain, {"line", "ring"})
    assert report["tasks"] == 30 and report["exact"] == solved > 0
    assert report["error_classes"]["solved"] == solved
    assert report["error_classes"]["RuntimeError"] == count(domain, {"single"})
    assert report["error_classes"]["no_code"] == 30 - solved - count(domain, {"single"})
    assert report["uses_library"] == solved + count(domain, {"single"})
    programs = {r["id"]: r for r in io.read_jsonl(pipeline["root"] / "stage5/programs.jsonl")}
    line_task = next(t for t in domain.tasks("dev") if t["family"] == "line")
    assert programs[line_task["id"]]["exact"] and programs[line_task["id"]]["loc"] < programs[line_task["id"]]["reference_loc"]
    failures = io.read_jsonl(pipeline["root"] / "stage5/failures.jsonl")
    assert len(failures) == 30 - solved and all(f["error_class"] for f in failures)
    baseline = io.read_json(pipeline["root"] / "baseline/validation_report.json")
    assert baseline["library"] is None and baseline["exact"] == 0  # the scripted model needs the library


def test_stage6_extends_where_it_failed_and_stops_when_nothing_improves(pipeline):
    domain = pipeline["domain"]
    cycles = [io.read_json(c / "cycle.json") for c in pipeline["cycles"]]
    assert [c["cycle"] for c in cycles] == [1, 2]
    first, second = cycles
    assert first["accepted"] and first["proposed"] == 1 and first["decision"] == "continue"
    assert first["score"] > first["previous_score"]
    report1 = io.read_json(pipeline["cycles"][0] / "validation_report.json")
    assert report1["exact"] == count(domain, {"line", "ring", "disk"})
    assert (pipeline["cycles"][0] / "library/hexlib/extension1.py").exists()
    assert (pipeline["cycles"][0] / "library/hexlib/shapes.py").exists()
    assert second["proposed"] == 0 and second["decision"] == "no_improvement" and second["score"] == first["score"]


def test_report_rows_tokens_and_cost(pipeline):
    report = pipeline["report"]
    steps = [r["step"] for r in report["rows"]]
    assert steps == ["baseline (foundation only)", "stage 5 (generated library)", "stage 6 cycle 1", "stage 6 cycle 2"]
    assert report["best"] == "stage 6 cycle 1" and report["library_vs_baseline"] > 0
    cost = report["cost_estimate"]
    assert cost["model"] == "gpt-4o" and cost["total"]["cost"] > 0
    assert cost["stages"]["stage1"]["prompt_tokens"] == report["tokens_by_stage"]["stage1"]["prompt_tokens"]
    assert (pipeline["root"] / "report/scores.png").stat().st_size > 5000


def test_a_rerun_is_served_from_the_cache(pipeline, tmp_path):
    client = client_for(make_model(pipeline["domain"]), cache=pipeline["root"] / "cache")
    stages.stage1_discover(pipeline["root"] / "stage0", tmp_path / "stage1", pipeline["settings"], {}, client=client)
    assert client.backend.prompts == [] and client.usage.cache_hits == 9
    assert (tmp_path / "stage1/api_proposal_v1.md").read_text() == \
        (pipeline["root"] / "stage1/api_proposal_v1.md").read_text()


def test_bad_domain_input_names_the_file_record_and_field(tmp_path):
    import shutil

    shutil.copytree(HEXGRID, tmp_path / "d")
    tasks = (tmp_path / "d/tasks.jsonl").read_text().splitlines()
    record = json.loads(tasks[3])
    record["state"] = [[0, 0, "red"]]
    tasks[3] = json.dumps(record)
    (tmp_path / "d/tasks.jsonl").write_text("\n".join(tasks) + "\n")
    with pytest.raises(DifflabError, match=rf"task {record['id']}: field 'state' is not what its solution produces"):
        stages.stage0_foundation(tmp_path / "d", tmp_path / "out", default_settings())
    del record["instruction"]
    tasks[3] = json.dumps(record)
    (tmp_path / "d/tasks.jsonl").write_text("\n".join(tasks) + "\n")
    with pytest.raises(DifflabError, match=r"tasks.jsonl: record 4: missing field 'instruction'"):
        Domain.load(tmp_path / "d").tasks()


def test_the_strings_domain_runs_through_the_same_stages(tmp_path):
    settings = default_settings(batch_size=10, meta_batch_size=3, refinement_iterations=1)
    summary = stages.stage0_foundation(REPO / "resources/libgen/strings", tmp_path / "stage0", settings)
    assert summary["tasks"] == 40 and summary["references_checked"] == 40
    client = client_for(summarize)
    s1 = stages.stage1_discover(tmp_path / "stage0", tmp_path / "stage1", settings, {},
                                client=LLMClient(Scripted(lambda s, u: summarize(s, u) if not u.startswith("Design")
                                                          else "## module `words`\n```python\ndef reverse_words(text):\n```"),
                                                 None, progress=False))
    assert s1["summaries_per_level"] == [3, 1] and s1["coverage"]["complete"] and s1["proposal_signatures"] == 1
    del client


@pytest.mark.slow
def test_the_pipeline_runs_through_the_openai_backend(tmp_path, monkeypatch):
    """Stages 0-5 and one cycle on the strings domain, every call through the openai backend to
    llm-katan on 127.0.0.1 serving a tiny model (a long-context one, so prompts fit)."""
    from servers import KatanServer
    from tiny import build_tiny_model

    from difflab.llm import client_from_config

    model = build_tiny_model(tmp_path / "tiny", context=4096)
    server = KatanServer(model, tmp_path, name="tiny", api_key="sk-libgen-test")
    monkeypatch.setenv("LIBGEN_TEST_KEY", "sk-libgen-test")
    try:
        llm = difflab_config.deep_merge(difflab_config.load()["llm"], {
            "backend": "openai", "cache_dir": str(tmp_path / "cache"),
            "openai": {"base_url": server.base_url, "model": "tiny", "api_key_env": "LIBGEN_TEST_KEY",
                       "context_tokens": 4096}})
        settings = default_settings(batch_size=10, meta_batch_size=3, refinement_iterations=1, validation_limit=4,
                                    max_extension_cycles=1, max_repairs=1,
                                    max_new_tokens={"summary": 12, "proposal": 16, "code": 16, "guide": 8, "program": 16})
        stage0 = tmp_path / "stage0"
        stages.stage0_foundation(REPO / "resources/libgen/strings", stage0, settings)
        client = client_from_config({"llm": llm}, progress=False)
        s1 = stages.stage1_discover(stage0, tmp_path / "stage1", settings, llm, client=client)
        assert s1["backend"]["backend"] == "openai" and s1["summaries_per_level"] == [3, 1]
        assert s1["usage"]["backend_calls"] == 5 and s1["coverage"]["complete"]
        stages.stage2_refine(stage0, tmp_path / "stage1/api_proposal_v1.md", tmp_path / "stage2", settings, llm)
        stages.stage3_implement(stage0, tmp_path / "stage2/api_proposal_final.md", tmp_path / "stage3", settings, llm)
        stages.stage4_document(stage0, tmp_path / "stage3/generated_lib", tmp_path / "stage4", settings, llm)
        s5 = stages.validate_stage(stage0, tmp_path / "stage3/generated_lib", tmp_path / "stage4/system_prompt.txt",
                                   tmp_path / "stage5", settings, llm)
        assert s5["tasks"] == 4 and sum(s5["error_classes"].values()) == 4
        state = stages.extension_cycle(1, stage0, tmp_path / "stage5", tmp_path / "stage3/generated_lib",
                                       tmp_path / "cycle1", settings, llm)
        assert state["cycle"] == 1 and state["decision"] in ("max_extension_cycles", "no_failures")
        assert server.request_count() >= 5 + 1 + 1 + 4
        assert "sk-libgen-test" not in (tmp_path / "stage1/stage1_summary.json").read_text()
    finally:
        server.stop()


def test_an_answer_cut_by_the_length_limit_keeps_its_finished_definitions():
    cut = "import x\n\ndef a(t):\n    return 1\n\ndef b(t):\n    return [\n        (t,\n"
    assert prompts.trim_incomplete(cut) == "import x\n\ndef a(t):\n    return 1\n"
    assert prompts.trim_incomplete("def a(:\n") == "def a(:\n"  # nothing before it to keep
    assert prompts.extract_code("Here:\n```python\nwith Game():\n    Tile(1, 1).draw('red')\n") == \
        "with Game():\n    Tile(1, 1).draw('red')\n"  # an unterminated block is still the code
