"""The traces rules through snakemake: the fixture dump (embedded SQLite) and a run read from a real
PostgreSQL server; the files and their contents, and what a rerun rebuilds."""

import asyncio
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from difflab.traces import db, synth
from test_workflow import REPO, snakemake

ALL_STAGES = {"traces_read", "traces_extract", "traces_backprop", "traces_encode", "traces_cluster", "traces_select"}


def planned(workdir: Path, *targets: str) -> set[str]:
    out = snakemake(workdir, "--dry-run", "--cores", "2", *targets).stdout
    if "Nothing to be done" in out:
        return set()
    table = out.split("Job stats:")[1].split("total")[0]
    return {line.split()[0] for line in table.splitlines()[3:] if line.strip()}


PASSWORD = "pw-7c1e-not-in-any-file"


def with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1) if "@" in rest else ("postgres", rest)
    return f"{scheme}://{creds.split(':', 1)[0]}:{PASSWORD}@{host}"


@pytest.fixture(scope="module")
def traces_built(tmp_path_factory, postgres_server):
    """The fixture run and a PostgreSQL run, built once for the module."""
    import asyncpg

    workdir = tmp_path_factory.mktemp("traces-wf")
    shutil.copytree(REPO / "resources" / "traces", workdir / "resources" / "traces")
    name = f"difflab_wf_{workdir.name.replace('-', '_')}"

    async def create():
        conn = await asyncpg.connect(postgres_server)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    url = postgres_server.rsplit("/", 1)[0] + f"/{name}"
    records = synth.generate_tree(1500, n_families=12, seed=11, version="search-a")
    records += [{**r, "id": r["id"] + 10000, "parent_id": r["parent_id"] and r["parent_id"] + 10000,
                 "version": "search-b"} for r in synth.generate_tree(300, n_families=4, seed=12)]
    db.import_dump(url, synth.write_jsonl(records, workdir / "search.jsonl"))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config |= {
        "traces": {
            "build": ["fixture", "pg"],
            "runs": {"fixture": {"import": "resources/traces/fixture.jsonl"},
                     # a password in the URL (the test server trusts local connections, so any will do)
                     "pg": {"database": with_password(url), "version": "search-a", "per_cluster": 3,
                            "fields": ["code", "state"]}},
            "db": {"page_size": 250},
        },
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    targets = [f"results/traces/{run}/{f}" for run in ("fixture", "pg") for f in ("selected_traces.jsonl", "summary.json")]
    snakemake(workdir, "--cores", "2", *targets)
    return workdir, url, targets


def test_fixture_run_builds_every_stage_file(traces_built):
    workdir, _, _ = traces_built
    run = workdir / "results/traces/fixture"
    report = json.loads((run / "tree_report.json").read_text())
    assert report["programs"] == 400 and report["roots"] == 10 and report["orphans"] == []
    traces = pd.read_parquet(run / "traces.parquet")
    assert len(traces) == report["traces"] and traces["program_ids"].map(len).tolist() == traces["length"].tolist()
    clustered = pd.read_parquet(run / "clustered_traces.parquet")
    assert {"trace_id", "cluster", "value", "leaf_reward", "return", "encoder", "fields", "x", "y"} <= set(clustered)
    assert (clustered["value"] == clustered["leaf_reward"]).all() and set(clustered["encoder"]) == {"ngram"}
    assert set(clustered["fields"]) == {"code,reasoning"}
    summary = json.loads((run / "summary.json").read_text())
    selected = [json.loads(line) for line in (run / "selected_traces.jsonl").read_text().splitlines()]
    assert summary["selected"] == len(selected) > 0 and summary["clusters"] == clustered["cluster"].nunique()
    per_cluster = pd.Series([s["cluster"] for s in selected]).value_counts()
    assert per_cluster.max() <= 2
    median = clustered["value"].median()
    assert all(s["value"] >= median for s in selected)                # only the top half is eligible
    assert summary["value_selected"]["mean"] > summary["value_all"]["mean"]
    first = selected[0]
    assert [p["id"] for p in first["programs"]] == clustered.set_index("trace_id").loc[first["trace_id"], "program_ids"].tolist()
    assert first["programs"][-1]["reward"] == first["leaf_reward"]
    assert (run / "traces.png").read_bytes()[:4] == b"\x89PNG"
    nodes = pd.read_parquet(run / "node_values.parquet")
    assert (nodes["value"] >= nodes["reward"]).all() and len(nodes) == 400


def test_postgres_run_reads_one_search_version(traces_built):
    workdir, _, _ = traces_built
    run = workdir / "results/traces/pg"
    programs = pd.read_parquet(run / "programs.parquet")
    assert len(programs) == 1500 and set(programs["version"]) == {"search-a"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["features"]["fields"] == ["code", "state"] and summary["sampling"]["per_cluster"] == 3
    # The URL's password is in no log, output or Snakemake record (params are kept in .snakemake/metadata).
    kept = [f for d in ("logs", "results", ".snakemake") for f in (workdir / d).rglob("*") if f.is_file()]
    assert len(kept) > 20 and not [f for f in kept if PASSWORD.encode() in f.read_bytes()]


def test_traces_rerun_only_what_a_change_makes_stale(traces_built):
    workdir, url, targets = traces_built
    assert planned(workdir, *targets) == set()
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["traces"]["db"] |= {"pool_max": 3, "retries": 2}             # connection settings change no row
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    assert planned(workdir, *targets) == set()
    config["traces"]["runs"]["fixture"]["discount"] = 0.5              # backprop's; mean pooling ignores it
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    stale = planned(workdir, *targets)
    assert "traces_backprop" in stale and not stale & {"traces_read", "traces_extract", "traces_encode"}
    del config["traces"]["runs"]["fixture"]["discount"]
    config["traces"]["runs"]["fixture"]["per_cluster"] = 1
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    assert planned(workdir, *targets) == {"traces_select"}               # a sampling setting: only selection
    snakemake(workdir, "--cores", "2", *targets)
    summary = json.loads((workdir / "results/traces/fixture/summary.json").read_text())
    assert summary["sampling"]["per_cluster"] == 1 and summary["selected"] <= summary["clusters"]
    dump = workdir / "resources/traces/fixture.jsonl"
    first = json.loads(dump.read_text().splitlines()[0])
    dump.write_text(dump.read_text() + json.dumps({**first, "id": 401, "parent_id": 1, "value": 0.9}) + "\n")
    assert planned(workdir, *targets) == {"traces_import"} | ALL_STAGES  # a new program: the whole run
    snakemake(workdir, "--cores", "2", *targets)
    assert json.loads((workdir / "results/traces/fixture/tree_report.json").read_text())["programs"] == 401
    # the server's table changed: the PostgreSQL run's read (and what follows) is stale, the fixture's is not
    db.import_dump(url, synth.write_jsonl([{"id": 99999, "parent_id": 1, "code": "x = 1", "value": 0.5,
                                            "version": "search-a"}], workdir / "more.jsonl"))
    assert planned(workdir, *targets) == ALL_STAGES
    assert planned(workdir, "results/traces/fixture/summary.json") == set()
