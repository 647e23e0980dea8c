"""The generated blocks of README.md and docs/*.md: the trainers, variants, spec options and code map as the code has them, and
the measured tables as the benchmark JSONs they name hold them, so no table can drift from its source.

A page marks a generated block with a pair of comments; the opening one names the table and, for a measured
table, the JSON it is printed from:

    <!-- trainers -->            ...  <!-- /trainers -->
    <!-- options -->             ...  <!-- /options -->
    <!-- quality benchmarks/results/quality-context-20x25.json -->  ...  <!-- /quality -->
    <!-- calibration benchmarks/results/calibration.json -->  ...  <!-- /calibration -->
    <!-- demo-spread benchmarks/results/demo_spread-8.json -->  ...  <!-- /demo-spread -->

    python scripts/docs_tables.py --check   # (the default) exit 1 naming every stale block
    python scripts/docs_tables.py --write   # rewrite every block in place

tests/test_readme.py checks that every page holds exactly what this script prints.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- ([a-z-]+)(?: ([^ >]+))? -->\n(?:(.*?)\n)??<!-- /\1 -->", re.S)


def pages(root: Path = ROOT) -> list[Path]:
    """The pages with generated blocks: the README and the docs folder's own pages (not its subfolders)."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def trainers_table(_: str | None = None) -> str:
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


def variants_table(_: str | None = None) -> str:
    """Every variant file of plans/ with what it is, what it reproduces and its built-in trainers."""
    from nnunetv2_llm.core.variants import load_variant, variant_names
    rows = ["| variant | what it is | reproduces | built-in trainers |", "|---|---|---|---|"]
    for name in variant_names():
        v = load_variant(name)
        trainer = f"`nnUNetTrainer<Model>{v.trainer}`" if v.trainer is not None else "-"
        rows.append(f"| `{name}` | {v.description} | {v.reproduces} | {trainer} |")
    return "\n".join(rows)


def options_table(_: str | None = None) -> str:
    """Every option of the LLM spec as its declaration in core/spec.py has it: flag and key, what it does, its
    values and default, and whether it changes what the trained block computes (plans and checkpoint must agree)."""
    from nnunetv2_llm.core import spec, spec_options
    rows = ["| option (`plan` flag / variant and grid key) | what it does | values | default | affects inference |",
            "|---|---|---|---|---|"]
    for name, declared in spec.declared_options().items():
        kinds = spec_options.field_kinds(spec.option_field(name))
        default = spec.option_default(name)
        if bool in kinds:
            values, default = "on / off", {True: "on", False: "off"}[default]
        else:
            values = " · ".join(f"`{c}`" for c in declared.choices) or " or ".join(
                "null" if k is type(None) else k.__name__ for k in kinds)
            default = "-" if default is None else f"`{spec._text(default)}`"
        rows.append(f"| `{spec_options.Option.flag(name)}` / `{name}` | {declared.help.replace('|', '/')} | {values} | "
                    f"{default} | {'yes' if declared.affects_inference else 'no'} |")
    return "\n".join(rows)


def _benchmark(name: str):
    """A script of benchmarks/ as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _results(block: str, json_path: str | None) -> dict:
    """The benchmark JSON a measured block names."""
    if not json_path:
        raise DocsError(f"a {block} block names its JSON: <!-- {block} benchmarks/results/....json -->")
    try:
        return json.loads((ROOT / json_path).read_text())
    except (OSError, ValueError) as e:
        raise DocsError(f"{block} block: cannot read {json_path} ({e}); name a JSON of benchmarks/results/") from e


def quality_table(json_path: str | None) -> str:
    """A measured quality table: what `benchmarks/quality.py --readme-table JSON` prints for the saved run."""
    return _benchmark("quality").readme_table(_results("quality", json_path))


def calibration_table(json_path: str | None) -> str:
    """The measured coverage table: what `benchmarks/calibration.py` prints for the saved run."""
    return _benchmark("calibration").docs_table(_results("calibration", json_path))


def demo_spread(json_path: str | None) -> str:
    """The demo's spread over its runs: what `benchmarks/demo_spread.py --readme-figures JSON` prints."""
    return _benchmark("demo_spread").readme_figures(_results("demo-spread", json_path))


