"""The one `star` command line: ``star <command> [options]``.

Each subcommand lives in ``star_cli/commands/<module>.py`` with ``add_arguments(parser)`` and
``run(args) -> int`` and is imported only when chosen, so ``star --help`` is instant and a
command never pays for another's imports (torch, ray, mlflow, prefect). A flag that is a setting
is bound to one dotted key of ``StarConfig`` (``star_cli.options.setting``); the work itself is
in ``jobs`` (Ray, MLflow), ``flows`` (Prefect) or ``star_core``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command -> (module in star_cli.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the whole system on embedded defaults (videos -> features -> train -> detect -> query)"),
    "synth": ("synth", "generate the THUMOS'14-shaped stand-in features (W-TALC layout)"),
    "import": ("importer", "import public features (W-TALC .npy, BaS-Net per-video layout) into the lake"),
    "labels": ("labels", "import video-level labels for your own videos (CSV, JSONL, Parquet, ActivityNet JSON)"),
    "datasets": ("datasets", "list datasets, versions, classes and feature coverage"),
    "extract": ("extract", "extract two-stream I3D features from video files into the lake"),
    "i3d-check": ("i3d_check", "check an I3D weight file on DeepMind's sample clip"),
    "train": ("train", "train STAR (both streams) with Ray Train, tracked in MLflow"),
    "benchmark": ("benchmark", "train and evaluate STAR, ablations and the STPN baseline; print mAP tables"),
    "evaluate": ("evaluate", "detection mAP@tIoU of a detections file against ground truth"),
    "detect": ("detect", "bulk detection over the lake's features or videos, to Parquet"),
    "query": ("query", "SQL over detections/features/labels (DuckDB)"),
    "lake": ("lake", "check the lake's table files; --quarantine moves unreadable ones aside"),
    "plot": ("plot", "timeline PNG of a video's detections against ground truth"),
    "run-flow": ("run_flow", "run a Prefect flow (train or nightly-detect) in-process"),
    "zombie-runs": ("zombie_runs", "create/update the Prefect automation that marks flow runs whose heartbeats stopped Crashed"),
}


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: star <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `star <command> --help` for a command's options."]
    return "\n".join(lines)


def build_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``star <name>`` (what ``star <name> --help`` prints)."""
    module_name, help_ = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"star {name}", description=help_)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    importlib.import_module(f"star_cli.commands.{module_name}").add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from star_core import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"star: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"star_cli.commands.{COMMANDS[name][0]}")
    args = build_parser(name).parse_args(rest)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(module.run(args) or 0)
    except (CommandError, FileNotFoundError, KeyError, ValueError) as exc:
        # Bad input: one clear line naming the input and what is wrong, no traceback.
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"star {name}: error: {msg}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: one line, no traceback; jobs record what they did not finish in their manifest.
        print(f"star {name}: interrupted", file=sys.stderr)
        if args.verbose:
            raise
        return 130


if __name__ == "__main__":
    sys.exit(main())
