"""What each rule of rules/traces.smk runs: one function per stage, files in, files out."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from difflab import io
from difflab.errors import DifflabError
from difflab.traces import db, encode, select, tree

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- tables


def _write_table(path: str | Path, frame: pd.DataFrame, list_column: str | None = None) -> Path:
    """Parquet with an optional list<int64> column built straight from numpy paths."""
    arrays, names = [], []
    for column in frame.columns:
        if column == list_column:
            paths = frame[column].tolist()
            offsets = np.zeros(len(paths) + 1, dtype=np.int32 if sum(map(len, paths)) < 2**31 else np.int64)
            np.cumsum([len(p) for p in paths], out=offsets[1:])
            flat = np.concatenate([np.asarray(p, dtype=np.int64) for p in paths]) if paths else np.zeros(0, np.int64)
            list_type = pa.ListArray if offsets.dtype == np.int32 else pa.LargeListArray
            arrays.append(list_type.from_arrays(pa.array(offsets), pa.array(flat)))
        else:
            arrays.append(pa.array(frame[column], from_pandas=True))
        names.append(column)
    with io.atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_arrays(arrays, names=names), tmp)
    return Path(path)


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DifflabError(f"file not found: {path}")
    return pd.read_parquet(path)


def read_programs_table(path: str | Path) -> pd.DataFrame:
    return db.normalize_frame(read_table(path))


# --------------------------------------------------------------------------- stages


def import_programs(dump: str | Path, database: str | Path) -> dict:
    """Rule traces_import: a JSONL dump -> a fresh embedded SQLite database (built aside, then renamed)."""
    database = Path(database)
    tmp = database.with_name(f".{database.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        report = db.import_dump(str(tmp), dump)
        os.replace(tmp, database)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("imported %d programs from %s into %s", report["imported"], dump, database)
    return report


def snapshot_programs(database: str, out: str | Path, *, version: str | None = None, db_options: dict | None = None) -> int:
    """Rule traces_read: the programs of one search run (or all) -> programs.parquet, streamed in pages."""
    options = {**db.DEFAULTS, **(db_options or {})}

    def progress(count, _store):
        log.info("read %d programs", count)

    frame = db.read_programs(database, version, on_page=progress, **options)
    if frame.empty:
        which = f"version '{version}'" if version is not None else "any version"
        raise DifflabError(f"{db.redact(database)}: no programs of {which}")
    _write_table(out, frame)
    log.info("wrote %d programs to %s", len(frame), out)
    return len(frame)


def extract(programs_path: str | Path, traces_out: str | Path, report_out: str | Path) -> dict:
    """Rule traces_extract: programs -> every root-to-leaf trace, and the tree report."""
    programs = read_programs_table(programs_path)
    traces, report = tree.extract_traces(programs, source=str(programs_path))
    for orphan in report["orphans"]:
        log.warning("%s: program %d has no parent %d here; skipped with its subtree (%d programs)",
                    programs_path, orphan["id"], orphan["parent_id"], orphan["skipped"])
    if traces.empty:
        raise DifflabError(f"{programs_path}: no complete trace: all {report['programs']} programs hang off "
                           f"{len(report['orphans'])} missing parents")
    _write_table(traces_out, traces, list_column="program_ids")
    io.write_json(report_out, report)
    return report


def backprop(programs_path, traces_path, nodes_out, values_out, *, discount: float, aggregate: str) -> None:
    """Rule traces_backprop: backed-up node values and visits, and every trace's values."""
    programs = read_programs_table(programs_path)
    traces = read_table(traces_path)
    nodes = tree.backpropagate(programs, discount=discount, aggregate=aggregate, source=str(programs_path))
    values = tree.trace_values(programs, nodes, traces, discount=discount)
    _write_table(nodes_out, nodes)
    _write_table(values_out, values)


def write_features(path: str | Path, features, trace_ids: np.ndarray, info: dict) -> Path:
    """Dense [n, d] or CSR features in safetensors (CSR as data/indices/indptr), with what made them."""
    import torch

    tensors = {"trace_ids": torch.from_numpy(np.array(trace_ids, dtype=np.int64))}
    if sp.issparse(features):
        csr = features.tocsr()
        tensors.update(data=torch.from_numpy(csr.data.astype(np.float32)),
                       indices=torch.from_numpy(csr.indices.astype(np.int64)),
                       indptr=torch.from_numpy(csr.indptr.astype(np.int64)))
        info = {**info, "shape": list(csr.shape)}
    else:
        tensors["features"] = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    return io.write_safetensors(path, tensors, metadata={"info": json.dumps(info)})


def read_features(path: str | Path):
    tensors, metadata = io.read_safetensors(path)
    info = json.loads(metadata.get("info", "{}"))
    if "features" in tensors:
        features = tensors["features"].numpy()
    else:
        features = sp.csr_matrix((tensors["data"].numpy(), tensors["indices"].numpy(), tensors["indptr"].numpy()),
                                 shape=tuple(info["shape"]))
    return features, tensors["trace_ids"].numpy(), info


def encode_stage(programs_path, traces_path, out, *, encoder: str, encoder_options: dict, fields: list[str],
                 pooling: str, discount: float | None) -> dict:
    """Rule traces_encode: one vector per trace from its programs' vectors (`discount`: decay pooling only)."""
    programs = read_programs_table(programs_path)
    traces = read_table(traces_path)
    features, info = encode.encode_traces(programs, traces, encode.get_encoder(encoder, encoder_options),
                                          fields=fields, pooling=pooling, discount=discount)
    write_features(out, features, traces["trace_id"].to_numpy(), info)
    log.info("encoded %d traces with %s -> %d dims", len(traces), encoder, info["dim"])
    return info


