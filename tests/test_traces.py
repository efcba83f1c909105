"""traces: tree extraction, backpropagation, encoders, clustering and sampling, SQLite and a real
PostgreSQL server (including a connection the server kills mid-stream), selection quality on
synthetic trees, and the workflow's rules."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from difflab.errors import DifflabError
from difflab.traces import db, encode, evaluate, select, synth, tree


def frame(rows):
    """programs frame from (id, parent_id, value[, visits]) tuples."""
    out = pd.DataFrame([{"id": r[0], "parent_id": r[1], "value": r[2], "visits": r[3] if len(r) > 3 else 1,
                         "code": f"def f{r[0]}(): return {r[0]}"} for r in rows])
    return db.normalize_frame(out)


# A forest: root 1 with children 2 (children 4, 5) and 3; root 6 with child 7; orphan 10 (parent 99)
# with its own child 11, which must be skipped with it.
FOREST = [(1, None, 1.0, 1), (2, 1, 2.0, 1), (3, 1, 3.0, 2), (4, 2, 4.0, 3), (5, 2, 5.0, 1),
          (6, None, 1.0, 0), (7, 6, 1.0, 0), (10, 99, 9.0, 1), (11, 10, 9.0, 1)]


def test_traces_are_root_to_leaf_paths_of_a_forest_and_orphans_are_reported_and_skipped():
    traces, report = tree.extract_traces(frame(FOREST))
    assert [list(p) for p in traces["program_ids"]] == [[1, 3], [1, 2, 4], [1, 2, 5], [6, 7]]
    assert traces["trace_id"].tolist() == [3, 4, 5, 7] and traces["root_id"].tolist() == [1, 1, 1, 6]
    assert report["roots"] == 2 and report["traces"] == 4 and report["max_length"] == 3
    assert report["orphans"] == [{"id": 10, "parent_id": 99, "skipped": 2}] and report["skipped_programs"] == 2


@pytest.mark.parametrize("rows, named", [
    ([(1, None, 0.0), (2, 3, 0.0), (3, 4, 0.0), (4, 2, 0.0)], {"2", "3", "4"}),
    ([(1, None, 0.0), (5, 5, 0.0)], {"5"}),
])
def test_a_cycle_is_a_clear_error_naming_its_ids(rows, named):
    with pytest.raises(DifflabError, match="form a cycle") as err:
        tree.extract_traces(frame(rows), source="run.parquet")
    message = str(err.value)
    assert message.startswith("run.parquet: field 'parent_id': programs ")
    assert set(message.split("programs ")[1].split(" form")[0].split(" -> ")) == named


def test_duplicate_ids_are_an_error():
    with pytest.raises(DifflabError, match="program 2 appears more than once"):
        tree.extract_traces(frame([(1, None, 0.0), (2, 1, 0.0), (2, 1, 1.0)]))


def test_backpropagation_follows_the_documented_rule():
    programs = frame(FOREST)
    gamma = 0.5
    best = tree.backpropagate(programs, discount=gamma, aggregate="max").set_index("id")
    # V(2) = 2 + 0.5 * max(4, 5); V(1) = 1 + 0.5 * max(V(2), 3); leaves keep their reward
    assert best.loc[2, "value"] == 4.5 and best.loc[1, "value"] == 1 + 0.5 * 4.5 and best.loc[5, "value"] == 5.0
    assert best.loc[1, "visits_total"] == 1 + 1 + 2 + 3 + 1 and best.loc[6, "visits_total"] == 0
    assert 10 not in best.index and 11 not in best.index  # the orphan subtree is skipped
    mean = tree.backpropagate(programs, discount=gamma, aggregate="mean").set_index("id")
    assert mean.loc[2, "value"] == 2 + 0.5 * 4.5 and mean.loc[1, "value"] == 1 + 0.5 * (4.25 + 3.0) / 2
    visits = tree.backpropagate(programs, discount=gamma, aggregate="visits").set_index("id")
    # children of 2: N(4)=3, N(5)=1 -> (3*4 + 1*5)/4; children of 1: N(2)=5, N(3)=2
    v2 = 2 + 0.5 * (3 * 4 + 5) / 4
    assert visits.loc[2, "value"] == pytest.approx(v2)
    assert visits.loc[1, "value"] == pytest.approx(1 + 0.5 * (5 * v2 + 2 * 3) / 7)
    # no visits anywhere below 6: the plain mean
    assert visits.loc[6, "value"] == pytest.approx(1 + 0.5 * 1.0)
    with pytest.raises(DifflabError, match="aggregate must be one of"):
        tree.backpropagate(programs, aggregate="sum")


def test_trace_values_return_and_rewards():
    programs = frame(FOREST)
    traces, _ = tree.extract_traces(programs)
    nodes = tree.backpropagate(programs, discount=0.5)
    values = tree.trace_values(programs, nodes, traces, discount=0.5).set_index("trace_id")
    assert values.loc[5, "return"] == 1 + 0.5 * 2 + 0.25 * 5 == nodes.set_index("id").loc[1, "value"]
    assert values.loc[4, "return"] == 1 + 0.5 * 2 + 0.25 * 4
    assert values.loc[3].to_dict() == pytest.approx({"return": 2.5, "leaf_reward": 3.0, "max_reward": 3.0,
                                                          "mean_reward": 2.0, "root_value": 3.25,
                                                          "leaf_visits": 2, "length": 2})


# --------------------------------------------------------------------------- encoders


def test_state_change_and_program_texts():
    assert encode.state_change('{"score": 0.1, "grid": {"a": 1, "b": 2}}', '{"score": 0.4, "grid": {"a": 1, "b": 3}}') \
        == "grid.b: 2 -> 3\nscore: 0.1 -> 0.4"
    programs = pd.DataFrame({"code": ["x = 1"], "reasoning": ["try one"], "response": [None],
                             "state_before": [None], "state_after": ['{"k": 1}']})
    assert encode.program_texts(programs, ["code"]) == ["x = 1"]
    assert encode.program_texts(programs, ["code", "reasoning", "response", "state"]) == \
        ["# code\nx = 1\n# reasoning\ntry one\n# state\nk: null -> 1"]
    with pytest.raises(DifflabError, match="fields must be"):
        encode.program_texts(programs, ["colour"])


def test_ngram_features_hash_every_distinct_ngram_and_near_duplicates_are_closest():
    enc = encode.NGramEncoder(ngram_range=(1, 2), components=0)
    from difflab.models import gpt_encoding

    text = "def total(values):\n    return sum(values)"
    ids = gpt_encoding().encode_ordinary(text)
    counts = enc.counts([text])
    distinct = len(set(ids)) + len(set(zip(ids, ids[1:])))
    assert counts.nnz == distinct and counts.sum() == len(ids) + len(ids) - 1   # no collisions at 2^18
    a = "def score(grid, moves):\n    best = max([grid, 41])\n    return best"
    a2 = a.replace("41", "42")
    b = "class Parser:\n    def parse(self, text):\n        return text.split(',')"
    x = encode.NGramEncoder(components=0).encode_programs([a, a2, b])
    cos = (x @ x.T).toarray()  # TF-IDF rows are unit length
    assert cos[0, 1] > 0.6 > 0.2 > cos[0, 2]


def test_chunked_tfidf_equals_scikit_learns_and_svd_reduces():
    from sklearn.feature_extraction.text import TfidfTransformer

    texts = [r["code"] for r in synth.generate_tree(1500, n_families=6, seed=1)] + ["", "x"]
    chunked = encode.NGramEncoder(components=0, chunk_size=400)
    reference = TfidfTransformer(sublinear_tf=True).fit_transform(chunked.counts(texts))
    assert abs(chunked.encode_programs(texts) - reference).max() < 1e-6
    reduced = encode.NGramEncoder(components=16, chunk_size=400, svd_sample=600).encode_programs(texts)
    assert reduced.shape == (1502, 16) and reduced.dtype == np.float32 and not reduced[-2].any()


def test_dense_encoder_embeds_each_program_once_and_pools_along_traces():
    programs = frame(FOREST[:7])
    programs["code"] = ["def add(a, b): return a + b", "def add(a, b):\n    return a + b  # sum",
                        "SELECT name FROM users", "def add(x, y): return x + y", "import numpy as np",
                        "The cat sat on the mat.", "A kitten sleeps on the rug."]
    traces, _ = tree.extract_traces(programs)
    features, info = encode.encode_traces(programs, traces, encode.get_encoder("dense"), fields=["code"])
    assert features.shape == (4, 384) and info["programs_encoded"] == 7 and info["encoder"] == "dense"
    vectors = encode.get_encoder("dense").encode_programs(list(programs["code"]))
    np.testing.assert_allclose(features[1], vectors[[0, 1, 3]].mean(axis=0), atol=1e-5)  # trace 1 -> 2 -> 4


def test_pooling_mean_leaf_and_decay():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    offsets, flat = np.array([0, 2, 3]), np.array([0, 1, 2])
    np.testing.assert_allclose(encode.pool(x, offsets, flat, "mean"), [[0.5, 0.5], [1.0, 1.0]])
    np.testing.assert_allclose(encode.pool(x, offsets, flat, "leaf"), [[0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(encode.pool(x, offsets, flat, "decay", discount=0.5), [[1 / 3, 2 / 3], [1.0, 1.0]])
    assert sp.issparse(encode.pool(sp.csr_matrix(x), offsets, flat, "mean"))


def test_a_custom_encoder_is_injected_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_encoders.py").write_text(
        "import numpy as np\n"
        "from difflab.traces.encode import TraceEncoder\n"
        "class LengthEncoder(TraceEncoder):\n"
        "    name = 'length'\n"
        "    def encode_programs(self, texts):\n"
        "        return np.array([[len(t), self.options.get('bias', 0)] for t in texts], dtype=float)\n"
        "class NotAnEncoder:\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    programs = frame(FOREST[:7])
    traces, _ = tree.extract_traces(programs)
    features, info = encode.encode_traces(programs, traces, encode.get_encoder("my_encoders:LengthEncoder",
                                                                               {"bias": 7}), fields=["code"])
    lengths = programs.set_index("id")["code"].str.len()
    assert features[0].tolist() == [(lengths[1] + lengths[3]) / 2, 7.0] and info["encoder"] == "length"
    with pytest.raises(DifflabError, match="not a subclass"):
        encode.get_encoder("my_encoders:NotAnEncoder")
    with pytest.raises(DifflabError, match="unknown encoder 'bag'"):
        encode.get_encoder("bag")


# --------------------------------------------------------------------------- clustering and sampling


def test_auto_k_finds_planted_clusters_by_silhouette_on_a_sample():
    from sklearn.datasets import make_blobs

    x, truth = make_blobs(n_samples=3000, centers=5, n_features=8, cluster_std=0.6, random_state=0)
    labels, distance, info = select.cluster(x, n_clusters="auto", metric="euclidean", silhouette_sample=600)
    assert info["n_clusters"] == 5 and info["silhouette_sample"] == 600 and info["method"] == "KMeans"
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, labels) > 0.99 and distance.shape == (3000,)
    labels, _, info = select.cluster(x, n_clusters=5, metric="cosine", minibatch_above=1000)
    assert info["method"] == "MiniBatchKMeans" and len(np.unique(labels)) == 5


def test_value_weighted_sampling_is_seeded_per_cluster_and_prefers_value():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 200)
    values = rng.normal(size=600)
    a = select.sample_clusters(labels, values, per_cluster=5, seed=3)
    assert np.array_equal(a, select.sample_clusters(labels, values, per_cluster=5, seed=3))
    assert not np.array_equal(a, select.sample_clusters(labels, values, per_cluster=5, seed=4))
    assert np.bincount(labels[a]).tolist() == [5, 5, 5]
    assert values[a].mean() > values.mean() + 1.0            # temperature 0.25 leans hard on value
    top = select.sample_clusters(labels, values, per_cluster=2, strategy="top")
    expected = [np.flatnonzero(labels == c)[np.argsort(-values[labels == c])[:2]] for c in range(3)]
    assert top.tolist() == sorted(np.concatenate(expected).tolist())
    eligible = select.sample_clusters(labels, values, per_cluster=200, min_quantile=0.9, seed=1)
    assert len(eligible) == 60 and values[eligible].min() >= np.quantile(values, 0.9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selection_covers_more_planted_families_than_top_value_and_random(seed):
    result = evaluate.evaluate_tree(3000, n_families=30, seed=seed)
    clustered, top, rand = result["clustered"], result["top_value"], result["random"]
    assert clustered["families"] > top["families"] and clustered["families"] > rand["families"], result
    assert clustered["mean_value"] >= rand["mean_value"], result


def test_synthetic_trees_are_deterministic_and_realistic():
    a = synth.generate_tree(2000, n_families=12, seed=5)
    assert a == synth.generate_tree(2000, n_families=12, seed=5)
    programs = db.normalize_frame(pd.DataFrame(a).drop(columns=["family"]))
    traces, report = tree.extract_traces(programs)
    assert report["roots"] == 12 and report["orphans"] == [] and report["max_length"] > 5
    sizes = np.bincount([r["family"] for r in a])
    assert sizes.max() > 8 * sizes.min()                       # Zipf-skewed family sizes
    values = np.array([r["value"] for r in a])
    assert np.mean(values < 0.3) > 0.4 and values.max() > 0.6  # skewed rewards
    child = a[1500]
    parent = a[child["parent_id"] - 1]
    shared = sum(x == y for x, y in zip(child["code"].splitlines(), parent["code"].splitlines()))
    assert shared >= len(parent["code"].splitlines()) - 2      # a near-copy of its parent


# --------------------------------------------------------------------------- databases


@pytest.fixture
def dump(tmp_path):
    records = synth.generate_tree(1200, n_families=8, seed=2)
    records[5]["version"] = "other"                               # one program of another run
    return synth.write_jsonl(records, tmp_path / "dump.jsonl"), records


def check_roundtrip(url, dump):
    path, records = dump
    report = db.import_dump(url, path)
    assert report["imported"] == 1200 and report["table"]["rows"] == 1200
    programs = db.read_programs(url, page_size=97)
    assert programs["id"].tolist() == list(range(1, 1201))
    assert programs["code"].tolist() == [r["code"] for r in records]
    assert json.loads(programs["state_after"][0]) == records[0]["state_after"]
    only = db.read_programs(url, "synthetic-2", page_size=500)
    assert len(only) == 1199 and 6 not in set(only["id"])
    # a version string that would break a string-built query is just a value
    assert db.read_programs(url, "x' OR '1'='1").empty
    again = db.import_dump(url, path)                               # re-import: an idempotent upsert
    assert again["table"] == report["table"]
    return programs


def test_sqlite_store_imports_a_dump_and_reads_it_in_pages(tmp_path, dump):
    programs = check_roundtrip(f"sqlite:///{tmp_path}/programs.db", dump)
    assert programs["parent_id"].isna().sum() == 8


def test_postgres_store_reads_what_sqlite_reads(postgres_url, tmp_path, dump):
    from_pg = check_roundtrip(postgres_url, dump)
    from_sqlite = db.read_programs(db.import_dump(str(tmp_path / "p.sqlite"), dump[0])["database"])
    pd.testing.assert_frame_equal(from_pg, from_sqlite)
    assert db.fingerprint(postgres_url) == db.fingerprint(str(tmp_path / "p.sqlite"))


def test_a_connection_killed_mid_stream_is_retried_with_no_row_lost_or_repeated(postgres_url, dump, caplog):
    import asyncpg

    db.import_dump(postgres_url, dump[0])
    killed = []

    async def kill_reader(count, store):
        if count >= 400 and not killed:
            pid = await store.backend_pid()
            admin = await asyncpg.connect(postgres_url)
            try:
                killed.append((count, pid, await admin.fetchval("SELECT pg_terminate_backend($1)", pid)))
            finally:
                await admin.close()
        elif killed and len(killed) == 1:
            killed.append(await store.backend_pid())

    caplog.set_level(logging.WARNING, logger="difflab.traces.db")
    programs = db.read_programs(postgres_url, page_size=100, on_page=kill_reader, backoff_initial_s=0.01)
    assert killed[0][2] is True and killed[1] != killed[0][1]       # terminated; a new backend took over
    assert programs["id"].tolist() == list(range(1, 1201))           # every row once, in order
    assert "retry 1" in caplog.text


def test_loader_errors_name_file_record_and_field(tmp_path):
    url = str(tmp_path / "p.sqlite")
    cases = {
        '{"id": 1, "code": "a"}\n{"id": 2}\n': "record 2: missing field 'code'",
        '{"id": 1, "code": "a"}\n{"id": 2, "code": "b", "parent_id": 7}\n': "record 2: field 'parent_id': program 7",
        '{"id": 1, "code": "a"}\n{"id": 1, "code": "b"}\n': "record 2: field 'id': program 1 already given by record 1",
        '{"id": 1, "code": "a", "state_after": "{oops"}\n': "record 1: field 'state_after' is a string but not JSON",
        '{"id": "x", "code": "a"}\n': "record 1: field 'id' must be an integer",
        '{"id": 1, "code": "a", "value": "high"}\n': "record 1: field 'value' must be a number",
    }
    for text, message in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(text)
        with pytest.raises(DifflabError, match=message) as err:
            db.import_dump(url, path)
        assert str(err.value).startswith(f"{path}: record ")


def test_postgres_errors_are_clear_and_never_show_a_password(postgres_server):
    url = postgres_server.replace("postgres@", "postgres:s3cret-pw@").rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(DifflabError) as err:
        db.read_programs(url, retries=0)
    assert "database does not exist" in str(err.value) and "s3cret" not in str(err.value)
    assert db.redact(url).count("***") == 1 and "s3cret" not in db.redact(url + "?password=s3cret")
    assert db.redact(url + "?sslmode=require&sslpassword=s3cret").endswith("?sslmode=require&sslpassword=***")


def test_reading_a_database_without_the_table_says_how_to_make_it(postgres_url):
    with pytest.raises(DifflabError, match="no table 'programs'.*difflab traces migrate"):
        db.read_programs(postgres_url)
    db.migrate(postgres_url)
    assert db.read_programs(postgres_url).empty


def _core_table(path, rows, extra_columns=""):
    """An SQLite `programs` table with only the columns reading needs (and `extra_columns`)."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE programs (id INTEGER PRIMARY KEY, parent_id INTEGER, code TEXT, value REAL, "
                 f"visits INTEGER{extra_columns})")
    conn.executemany(f"INSERT INTO programs VALUES ({', '.join('?' * len(rows[0]))})", rows)
    conn.commit()
    conn.close()
    return str(path)


