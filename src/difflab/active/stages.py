"""What each rule of rules/active.smk runs: files in, files out.

An iteration is three files under `.../iter{i}/`: `texts.jsonl` (both models' new texts), their
`embeddings.safetensors`, and the checkpoint's `clusters.json` + `assignments.parquet` (KMeans over
every text so far, per-cluster scores, the areas the next iteration samples, the ARI against the
previous iteration). Whether iteration i+1 runs is `iterations.decide(clusters.json, section)`, run by the
workflow from the current config: a larger budget adds iterations and leaves the finished ones alone.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from difflab import io
from difflab.active import areas as areas_mod
from difflab.active import hypotheses as hyp
from difflab.active import sampler, validate
from difflab.active.iterations import decide
from difflab.errors import DifflabError


def _clients(config: dict, base: str, finetuned: str) -> dict:
    from difflab.llm import client_from_config

    def client(model):
        return client_from_config({**config, "llm": {**config["llm"], "backend": "local", "model": model}})
    return {"base": client(base), "finetuned": client(finetuned)}


def _params(section: dict):
    from difflab.llm import SamplingParams

    return SamplingParams.from_config(section["sampling"])


def _read_texts(paths) -> list[dict]:
    return [row for p in paths for row in io.read_jsonl(p, required=["id", "model", "text", "prompt"])]


# --------------------------------------------------------------------------- sampling


def sample(iteration: int, out_texts: str, *, base: str, finetuned: str, config: dict, section: dict, mode: str,
           prompt_file: str | None = None, previous_state: str | None = None, previous_assignments: str | None = None,
           previous_texts: list[str] = ()) -> None:
    """prompt_file: the initial prompt set as the rule's input resolves it (section["prompts"] is relative
    to the repository, not to the working directory)."""
    start = time.perf_counter()
    if iteration == 0:
        n = section["exhaustive_samples"] if mode == "exhaustive" else section["initial_samples"]
        prompts = sampler.initial_prompts(prompt_file, section["categories"], section["topics"],
                                          n, section["seed"])
    else:
        state = io.read_json(previous_state)
        texts = {t["id"]: t for t in _read_texts(previous_texts)}
        assigned = pd.read_parquet(previous_assignments)
        members: dict[int, list[dict]] = {}
        for text_id, label in zip(assigned["id"], assigned["cluster"]):
            members.setdefault(int(label), []).append(texts[text_id])
        prompts = sampler.targeted_prompts(state["areas"], members, section["prefix_words"],
                                           section["seed"] + iteration)
    rows = sampler.generate_pairs(prompts, _clients(config, base, finetuned), _params(section), iteration)
    seconds = time.perf_counter() - start
    io.write_jsonl(out_texts, [{**r, "generation_seconds": round(seconds / max(len(rows), 1), 4)} for r in rows])
    print(f"iteration {iteration}: {len(rows)} texts ({len(prompts)} prompts x 2 models) in {seconds:.1f} s")


def embed_texts(texts_path: str, out: str, *, model: str, batch_size: int = 64) -> None:
    from difflab import embed

    rows = io.read_jsonl(texts_path, required=["id", "text"])
    start = time.perf_counter()
    vectors = embed.embed([r["text"] for r in rows], model, batch_size=batch_size, normalize=True)
    io.write_safetensors(out, {"embeddings": vectors.contiguous()},
                         {"ids": "\n".join(r["id"] for r in rows), "seconds": f"{time.perf_counter() - start:.3f}"})


def _load_embeddings(paths) -> tuple[np.ndarray, list[str], list[float]]:
    """Stacked vectors, their text ids, and each file's embedding seconds."""
    chunks, ids, seconds = [], [], []
    for p in paths:
        tensors, meta = io.read_safetensors(p)
        chunks.append(tensors["embeddings"].numpy())
        ids += meta["ids"].split("\n") if meta.get("ids") else []
        seconds.append(float(meta.get("seconds", 0)))
    return np.concatenate(chunks), ids, seconds


# --------------------------------------------------------------------------- clustering (the checkpoint)


