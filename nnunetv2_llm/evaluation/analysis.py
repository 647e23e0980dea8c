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
``cases/<case>.png`` (image, ground-truth contour and the maps; one row per compared run),
``distributions.png`` (ER and LSVR violins, concentration IoU bars) and ``features/<run>/<case>.npz``
(the raw before/after feature maps, the patch and the mask) from which every number can be recomputed.
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UserError, did_you_mean
from ..core.files import atomic_path, check_checkpoint_file, write_json
from ..nnunet.datasets import dataset_name, require_folder
from ..nnunet.results import TrainedResults, trained_names, trained_results
from ..nnunet.splits import parse_folds, validation_keys

THRESHOLD = 0.4
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
FEATURE_METRICS = ("iou_before", "iou_after", "effective_rank", "lsvr", "effective_rank_matrix", "lsvr_matrix")


class AnalysisError(UserError, ValueError):
    """A run, fold or split cannot be analysed; the message says what exists and how to fix it."""


# ---------------------------------------------------------------- metrics (pure numpy)

def activation_map(features, size: tuple[int, ...]) -> np.ndarray:
    """Channel-mean of |features| (C x *spatial), upsampled to ``size`` and min-max normalised to [0, 1]."""
    import torch
    import torch.nn.functional as F
    t = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if t.ndim not in (3, 4):
        raise ValueError(f"features must be C x H x W or C x D x H x W, got shape {tuple(t.shape)}")
    mean_abs = t.abs().mean(0)[None, None]
    mode = "bilinear" if mean_abs.ndim == 4 else "trilinear"
    up = F.interpolate(mean_abs, size=tuple(int(s) for s in size), mode=mode, align_corners=False)[0, 0]
    up = up.double().numpy()
    lo, hi = up.min(), up.max()
    return np.zeros_like(up) if hi - lo <= 0 else (up - lo) / (hi - lo)


def concentration_iou(act_map: np.ndarray, mask: np.ndarray, threshold: float = THRESHOLD) -> float:
    """IoU of the highlighted region ``act_map >= threshold`` with the ground-truth foreground ``mask``."""
    act_map, mask = np.asarray(act_map), np.asarray(mask, dtype=bool)
    if act_map.shape != mask.shape:
        raise ValueError(f"activation map {act_map.shape} and mask {mask.shape} differ in shape")
    highlighted = act_map >= threshold
    union = np.logical_or(highlighted, mask).sum()
    return 1.0 if union == 0 else float(np.logical_and(highlighted, mask).sum() / union)


def channel_spectra(features) -> np.ndarray:
    """The paper's channel-wise SVD: one row of singular values per channel's H x W map (3D: per D slice too)."""
    maps = np.asarray(features, dtype=np.float64)
    return np.linalg.svd(maps.reshape(-1, *maps.shape[-2:]), compute_uv=False)


