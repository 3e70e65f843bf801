"""The `instructmining` command line: one module per subcommand, each a `make_parser()` plus a `main(...)`.

Every subcommand parses dataclass configs with TRL's `TrlParser`, so `--config run.yaml` sets defaults that
flags override, and an unknown key in the file is an error that names it. Known errors print one line with the
fix and exit 1; set `INSTRUCTMINING_DEBUG=1` to see the traceback instead.
"""

import argparse
import importlib
import logging
import os
import sys
import time


# subcommand -> one-line help (the module of the same name implements it)
COMMANDS = {
    "score": "compute indicators and the instruct_score of every row",
    "select": "keep the best rows of a scored dataset (top k, fraction or threshold)",
    "label": "finetune on sampled subsets and record their eval losses",
    "fit": "fit a quality rule (OLS) from labelled subsets",
    "search": "search how many top-ranked rows to keep (each trial finetunes)",
    "push": "save or push a scored dataset with its card to the Hub",
    "demo": "the offline end-to-end demo on the project's example data",
    "env": "print versions and devices, for bug reports",
}
_MODULES = {"select": "select_"}  # `select` would shadow the stdlib module name
EXIT_OK, EXIT_ERROR = 0, 1


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instructmining",
        description="InstructMining for the Hugging Face ecosystem: score, select and publish instruction data.",
        epilog="Run `instructmining <command> --help` for a command's options and examples.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name, help_text in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    parser.add_argument("--verbose", action="store_true", help="log progress at INFO level")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `instructmining` command; returns the exit code (0 success, 1 known error, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = _top_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command `{argv[0]}`; choose one of {list(COMMANDS)}")
        parser.print_help()
        return EXIT_OK

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hf_instructmining").setLevel(logging.INFO if verbose else logging.WARNING)
    name = argv[0]
    module = importlib.import_module(f"{__name__}.{_MODULES.get(name, name)}")
    parser = module.make_parser()
    start = time.perf_counter()
    try:
        configs = parser.parse_args_and_config(argv[1:])
        summary = module.main(*configs)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, RuntimeError) as err:
        if os.environ.get("INSTRUCTMINING_DEBUG"):
            raise
        print(f"instructmining {name}: error: {err}", file=sys.stderr)
        print("(set INSTRUCTMINING_DEBUG=1 to see the traceback)", file=sys.stderr)
        return EXIT_ERROR
    if summary:
        summary["time"] = f"{time.perf_counter() - start:.1f} s"
        print_summary(f"instructmining {name}", summary)
    return EXIT_OK


def print_summary(title: str, rows: dict[str, object]) -> None:
    """Print a two-column summary table (what was done, where outputs went)."""
    width = max(len(key) for key in rows)
    print(f"\n{title}")
    print("-" * (width + 2 + max(len(str(v)) for v in rows.values())))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
