"""The README says what the code does: its tables of trainers and variants are the code's own, and every
`nnunetv2-llm` command line in it parses with the real command-line parser."""
import json
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def trainers_table() -> str:
    """Every built-in trainer base with what it trains, and the lengths every base comes in."""
    from nnunetv2_llm.core.variants import load_variant
    from nnunetv2_llm.nnunet.lengths import LENGTHS
    from nnunetv2_llm.nnunet.trainer_catalogue import trainer_table
    from nnunetv2_llm.nnunet.trainers import BASE_TRAINERS
    rows = ["| trainer | model | variant | reproduces |", "|---|---|---|---|"]
    for cls in BASE_TRAINERS:
        model = getattr(cls, "model", "") or "from the plans (`-p`, written by `nnunetv2-llm plan`)"
        variant = getattr(cls, "variant", "")
        reproduces = load_variant(variant).reproduces if variant else "ablations, layer sweeps, any spec"
        rows.append(f"| `{cls.__name__}` | {model} | {variant or '-'} | {reproduces} |")
    plain = [r.name for r in trainer_table() if r.base == "nnUNetTrainer"]
    rows += ["", f"Every trainer above also comes in {len(LENGTHS)} lengths, its name plus one of "
                 + ", ".join(f"`{s}`" for s in LENGTHS) + f" (e.g. `{BASE_TRAINERS[1].__name__}_5epochs`); plain "
                 f"nnU-Net at the short ones: " + ", ".join(f"`{n}`" for n in plain)
                 + f". {len(trainer_table())} classes in all: `nnunetv2-llm trainers` lists each."]
    return "\n".join(rows)


def variants_table() -> str:
    from nnunetv2_llm.core.variants import load_variant, variant_names
    rows = ["| variant | what it is | reproduces | built-in trainers |", "|---|---|---|---|"]
    for name in variant_names():
        v = load_variant(name)
        trainer = f"`nnUNetTrainer<Model>{v.trainer}`" if v.trainer is not None else "-"
        rows.append(f"| `{name}` | {v.description} | {v.reproduces} | {trainer} |")
    return "\n".join(rows)


def _between(text: str, marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\n(.*?)\n<!-- /{marker} -->", text, re.S)
    assert match, f"README has no <!-- {marker} --> block"
    return match.group(1)


@pytest.mark.parametrize("marker,table", [("trainers", trainers_table), ("variants", variants_table)])
def test_readme_tables_are_the_codes_own(marker, table):
    expected = table()
    assert _between(README.read_text(), marker) == expected, f"regenerate the README's {marker} table:\n{expected}"


def _command_lines(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    joined = "\n".join(b.replace("\\\n", " ") for b in blocks)
    lines = []
    for line in joined.splitlines():
        line = line.split("  #")[0].split(" # ")[0].strip()
        for part in re.split(r"\s*(?:&&|;)\s*", line):
            if part.startswith("nnunetv2-llm "):
                lines.append(part)
    return lines


def test_every_command_line_of_the_readme_parses():
    """A flag that does not exist, or a value argparse refuses, fails here before a user meets it."""
    from nnunetv2_llm.commands.cli import build_parser
    lines = _command_lines(README.read_text())
    assert len(lines) >= 15
    parser = build_parser()
    for line in lines:
        args = [a for a in shlex.split(line.replace("$(", "").replace(")", ""))][1:]
        try:
            parser.parse_args(args)
        except SystemExit as e:
            raise AssertionError(f"README line does not parse: {line}") from e


def test_the_readme_predict_line_runs_on_a_cpu_and_after_the_demo():
    """Issue 22: the predict line says -device cpu, and -f 0 after the demo (which trains fold 0 only)."""
    text = README.read_text()
    predict = [line for line in text.splitlines() if line.startswith("nnUNetv2_predict ")]
    assert predict and any("-device cpu" in line for line in predict) and any("-f 0 " in line + " " for line in predict)


@pytest.mark.parametrize("saved", ["quality-context-adaptations-20x25.json", "quality-blobs-adaptations-10x20.json"])
def test_the_readme_adaptation_tables_are_the_saved_runs(saved):
    """The README's measured adaptation tables are what `benchmarks/quality.py --readme-table` makes of the JSON
    the README names, so no number in them can drift from the run."""
    import importlib.util
    path = README.parent / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality_benchmark", path)
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    results = json.loads((README.parent / "benchmarks" / "results" / saved).read_text())
    text = README.read_text()
    assert f"benchmarks/results/{saved}" in text
    assert quality.readme_table(results) in text, f"regenerate: python benchmarks/quality.py --readme-table benchmarks/results/{saved}"