def cluster_stage(features_path, traces_path, values_path, out, info_out, *, value: str, metric: str,
                  n_clusters, k_min: int, k_max: int, silhouette_sample: int, minibatch_above: int, seed: int) -> dict:
    """Rule traces_cluster: clusters, the trace value used, and 2-D coordinates -> clustered_traces.parquet."""
    if value not in tree.TRACE_VALUES:
        raise DifflabError(f"traces: value must be one of {', '.join(tree.TRACE_VALUES)}, got '{value}'")
    features, trace_ids, feature_info = read_features(features_path)
    traces = read_table(traces_path)
    values = read_table(values_path)
    if not (np.array_equal(trace_ids, traces["trace_id"].to_numpy())
            and np.array_equal(trace_ids, values["trace_id"].to_numpy())):
        raise DifflabError(f"{features_path}: its traces differ from {traces_path} (stale file; rebuild it)")
    labels, distance, info = select.cluster(features, n_clusters=n_clusters, metric=metric, seed=seed, k_min=k_min,
                                            k_max=k_max, silhouette_sample=silhouette_sample,
                                            minibatch_above=minibatch_above)
    xy = select.project_2d(features, seed=seed)
    table = traces.merge(values.drop(columns=["length"]), on="trace_id", validate="one_to_one")
    table.insert(4, "value", table[value])
    table["cluster"] = labels
    table["centroid_distance"] = distance
    table["x"], table["y"] = xy[:, 0], xy[:, 1]
    table["encoder"] = feature_info.get("encoder", "")
    table["fields"] = ",".join(feature_info.get("fields", []))
    _write_table(out, table, list_column="program_ids")
    info = {**info, "value": value, "traces": int(len(table)), "features": feature_info,
            "sizes": {str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}}
    io.write_json(info_out, info)
    log.info("%d traces in %d clusters (%s)", len(table), info["n_clusters"], info["method"])
    return info


def select_stage(clustered_path, programs_path, nodes_path, cluster_info_path, selected_out, summary_out, plot_out, *,
                 per_cluster: int, strategy: str, temperature: float, seed: int, run: str,
                 min_quantile: float = 0.0) -> dict:
    """Rule traces_select: value-weighted sampling per cluster -> selected_traces.jsonl, summary, figure."""
    from difflab.traces import plots

    table = read_table(clustered_path)
    programs = read_programs_table(programs_path)
    nodes = read_table(nodes_path)[["id", "value", "visits_total"]].rename(columns={"value": "backed_up_value"})
    programs = programs.merge(nodes, on="id", how="left").set_index("id")
    chosen = select.sample_clusters(table["cluster"].to_numpy(), table["value"].to_numpy(), per_cluster=per_cluster,
                                    strategy=strategy, temperature=temperature, seed=seed, min_quantile=min_quantile)
    selected = table.iloc[chosen]
    records = []
    for row in selected.to_dict("records"):
        steps = programs.loc[list(row["program_ids"])]
        records.append({
            "trace_id": int(row["trace_id"]), "cluster": int(row["cluster"]), "value": float(row["value"]),
            "return": float(row["return"]), "leaf_reward": float(row["leaf_reward"]), "length": int(row["length"]),
            "programs": [{"id": int(pid), "code": step["code"], "reward": float(step["value"]),
                          "backed_up_value": float(step["backed_up_value"]), "visits": int(step["visits"]),
                          "visits_total": int(step["visits_total"]), "response": step["response"],
                          "reasoning": step["reasoning"]}
                         for pid, step in zip(row["program_ids"], steps.to_dict("records"))],
        })
    io.write_jsonl(selected_out, records)
    cluster_info = io.read_json(cluster_info_path)
    values = table["value"].to_numpy()
    summary = {
        "run": run,
        "traces": int(len(table)),
        "clusters": int(table["cluster"].nunique()),
        "selected": int(len(selected)),
        "clusters_covered": int(selected["cluster"].nunique()),
        "value": cluster_info["value"],
        "sampling": {"per_cluster": per_cluster, "strategy": strategy, "temperature": temperature,
                     "min_quantile": min_quantile, "seed": seed},
        "features": cluster_info["features"],
        "clustering": {k: cluster_info[k] for k in ("n_clusters", "method", "metric", "silhouette") if k in cluster_info},
        "value_all": _stats(values),
        "value_selected": _stats(selected["value"].to_numpy()),
        "per_cluster": [
            {"cluster": int(c), "size": int(len(g)), "selected": int(g.index.isin(selected.index).sum()),
             "mean_value": round(float(g["value"].mean()), 6), "max_value": round(float(g["value"].max()), 6)}
            for c, g in table.groupby("cluster")],
    }
    io.write_json(summary_out, summary)
    plots.selection_figure(table, chosen, plot_out, title=f"traces: {run}")
    log.info("selected %d of %d traces from %d clusters", len(selected), len(table), summary["clusters"])
    return summary


def _stats(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"n": 0}
    q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {"n": int(len(values)), "mean": round(float(values.mean()), 6), "min": round(float(q[0]), 6),
            "q25": round(float(q[1]), 6), "median": round(float(q[2]), 6), "q75": round(float(q[3]), 6),
            "max": round(float(q[4]), 6)}