def cluster_iteration(iteration: int, texts_paths: list[str], embeddings_paths: list[str], out_state: str,
                      out_assignments: str, *, section: dict, mode: str, previous_assignments: str | None = None,
                      previous_state: str | None = None) -> dict:
    start = time.perf_counter()
    texts = _read_texts(texts_paths)
    x, ids, embed_seconds = _load_embeddings(embeddings_paths)
    this_embed = embed_seconds[-1]
    if ids != [t["id"] for t in texts]:
        raise DifflabError(f"{embeddings_paths[-1]}: embeddings do not match the texts (rerun the embed rule)")
    is_ft = np.array([t["model"] == "finetuned" for t in texts])
    fit = areas_mod.cluster(x, section["n_clusters"], section["seed"])
    k = len(fit.centers)
    ratio, uncertainty = areas_mod.boundary_uncertainty(x, fit.centers, fit.labels)
    div = areas_mod.model_divergence(fit.labels, is_ft, k)
    sizes = np.bincount(fit.labels, minlength=k)
    per_iteration = section["samples_per_iteration"]
    chosen = areas_mod.select_areas(div["js_contribution"], uncertainty, sizes, n_areas=section["n_areas"],
                                    min_cluster_size=section["min_cluster_size"], samples=per_iteration)
    ari, shared = None, 0
    if previous_assignments:
        prev = pd.read_parquet(previous_assignments)
        ari, shared = areas_mod.adjusted_rand(dict(zip(prev["id"], prev["cluster"].astype(int))),
                                              dict(zip(ids, fit.labels.tolist())))
    frame = pd.DataFrame({"id": ids, "model": [t["model"] for t in texts], "iteration": [t["iteration"] for t in texts],
                          "cluster": fit.labels, "boundary_ratio": ratio.astype(np.float32)})
    io.write_parquet(out_assignments, frame)
    generation = sum(t.get("generation_seconds", 0.0) for t in texts)
    before = io.read_json(previous_state)["seconds"]["total"] if previous_state else 0.0
    cluster_seconds = time.perf_counter() - start
    this_generation = sum(t.get("generation_seconds", 0.0) for t in texts if t["iteration"] == iteration)
    state = {
        "iteration": iteration, "mode": mode,
        "texts": len(texts), "texts_per_model": int(is_ft.sum()),
        "k": k, "silhouette": round(fit.silhouette, 4), "ari_vs_previous": ari, "shared_texts": shared,
        "min_cluster_size": int(sizes.min()), "js": round(div["js"], 5),
        "clusters": [{"cluster": c, "size": int(sizes[c]), "base": int(div["count_base"][c]),
                      "finetuned": int(div["count_finetuned"][c]),
                      "finetuned_share": round(float(div["finetuned_share"][c]), 4),
                      "js_contribution": round(float(div["js_contribution"][c]), 5),
                      "boundary_uncertainty": round(float(uncertainty[c]), 4)} for c in range(k)],
        "areas": [a.to_dict() for a in chosen],
        "seconds": {"generation": round(generation, 2), "embedding": round(sum(embed_seconds), 2),
                    "this_iteration": round(this_generation + this_embed + cluster_seconds, 2),
                    "total": round(before + this_generation + this_embed + cluster_seconds, 2)},
    }
    io.write_json(out_state, state)
    return state


# --------------------------------------------------------------------------- hypotheses and validation


def hypotheses(state_path: str, texts_paths: list[str], assignments_path: str, out: str, *, config: dict,
               section: dict, use_llm: bool = True) -> list[dict]:
    state = io.read_json(state_path)
    stop_reason = decide(state, section)[1]
    texts = _read_texts(texts_paths)
    by_id = {t["id"]: t for t in texts}
    assigned = pd.read_parquet(assignments_path).sort_values(["cluster", "boundary_ratio", "id"])
    divergent = sorted((c for c in state["clusters"] if c["finetuned_share"] > 0.5 and c["finetuned"] > 0),
                       key=lambda c: -c["js_contribution"])[: section["n_hypotheses"]]
    background = [t.get("completion", t["text"]) for t in texts]
    records = []
    for c in divergent:
        members = assigned[assigned["cluster"] == c["cluster"]]
        ft_ids = [i for i, m in zip(members["id"], members["model"]) if m == "finetuned"]
        bs_ids = [i for i, m in zip(members["id"], members["model"]) if m == "base"]
        if not bs_ids:  # a cluster only the finetuned model reaches: contrast with base answers to the same prompts
            pairs = {by_id[i]["pair"] for i in ft_ids}
            bs_ids = [t["id"] for t in texts if t["model"] == "base" and t["pair"] in pairs]
        ft, bs = [by_id[i]["text"] for i in ft_ids], [by_id[i]["text"] for i in bs_ids]
        written = [[by_id[i].get("completion", by_id[i]["text"]) for i in ids] for ids in (ft_ids, bs_ids)]
        n = section["samples_in_prompt"]
        records.append({"cluster": c["cluster"], "support": {"finetuned": c["finetuned"], "base": c["base"]},
                        "finetuned_share": c["finetuned_share"], "js_contribution": c["js_contribution"],
                        # words the models wrote, not the prefill both were given
                        "distinctive": hyp.weighted_log_odds(*written, background),
                        "finetuned_samples": ft[:n], "base_samples": bs[:n]})
    client = params = None
    if use_llm and records:
        from difflab.llm import SamplingParams, client_from_config

        client = client_from_config(config)
        params = SamplingParams(max_new_tokens=section["hypothesis_tokens"], temperature=0.0)
    result = hyp.write_hypotheses(records, client, params)
    io.write_json(out, {"iteration": state["iteration"], "stopped": stop_reason, "hypotheses": result})
    return result


