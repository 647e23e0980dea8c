"""``nnunetv2-llm analyze``: the paper's Section 4 (activation and spectrum analysis) on a trained fold.

What is measured, for every validation case of the fold (``splits_final.json``):

* Features. The trained fold is loaded the way ``nnUNetv2_predict`` loads it
  (``nnUNetPredictor.initialize_from_trained_model_folder``). Forward hooks on ``network.llm`` catch
  its input ("Act. Before", the encoder's feature map at the block's stage) and its output
  ("Act. After", what the decoder receives). A plain nnU-Net has no block: its "before" map is the
  encoder's bottleneck, which is also its decoder input, and it has no "after" map.
* Input. One patch per case, so every case gives the block the token grid it was trained on: the
  preprocessed case (nnU-Net's dataset class for the preprocessed folder) is cropped to the
  configuration's patch size around the centre of its foreground bounding box (the image centre
  when a case has no foreground), and zero-padded where it is smaller (as nnU-Net's predictor pads).
  For the 2d configuration of a volume, the slice with the most foreground is used.
* Activation map (following Pang et al., "Frozen transformers in language models are effective
  visual encoder layers", as the paper does): ``A = mean_c |F[c]|`` over the channels of a
  ``C x *spatial`` feature map, upsampled to the patch (bilinear in 2D, trilinear in 3D,
  ``align_corners=False``), then min-max normalised over the patch to [0, 1] (all zeros if constant).
* Concentration IoU: ``|{A >= 0.4} & G| / |{A >= 0.4} | G|`` with ``G`` the ground-truth
  foreground (any label > 0) of the patch; 1.0 when both sets are empty.
* Spectrum of the decoder input (the block's output; the bottleneck for a plain net), as the paper computes it:
  channel-wise, the singular values ``s_1 >= ... >= s_k`` of each channel's H x W map (3D: of each of its D
  slices; ``k = min(H, W)``), ``p_i = s_i / sum_j s_j``, and per map:
  effective rank (Roy & Vetterli 2007) ``ER = exp(-sum_i p_i ln p_i)``, in ``[1, k]``, and the largest singular
  value ratio ``LSVR = -ln(s_1 / sum_j s_j) = -ln p_1``, in ``[0, ln k]`` (0 when one direction holds
  everything), each averaged over the maps. The same two from one SVD of the ``C x N`` matrix of the map
  (``N`` spatial positions, no centring) are reported as ``effective_rank_matrix`` and ``lsvr_matrix``.
  All-zero maps are left out (null when every map is zero).

Outputs (written atomically): ``analysis.json`` (definitions, per-case values, means),
``cases/<case>.png`` (image, ground-truth contour and the maps; one row per analysed fold),
``distributions.png`` (ER and LSVR violins, concentration IoU bars) and ``features/<label>/<case>.npz``
(the raw before/after feature maps, the patch and the mask) from which every number can be recomputed.

This module runs those steps (:func:`analyse`) and keeps their definitions: the fold comes from
:mod:`.analysed_fold`, the patches from :mod:`.analysis_patches`, the features from :mod:`.feature_probe`, the
numbers from :mod:`.feature_metrics` and the figures from :mod:`.analysis_figures`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.files import atomic_path, write_json
from ..nnunet.datasets import dataset_name
from ..nnunet.splits import parse_folds, validation_keys
from .analysed_fold import AnalysedFold, AnalysisError, find_analysed_fold, load_network
from .analysis_figures import save_case_figure, save_distributions
from .analysis_patches import load_cases
from .feature_metrics import THRESHOLD, feature_metrics, mean_metrics
from .feature_probe import FeatureProbe

DEFINITIONS = {
    "activation_map": "A = mean over channels of |F| (C x *spatial feature map), upsampled to the patch "
                      "(bilinear 2D / trilinear 3D, align_corners=False), min-max normalised over the patch to "
                      "[0,1] (Pang et al. 2023)",
    "act_before": "input of network.llm (the encoder's feature map at the block's stage); for a plain nnU-Net, "
                  "the encoder's bottleneck",
    "act_after": "output of network.llm (the decoder input); null for a plain nnU-Net",
    "concentration_iou": "|{A >= threshold} & G| / |{A >= threshold} | G|, G = ground-truth foreground (label > 0) "
                         "of the patch; 1.0 when both are empty",
    "decoder_input": "the LLM block's output; for a plain nnU-Net the encoder's bottleneck",
    "singular_values": "the paper's channel-wise SVD: s_1 >= ... >= s_k of each channel's H x W map of the "
                       "decoder input (3D: of each of its D slices), k = min(H, W); p_i = s_i / sum_j s_j",
    "effective_rank": "exp(-sum_i p_i ln p_i) (Roy & Vetterli 2007) of each channel map's spectrum, in [1, k], "
                      "averaged over the maps (the paper's definition)",
    "lsvr": "-ln(s_1 / sum_j s_j) = -ln p_1 of each channel map's spectrum, in [0, ln k], averaged over the maps",
    "singular_values_matrix": "s_1 >= ... >= s_k of the C x N matrix of the decoder input (N spatial positions, "
                              "no centring), k = min(C, N)",
    "effective_rank_matrix": "exp(-sum_i p_i ln p_i) of the C x N matrix's spectrum, in [1, k]",
    "lsvr_matrix": "-ln p_1 of the C x N matrix's spectrum, in [0, ln k]",
    "input": "one patch per case: the preprocessed case cropped to the patch size around its foreground "
             "bounding-box centre, zero-padded where smaller; 2d on volumes: the slice with most foreground",
}


def analyse_fold(analysed: AnalysedFold, name: str, keys: list[str], out: Path, device,
                 threshold: float) -> tuple[dict, dict]:
    """Per-case metrics of one analysed fold; returns (JSON entry, {case: (Case, before map, after map)} for plots)."""
    network, cm = load_network(analysed, device)
    cases = load_cases(name, analysed.variant.configuration, cm, keys)
    probe = FeatureProbe(network)
    per_case, plots = {}, {}
    feature_shape = None
    for case in cases:
        features = probe(case.image, device)
        feature_shape = list(features.decoder_input.shape)
        metrics = feature_metrics(features, case.mask, threshold)
        before, after = metrics.pop("_maps")
        per_case[case.identifier] = {**metrics, "patch_origin": case.origin, "slice": case.slice_index}
        plots[case.identifier] = (case, before, after)
        arrays = {"before": features.before, "image": case.image, "mask": case.mask}
        if features.after is not None:
            arrays["after"] = features.after
        with atomic_path(out / "features" / analysed.label / f"{case.identifier}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
    llm = None
    if probe.has_llm:
        spec = network.llm.spec
        llm = {"source": spec.source, "layer": spec.layer, "init": spec.init, "trainable": spec.trainable,
               "positions": spec.positions, "attention": spec.attention, "stage": int(network.stage)}
    v = analysed.variant
    entry = {"label": analysed.label, "trainer": v.trainer, "plans": v.plans, "configuration": v.configuration,
             "fold": analysed.fold, "folder": str(v.folder), "checkpoint": analysed.checkpoint,
             "has_llm": probe.has_llm, "llm": llm, "patch_size": [int(p) for p in cm.patch_size],
             "decoder_input_shape": feature_shape,
             "cases": per_case, "mean": mean_metrics(per_case)}
    return entry, plots


def analyse(dataset, configuration: str, trainers: list[tuple[str, str]], fold, out: Path | None,
            checkpoint: str = "checkpoint_final.pth", device: str = "auto", threshold: float = THRESHOLD,
            echo=print) -> dict:
    """Analyse the fold of every (trainer, plans) pair; write the JSON and figures; return the JSON dict."""
    import torch

    from ..nnunet.environment import resolve_device
    if not 0.0 <= threshold <= 1.0:
        raise AnalysisError(f"--threshold {threshold}: activation maps are normalised to [0, 1]; pick a value "
                            f"in that range (the paper uses 0.4).")
    name = dataset_name(dataset)
    (fold,) = parse_folds([fold], name)
    device = torch.device(resolve_device(device))
    if len(set(trainers)) != len(trainers):
        raise AnalysisError(f"a trainer (and plans) is listed twice: {trainers}; list each trainer (and plans) once.")
    analysed = [find_analysed_fold(name, t, p, configuration, fold, checkpoint) for t, p in trainers]
    if out is None:
        out = analysed[0].fold_folder / ("analysis" if len(analysed) == 1 else "analysis_compare")
    out = Path(out)
    keys = validation_keys(name, fold)
    entries, plots = [], []
    for one in analysed:
        cases = ("training cases of fold all (in-sample: it trained on them)" if fold == "all" else
                 f"validation cases of fold {fold}")
        echo(f"{one.label}: {len(keys)} {cases} on {device}")
        entry, fold_plots = analyse_fold(one, name, keys, out, device, threshold)
        entries.append(entry)
        plots.append(fold_plots)
    for key in keys:
        rows = [(e["label"], *p[key]) for e, p in zip(entries, plots)]
        save_case_figure(out / "cases" / f"{key}.png", key, rows, threshold, [e["cases"][key] for e in entries])
    save_distributions(out / "distributions.png", entries, threshold)
    result = {"dataset": name, "configuration": configuration, "fold": fold, "threshold": threshold,
              "definitions": DEFINITIONS, "validation_cases": keys, "runs": entries}
    write_json(out / "analysis.json", result, indent=2)
    echo(format_summary(entries, threshold))
    echo(f"wrote {out / 'analysis.json'}, {out / 'distributions.png'} and {len(keys)} case figures in {out / 'cases'}")
    return result


def format_summary(entries: list[dict], threshold: float = THRESHOLD) -> str:
    """The means per analysed fold, with a legend: what each column is and which direction the paper reads as better."""
    fmt = lambda v: "   -  " if v is None else f"{v:6.3f}"  # noqa: E731
    width = max(len(e["label"]) for e in entries)
    lines = [f"{'run':<{width}}  IoU before  IoU after      ER    LSVR  ER (CxN)  LSVR (CxN)"]
    for e in entries:
        m = e["mean"]
        lines.append(f"{e['label']:<{width}}      {fmt(m['iou_before'])}     {fmt(m['iou_after'])}  "
                     f"{fmt(m['effective_rank'])}  {fmt(m['lsvr'])}    {fmt(m['effective_rank_matrix'])}      "
                     f"{fmt(m['lsvr_matrix'])}")
    lines += ["",
              f"Means over the fold's validation cases. IoU before / after: overlap of the activation map >= "
              f"{threshold:g} with the ground truth, at the block's input / output (higher = attention more on the "
              f"object; the paper's Fig. 4). ER: effective rank of the decoder input, channel-wise SVD (higher = "
              f"more dimensions used); LSVR = -ln(s1 / sum s) (higher = the largest direction dominates less; the "
              f"paper reads higher ER and LSVR as richer features). (CxN): the same from one SVD of the C x N "
              f"matrix. Definitions in analysis.json."]
    return "\n".join(lines)