def test_a_table_with_only_the_required_columns_is_read_and_a_version_needs_its_column(tmp_path, dump):
    url = _core_table(tmp_path / "core.sqlite", [(1, None, "a", 1.0, 2), (2, 1, "b", 0.5, 1), (3, 1, "c", 2.0, 1)])
    programs = db.read_programs(url, page_size=2)
    assert programs["id"].tolist() == [1, 2, 3] and programs["version"].isna().all()
    assert db.fingerprint(url) == {"rows": 3, "max_id": 3, "value_sum": 3.5, "visits_sum": 4}
    with pytest.raises(DifflabError, match="has no column 'version' \\(the run asks for version 'v1'\\)"):
        db.read_programs(url, "v1")
    with pytest.raises(DifflabError, match="has no column 'version'"):
        db.fingerprint(url, "v1")
    # An import writes every column of the dump format: refused by name, the table left as it was.
    with pytest.raises(DifflabError, match="table 'programs' has no column 'response' \\(an import writes"):
        db.import_dump(url, dump[0])
    assert db.fingerprint(url)["rows"] == 3


def test_state_text_that_is_not_json_names_the_program_and_field(tmp_path):
    url = _core_table(tmp_path / "s.sqlite", [(1, None, "a", 1.0, 1, '{"x": 1}'), (2, 1, "b", 1.0, 1, "{'x': 2}")],
                      ", state_before TEXT")
    with pytest.raises(DifflabError, match=r"s\.sqlite: program 2: field 'state_before': not JSON"):
        db.read_programs(url)