def heldout(prompt_file: str, out: str, *, base: str, finetuned: str, config: dict, section: dict) -> None:
    texts = [r["prompt"] for r in io.read_jsonl(prompt_file, required=["prompt"])]
    texts += [f"{c} {t}." for c in section["categories"] for t in section["heldout_topics"]]
    overlap = set(section["topics"]) & set(section["heldout_topics"])
    if overlap:
        raise DifflabError(f"config: active.heldout_topics repeats sampling topics {sorted(overlap)}: not held out")
    prompts = [{"prompt": p, "prefix": "", "source": "heldout", "target_cluster": None, "reason": "heldout"}
               for p in texts]
    rows = sampler.generate_pairs(prompts, _clients(config, base, finetuned), _params(section), iteration=999)
    by_pair: dict[str, dict] = {}
    for r in rows:
        by_pair.setdefault(r["pair"], {"prompt": r["prompt"]})[r["model"]] = r["text"]
    io.write_jsonl(out, list(by_pair.values()))


def validate_hypotheses(hypotheses_path: str, heldout_path: str, out: str, *, config: dict, section: dict) -> dict:
    found = io.read_json(hypotheses_path)
    pairs = io.read_jsonl(heldout_path, required=["finetuned", "base"])
    pairs = [p for p in pairs if p["finetuned"].strip() != p["base"].strip()]
    statements = [h["hypothesis"] for h in found["hypotheses"]] + [section["control_hypothesis"]]
    ft, bs = [p["finetuned"] for p in pairs], [p["base"] for p in pairs]
    if section["judge"] == "llm":
        from difflab.llm import SamplingParams, client_from_config

        votes = validate.llm_votes(statements, ft, bs, client_from_config(config),
                                   SamplingParams(max_new_tokens=4, temperature=0.0), seed=section["seed"])
        rank_p = None
    else:
        from difflab import embed

        def encode(texts):
            return embed.embed(texts, section["embedding_model"], normalize=True).numpy()
        votes, rank_p = validate.embedding_votes(statements, ft, bs, encode)
    scores = validate.score(votes, alpha=section["alpha"], rank_p=rank_p)
    hypotheses = [{**h, "validation": s} for h, s in zip(found["hypotheses"], scores[:-1])]
    hypotheses.sort(key=lambda h: (not h["validation"]["validated"], -(h["validation"]["accuracy"] or 0)))
    result = {**found, "judge": section["judge"], "heldout_pairs": len(pairs), "hypotheses": hypotheses,
              "validated": sum(h["validation"]["validated"] for h in hypotheses),
              "control": {"hypothesis": section["control_hypothesis"], "validation": scores[-1]}}
    io.write_json(out, result)
    return result


# --------------------------------------------------------------------------- report


def report(state_paths: list[str], validated_path: str, assignments_path: str, embeddings_paths: list[str],
           out_json: str, out_projection: str, out_divergence: str, out_convergence: str) -> dict:
    from difflab.active import plots

    states = [io.read_json(p) for p in state_paths]
    final = states[-1]
    found = io.read_json(validated_path)
    top = found["hypotheses"][0] if found["hypotheses"] else None
    summary = {
        "mode": final["mode"], "iterations": len(states), "stopped": found["stopped"],
        "texts_generated": final["texts"], "texts_per_model": final["texts_per_model"],
        "silhouette": final["silhouette"], "wall_seconds": final["seconds"]["total"],
        "ari_per_iteration": [s["ari_vs_previous"] for s in states],
        "validated_hypotheses": found["validated"],
        "top_hypothesis": top and {"hypothesis": top["hypothesis"], "source": top["source"],
                                   "accuracy": top["validation"]["accuracy"], "q_value": top["validation"]["q_value"],
                                   "validated": top["validation"]["validated"]},
        "control": found["control"]["validation"],
    }
    io.write_json(out_json, summary)
    x, ids, _ = _load_embeddings(embeddings_paths)
    assigned = pd.read_parquet(assignments_path).set_index("id").loc[ids]
    plots.projection(x, assigned["model"].to_numpy(), assigned["cluster"].to_numpy(), out_projection)
    plots.divergence(final["clusters"], out_divergence)
    plots.convergence(states, out_convergence)
    return summary
