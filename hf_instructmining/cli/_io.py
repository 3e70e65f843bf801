"""Shared pieces of the subcommands: the parser, the input-dataset arguments, loading inputs and writing outputs."""

import argparse
import copy
import difflib
import json
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path


logger = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


class UsageError(Exception):
    """A command line that does not parse: an unknown or malformed flag (exit code 2)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the hand-wrapped examples in descriptions and epilogs."""


def make_command_parser(
    name: str,
    dataclass_types: tuple,
    description: str,
    examples: str,
    *,
    renamed: dict[tuple[type, str], str] | None = None,
    hidden: set[tuple[type, str]] | None = None,
):
    """The parser of one subcommand: `--config x.yaml` defaults, flags override, examples in `--help`.

    The dataclasses are the library's configs (`ScoreConfig`, `LabelingConfig`, ...) and command-line-only ones for
    inputs and outputs; every field is a flag of the same name. A `dict` field takes a JSON object (a mapping in a
    YAML config). Two configs of one command may share a field name: `renamed` maps `(config class, field)` to the
    flag that sets it (e.g. `LabelingConfig.seed` is `--training_seed` beside `SearchConfig.seed`), and `hidden`
    leaves fields to their defaults (e.g. the trainer's `output_dir` beside the search's).
    """
    import dataclasses

    from trl import TrlParser

    renamed, hidden = renamed or {}, hidden or set()

    class CommandParser(TrlParser):
        """`TrlParser` whose errors are one line naming the flag (and the closest real one), never a usage dump."""

        def __init__(self):
            self._adding: type | None = None
            self._json_flags: set[str] = set()
            super().__init__(
                dataclass_types,
                prog=f"instructmining {name}",
                description=description,
                epilog=f"examples:\n{examples}\n\nErrors print one line; INSTRUCTMINING_DEBUG=1 shows the traceback.",
                formatter_class=HelpFormatter,
            )
            for action in self._actions:
                # An optional boolean (`bool | None`, e.g. `--private`) works as a bare switch too, like `bool` ones
                # (the parser gives both the same `string_to_bool` type, but a value only to the plain ones).
                if getattr(action.type, "__name__", None) == "string_to_bool" and action.nargs is None:
                    action.nargs, action.const = "?", True
                if action.dest in self._json_flags:  # read as text here, as a JSON object in `_field_values`
                    action.type = str
                if action.option_strings and action.option_strings[0] == f"--no_{action.dest}":
                    # The complement of a switch that is on by default: the parser copies the switch's own help,
                    # and its default (`False`) is not the setting's; the switch's line shows that.
                    action.help, action.default = f"Turn `--{action.dest}` off.", argparse.SUPPRESS

        def _add_dataclass_arguments(self, dtype):
            self._adding = dtype
            super()._add_dataclass_arguments(dtype)

        def _parse_dataclass_field(self, parser, config_field):
            if (self._adding, config_field.name) in hidden:
                return
            if (self._adding, config_field.name) in renamed:
                config_field = copy.copy(config_field)
                config_field.name = renamed[(self._adding, config_field.name)]
            TrlParser._parse_dataclass_field(parser, config_field)
            if _is_dict(config_field.type):
                self._json_flags.add(config_field.name)
            if config_field.default is not dataclasses.MISSING and config_field.default is not None:
                # `HfArgumentParser` drops the default of a `str | list[str]` field (e.g. `"all-linear"`).
                for action in parser._actions:
                    if action.dest == config_field.name and action.default is None:
                        action.default = config_field.default

        def parse_args_into_dataclasses(self, args=None, return_remaining_strings=False, **kwargs):
            namespace, remaining = self.parse_known_args(args=args)
            if remaining:  # before the configs check their values: a misspelt flag is the error to report
                flag = next((a for a in remaining if a.startswith("-")), remaining[0])
                self.error(f"unrecognized argument `{flag}`{_close(flag.lstrip('-').replace('-', '_'), self.flags)}")
            configs = [dtype(**self._field_values(dtype, namespace)) for dtype in self.dataclass_types]
            return (*configs, remaining) if return_remaining_strings else tuple(configs)

        def _field_values(self, dtype, namespace) -> dict:
            values = {}
            for config_field in dataclasses.fields(dtype):
                if not config_field.init or (dtype, config_field.name) in hidden:
                    continue
                flag = renamed.get((dtype, config_field.name), config_field.name)
                value = getattr(namespace, flag)
                values[config_field.name] = json_object(value, flag) if flag in self._json_flags else value
            return values

        @property
        def flags(self) -> list[str]:
            return sorted(a.dest for a in self._actions if a.option_strings and a.dest != "help")

        def error(self, message: str):
            raise UsageError(f"{message}; see `{self.prog} --help`")

        def parse_args_and_config(self, args):
            args = list(args)
            if "--config" in args:
                self._check_config(args)
            return super().parse_args_and_config(args)

        def _check_config(self, args: list[str]) -> None:
            import yaml

            at = args.index("--config")
            if at + 1 >= len(args):
                self.error("argument --config: expected a YAML file")
            path = args[at + 1]
            if not os.path.isfile(path):
                raise FileNotFoundError(f"No such config file `{path}` (`--config`).")
            try:
                with open(path, encoding="utf-8") as f:
                    config = yaml.safe_load(f)
            except yaml.YAMLError as err:
                where = getattr(err, "problem_mark", None)
                at_line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
                raise ValueError(
                    f"`--config {path}` is not valid YAML{at_line}: {getattr(err, 'problem', None) or err}."
                ) from None
            if not isinstance(config, dict):
                raise ValueError(f"`--config {path}` must hold a YAML mapping of flag names to values.")
            unknown = [k for k in config if k not in self.flags and k != "env"]
            if unknown:
                close = "".join(_close(str(k), self.flags) for k in unknown)
                raise ValueError(
                    f"`--config {path}` has unknown key(s) {unknown}{close}; its keys are the flags of "
                    f"`{self.prog} --help`, without the dashes."
                )

    return CommandParser()


