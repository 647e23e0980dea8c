"""A sweep's grid: validated, expanded into jobs (one ``nnUNetv2_train`` each), and written as ``sweep.json``.

LLM layers are planned through the planning library (:func:`~nnunetv2_llm.nnunet.planning.write_llm_plans`), the
weights fetched once into the sweep folder and pinned by sha256, before any job exists.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import itertools
import json
from pathlib import Path

from ..core.errors import UserError, did_you_mean
from ..core.files import read_json, write_json
from ..core.locks import exclusive
from ..core import spec
from ..nnunet.datasets import preprocessed_folder
from ..nnunet.splits import NNUNET_FOLDS, check_partitions, fold_partitions, parse_folds, write_partitions

GRID_FILE = "sweep.json"
GRID_KEYS = ("dataset", "configurations", "folds", "trainers", "plans", "llm", "llm_trainers", "train_args",
             "replicates", "partitions")
MAX_REPLICATES = 100


def llm_keys() -> tuple[str, ...]:
    """The keys of one `llm` entry: what `nnunetv2-llm plan` takes (spec options may be lists: one plans file per
    value)."""
    return ("llm", "variant", "layer", "output", *spec.option_names())


class SweepError(UserError, ValueError):
    """A grid, sweep folder or run option the sweep cannot use."""


def load_grid(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SweepError(f"grid file {path} does not exist; write a JSON or YAML grid (see docs/sweeps-and-clusters.md; "
                         "`nnunetv2-llm sweep --help` lists its keys) or use flags.")
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml
            grid = yaml.safe_load(p.read_text())
        else:
            grid = json.loads(p.read_text())
    except Exception as e:  # yaml.YAMLError or json.JSONDecodeError: both name the line
        raise SweepError(f"grid file {path} is not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'} "
                         f"({str(e).splitlines()[0]}); fix the file.") from None
    check_grid(grid, f"grid file {path}")
    return grid


def _check_keys(given, accepted, where: str) -> None:
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        hint = "".join(did_you_mean(k, accepted) for k in unknown)
        raise SweepError(f"{where} has unknown keys {unknown}; accepted keys are {', '.join(accepted)}.{hint}")


def check_grid(grid, where: str) -> None:
    if not isinstance(grid, dict):
        raise SweepError(f"{where} must hold a mapping with keys from {', '.join(GRID_KEYS)}.")
    _check_keys(grid, GRID_KEYS, where)


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _option_values(key: str, value) -> list:
    """The values one spec option takes in a grid: a list is several values, except ``lora_targets``, whose value
    is itself a list (``[q_proj, v_proj]`` is one value; ``[[q_proj], [q_proj, v_proj]]`` two)."""
    if key == "lora_targets" and isinstance(value, (list, tuple)) and not any(isinstance(v, (list, tuple))
                                                                             for v in value):
        return [list(value)]
    return _as_list(value)


def _unique(key: str, values: list) -> list:
    """A grid list names each value once: a value listed twice would give two jobs of one id (as folds do)."""
    seen = set()
    for value in values:
        if str(value) in seen:
            raise SweepError(f"{key}: {value} is listed twice ({values}); list each once.")
        seen.add(str(value))
    return values


def check_trainer(name: str) -> type:
    """nnU-Net's own lookup (with our trainers on nnUNet_extTrainer), before anything is submitted."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from ..nnunet.environment import ensure_trainer_lookup
    ensure_trainer_lookup()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints every folder it searches
            found = recursive_find_trainer_class_by_name(name)
    except (RuntimeError, AssertionError):
        found = None
    if found is None:
        from ..nnunet.trainers import __all__ as ours
        raise SweepError(f"unknown trainer {name!r}: nnU-Net's lookup (nnunetv2 and nnUNet_extTrainer) has no class "
                         f"of that name; check the spelling (`nnunetv2-llm trainers` lists ours) or put its folder "
                         f"on nnUNet_extTrainer.{did_you_mean(name, ours)}")
    return found


def llm_requests(value) -> list:
    """The grid's ``llm`` entries as planning requests: a mapping (or a list of them) of ``nnunetv2-llm plan``'s
    options; a spec option given as a list plans one file per value (their product, per entry)."""
    from ..nnunet.planning import PlansRequest
    entries = value if isinstance(value, list) else [value]
    if entries and all(isinstance(e, str) for e in entries):
        raise SweepError(f"llm: {value} is the 0.2 form (plan's command-line flags); since 0.3 write a mapping of "
                         f"its options, e.g. llm: {{llm: smollm2-135m, layer: 0-15}} (see CHANGELOG.md).")
    requests = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise SweepError(f"llm: each entry must be a mapping of {', '.join(llm_keys())}; got {entry!r}.")
        _check_keys(entry, llm_keys(), "llm: an entry")
        options = {k: entry[k] for k in spec.option_names() if k in entry}
        grid = [[(k, v) for v in _option_values(k, vals)] for k, vals in options.items()]
        layer = entry.get("layer")
        layers = None if layer is None else ",".join(map(str, _as_list(layer)))  # [0, 3] as plan's --layer 0,3
        for combination in itertools.product(*grid):
            requests.append(PlansRequest(llm=entry.get("llm"), variant=entry.get("variant"), layers=layers,
                                         options=dict(combination), output=entry.get("output")))
    return requests


