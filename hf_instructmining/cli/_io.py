"""Shared pieces of the subcommands: the input-dataset arguments, loading inputs and writing outputs."""

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path


logger = logging.getLogger(__name__)

DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the hand-wrapped examples in descriptions and epilogs."""


def make_command_parser(name: str, dataclass_types: tuple, description: str, examples: str):
    """A `TrlParser` for one subcommand: `--config x.yaml` defaults, flags override, examples in `--help`."""
    from trl import TrlParser

    return TrlParser(
        dataclass_types,
        prog=f"instructmining {name}",
        description=description,
        epilog=f"examples:\n{examples}",
        formatter_class=HelpFormatter,
    )


@dataclass
class InputArguments:
    """Where the input rows come from.

    Args:
        dataset (`str`):
            A local file (`.json`, `.jsonl`, `.csv`, `.parquet`), a folder written by `save_to_disk`, a folder of data
            files, or a Hub dataset id.
        split (`str`, *optional*, defaults to `"train"`):
            The split to read (files and Hub datasets).
        dataset_config (`str`, *optional*):
            The configuration (subset) of a Hub dataset.
        column_mapping (`str`, *optional*):
            JSON object saying which column plays which role, e.g. `{"instruction": "question", "output": "answer"}`.
        format (`str`, *optional*):
            Force the layout instead of detecting it.
        max_rows (`int`, *optional*):
            Read only the first N rows (quick trials).
    """

    dataset: str = field(metadata={"help": "Local file (json, jsonl, csv, parquet), saved dataset folder, or Hub id."})
    split: str = field(default="train", metadata={"help": "Split to read."})
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration (subset) of a Hub dataset."})
    column_mapping: str | None = field(
        default=None,
        metadata={"help": 'JSON role -> column, e.g. \'{"instruction": "question", "output": "answer"}\'.'},
    )
    format: str | None = field(
        default=None,
        metadata={"help": "Force the input layout.", "choices": ["alpaca", "prompt_completion", "messages"]},
    )
    max_rows: int | None = field(default=None, metadata={"help": "Read only the first N rows."})

    def __post_init__(self):
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"`--max_rows` must be at least 1, got {self.max_rows}.")

    @property
    def mapping(self) -> dict[str, str] | None:
        return json_object(self.column_mapping, "column_mapping")


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


def load_input(args: InputArguments):
    """Load the rows that `args` names, as a `datasets.Dataset`."""
    import datasets

    path = Path(args.dataset)
    if path.is_file():
        builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"Cannot read `{path}`: unknown file type `{path.suffix}`; use one of {sorted(DATA_FILE_BUILDERS)}."
            )
        if _has_no_rows(path):  # datasets fails on such files with errors that do not say so
            raise ValueError(f"`{path}` is empty: there are no rows to read.")
        ds = datasets.load_dataset(builder, data_files={args.split: str(path)}, split=args.split)
    elif path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[args.split]
    elif path.is_dir():
        ds = datasets.load_dataset(str(path), name=args.dataset_config, split=args.split)
    elif path.suffix.lower() in DATA_FILE_BUILDERS or str(path).startswith((".", "/")):
        raise FileNotFoundError(f"No such file or folder: `{path}`.")
    else:
        ds = datasets.load_dataset(args.dataset, name=args.dataset_config, split=args.split)
    if len(ds) == 0:
        raise ValueError(f"`{args.dataset}` (split `{args.split}`) is empty: there are no rows to read.")
    if args.max_rows is not None:
        ds = ds.select(range(min(args.max_rows, len(ds))))
    logger.info("Loaded %d rows from %s", len(ds), args.dataset)
    return ds


def _has_no_rows(path: Path) -> bool:
    """Whether a data file holds no rows: a parquet file of 0 rows, a CSV header alone, blank JSON Lines, `[]`."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows == 0
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if len(head) == 1 << 16:
        return False
    text = head.strip()
    return b"\n" not in text if path.suffix.lower() == ".csv" else text in (b"", b"[]")


def save_output(ds, output: str) -> str:
    """Write a dataset to `output`: a file by its extension, else a `save_to_disk` folder. Returns the path."""
    path = Path(output)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        ds.to_parquet(str(path))
    elif suffix in (".jsonl", ".json"):
        # pandas writes 10 significant digits by default: scores must survive the round trip.
        ds.to_json(str(path), lines=suffix == ".jsonl", force_ascii=False, double_precision=15)
    elif suffix == ".csv":
        ds.to_csv(str(path), index=False)
    elif suffix:
        raise ValueError(f"Cannot write `{path}`: unknown file type `{suffix}`; use .parquet, .jsonl, .json or .csv.")
    else:
        ds.save_to_disk(str(path))
    return str(path)
