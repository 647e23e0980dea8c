"""What compare checks and finds before any scoring: the variants, labels, folds, partitions and replicates, every
fold's checkpoint and validation cases, the other sets' files and the variants' cost; nothing is written until the
plan exists."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from ..nnunet.datasets import dataset_name, require_folder

from ..nnunet.results import TrainedResults, resolve_trained_results

from ..nnunet.splits import parse_folds
from .cases import CompareError, validation_set_name
from .compare_request import (CompareRequest, check_labels, check_options, parse_tolerances, pick_reference,
                              report_folder)
from .compared_runs import checked_cases, count_replicates, partition_groups, replicate_of
from .external import External, check_external, parse_external
from .labels import LabelRule
from .summary import Cost


@dataclass
class ComparePlan:
    """What compare checked and found before any scoring: nothing is written until this exists."""

    request: CompareRequest
    dataset: str
    variants: list[TrainedResults]
    reference: int
    rule: LabelRule
    folds: list
    tolerances: dict[str, float]
    externals: list[External]
    external_cases: dict[str, list[str]]
    in_domain: dict
    reader_name: str
    efficiency: dict
    out: Path
    layer_series: dict | None = None  # variant label -> its series (by-layer reports)
    specs: dict | None = None
    partitions: dict = field(default_factory=dict)  # partition -> its folds (fold indices of the splits file)
    run_cases: dict = field(default_factory=dict)  # (partition, replicate) -> variant label -> its cases; not the first
    left_out: list[str] = field(default_factory=list)  # replicate runs found without a partner, and why


def variant_cost(variant: TrainedResults) -> Cost:
    """Trainable/frozen parameters and GFLOPs of one patch, as ``nnunetv2-llm info`` counts them."""
    from ..core.cost import measure
    from ..nnunet.networks import build_unet
    spec = variant.llm_spec()
    net = build_unet(variant.plans_json, variant.dataset_json, variant.configuration, spec)
    cost = measure(net.network.eval(), net.in_channels, net.patch_size)
    return Cost(cost.trainable / 1e6, cost.frozen / 1e6, cost.gflops, list(net.patch_size), spec is not None)


def plan_compare(request: CompareRequest) -> ComparePlan:
    """Check every input (options, variants, labels, folds, checkpoints, the other sets' files) before anything
    is written or predicted."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    check_options(request)
    require_folder("nnUNet_results")
    gt_root = require_folder("nnUNet_preprocessed")
    name = dataset_name(request.dataset)
    plans = request.plans * len(request.trainers) if len(request.plans) == 1 else request.plans
    variants = [resolve_trained_results(t, p, name, request.configuration) for t, p in zip(request.trainers, plans)]
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise CompareError(f"a variant is listed twice: {labels}.")
    specs = {v.label: v.llm_spec() for v in variants}
    if request.by_layer and request.reference is None and sum(s is None for s in specs.values()) == 1:
        request.reference = next(v.label for v in variants if specs[v.label] is None)  # Δ to plain nnU-Net
    reference = pick_reference(variants, request.reference)
    layer_series = None
    if request.by_layer:
        from .layers import check_series
        layer_series = check_series(specs, {v.label: v.trainer for v in variants}, request.by_layer == "strict")
    rule = check_labels(variants)
    dataset_json = variants[0].dataset_json
    folds = parse_folds(request.folds, name)
    partitions = partition_groups(folds)
    tolerances = parse_tolerances(request.nsd_tolerance, rule.keys)
    externals = [parse_external(e, dataset_json, "zero-shot") for e in request.external] + \
                [parse_external(e, dataset_json, "held-out") for e in request.held_out]
    if len({e.name for e in externals}) != len(externals):
        raise CompareError("--external / --held-out: each NAME must be unique.")
    out = report_folder(request.output)
    gt = gt_root / name / "gt_segmentations"
    first, *others = partitions
    where = f"{validation_set_name(folds)} validation"
    in_domain = checked_cases(variants, partitions[first], gt, where)
    run_cases = {(p, 1): checked_cases(variants, partitions[p], gt, f"{where} of partition {p}") for p in others}
    for v in variants:
        v.require_same_plans(folds)  # one network per variant: the parameter counts and predictions build it
    example = next(iter(in_domain[labels[0]].values())).reference
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its choice
        reader_writer_cls = determine_reader_writer_from_dataset_json(dataset_json, str(example))
    ext_cases = {ext.name: check_external(ext, dataset_json, rule, reader_writer_cls()) for ext in externals}
    replicates, left_out = count_replicates(variants, request.replicates)
    for p in partitions:
        one = in_domain if p == first else run_cases[p, 1]
        for r in range(2, replicates + 1):
            run_cases[p, r] = checked_cases([replicate_of(v, r) for v in variants], partitions[p], gt,
                                            f"{where} of replicate {r}" + (f", partition {p}" if others else ""),
                                            also={f"{labels[0]} (replicate 1)": one[labels[0]]})
            for v in variants:
                replicate_of(v, r).require_same_plans(partitions[p])  # each replicate's folder is one network too
    costs = {v.label: variant_cost(v) for v in variants}
    return ComparePlan(request, name, variants, reference, rule, folds, tolerances, externals, ext_cases, in_domain,
                       reader_writer_cls.__name__, costs, out, layer_series, specs, partitions, run_cases, left_out)
