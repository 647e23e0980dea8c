"""The paper's Fig. 3 from trained results: Dice against the index of the LLM layer, one line per model and wiring,
next to plain nnU-Net; and the answer a sweep is run for: which layer, and does it matter.

Variants whose LLM specs differ only in their layer form one series (for a sweep, the extracted file each plans
points at counts as its source model). ``layers.csv`` holds one row per set x series x layer: mean Dice with its
bootstrap 95% CI over cases, the mean paired difference to plain nnU-Net with its CI and Holm-corrected p, and the
folds and cases counted; ``layers.png`` draws it.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.files import atomic_path
from ..core.models import MODELS
from ..core.spec import LLMSpec, option_names
from .cases import CompareError
from .formatting import fmt
from .plotting import savefig, wrapped
from .procedure import CASE_LEVEL, PROCEDURE_LEVEL


@dataclass(frozen=True)
class LayerRow:
    set: str
    series: str
    model: str
    layer: int
    variant: str
    dice: float
    ci_low: float
    ci_high: float
    delta: float | None
    delta_ci_low: float | None
    delta_ci_high: float | None
    p_holm: float | None
    folds: str
    cases: int
    level: str = ""  # the question the intervals answer: "training procedure" where runs allow, else the cases'


def model_of(spec: LLMSpec) -> str:
    """The model a spec's layer comes from: a named model's name, the source an extracted file records, or the
    source itself."""
    source = spec.source
    from ..core.weights import LLMWeightsError, read_extracted_metadata, source_kind
    try:
        if source_kind(source) == "extracted":
            source = read_extracted_metadata(Path(source))["source"]
    except LLMWeightsError:
        pass
    return next((name for name, m in MODELS.items() if m.source == source), source)


def series_key(trainer: str, spec: LLMSpec) -> tuple:
    return (trainer, model_of(spec), *((f, repr(getattr(spec, f))) for f in option_names()))


def describe_series(key: tuple, default: LLMSpec) -> str:
    """``model, trainer (options that differ from the paper's wiring)``."""
    trainer, model, *fields = key
    differing = [f"{f}={v}" for f, v in fields if v != repr(getattr(default, f))]
    return f"{model} {trainer}" + (f" ({', '.join(differing)})" if differing else "")


def check_series(specs: dict[str, LLMSpec | None], trainers: dict[str, str], strict: bool) -> dict[str, tuple]:
    """The series of each LLM variant; ``strict`` (``compare --by-layer``): they must all be one series, that is
    differ only in their layer. Two variants of one series at the same layer are refused too."""
    llm = {v: s for v, s in specs.items() if s is not None}
    if len(llm) < 2:
        raise CompareError(f"--by-layer needs at least two variants with an LLM layer (found {len(llm)}: "
                           f"{', '.join(llm) or 'none'}).")
    keys = {v: series_key(trainers[v], s) for v, s in llm.items()}
    if strict and len(set(keys.values())) > 1:
        first = next(iter(llm))
        differing = sorted({f for v in llm for f in [*(("trainer",) if trainers[v] != trainers[first] else ()),
                                                       *(("model",) if model_of(llm[v]) != model_of(llm[first]) else ()),
                                                       *(f for f in option_names()
                                                         if getattr(llm[v], f) != getattr(llm[first], f))]})
        raise CompareError(f"--by-layer compares plans that differ only in their layer, but these differ in "
                           f"{', '.join(differing)} too ({', '.join(llm)}). Compare one wiring at a time, or run "
                           f"them as one `nnunetv2-llm sweep`, whose compare draws one line per wiring.")
    for key in set(keys.values()):
        layers = sorted(llm[v].layer for v in llm if keys[v] == key)
        if len(layers) != len(set(layers)):
            raise CompareError(f"two variants of one series have the same layer ({layers}); give each layer one "
                               f"variant.")
    return keys


def layer_rows(report, specs: dict[str, LLMSpec | None], keys: dict[str, tuple]) -> tuple[list[LayerRow], str | None]:
    """The rows of layers.csv from a :class:`CompareReport`, and the plain nnU-Net variant they are compared with
    (None when the report's reference is not plain nnU-Net)."""
    reference = report.reference
    plain = reference if specs.get(reference) is None else None
    default = LLMSpec(source="x", layer=0)
    rows = []
    for set_name, entry in report.sets.items():
        for v, key in keys.items():
            spec = specs[v]
            mean = entry.variants[v].metrics["Dice"].headline()
            comparison = entry.comparisons.get(v, {}).get("Dice") if plain is not None else None
            delta = comparison.headline() if comparison else None
            rows.append(LayerRow(set_name, describe_series(key, default), model_of(spec), spec.layer, v,
                                 mean.value, mean.ci_low, mean.ci_high, *((delta.value, delta.ci_low, delta.ci_high,
                                                                           delta.p_holm) if delta else (None,) * 4),
                                 " ".join(map(str, report.folds)), len(entry.cases),
                                 delta.level if delta else mean.level))
    rows.sort(key=lambda r: (r.set, r.series, r.layer))
    return rows, plain


def write_layers_csv(path: Path, rows: list[LayerRow]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(LayerRow.__dataclass_fields__))
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buffer.getvalue())