def _is_dict(annotation) -> bool:
    """Whether a field holds a mapping: `dict`, `dict[...]`, or either `| None`."""
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    options = typing.get_args(annotation) if union else (annotation,)
    return any((typing.get_origin(option) or option) is dict for option in options)


def _close(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean `--{close[0]}`?)" if close else ""


@dataclass
class InputArguments:
    """Where the input rows come from (how to read their layout is `ScoreConfig`'s `--format`/`--column_mapping`).

    Args:
        dataset (`str`):
            A local file (`.json`, `.jsonl`, `.csv`, `.parquet`), a folder written by `save_to_disk`, a folder of data
            files, or a Hub dataset id.
        split (`str`, *optional*, defaults to `"train"`):
            The split to read (files and Hub datasets).
        dataset_config (`str`, *optional*):
            The configuration (subset) of a Hub dataset.
        max_rows (`int`, *optional*):
            Read only the first N rows (quick trials).
    """

    dataset: str = field(metadata={"help": "Local file (json, jsonl, csv, parquet), saved dataset folder, or Hub id."})
    split: str = field(default="train", metadata={"help": "Split to read."})
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration (subset) of a Hub dataset."})
    max_rows: int | None = field(default=None, metadata={"help": "Read only the first N rows."})

    def __post_init__(self):
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"`--max_rows` must be at least 1, got {self.max_rows}.")


def json_object(value: str | dict | None, flag: str) -> dict | None:
    """Parse a flag that holds a JSON object (a YAML config may already give it as a mapping)."""
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"`--{flag}` is not valid JSON ({err}): {value!r}.") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"`--{flag}` must be a JSON object, got {value!r}.")
    return parsed


