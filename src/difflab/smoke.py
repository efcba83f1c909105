"""The smoke target: proof that a real generation and a real embedding ran, saved and summarised.

    generate(config, prompts, out, usage_out)            answers to chat prompts via difflab.llm
    embed_sentences(config, sentences, out, plot, ...)   sentence embeddings + similarity heatmap
    summarize(...)                                        one JSON + one Markdown screen of what was built
"""

from __future__ import annotations

from pathlib import Path

from difflab import io
from difflab.errors import DifflabError
from difflab.llm import SamplingParams, client_from_config


def read_prompts(path: str | Path) -> list[dict]:
    records = io.read_jsonl(path, required=("id", "messages"))
    for lineno, record in enumerate(records, start=1):
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise DifflabError(f"{path}: record {lineno} (id {record['id']}): field 'messages' must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or not {"role", "content"} <= set(m):
                raise DifflabError(f"{path}: record {lineno} (id {record['id']}): field 'messages' needs role and content")
    if not records:
        raise DifflabError(f"{path}: no prompts")
    return records


def generate(config: dict, prompts_path: str | Path, out_path: str | Path, usage_path: str | Path,
             progress: bool = True) -> list[dict]:
    prompts = read_prompts(prompts_path)
    samples = config["smoke"]["samples_per_prompt"]
    params = SamplingParams.from_config(config["sampling"])
    client = client_from_config(config, progress=progress)
    completions = client.chat([p["messages"] for p in prompts], params, samples=samples)
    records = []
    for n, completion in enumerate(completions):
        prompt = prompts[n // samples]
        records.append({"id": prompt["id"], "messages": prompt["messages"], **completion.to_dict()})
    io.write_jsonl(out_path, records)
    client.write_usage(usage_path, extra={"sampling": params.__dict__ | {"stop": list(params.stop)}})
    return records


def embed_sentences(config: dict, sentences_path: str | Path, out_path: str | Path, plot_path: str | Path,
                    progress: bool = True) -> dict:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from difflab import embed

    sentences = io.read_lines(sentences_path)
    if not sentences:
        raise DifflabError(f"{sentences_path}: no sentences")
    section = config["embedding"]
    vectors = embed.embed(sentences, section["model"], batch_size=section["batch_size"],
                          normalize=section["normalize"], progress=progress)
    io.write_safetensors(out_path, {"embeddings": vectors},
                         metadata={"model": section["model"], "n": len(sentences), "dim": vectors.shape[1]})
    unit = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    similarity = (unit @ unit.T).numpy()
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(similarity, vmin=-1, vmax=1, cmap="RdBu_r")
    labels = [s if len(s) <= 28 else s[:25] + "..." for s in sentences]
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_title(f"Cosine similarity ({section['model']})")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    io.write_figure(plot_path, fig, dpi=120)
    off_diagonal = similarity[~np.eye(len(sentences), dtype=bool)]
    return {"n": len(sentences), "dim": int(vectors.shape[1]),
            "mean_off_diagonal_similarity": float(off_diagonal.mean()) if off_diagonal.size else None}


def summarize(model_dirs: list[str | Path], generations_path: str | Path, usage_path: str | Path,
              embeddings_path: str | Path, plot_path: str | Path, out_json: str | Path, out_md: str | Path) -> dict:
    import torch

    from difflab.models import gpt_encoding

    generations = io.read_jsonl(generations_path)
    encoding = gpt_encoding()
    gpt_tokens = sum(len(encoding.encode(g["text"])) for g in generations)
    usage = io.read_json(usage_path)
    tensors, meta = io.read_safetensors(embeddings_path)
    vectors = tensors["embeddings"]
    models = []
    for folder in model_dirs:
        folder = Path(folder)
        info = io.read_json(folder / "difflab_model.json")
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        models.append({"name": info["name"], "path": str(folder), "parameters": info["n_parameters"],
                       "size_mb": round(size / 2**20, 1), "fingerprint": info["fingerprint"][:16]})
    summary = {
        "models": models,
        "generation": {
            "path": str(generations_path),
            "answers": len(generations),
            "non_empty_answers": sum(1 for g in generations if g["text"].strip()),
            "answer_tokens_cl100k": gpt_tokens,
            "backend": usage["backend"],
            "usage": usage["usage"],
            "example": {"prompt": generations[0]["messages"][-1]["content"], "answer": generations[0]["text"]},
        },
        "embedding": {
            "path": str(embeddings_path),
            "model": meta.get("model"),
            "shape": list(vectors.shape),
            "unit_norm": bool(torch.allclose(vectors.norm(dim=1), torch.ones(len(vectors)), atol=1e-3)),
            "plot": str(plot_path),
        },
    }
    io.write_json(out_json, summary)
    lines = ["# difflab smoke run", "", "| what | where | facts |", "|---|---|---|"]
    for m in models:
        lines.append(f"| model {m['name']} | {m['path']}/ | {m['parameters'] / 1e6:.1f}M params, {m['size_mb']} MB, "
                     f"fingerprint {m['fingerprint']} |")
    u = usage["usage"]
    lines.append(f"| generations | {generations_path} | {len(generations)} answers, {u['completion_tokens']} new tokens, "
                 f"{u['cache_hits']} from cache, {u['completion_tokens_per_second'] or '-'} tokens/s |")
    lines.append(f"| embeddings | {embeddings_path} | {vectors.shape[0]} x {vectors.shape[1]} ({meta.get('model')}) |")
    lines.append(f"| similarity plot | {plot_path} | cosine heatmap |")
    ex = summary["generation"]["example"]
    lines += ["", f"Example — prompt: {ex['prompt']!r}", f"answer: {ex['answer']!r}", ""]
    io.write_text(out_md, "\n".join(lines))
    return summary