def layers_figure(path: Path, rows: list[LayerRow], report, set_name: str, plain: str | None) -> Path:
    from matplotlib.figure import Figure

    mine = [r for r in rows if r.set == set_name]
    fig = Figure(figsize=(8, 6), layout="constrained")
    ax = fig.subplots()
    if plain is not None:
        mean = report.sets[set_name].variants[plain].metrics["Dice"].headline()
        ax.axhspan(mean.ci_low, mean.ci_high, color="grey", alpha=0.25,
                   label=f"{plain} (plain nnU-Net): 95% CI ({mean.level})")
        ax.axhline(mean.value, color="grey", lw=1.2, label="plain nnU-Net: mean")
    starred = set()
    for i, series in enumerate(dict.fromkeys(r.series for r in mine)):
        points = [r for r in mine if r.series == series]
        x = [r.layer for r in points]
        if len(points) == 1:  # a built-in trainer or a single plans file: one point with its CI, no line, no star
            r = points[0]
            ax.errorbar(r.layer, r.dice, yerr=[[r.dice - r.ci_low], [r.ci_high - r.dice]], fmt="s", capsize=4,
                        markersize=7, label=f"{series} (one layer)")
            continue
        line, = ax.plot(x, [r.dice for r in points], "o-", label=series)
        ax.fill_between(x, [r.ci_low for r in points], [r.ci_high for r in points], color=line.get_color(), alpha=0.15)
        model = points[0].model
        if model in MODELS and MODELS[model].layer in x and model not in starred:
            starred.add(model)  # one star per model, on its first swept series
            default = next(r for r in points if r.layer == MODELS[model].layer)
            ax.plot(default.layer, default.dice, marker="*", markersize=16, color=line.get_color(),
                    markeredgecolor="k", linestyle="none",
                    label=f"{model}: the paper's layer {default.layer}" if model != "smollm2-135m" else
                    f"{model}: its default layer {default.layer}")
    layers = sorted({r.layer for r in mine})
    ax.set_xticks(layers)
    ax.set_xlabel("LLM decoder layer (0-based; the paper's 'k-th' is k-1)", fontsize=9)
    level = mine[0].level if mine else CASE_LEVEL
    ax.set_ylabel(f"mean Dice with 95% CI ({'unit: training run' if level == PROCEDURE_LEVEL else 'unit: case'}),"
                  f"\nhigher is better", fontsize=9)
    folds = mine[0].folds if mine else ""
    ax.set_title(f"{report.dataset} {report.configuration}, {set_name}: Dice by LLM layer ({mine[0].cases if mine else 0} "
                 f"cases, folds {folds})", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()  # below the axes: over them it would hide a CI band
    fig.legend(handles, wrapped(labels, 60), fontsize=7, loc="outside lower center", ncols=2)
    ax.grid(alpha=0.3)
    return savefig(fig, path)


def which_layer(rows: list[LayerRow], plain: str | None, set_name: str) -> list[str]:
    """The sweep's answer in a few lines: the best layer of each series, whether it beats plain nnU-Net beyond
    noise, and whether the choice of layer matters (spread of the means against the width of their CIs)."""
    mine = [r for r in rows if r.set == set_name]
    level = mine[0].level if mine else CASE_LEVEL
    unit = "unit: training run" if level == PROCEDURE_LEVEL else "unit: case, training noise not measured"
    lines = [f"## Which layer? ({set_name}, mean Dice; 95% intervals of the {level}, {unit})", ""]
    for series in dict.fromkeys(r.series for r in mine):
        points = [r for r in mine if r.series == series]
        best = max(points, key=lambda r: r.dice if not math.isnan(r.dice) else -math.inf)
        verdict = _verdict(best, plain)
        if len(points) == 1:  # a built-in trainer: no choice of layer to judge
            lines.append(f"- {series}: one layer only, **{best.layer}** (Dice {best.dice:.3f} [{best.ci_low:.3f}, "
                         f"{best.ci_high:.3f}]), which {verdict}; no choice of layer to judge.")
            continue
        spread = max(r.dice for r in points) - min(r.dice for r in points)
        width = sum(r.ci_high - r.ci_low for r in points) / len(points)
        matters = ("the choice of layer matters more than the noise" if spread > width else
                   "the choice of layer is within the noise")
        lines.append(f"- {series}: best layer **{best.layer}** (Dice {best.dice:.3f} [{best.ci_low:.3f}, "
                     f"{best.ci_high:.3f}]), which {verdict}. Across {len(points)} layers the means span "
                     f"{spread:.3f}, their CIs are {width:.3f} wide on average: {matters}.")
    return lines + [""]


def _verdict(best: LayerRow, plain: str | None) -> str:
    """Whether a series' best point beats plain nnU-Net beyond noise, with its difference, CI and Holm p."""
    if plain is None:
        return "has no plain nnU-Net in this comparison to be tested against"
    if best.delta_ci_low is not None and best.delta_ci_low > 0 and best.p_holm < 0.05:
        return (f"beats {plain} beyond noise (Δ {best.delta:+.3f} [{best.delta_ci_low:+.3f}, "
                f"{best.delta_ci_high:+.3f}], Holm p = {best.p_holm:.3g})")
    return (f"does not beat {plain} beyond noise (Δ {best.delta:+.3f} [{best.delta_ci_low:+.3f}, "
            f"{best.delta_ci_high:+.3f}], Holm p = {fmt(best.p_holm, 3)})")