def mean_over_spectra(metric, spectra: np.ndarray) -> float:
    """A spectrum metric averaged over the channel maps; all-zero maps (NaN) are left out."""
    values = [v for v in (metric(sv) for sv in spectra) if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def singular_values(features) -> np.ndarray:
    """Singular values of the C x N matrix of a C x *spatial feature map, in float64, descending."""
    matrix = np.asarray(features, dtype=np.float64)
    return np.linalg.svd(matrix.reshape(matrix.shape[0], -1), compute_uv=False)


def effective_rank(sv: np.ndarray) -> float:
    """Roy & Vetterli's effective rank exp(H(p)), p = s / sum(s); NaN for an all-zero spectrum."""
    sv = np.asarray(sv, dtype=np.float64)
    total = sv.sum()
    if total <= 0:
        return math.nan
    p = sv[sv > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def lsvr(sv: np.ndarray) -> float:
    """Largest singular value ratio on a negative log scale, -ln(s_1 / sum(s)); NaN for an all-zero spectrum."""
    sv = np.asarray(sv, dtype=np.float64)
    total = sv.sum()
    return math.nan if total <= 0 else float(-np.log(sv.max() / total))


# ---------------------------------------------------------------- files

def _json_value(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


# ---------------------------------------------------------------- runs and cases

@dataclass
class Run:
    """One trained fold of a variant, and the checkpoint to analyse."""

    variant: TrainedResults
    fold: int | str
    checkpoint: str

    @property
    def label(self) -> str:
        return self.variant.label

    @property
    def fold_folder(self) -> Path:
        return self.variant.fold_folder(self.fold)


def find_run(name: str, trainer: str, plans: str, configuration: str, fold, checkpoint: str) -> Run:
    require_folder("nnUNet_results")
    variant = trained_results(name, trainer, plans, configuration)
    run = Run(variant, fold, checkpoint)
    if not variant.folder.is_dir():
        found = trained_names(variant.folder.parent, configuration, plans)
        raise AnalysisError(f"-tr {trainer} -p {plans}: no results of that run in {variant.folder}. Runs of -c "
                            f"{configuration} that finished an epoch: {', '.join(found) or 'none'}."
                            f"{did_you_mean(trainer, found)}")
    if not variant.checkpoint(fold, checkpoint).is_file():
        folder = variant.folder
        found = sorted(str(p.relative_to(folder.parent)) for p in folder.parent.glob(f"*__{configuration}/fold_*/"
                                                                                      f"{checkpoint}"))
        raise AnalysisError(
            f"no {checkpoint} in {run.fold_folder}: train it first ({variant.train_command(fold)}) or pick a trained "
            f"run (found: {found or 'none'}).")
    return run


def load_network(run: Run, device):
    """The trained net as nnU-Net's predictor builds it (plans.json + checkpoint), in eval mode."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from ..nnunet.environment import ensure_trainer_lookup
    from ..core.network import unwrap
    ensure_trainer_lookup()
    check_checkpoint_file(run.fold_folder / run.checkpoint)
    with contextlib.redirect_stdout(io.StringIO()):  # the predictor narrates the trainer lookup
        predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=device,
                                    verbose=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(run.variant.folder), use_folds=(run.fold,),
                                                       checkpoint_name=run.checkpoint)
    network = unwrap(predictor.network).to(device).eval()
    return network, predictor.configuration_manager


@dataclass
class Patch:
    """One network input patch of a case, with its ground-truth foreground."""

    identifier: str
    image: np.ndarray  # C x *patch
    mask: np.ndarray  # bool, *patch
    origin: list[int]  # patch start in the preprocessed case (negative where padded)
    slice_index: int | None  # 2d configuration: the slice of the preprocessed case


def crop_or_pad(image: np.ndarray, mask: np.ndarray, patch_size) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The patch of ``patch_size`` centred on the foreground bounding box (image centre if none), zero-padded."""
    spatial = image.shape[1:]
    fg = np.argwhere(mask)
    centre = ((fg.min(0) + fg.max(0) + 1) / 2 if len(fg) else np.array(spatial) / 2)
    starts = []
    for c, n, p in zip(centre, spatial, patch_size):
        start = int(round(c - p / 2))
        starts.append(max(0, min(start, n - p)) if n >= p else -((p - n) // 2))
    out_image = np.zeros((image.shape[0], *patch_size), dtype=np.float32)
    out_mask = np.zeros(tuple(patch_size), dtype=bool)
    src = tuple(slice(max(s, 0), min(s + p, n)) for s, p, n in zip(starts, patch_size, spatial))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, starts))
    out_image[(slice(None), *dst)] = image[(slice(None), *src)]
    out_mask[dst] = mask[src]
    return out_image, out_mask, starts


def load_cases(name: str, configuration: str, configuration_manager, keys: list[str]) -> list[Patch]:
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    folder = Path(nnUNet_preprocessed.require()) / name / configuration_manager.data_identifier
    if not folder.is_dir():
        raise AnalysisError(f"preprocessed data {folder} is missing: run nnUNetv2_plan_and_preprocess "
                            f"-d {name} -c {configuration}.")
    dataset = infer_dataset_class(str(folder))(str(folder), identifiers=list(keys))
    patch = [int(p) for p in configuration_manager.patch_size]
    cases = []
    for key in keys:
        data, seg, _, _ = dataset.load_case(key)
        data, fg = np.asarray(data[:], dtype=np.float32), np.asarray(seg[:])[0] > 0
        slice_index = None
        if len(patch) == 2:  # 2d configuration: data are C x Z x Y x X with Z slices
            slice_index = int(np.argmax(fg.reshape(fg.shape[0], -1).sum(1)))
            data, fg = data[:, slice_index], fg[slice_index]
        image, mask, origin = crop_or_pad(data, fg, patch)
        cases.append(Patch(key, image, mask, origin, slice_index))
    return cases


@dataclass
class Features:
    before: np.ndarray  # C x *grid
    after: np.ndarray | None  # C x *grid, None for a plain net

    @property
    def decoder_input(self) -> np.ndarray:
        return self.before if self.after is None else self.after


class FeatureProbe:
    """Forward hooks catching the LLM block's input and output (or a plain net's encoder bottleneck)."""

    def __init__(self, network):
        self.network = network
        self.has_llm = hasattr(network, "llm")
        self.caught: dict = {}

    def _hook_llm(self, module, inputs, output):
        self.caught["before"], self.caught["after"] = inputs[0], output

    def _hook_encoder(self, module, inputs, output):
        self.caught["before"] = output[-1]

    def __call__(self, image: np.ndarray, device) -> Features:
        import torch
        self.caught = {}
        target, hook = (self.network.llm, self._hook_llm) if self.has_llm else (self.network.encoder,
                                                                                 self._hook_encoder)
        handle = target.register_forward_hook(hook)
        try:
            with torch.no_grad():
                self.network(torch.from_numpy(image)[None].to(device))
        finally:
            handle.remove()
        to_np = lambda t: t[0].detach().float().cpu().numpy()  # noqa: E731
        after = self.caught.get("after")
        return Features(to_np(self.caught["before"]), None if after is None else to_np(after))


def feature_metrics(features: Features, mask: np.ndarray, threshold: float) -> dict:
    size = mask.shape
    sv = singular_values(features.decoder_input)
    spectra = channel_spectra(features.decoder_input)
    before = activation_map(features.before, size)
    after = None if features.after is None else activation_map(features.after, size)
    return {
        "iou_before": concentration_iou(before, mask, threshold),
        "iou_after": None if after is None else concentration_iou(after, mask, threshold),
        "effective_rank": _json_value(mean_over_spectra(effective_rank, spectra)),
        "lsvr": _json_value(mean_over_spectra(lsvr, spectra)),
        "effective_rank_matrix": _json_value(effective_rank(sv)),
        "lsvr_matrix": _json_value(lsvr(sv)),
        "num_singular_values": int(spectra.shape[1]),
        "num_singular_values_matrix": int(len(sv)),
        "foreground_voxels": int(mask.sum()),
        "_maps": (before, after),
    }


def mean_metrics(cases: dict) -> dict:
    out = {}
    for m in FEATURE_METRICS:
        values = [c[m] for c in cases.values() if c[m] is not None]
        out[m] = float(np.mean(values)) if values else None
    return out


def analyse_run(run: Run, name: str, keys: list[str], out: Path, device,
                threshold: float) -> tuple[dict, dict]:
    """Per-case metrics of one run; returns (JSON entry, {case: (Case, before map, after map)} for plots)."""
    network, cm = load_network(run, device)
    cases = load_cases(name, run.variant.configuration, cm, keys)
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
        with atomic_path(out / "features" / run.label / f"{case.identifier}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
    llm = None
    if probe.has_llm:
        spec = network.llm.spec
        llm = {"source": spec.source, "layer": spec.layer, "init": spec.init, "trainable": spec.trainable,
               "positions": spec.positions, "attention": spec.attention, "stage": int(network.stage)}
    v = run.variant
    entry = {"label": run.label, "trainer": v.trainer, "plans": v.plans, "configuration": v.configuration,
             "fold": run.fold, "folder": str(v.folder), "checkpoint": run.checkpoint, "has_llm": probe.has_llm,
             "llm": llm, "patch_size": [int(p) for p in cm.patch_size], "decoder_input_shape": feature_shape,
             "cases": per_case, "mean": mean_metrics(per_case)}
    return entry, plots


# ---------------------------------------------------------------- figures

def _display_slice(case: Patch) -> tuple[int, ...] | None:
    """For 3D patches the slice (first axis) with the most foreground; None for 2D."""
    if case.mask.ndim == 2:
        return None
    return (int(np.argmax(case.mask.reshape(case.mask.shape[0], -1).sum(1))),)


def save_case_figure(path: Path, case_id: str, rows: list[tuple[str, Patch, np.ndarray, np.ndarray | None]],
                     threshold: float, metrics: list[dict]) -> None:
    """One row per run: image with ground-truth contour, Act. Before overlay, Act. After overlay."""
    from matplotlib.figure import Figure

    from .plotting import wrap_name
    fig = Figure(figsize=(9, 3 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for (label, case, before, after), m, ax_row in zip(rows, metrics, axes):
        idx = _display_slice(case) or ()
        image, mask = case.image[0][idx], case.mask[idx]
        where = f" (slice {idx[0]} of {case.mask.shape[0]})" if idx else ""
        panels = [("image + ground truth" + where, None, None),
                  ("Act. Before", before, m["iou_before"]), ("Act. After", after, m["iou_after"])]
        for ax, (title, amap, iou) in zip(ax_row, panels):
            ax.imshow(image, cmap="gray")
            if amap is not None:
                im = ax.imshow(amap[idx], cmap="jet", alpha=0.5, vmin=0, vmax=1)
                ax.contour(amap[idx] >= threshold, levels=[0.5], colors="white", linewidths=0.8,
                           linestyles="dashed")
                title += f"\nIoU@{threshold:g} = {iou:.3f}"
            elif title.startswith("Act."):
                title += "\n(no LLM block)"
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="lime", linewidths=1.2)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(wrap_name(label, 40), fontsize=7)
    fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), shrink=0.6, label="activation (min-max)")
    fig.suptitle(f"{case_id}: green = ground truth, dashed = activation >= {threshold:g}", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def save_distributions(path: Path, runs: list[dict], threshold: float) -> None:
    """ER and LSVR violins with per-case dots and the mean (red), and mean concentration IoU bars per run."""
    from matplotlib.figure import Figure

    from .plotting import wrap_title, wrapped
    labels, rows = wrapped([r["label"] for r in runs], 34), np.arange(len(runs))
    height = max(0.8 + 0.5 * len(runs), 0.5 + 0.32 * sum(label.count("\n") + 1 for label in labels))
    fig = Figure(figsize=(8, 1.8 + 3 * height), layout="constrained")
    ax_er, ax_lsvr, ax_iou = fig.subplots(3, 1)
    for ax, metric, title, xlabel in (
            (ax_er, "effective_rank", "Effective rank (ER, channel-wise SVD) of the decoder input",
             "effective rank (number of directions), higher = more dimensions used"),
            (ax_lsvr, "lsvr", "LSVR = -ln(s1 / sum s) of the decoder input",
             "LSVR, higher = the largest direction s1 dominates less")):
        data = [[c[metric] for c in r["cases"].values() if c[metric] is not None] for r in runs]
        filled = [i for i, d in enumerate(data) if d]
        if filled:
            ax.violinplot([data[i] for i in filled], positions=filled, orientation="horizontal", showextrema=False)
        for i in filled:
            mean = float(np.mean(data[i]))
            ax.scatter(data[i], np.full(len(data[i]), i), s=8, color="k", alpha=0.6, zorder=3)
            ax.plot([mean, mean], [i - 0.35, i + 0.35], color="red", lw=2, zorder=4)
            ax.annotate(f"mean {mean:.3f}", (mean, i - 0.38), fontsize=7, color="red", ha="center", va="bottom")
        ax.set_title(wrap_title(title, 60), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    height = 0.38
    for shift, key, shade, name in ((-height / 2, "iou_before", "tab:blue", "Act. Before"),
                                    (height / 2, "iou_after", "lightblue", "Act. After")):
        means = [r["mean"][key] for r in runs]
        present = [i for i, v in enumerate(means) if v is not None]
        ax_iou.barh([i + shift for i in present], [means[i] for i in present], height, color=shade,
                    edgecolor="k", label=name)
        for i in present:
            ax_iou.text(means[i] + 0.01, i + shift, f"{means[i]:.3f}", va="center", fontsize=7)
    ax_iou.set_xlim(0, 1.1)
    ax_iou.set_title(wrap_title(f"Mean concentration IoU of activation >= {threshold:g} with the ground truth", 60),
                     fontsize=9)
    ax_iou.set_xlabel("concentration IoU (0-1), higher = activation more on the object", fontsize=8)
    ax_iou.legend(fontsize=7, loc="lower right")
    for ax in (ax_er, ax_lsvr, ax_iou):
        ax.set_yticks(rows, labels, fontsize=8)
        ax.set_ylim(len(runs) - 0.5, -0.5)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


# ---------------------------------------------------------------- entry point

def analyse(dataset, configuration: str, trainers: list[tuple[str, str]], fold, out: Path | None,
            checkpoint: str = "checkpoint_final.pth", device: str = "auto", threshold: float = THRESHOLD,
            echo=print) -> dict:
    """Analyse every (trainer, plans) run's fold; write the JSON and figures; return the JSON dict."""
    import torch

    from ..nnunet.environment import resolve_device
    if not 0.0 <= threshold <= 1.0:
        raise AnalysisError(f"--threshold {threshold}: activation maps are normalised to [0, 1]; pick a value "
                            f"in that range (the paper uses 0.4).")
    name = dataset_name(dataset)
    (fold,) = parse_folds([fold], name)
    device = torch.device(resolve_device(device))
    if len(set(trainers)) != len(trainers):
        raise AnalysisError(f"a run is listed twice: {trainers}; list each trainer (and plans) once.")
    runs = [find_run(name, t, p, configuration, fold, checkpoint) for t, p in trainers]
    if out is None:
        out = runs[0].fold_folder / ("analysis" if len(runs) == 1 else "analysis_compare")
    out = Path(out)
    keys = validation_keys(name, fold)
    entries, plots = [], []
    for run in runs:
        cases = ("training cases of fold all (in-sample: it trained on them)" if fold == "all" else
                 f"validation cases of fold {fold}")
        echo(f"{run.label}: {len(keys)} {cases} on {device}")
        entry, run_plots = analyse_run(run, name, keys, out, device, threshold)
        entries.append(entry)
        plots.append(run_plots)
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
    """The means per run, with a legend: what each column is and which direction the paper reads as better."""
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
