"""The `instructmining` command line: one module per subcommand, each a `make_parser()` plus a `main(...)`.

Every subcommand parses dataclass configs with TRL's `TrlParser`, so `--config run.yaml` sets defaults that
flags override, and an unknown key in the file is an error that names it. Every failure prints one line on stderr:
a usage error (an unknown or malformed flag) exits 2, any other error exits 1, with the flag to use in place of the
library's argument name; set `INSTRUCTMINING_DEBUG=1` to see the traceback instead.
"""

import argparse
import difflib
import importlib
import logging
import os
import re
import sys
import time
import warnings


# subcommand -> one-line help (the module of the same name implements it)
COMMANDS = {
    "score": "compute indicators and the instruct_score of every row",
    "select": "keep the best rows of a scored dataset (top k, fraction or threshold)",
    "label": "finetune on sampled subsets and record their eval losses",
    "fit": "fit a quality rule (OLS) from labelled subsets",
    "search": "search how many top-ranked rows to keep (each trial finetunes)",
    "push": "save or push a scored dataset with its card to the Hub",
    "explain": "read a rule (formula, range, provenance, models) and what it did to a scored dataset",
    "demo": "the offline end-to-end demo on the project's example data",
    "env": "print versions and devices, for bug reports",
}
_MODULES = {"select": "select_"}  # `select` would shadow the stdlib module name
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


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
    """Run the `instructmining` command; returns the exit code (0 success, 1 error, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = _top_parser()
        if argv and argv[0] not in ("-h", "--help"):
            close = difflib.get_close_matches(argv[0], list(COMMANDS), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            print(
                f"instructmining: error: unknown command `{argv[0]}`{hint}; choose one of {list(COMMANDS)}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        parser.print_help()
        return EXIT_OK

    name = argv[0]
    # A handler per call, on the stderr of this call: logs and the error line go to the same place.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    package_logger = logging.getLogger("hf_instructmining")
    level = package_logger.level
    package_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _log_warning
            return _run(name, argv[1:])
    finally:
        logging.getLogger().removeHandler(handler)
        package_logger.setLevel(level)


def _run(name: str, args: list[str]) -> int:
    from ._io import UsageError

    module = importlib.import_module(f"{__name__}.{_MODULES.get(name, name)}")
    parser = module.make_parser()
    start = time.perf_counter()
    try:
        configs = parser.parse_args_and_config(args)
        summary = module.main(*configs)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except SystemExit as done:  # `--help`
        return done.code if isinstance(done.code, int) else EXIT_OK
    except UsageError as err:
        print(f"instructmining {name}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        if os.environ.get("INSTRUCTMINING_DEBUG"):
            raise
        print(f"instructmining {name}: error: {describe(err, parser.flags)}", file=sys.stderr)
        return EXIT_ERROR
    if summary:
        summary["time"] = f"{time.perf_counter() - start:.1f} s"
        print_summary(f"instructmining {name}", summary)
    return EXIT_OK


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one log line, like every other message of the command (no source line under it)."""
    logging.getLogger("py.warnings").warning("%s: %s", category.__name__, message)


# Errors whose message is written for the person running the command; any other type is a bug to report.
_KNOWN = (ValueError, TypeError, OSError, ImportError, RuntimeError, LookupError)
# A Python argument in backticks, bare or with a value: `name=`, `name="nan"`, `name=3`.
_ARGUMENT = re.compile(r"`(\w+)=(?:\"([^\"`]*)\"|'([^'`]*)'|([^`]*))`")


def describe(err: Exception, flags: list[str]) -> str:
    """One line for an error: its message with the command's flags in place of the Python arguments they set.

    Example:

    ```py
    >>> from hf_instructmining.cli import describe
    >>> describe(ValueError('pass `column_mapping=`, or pass `on_invalid="nan"`;\\nsee row 3'), ["column_mapping", "on_invalid"])
    'pass `--column_mapping`, or pass `--on_invalid nan`; see row 3'
    ```
    """
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(line.strip() for line in str(text).splitlines() if line.strip())

    def as_flag(match: re.Match) -> str:
        name, value = match[1], next((g for g in match.groups()[1:] if g is not None), "")
        if name not in flags:
            return match[0]
        return f"`--{name} {value}`" if value else f"`--{name}`"

    text = _ARGUMENT.sub(as_flag, text)
    if not isinstance(err, _KNOWN):
        text = f"unexpected {type(err).__name__}: {text} (a bug: please report it with the traceback that INSTRUCTMINING_DEBUG=1 shows)"
    return text


def print_summary(title: str, rows: dict[str, object]) -> None:
    """Print a two-column summary table (what was done, where outputs went)."""
    width = max(len(key) for key in rows)
    print(f"\n{title}")
    print("-" * (width + 2 + max(len(str(v)) for v in rows.values())))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