def load_input(args: InputArguments, flag: str = "--dataset", column_mapping: dict | None = None):
    """Load the rows that `args` names, as a `datasets.Dataset`; `flag` is named in errors, and the columns that
    `column_mapping` names are read as text from a CSV file (see [`~hf_instructmining.loading.load_rows`])."""
    from ..loading import load_rows

    ds = load_rows(
        args.dataset,
        split=args.split,
        config_name=args.dataset_config,
        argument=flag,
        text_columns=(column_mapping or {}).values(),
    )
    if args.max_rows is not None:
        ds = ds.select(range(min(args.max_rows, len(ds))))
    logger.info("Loaded %d rows from %s", len(ds), args.dataset)
    return ds


def compute_with(ds, names: list[str] | None, rule, config, num_proc: int | None = None, **options):
    """`compute_indicators` with a command's `ScoreConfig` (and `options`, such as `checkpoint_dir`): its
    `--reference` is read like `--dataset`."""
    from ..scoring import compute_indicators

    check_device(config.device)
    reference = load_input(InputArguments(dataset=config.reference), "--reference") if config.reference else None
    return compute_indicators(
        ds,
        names,
        rule=rule,
        models=config.models,
        device=config.device,
        on_invalid=config.on_invalid,
        num_proc=num_proc,
        reference=reference,
        format=config.format,
        column_mapping=config.column_mapping,
        **options,
    )


def check_device(device: str | None) -> None:
    """Fail at once on a `--device` that torch does not know (instead of after the models load)."""
    if device is None or device == "auto":
        return
    import torch

    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"`--device {device}` is not a device: use `cpu`, `cuda` or `cuda:<index>`.") from None


def require_score_column(ds, column: str, source: str) -> None:
    """Fail with the command that makes scores when `ds` has none (before selecting or publishing)."""
    if column not in ds.column_names:
        raise ValueError(
            f"`{source}` (`--dataset`) has no `{column}` column (columns: {ds.column_names}): score it first with "
            "`instructmining score`, or name the score column with `--score_column`."
        )


def check_output(output: str) -> None:
    """Fail before any work on an output path that `save_output` could not write."""
    suffix = Path(output).suffix.lower()
    if suffix and suffix not in OUTPUT_SUFFIXES:
        raise ValueError(
            f"Cannot write `{output}` (`--output`): unknown file type `{suffix}`; use {', '.join(OUTPUT_SUFFIXES)}, "
            "or a folder name without a suffix (`save_to_disk`)."
        )


def save_output(ds, output: str) -> str:
    """Write a dataset to `output`: a file by its extension, else a `save_to_disk` folder. Returns the path.

    Parquet files and folders keep the record of how each column was made (for dataset cards); JSON Lines, JSON and
    CSV cannot hold it, which a warning says when there is one to lose.
    """
    from ..scoring.provenance import read

    check_output(output)
    path = Path(output)
    suffix = path.suffix.lower()
    blocked = next((parent for parent in path.parents if parent.is_file()), None)
    if blocked is not None:
        raise NotADirectoryError(f"Cannot write `{path}` (`--output`): `{blocked}` is a file, not a folder.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".parquet":
            ds.to_parquet(str(path))
        elif suffix in (".jsonl", ".json"):
            # pandas writes 10 significant digits by default: scores must survive the round trip.
            ds.to_json(str(path), lines=suffix == ".jsonl", force_ascii=False, double_precision=15)
        elif suffix == ".csv":
            ds.to_csv(str(path), index=False)
        else:
            ds.save_to_disk(str(path))
    except OSError as err:
        raise OSError(f"Cannot write `{path}` (`--output`): {err.strerror or err}.") from err
    made = read(ds)
    if suffix in (".jsonl", ".json", ".csv") and (made.rule or made.indicators):
        logger.warning(
            "`%s` cannot record how its columns were made (%s has no schema): dataset cards made from it will say "
            "so. Write a .parquet file or a folder to keep the record.",
            path,
            suffix,
        )
    return str(path)