def job_spec(trainer: type, plans_file: Path, configuration: str):
    """The LLM spec a job trains with (as in training), or None for plain nnU-Net and for nnUNetTrainerLLM on plans
    without a spec."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from ..core.resolve import spec_for_trainer
    from ..nnunet.trainers import nnUNetTrainerLLM
    if not issubclass(trainer, nnUNetTrainerLLM):
        return None
    plans_manager = PlansManager(str(plans_file))
    return spec_for_trainer(trainer, plans_manager.plans, plans_manager.get_configuration(configuration).configuration,
                            required=False)


def fetch_weights(spec, cache: dict) -> tuple[str | None, str | None]:
    """Read the job's pretrained layer now, once per (source, layer, revision), before any job starts: a hub
    model lands in the hub cache (the jobs then run offline). Returns (files, sha256)."""
    if spec is None or not spec.loads_pretrained:
        return None, None
    key = (spec.source, spec.layer, spec.depth, spec.final_norm, spec.revision)
    if key not in cache:
        from ..core.weights import load_pinned
        pinned, layers, norm = load_pinned(spec)
        files = sorted({f for w in layers + ([norm] if norm else []) for f in w.files})
        cache[key] = (", ".join(files), pinned.sha256)
    return cache[key]


def expand(grid: dict, sweep_dir: Path) -> list[dict]:
    """Validate a grid (dataset, plans, trainers, folds) and return its jobs, writing LLM plans first."""
    from ..nnunet.planning import plans_in, write_llm_plans
    if "dataset" not in grid or grid["dataset"] in (None, ""):
        raise SweepError("the grid has no 'dataset'; give one, e.g. dataset: 501 (or -d 501).")
    replicates = check_replicates(grid.get("replicates", 1))  # before anything is written
    partitions = check_partitions(grid.get("partitions", 1))
    folder = preprocessed_folder(grid["dataset"])
    configurations = _unique("configurations", _as_list(grid.get("configurations", ["2d"])))
    trainers = _unique("trainers", _as_list(grid.get("trainers")))
    if not trainers:
        raise SweepError("the grid has no 'trainers'; list at least one, e.g. trainers: [nnUNetTrainer].")
    classes = {t: check_trainer(t) for t in trainers}
    folds = parse_folds(_as_list(grid.get("folds", [0, 1, 2, 3, 4])), folder.name)
    if partitions > 1 and any(f != "all" and f >= NNUNET_FOLDS for f in folds):
        raise SweepError(f"folds: {folds} with partitions: {partitions}: the grid's folds are those of each "
                         f"partition, 0-{NNUNET_FOLDS - 1} (partition p's fold f trains as fold "
                         f"{NNUNET_FOLDS}(p-1)+f); list folds in 0-{NNUNET_FOLDS - 1}.")
    if partitions > 1 and all(f == "all" for f in folds):
        raise SweepError(f"partitions: {partitions} with folds: ['all']: fold all trains on every case, so it has no "
                         f"partition; list folds in 0-{NNUNET_FOLDS - 1} (with or without all), or drop partitions.")
    plans = _unique("plans", _as_list(grid.get("plans", ["nnUNetPlans"])))
    available = plans_in(folder)
    for p in plans:
        if p not in available:
            raise SweepError(f"plans {p!r} not found in {folder} (available: {', '.join(available) or 'none'}); run "
                             f"nnUNetv2_plan_and_preprocess or nnunetv2-llm plan first.{did_you_mean(p, available)}")
        known = (read_json(folder / f"{p}.json").get("configurations") or {})
        missing = [c for c in configurations if c not in known]
        if missing:
            raise SweepError(f"plans {p!r} have no configuration {', '.join(missing)} (they have "
                             f"{', '.join(known)}); pick configurations from those.")
    llm = grid.get("llm")
    requests = llm_requests(llm) if llm else []
    llm_trainers = _unique("llm_trainers", _as_list(grid.get("llm_trainers", ["nnUNetTrainerLLM"]))) if llm else []
    classes.update({t: check_trainer(t) for t in llm_trainers})
    llm_names = [path.stem for request in requests
                 for path in write_llm_plans(folder.name, plans[0], request, weights_dir=sweep_dir / "weights",
                                             sweep=str(sweep_dir))]
    extra = [str(a) for a in _as_list(grid.get("train_args"))]
    combos = [(t, p) for t in trainers for p in plans] + [(t, p) for t in llm_trainers for p in llm_names]
    cache, jobs = {}, []
    weights = {(c, t, p): fetch_weights(job_spec(classes[t], folder / f"{p}.json", c), cache)
               for c in configurations for t, p in combos}
    if partitions > 1:  # the last step before the jobs: every other check has passed
        write_partitions(folder, partitions)
        folds = [f + NNUNET_FOLDS * (p - 1) for p in range(1, partitions + 1) for f in folds if f != "all"] + \
            [f for f in folds if f == "all"]
    for r in range(1, replicates + 1):  # replicate by replicate: a sweep cut short has whole replicates
        for c in configurations:
            for t, p in combos:
                files, sha = weights[c, t, p]
                jobs += [{"id": job_id(c, t, p, f, r), "dataset": folder.name, "configuration": c, "fold": f,
                          "trainer": t, "plans": p, "train_args": extra, "llm_weights": files, "llm_sha256": sha,
                          "replicate": r} for f in folds]
    twice = sorted(i for i, n in collections.Counter(j["id"] for j in jobs).items() if n > 1)
    if twice:  # e.g. two `llm` entries that plan the same file
        raise SweepError(f"the grid gives job(s) {', '.join(twice[:3])} twice; list each trainer, plans and llm entry "
                         f"once.")
    return jobs


def job_id(configuration: str, trainer: str, plans: str, fold, replicate: int) -> str:
    """Replicate 1 keeps the id of a sweep without replicates (its logs and locks stay valid)."""
    return f"{configuration}__{trainer}__{plans}__fold{fold}" + (f"__replicate{replicate}" if replicate > 1 else "")


def training_runs_line(jobs: list[dict]) -> str:
    """What a sweep costs, in nnUNetv2_train runs, with the factors they come from."""
    def distinct(values) -> int:
        return len(set(map(str, values)))
    folds = [j["fold"] for j in jobs]
    indices = [f for f in folds if f != "all"]
    partitions = distinct(p.partition for p in fold_partitions(indices))
    per = (f" ({distinct(p.fold_in_partition for p in fold_partitions(indices))} in each of {partitions} partitions"
           f"{', and fold all' if 'all' in folds else ''})" if partitions > 1 else "")
    return (f"{len(jobs)} jobs (nnUNetv2_train runs): {distinct(j['configuration'] for j in jobs)} configuration(s) x "
            f"{distinct((j['trainer'], j['plans']) for j in jobs)} variant(s) x {distinct(folds)} fold(s){per} x "
            f"{distinct(j.get('replicate', 1) for j in jobs)} replicate(s)")


def check_replicates(value) -> int:
    """The grid's ``replicates``: how many times each (trainer, plans, configuration, fold) is trained."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICATES:
        raise SweepError(f"replicates: {value!r}: accepted are whole numbers 1..{MAX_REPLICATES} (trainings of each "
                         f"fold; 3 measures training noise, 1 is the default).")
    return value


