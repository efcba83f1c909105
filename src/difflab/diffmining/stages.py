"""What each diffmining rule runs: read the rule's inputs, call the library, write its outputs.
(diffmining_tokenize calls data.prepare_dataset; diffmining_ask/relevance call overview directly.)"""

from __future__ import annotations

from difflab import io, models
from difflab.diffmining import orderings, plots
from difflab.diffmining.reductions import Reductions


def _extraction_args(section: dict, method: str) -> dict:
    """The extraction's keyword arguments from the rule's params (the layer and the identity prompt
    are there only for the methods that read them)."""
    args = dict(method=method, batch_size=section["batch_size"], device=section["device"], dtype=section["dtype"],
                vocab_size_limit=section["vocab_size_limit"] or None)
    return args | {key: section[key] for key in ("layer", "identity_prompt") if key in section}


def ratio_definition(extraction: dict) -> str:
    """What the per-sample ratios are: the models' likelihood for `direct`; for the logit lens and
    patchscope, the distribution that method decodes at its layer, which is not the models' output."""
    ratio = "sum over analysed positions of log p_finetuned(next token) - log p_base(next token)"
    if extraction["method"] == "direct":
        return f"{ratio}, p: each model's output distribution"
    return (f"{ratio}, p: the {extraction['method']} decode at decoder layer {extraction['layer']} of each model "
            "(not the models' output likelihood; the direct extraction's file has that)")


def write_reductions(red: Reductions, ratios: list, base_dir, data_path, dataset: str, reductions_out,
                     stats_out, ratios_out=None) -> None:
    """The reduce rules' outputs: reductions, global token stats, optional per-sample log ratios (with
    each sample's record number in the dataset file, `records`, in the same order)."""
    red.save(reductions_out)
    io.write_json(stats_out, orderings.global_token_stats(red, models.TokenDecoder(base_dir), dataset))
    if ratios_out:
        from difflab.diffmining.data import load_dataset

        tensors, _ = load_dataset(data_path)
        records = tensors["record"].tolist() if "record" in tensors else None  # (older tokenized files: none)
        io.write_json(ratios_out, {"dataset": dataset, "definition": ratio_definition(red.metadata["extraction"]),
                                   "extraction": red.metadata["extraction"],
                                   "n_samples": red.metadata["dataset"]["n_samples"], "records": records,
                                   "log_likelihood_ratios": ratios})
    print(f"{dataset}: {red.total_positions} positions, vocabulary {red.vocab_size}, top-{red.k}; "
          f"{int((red.topk_pos_counts > 0).sum())} tokens ever in a top-K positive set")


def reduce_in_memory(base_dir, ft_dir, data_path, *, dataset: str, method: str, extraction: dict, k: int,
                     likelihood_ratios: bool, reductions_out, stats_out, ratios_out=None) -> None:
    """Rule diffmining_reduce (in_memory: true)."""
    from difflab.diffmining import extract  # models, tokenizers and the numba kernel: the extraction rules only

    red, ratios = extract.mine_in_memory(base_dir, ft_dir, data_path, k=k, likelihood_ratios=likelihood_ratios,
                                         **_extraction_args(extraction, method))
    write_reductions(red, ratios, base_dir, data_path, dataset, reductions_out, stats_out, ratios_out)


def save_model_logits(model_dir, data_path, out_path, *, method: str, extraction: dict) -> None:
    """Rule diffmining_logits (in_memory: false)."""
    from difflab.diffmining import extract  # models, tokenizers and the numba kernel: the extraction rules only

    meta = extract.save_logits(model_dir, data_path, out_path, **_extraction_args(extraction, method))
    print(f"{out_path}: {meta['stored_vocab']} ids per position, fp16")


def reduce_from_disk(base_logits, ft_logits, base_dir, ft_dir, data_path, *, dataset: str, k: int, batch_size: int,
                     likelihood_ratios: bool, reductions_out, stats_out, ratios_out=None) -> None:
    """Rule diffmining_reduce (in_memory: false)."""
    from difflab.diffmining import extract  # models, tokenizers and the numba kernel: the extraction rules only

    red, ratios = extract.reduce_saved_logits(base_logits, ft_logits, base_dir, ft_dir, data_path, k=k,
                                              batch_size=batch_size, likelihood_ratios=likelihood_ratios)
    write_reductions(red, ratios, base_dir, data_path, dataset, reductions_out, stats_out, ratios_out)


def ordering(reductions_path, base_dir, out_json, scatter_png, bar_png, *, dataset: str, ordering_type: str,
             token_options: dict, nmf_options: dict, label: str) -> None:
    """Rule diffmining_ordering: orderings.json and its two figures (nmf_options, with the seed: NMF's only)."""
    keys = ("n_topics", "beta", "orthogonal_weight", "mode", "max_tokens", "max_iter", "tol", "seed")
    nmf_args = {k: nmf_options[k] for k in keys} if ordering_type == "nmf" else None
    orderings.write_orderings(reductions_path, base_dir, out_json, dataset=dataset, ordering_type=ordering_type,
                              options=token_options, nmf_options=nmf_args)
    data = orderings.read_orderings(out_json)
    plots.ordering_scatter(data, scatter_png, title=f"{label} - {dataset} - {ordering_type}")
    plots.ordering_bar(data, bar_png, title=f"{label} - {dataset} - {ordering_type}")


def dataset_plots(reductions_path, base_dir, occurrence_png, positions_png, *, dataset: str, label: str) -> None:
    """Rule diffmining_plots: occurrence bar chart and positional density of one dataset."""
    red = Reductions.load(reductions_path)
    decoder = models.TokenDecoder(base_dir)
    plots.occurrence_bar(red, decoder, occurrence_png, title=f"{label} - {dataset}: top-{red.k} occurrences")
    plots.positional_density(red, decoder, positions_png, title=f"{label} - {dataset}: where the leading tokens appear")


def run_metadata(reductions: dict[str, str], out_path, *, pair: dict, params: dict) -> dict:
    """Rule diffmining_metadata: every parameter, both models' fingerprints, counts per dataset."""
    per_dataset = {}
    models = {}
    for dataset, path in reductions.items():
        summary = Reductions.read_summary(path)
        meta = summary["metadata"]
        models = {"base": meta["base"], "finetuned": meta["finetuned"]}
        per_dataset[dataset] = {
            "total_positions": summary["total_positions"], "analysed_vocab_size": summary["vocab_size"],
            "k": summary["k"], "tokens_in_any_topk_positive": summary["tokens_in_any_topk_positive"],
            "extraction": meta["extraction"], "device": meta["device"], "dtype": meta["dtype"],
            "vocabulary": meta["vocabulary"], "dataset": meta["dataset"], "seconds": meta["seconds"]}
    record = {"method": "diffmining", "pair": pair, "models": models, "parameters": params, "datasets": per_dataset}
    io.write_json(out_path, record)
    return record


def overview(orderings_files: dict[str, str], out_path, *, token_budget: int, datasets: list[str]) -> None:
    """Rule diffmining_overview; orderings_files keys are 'ordering_type/dataset'."""
    from difflab.diffmining.overview import write_overview

    keyed = {tuple(key.split("/", 1)): path for key, path in orderings_files.items()}
    write_overview(keyed, out_path, token_budget, datasets)