def test_postgres_import_takes_children_before_their_parents_across_batches(postgres_url, tmp_path):
    """The parent key is checked at commit: a dump in storage order (a parent updated, so written after its
    children) imports in one transaction whatever the batches."""
    records = synth.generate_tree(300, n_families=4, seed=5)[::-1]  # every child before its parent
    report = db.import_dump(postgres_url, synth.write_jsonl(records, tmp_path / "reversed.jsonl"), batch_size=7)
    assert report["table"]["rows"] == 300
    assert db.read_programs(postgres_url)["id"].tolist() == list(range(1, 301))


def test_cli_synth_import_and_select(tmp_path):
    from difflab import cli

    dump, database, out = tmp_path / "tree.jsonl", str(tmp_path / "tree.sqlite"), tmp_path / "out"
    assert cli.main(["traces", "synth", "900", str(dump), "--families", "6", "--seed", "4"]) == 0
    assert cli.main(["traces", "import", str(dump), database]) == 0
    assert cli.main(["traces", "select", database, str(out), "--set", "traces.per_cluster=1",
                     "--set", "traces.min_quantile=0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selected"] == summary["clusters"] == 6                 # one per planted family
    families = {r["id"]: r["family"] for r in map(json.loads, dump.read_text().splitlines())}
    selected = [json.loads(line) for line in (out / "selected_traces.jsonl").read_text().splitlines()]
    assert {families[s["trace_id"]] for s in selected} == set(range(6))
    assert cli.main(["traces", "import", str(tmp_path / "missing.jsonl"), database]) == 2


def test_sparse_features_cluster_like_their_dense_copy_without_densifying():
    x = sp.random(300, 1000, density=0.05, random_state=0, format="csr")
    for metric in ("cosine", "euclidean"):
        sparse_labels, sparse_distance, _ = select.cluster(x, n_clusters=4, metric=metric)
        dense_labels, dense_distance, _ = select.cluster(x.toarray(), n_clusters=4, metric=metric)
        assert np.array_equal(sparse_labels, dense_labels)
        np.testing.assert_allclose(sparse_distance, dense_distance, atol=1e-9)