def grid_hash(grid: dict) -> str:
    return hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()


def lock_file(sweep_dir: Path) -> Path:
    """The sweep's lock, beside its folder (so a refused `sweep plan` leaves no folder behind)."""
    sweep_dir = Path(sweep_dir).resolve()
    return sweep_dir.parent / f".{sweep_dir.name}.sweep.lock"


def plan_sweep(grid: dict, sweep_dir: Path, echo=print) -> list[dict]:
    """Validate and expand the grid, then write ``sweep.json`` (a folder holding another grid is refused). Holds the
    sweep's lock, so two ``sweep plan`` on one folder run one after the other."""
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise SweepError(f"-o {sweep_dir} is a file; pass a folder for the sweep (it is created if missing).")
    meta = sweep_dir / GRID_FILE
    with exclusive(lock_file(sweep_dir), f"the sweep {sweep_dir}", echo):
        if meta.exists() and load_meta(sweep_dir)["grid_sha256"] != grid_hash(grid):
            raise SweepError(f"{sweep_dir} holds a sweep of another grid; choose a new -o folder or delete it.")
        jobs = expand(grid, sweep_dir)
        write_json(meta, {"grid": grid, "grid_sha256": grid_hash(grid), "jobs": jobs})
    return jobs


JOB_KEYS = ("id", "dataset", "configuration", "fold", "trainer", "plans", "train_args", "llm_weights", "llm_sha256")


def load_meta(sweep_dir: Path) -> dict:
    """``sweep.json``, checked: a damaged or hand-edited file is refused with how to write it again."""
    meta = sweep_dir / GRID_FILE
    if not meta.is_file():
        raise SweepError(f"{sweep_dir} is not a sweep folder (no {GRID_FILE}); run nnunetv2-llm sweep plan first.")
    fix = f"run `nnunetv2-llm sweep plan GRID -o {sweep_dir}` again to write it (finished folds are kept)"
    data = read_json(meta, fix=fix)
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not (isinstance(data, dict) and isinstance(data.get("grid"), dict) and isinstance(data.get("grid_sha256"), str)
            and isinstance(jobs, list) and all(isinstance(j, dict) and set(JOB_KEYS) <= set(j) for j in jobs)):
        raise SweepError(f"{meta} is not a sweep written by `nnunetv2-llm sweep plan` (it needs 'grid', "
                         f"'grid_sha256' and 'jobs' with {', '.join(JOB_KEYS)}); {fix}.")
    return data


def load_sweep(sweep_dir: Path) -> list[dict]:
    return load_meta(sweep_dir)["jobs"]
