"""The ``fedcrypt`` command line.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int``; this file only maps names to modules, so the CLI imports nothing
heavy until a subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from fedcrypt import __version__

#: subcommand -> (module implementing it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "fedcrypt.integrations.demo",
        "federated LoRA fine-tuning of a small pretrained LM across in-process clients, "
        "with the chosen protection, printing what each costs",
    ),
    "bench": (
        "fedcrypt.bench",
        "benchmark matrix of crypto overhead (SecAgg, SecAgg+, CKKS, DP) against plaintext and peers",
    ),
    "privacy": (
        "fedcrypt.dp.cli",
        "show a privacy ledger: spent and remaining epsilon per round",
    ),
}


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="fedcrypt",
        description="Privacy-preserving aggregation for federated fine-tuning of LLM adapters.",
    )
    parser.add_argument("--version", action="version", version=f"fedcrypt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module = _load(module_name)
        if module is not None:
            module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedcrypt`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = _load(args._module)
    if module is None:
        help_text = SUBCOMMANDS[args.command][1]
        print(f"fedcrypt {args.command}: not implemented yet; it will: {help_text}", file=sys.stderr)
        return 2
    return int(module.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
