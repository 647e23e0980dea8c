"""nnunetv2-llm doctor: is this environment ready to train with the nnunetv2-llm trainers?

Checks the nnunetv2 version, that what training imports imports (torch, torchvision, dynamic_network_architectures,
nnU-Net's trainer), nnU-Net's three folders, that nnUNet_extTrainer lists our trainers folder and that nnU-Net's own
lookup finds every trainer there, which named LLM models can be loaded (locally or from the hub; nothing is
downloaded) and that gguf, which reads the default model, imports.
Exit code 1 when something blocks training.
"""
from __future__ import annotations

from ..core.terminal import console as make_console
from ..nnunet.doctor import FAIL, OK, WARN, Check, run_checks


def report(checks: list[Check]) -> None:
    from rich.table import Table
    console = make_console(160)
    table = Table(title="nnunetv2-llm doctor")
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    colours = {OK: "green", WARN: "yellow", FAIL: "bold red"}
    for c in checks:
        table.add_row(c.name, f"[{colours[c.status]}]{c.status}[/]", c.detail, end_section=False)
    console.print(table)
    fixes = [c for c in checks if c.fix and c.status != OK]
    if fixes:
        print("\nTo fix:")
        for c in fixes:
            print(f"  [{c.status}] {c.name}:\n    {c.fix}")
    blocking = [c.name for c in checks if c.status == FAIL]
    print("\n" + (f"{len(blocking)} problem(s) block training: {', '.join(blocking)}" if blocking
                  else "ready: nothing blocks training"), flush=True)


def cmd_doctor(args) -> int:
    checks = run_checks()
    report(checks)
    return 1 if any(c.status == FAIL for c in checks) else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="check what training imports, nnU-Net paths, trainer lookup, LLM models and GGUF support",
                              description=__doc__)
    p.set_defaults(func=cmd_doctor)