def _docstring(path: Path) -> str:
    """A module's docstring's first paragraph on one line, its reST markup as markdown."""
    text = ast.get_docstring(ast.parse(path.read_text())) or ""
    line = " ".join(text.split("\n\n")[0].split())
    line = re.sub(r":\w+:`~?\.?([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", line)
    return line.replace("``", "`").replace("|", "\\|")


def _public_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [n.name for n in tree.body if isinstance(n, kinds) and not n.name.startswith("_")]


def _code_map_row(path: Path) -> str:
    relative = path.relative_to(ROOT).as_posix()
    if path.name == "__init__.py":
        return f"| **`{relative[:-len('__init__.py')]}`** | {_docstring(path)} | |"
    names = ", ".join(f"`{n}`" for n in _public_names(path))
    return f"| `{relative}` | {_docstring(path)} | {names} |"


def code_map(_: str | None = None) -> str:
    """Every Python file of the package, the trainers and variants folders, the benchmarks and the scripts: what
    its docstring says it holds, and the names it defines."""
    package = sorted((ROOT / "nnunetv2_llm").rglob("*.py"), key=lambda p: (p.parent.as_posix(), p.name != "__init__.py",
                                                                         p.name))
    others = [ROOT / "trainers" / "__init__.py", ROOT / "plans" / "__init__.py",
              *sorted((ROOT / "benchmarks").glob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]
    rows = ["| file | what it holds | public names |", "|---|---|---|"]
    return "\n".join(rows + [_code_map_row(p) for p in [*package, *others] if p.exists()])


TABLES: dict[str, Callable[[str | None], str]] = {
    "trainers": trainers_table, "variants": variants_table, "options": options_table, "code-map": code_map, "quality": quality_table,
    "calibration": calibration_table, "demo-spread": demo_spread}


class DocsError(Exception):
    """A page whose generated blocks this script cannot make (an unknown table, a JSON it cannot read)."""


@dataclass
class Stale:
    page: Path
    block: str


def regenerate(text: str) -> str:
    """The page's text with every generated block as this script makes it."""
    def fill(match: re.Match) -> str:
        name, argument = match.group(1), match.group(2)
        if name not in TABLES:
            raise DocsError(f"unknown generated block <!-- {name} -->; known: {', '.join(TABLES)}")
        opening = f"<!-- {name} {argument} -->" if argument else f"<!-- {name} -->"
        return f"{opening}\n{TABLES[name](argument)}\n<!-- /{name} -->"
    return BLOCK.sub(fill, text)


def blocks(text: str) -> list[str]:
    """The generated blocks of a page, as `name` or `name argument`."""
    return [" ".join(filter(None, m.group(1, 2))) for m in BLOCK.finditer(text)]


def stale(root: Path = ROOT) -> list[Stale]:
    """Each block of each page whose text is not what this script makes."""
    found = []
    for page in pages(root):
        text = page.read_text()
        now, fresh = BLOCK.findall(text), BLOCK.findall(regenerate(text))
        found += [Stale(page, name) for name, old, new in zip(blocks(text), now, fresh) if old[2] != new[2]]
    return found


def write(root: Path = ROOT) -> list[Path]:
    """Rewrite the pages whose blocks are stale (a temp file renamed into place); returns the pages written."""
    written = []
    for page in pages(root):
        text = page.read_text()
        fresh = regenerate(text)
        if fresh != text:
            fd, tmp = tempfile.mkstemp(dir=page.parent, prefix=f".{page.name}.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(fresh)
            os.chmod(tmp, page.stat().st_mode)
            os.replace(tmp, page)
            written.append(page)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 naming every stale block (the default)")
    mode.add_argument("--write", action="store_true", help="rewrite every stale block in place")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    try:
        if args.write:
            for page in write():
                print(f"rewrote {page.relative_to(ROOT)}")
            return 0
        found = stale()
    except DocsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in found:
        print(f"{s.page.relative_to(ROOT)}: the <!-- {s.block} --> block is stale", file=sys.stderr)
    if found:
        print("fix: python scripts/docs_tables.py --write", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
