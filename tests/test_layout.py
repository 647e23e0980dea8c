"""The architecture, as rules the code can be held to: roles are folders, imports go downwards, commands are thin.

    core  <-  nnunet  <-  evaluation, submission, sweep  <-  commands

``core`` (the spec, models, variants, weights, block, network, cost) imports nothing of the other folders; no
library module imports ``commands`` or ``argparse``; the container's entry point loads only what predicting needs;
building the command line loads no torch (so ``--help`` is quick).
"""
import ast
import resource
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nnunetv2_llm"
ROLES = ("core", "nnunet", "evaluation", "submission", "sweep", "commands")
# What each role may import of the others (it may always import itself).
ALLOWED = {"core": set(), "nnunet": {"core"}, "evaluation": {"core", "nnunet"}, "submission": {"core", "nnunet"},
           "sweep": {"core", "nnunet"}, "commands": set(ROLES)}


def imported_roles(path: Path) -> dict[str, list[str]]:
    """The other roles a module imports (relative or absolute imports of this package), with the lines."""
    from importlib.util import resolve_name
    rel = path.relative_to(PACKAGE)
    package = ".".join(("nnunetv2_llm", *rel.parent.parts))
    targets = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module or ""
            names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            targets += [(n, node.lineno) for n in names]
        elif isinstance(node, ast.Import):
            targets += [(a.name, node.lineno) for a in node.names]
    found: dict[str, list[str]] = {}
    for name, line in targets:
        parts = name.split(".")
        if parts[0] == "nnunetv2_llm" and len(parts) > 1 and parts[1] in ROLES and parts[1] != rel.parts[0]:
            found.setdefault(parts[1], []).append(f"line {line}")
    return found


def modules(role: str) -> list[Path]:
    return sorted((PACKAGE / role).rglob("*.py"))  # subpackages (core/weights/) too


@pytest.mark.parametrize("role", ROLES)
def test_imports_go_downwards(role):
    assert modules(role), f"no modules in {role}/"
    wrong = {f"{p.relative_to(PACKAGE)}": {r: lines for r, lines in imported_roles(p).items() if r not in ALLOWED[role]}
             for p in modules(role)}
    assert not {k: v for k, v in wrong.items() if v}, f"{role}/ may import only {sorted(ALLOWED[role])}"


def test_the_code_map_states_these_rules():
    """docs/code-map.md's floors table says what each package may import: the rules above, not a copy that drifts."""
    import re
    text = (PACKAGE.parent / "docs" / "code-map.md").read_text()
    rows = dict(re.findall(r"^\| \d \| `(\w+)/` \| .*? \| ([^|]*?) \|$", text, re.M))
    floors = {role: int(n) for n, role in re.findall(r"^\| (\d) \| `(\w+)/`", text, re.M)}
    below = {role: {r for r in floors if floors[r] < floors[role]} for role in floors}
    stated = {role: below[role] if words == "every floor below" else set(re.findall(r"`(\w+)`", words))
              for role, words in rows.items()}
    assert stated == {role: ALLOWED[role] - {role} for role in ROLES}


def test_the_rule_checker_sees_imports():
    """The checker itself: it finds the imports the rules are about (else every rule passes vacuously)."""
    assert "core" in imported_roles(PACKAGE / "nnunet" / "llm_trainer.py")
    assert {"core", "nnunet"} <= set(imported_roles(PACKAGE / "evaluation" / "compare.py"))
    assert "evaluation" in imported_roles(PACKAGE / "commands" / "compare.py")


def test_only_commands_parse_arguments():
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "commands":
            continue
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
                   {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "argparse" not in imported, f"{path.relative_to(PACKAGE)} parses arguments: that belongs in commands/"


def _loaded_after(statement: str) -> set[str]:
    probe = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(proc.stdout.split())


def test_the_command_line_builds_without_torch():
    loaded = _loaded_after("from nnunetv2_llm.commands.cli import build_parser; build_parser()")
    heavy = {"torch", "nnunetv2", "transformers", "matplotlib", "scipy", "monai", "SimpleITK"} & loaded
    assert not heavy, f"building the parser imports {sorted(heavy)}: --help would wait for them"


def test_help_takes_under_a_second_of_cpu():
    """CPU time, not wall time, so a loaded machine does not fail it: about 0.2 s here, importing torch alone 1.5 s."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "nnunetv2_llm.commands.cli", "compare", "--help"], capture_output=True,
                   check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert cpu < 1.0, f"`nnunetv2-llm compare --help` took {cpu:.2f} s of CPU time"


def test_the_container_entry_point_loads_only_what_predicting_needs():
    loaded = _loaded_after("import nnunetv2_llm.submission.runtime")
    unneeded = {m for m in loaded if m.startswith(("nnunetv2_llm.evaluation", "nnunetv2_llm.sweep",
                                                   "nnunetv2_llm.commands", "nnunetv2_llm.nnunet.planning",
                                                   "matplotlib", "submitit", "monai", "scipy"))}
    assert not unneeded, sorted(unneeded)


def test_every_help_text_is_plain_and_explains_every_option(capsys):
    """Issue 22: each command's --help prints without raw markup, and every option says what it does."""
    import argparse

    from nnunetv2_llm.commands.cli import COMMANDS, build_parser
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    commands = {name: subparsers[name] for name in COMMANDS}
    commands.update({f"sweep {name}": p for name, p in next(
        a for a in subparsers["sweep"]._actions if isinstance(a, argparse._SubParsersAction)).choices.items()})
    for name, sub in commands.items():
        text = sub.format_help()
        assert "``" not in text, f"`{name} --help` shows raw markup"
        assert (sub.description or "").strip(), f"`{name} --help` has no description"
        undocumented = [a.option_strings or a.dest for a in sub._actions
                        if a.help is None and not isinstance(a, argparse._SubParsersAction)]
        assert not undocumented, f"`{name}`: options without help {undocumented}"


def test_every_imported_package_is_declared_and_every_declared_one_imported():
    """pyproject's dependencies are what the library and the trainers import (gguf through its extra), no more."""
    import importlib.metadata as metadata
    import re
    from packaging.requirements import Requirement
    requires = [Requirement(r) for r in metadata.requires("nnunetv2-llm")]
    canonical = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    declared = {canonical(r.name) for r in requires if r.marker is None}
    extras = {canonical(r.name) for r in requires if r.marker is not None and r.marker.evaluate({"extra": "gguf"})}
    distributions = metadata.packages_distributions()
    imported = set()
    for path in [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "trainers").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top != "nnunetv2_llm" and top not in sys.stdlib_module_names:
                    imported |= {canonical(d) for d in distributions.get(top, [top])}
    assert imported - declared - extras == set(), "imported but not declared in pyproject.toml"
    assert declared - imported == set(), "declared in pyproject.toml but imported nowhere"
