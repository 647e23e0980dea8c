"""nnunetv2-llm: helpers around the stock nnU-Net CLIs, which stay the way to train and predict."""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from ..core.errors import UserError

# Modules that add their own subcommands through ``register(subparsers)``, in the order ``--help`` lists them.
COMMANDS = ("demo", "doctor", "trainers", "plan", "info", "extract", "synth", "dice", "compare", "analyze", "sweep",
            "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunetv2-llm", description=__doc__ + " Train and predict with nnUNetv2_train / nnUNetv2_predict "
                                                    "and our trainers (`nnunetv2-llm trainers`).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from ..core.files import disk_full_error, is_disk_full
        if not is_disk_full(e):
            raise
        folder = Path(e.filename).parent if e.filename else Path.cwd()
        left = f"{e.filename or 'the file being written'} may be incomplete"
        print(f"error: {disk_full_error(folder, left=left)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted{f' ({e})' if str(e) else ''}: nothing half-written is left; run the same command again "
              f"to continue.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
