"""Load tokenizers and models once per process, through the ordinary `from_pretrained` code.

Every indicator that needs a tokenizer or a model asks this module for it, so that two indicators naming the
same checkpoint share one load (e.g. `input_length` and `output_length`, or the three UniEval columns).
Loading never trusts remote code unless the caller says so explicitly. Datasets named by a file, a folder or a Hub id
are read by [`load_rows`], for the command line and for KNN reference sets alike.
"""

import codecs
import contextlib
import csv
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

from ._env import env_switch
from ._malloc import keep_freed_memory


logger = logging.getLogger(__name__)


@lru_cache(maxsize=16)
def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """Load a tokenizer by Hub id or local path, once per process.

    Args:
        name_or_path (`str`): a Hub id (`"meta-llama/Llama-2-7b-hf"`) or a local folder.
        revision (`str`, *optional*): a branch, tag or commit on the Hub.
        trust_remote_code (`bool`, *optional*, defaults to `False`): never on unless asked for.

    Returns:
        [`~transformers.PreTrainedTokenizerBase`]
    """
    from transformers import AutoTokenizer

    logger.info("Loading tokenizer %s (revision %s)", name_or_path, revision or "default")
    try:
        return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise OSError(
            f"Could not load the tokenizer `{name_or_path}`: {err}. Pass a local folder or a Hub id that exists "
            "(with `HF_HUB_OFFLINE=1`, it must already be in the cache)."
        ) from err


# `Auto*` class per task; each indicator names the task it needs.
_TASKS = {
    "causal_lm": "AutoModelForCausalLM",
    "seq2seq_lm": "AutoModelForSeq2SeqLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "encoder": "AutoModel",
}
# Tasks whose checkpoints may be in a format stock `transformers` has no class for: task -> (loader, fallback task).
# The indicator that needs one registers it (`indicators/reward.py`), so this module imports no indicator.
_CHECKPOINT_LOADERS: dict[str, tuple[Callable, str]] = {}


def register_checkpoint_loader(task: str, loader: Callable, fallback: str) -> None:
    """Let [`load_model`] read checkpoints of `task` that no `Auto*` class reads.

    Args:
        task (`str`): the task name the indicator passes to [`load_model`] (e.g. `"reward"`).
        loader (`Callable`): `loader(name_or_path, revision, torch_dtype)` returns the model, or `None` when the
            checkpoint is an ordinary one, which is then loaded as `fallback`.
        fallback (`str`): one of the stock tasks (`"sequence_classification"`, ...).
    """
    if task in _TASKS or fallback not in _TASKS:
        raise ValueError(
            f"`task` must be a new name and `fallback` one of {list(_TASKS)}, got {task!r}, {fallback!r}."
        )
    _CHECKPOINT_LOADERS[task] = (loader, fallback)


def cuda_device_count() -> int:
    """Number of visible CUDA devices, counted without initialising CUDA (safe before `fork`, e.g. `num_proc`)."""
    import torch

    # `torch.cuda.device_count` asks NVML first, which does not poison forked workers; `is_available` would.
    return torch.cuda.device_count()


def resolve_device(device: str | None = None, rank: int | None = None) -> str:
    """Pick the device an indicator runs on.

    Args:
        device (`str`, *optional*): `"cpu"`, `"cuda"`, `"cuda:1"`, ... or `None`/`"auto"` for `cuda` when a GPU is
            visible and `cpu` otherwise.
        rank (`int`, *optional*): the worker rank `Dataset.map(..., with_rank=True, num_proc=n)` passes; with CUDA,
            worker `rank` runs on GPU `rank % device_count`.

    Returns:
        `str`: a device string for `torch.device`.

    Raises:
        `ValueError`: a CUDA device is asked for and none is visible.

    Example:

    ```py
    >>> from hf_instructmining.loading import resolve_device
    >>> resolve_device("cpu", rank=3)
    'cpu'
    ```
    """
    if device is not None and device != "auto" and not device.startswith("cuda"):
        return device
    count = cuda_device_count()
    if device in (None, "auto") and count == 0:
        return "cpu"
    if count == 0:
        raise ValueError(f"`device={device!r}` asks for CUDA, but no CUDA device is visible; pass `device='cpu'`.")
    if device not in (None, "auto", "cuda"):
        return device
    return f"cuda:{rank % count}" if rank is not None else "cuda"


# CPU features that run bf16 matrix multiplies in hardware (`torch.cpu.get_capabilities()` names). Elsewhere torch
# emulates bf16 through float32 and pays for the conversions: on a 2-core AMD EPYC (AVX2) a bf16 matmul ran about 12x
# slower than float32 (benchmarks/RESULTS.md), while an AMX-BF16 Xeon ran it about 7x faster and an AVX512-BF16 EPYC
# 2.8x faster.
_NATIVE_BF16_FEATURES = ("amx_bf16", "avx512_bf16")
CPU_BF16_ENV = "INSTRUCTMINING_CPU_BF16"


def cpu_supports_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX-BF16 or AVX512-BF16), as torch detects it.

    The environment variable `INSTRUCTMINING_CPU_BF16` (`1` or `0`) overrides the detection, e.g. to keep
    `dtype="auto"` at float32 on a bf16 CPU. Arm CPUs are not counted yet: their bf16 speed under torch was never
    measured by this project.

    Example:

    ```py
    >>> from hf_instructmining.loading import cpu_supports_bf16
    >>> isinstance(cpu_supports_bf16(), bool)
    True
    ```
    """
    override = env_switch(CPU_BF16_ENV)
    if override is not None:
        return override
    import torch

    # Older torch releases have no public feature query: float32 there, exact and never slow.
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return False
    capabilities = get_capabilities()
    return any(bool(capabilities.get(name)) for name in _NATIVE_BF16_FEATURES)


def default_dtype(device: str) -> str:
    """The dtype models run in on `device` when none is asked for (`dtype="auto"`).

    `bfloat16` on GPUs that support it (else `float16`) and on CPUs that multiply bf16 in hardware (see
    [`cpu_supports_bf16`]); `float32` on other CPUs, where bf16 is emulated and slower than float32.

    Example:

    ```py
    >>> from hf_instructmining.loading import cpu_supports_bf16, default_dtype
    >>> default_dtype("cpu") == ("bfloat16" if cpu_supports_bf16() else "float32")
    True
    ```
    """
    if not device.startswith("cuda"):
        return "bfloat16" if cpu_supports_bf16() else "float32"
    import torch

    with torch.cuda.device(device):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def resolve_dtype(dtype: str | None, device: str):
    """Turn a dtype name (or `None`/`"auto"` for [`default_dtype`]) into a `torch.dtype`."""
    import torch

    name = default_dtype(device) if dtype in (None, "auto") else str(dtype).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"Unknown dtype `{dtype!r}`; use `'float32'`, `'bfloat16'`, `'float16'` or `'auto'`.")
    return value


def model_file(name_or_path: str, filename: str, revision: str | None = None) -> str | None:
    """The local path of `filename` in a model folder or Hub repo (downloaded and cached), or `None` if absent."""
    from transformers.utils import cached_file

    return cached_file(
        name_or_path,
        filename,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )


@lru_cache(maxsize=8)
def load_model(
    name_or_path: str,
    task: str,
    revision: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    trust_remote_code: bool = False,
):
    """Load a model for inference, once per process and device.

    Args:
        name_or_path (`str`): a Hub id or a local folder.
        task (`str`): `"causal_lm"`, `"seq2seq_lm"`, `"sequence_classification"`, `"encoder"`, or a task with a
            [`register_checkpoint_loader`] loader, e.g. `"reward"` (a sequence classifier, or an OpenAssistant
            `GPTNeoXRewardModel` checkpoint, see [`~hf_instructmining.indicators.RewardScore`]).
        revision (`str`, *optional*): a branch, tag or commit on the Hub.
        device (`str`, *optional*, defaults to `"cpu"`): where the model runs (see [`resolve_device`]).
        dtype (`str`, *optional*): a dtype name, or `None` for [`default_dtype`] of the device.
        trust_remote_code (`bool`, *optional*, defaults to `False`): never on unless asked for.

    On a CPU, the first load also keeps freed memory in the process (see [`~hf_instructmining._malloc`]): a model
    pass then reuses its activations' memory instead of faulting it back in from the kernel on every batch.

    Returns:
        `torch.nn.Module` in eval mode, with gradients off.

    Raises:
        `OSError`: the model cannot be found or read; the message says what to pass instead.
    """
    import transformers

    torch_dtype = resolve_dtype(dtype, device)
    if device == "cpu":
        keep_freed_memory()
    logger.info("Loading %s model %s (revision %s) on %s", task, name_or_path, revision or "default", device)
    try:
        if task in _CHECKPOINT_LOADERS:
            loader, task = _CHECKPOINT_LOADERS[task]
            model = loader(name_or_path, revision, torch_dtype)
            if model is not None:
                if torch_dtype.itemsize < 4:
                    _float32_head(model)
                return model.to(device).eval().requires_grad_(False)
        if task not in _TASKS:
            raise ValueError(f"Unknown task `{task}`; expected one of {[*_TASKS, *_CHECKPOINT_LOADERS]}.")
        auto_class = getattr(transformers, _TASKS[task])
        model = auto_class.from_pretrained(
            name_or_path, revision=revision, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except OSError as err:
        raise OSError(
            f"Could not load the model `{name_or_path}`: {err}. Pass a local folder or a Hub id that exists "
            "(with `HF_HUB_OFFLINE=1`, it must already be in the cache)."
        ) from err
    if task == "sequence_classification" and torch_dtype.itemsize < 4:
        _float32_head(model)
    return model.to(device).eval().requires_grad_(False)


def _float32_head(model) -> None:
    """Run a classifier's output layer in float32, on its input upcast: a reward is one number per text, which bf16
    would round to 3 significant digits (ties between rows), and the layer is one small matrix product."""
    import torch

    head = [module for module in model.modules() if isinstance(module, torch.nn.Linear)][-1]
    head.float()
    head.register_forward_pre_hook(
        lambda module, args: tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    )


# File suffix -> the `datasets` builder that reads it.
DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_rows(
    source: str | os.PathLike,
    split: str = "train",
    config_name: str | None = None,
    argument: str = "dataset",
    text_columns: Iterable[str] = (),
):
    """Rows from a data file, a `save_to_disk` folder, a folder of data files or a Hub dataset id.

    The one dataset loader: the command line's inputs and the KNN `reference` sets are read here.

    Args:
        source (`str` or `os.PathLike`): a `.json`, `.jsonl`, `.csv` or `.parquet` file, a folder, or a Hub id.
        split (`str`, *optional*, defaults to `"train"`): the split to read (of a `DatasetDict` folder too).
        config_name (`str`, *optional*): the configuration (subset) of a Hub dataset or a data folder.
        argument (`str`, *optional*, defaults to `"dataset"`): the argument named in errors (a command-line flag).
        text_columns (`Iterable[str]`, *optional*): CSV columns to read as text besides the layout's own
            (`instruction`, `output`, ...), e.g. the columns a `column_mapping` names: a CSV column of numbers
            would otherwise be read as numbers, which are not a response.

    Returns:
        `datasets.Dataset` with at least one row.

    Raises:
        `FileNotFoundError`, `ValueError`: one line naming the file and `argument` (and the line of a broken JSON
            Lines file).
    """
    import datasets

    path = Path(source)
    if path.is_file():
        builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"Cannot read `{path}` (`{argument}`): unknown file type `{path.suffix}`; use one of "
                f"{sorted(DATA_FILE_BUILDERS)}, a saved dataset folder or a Hub dataset id."
            )
        if split != "train":  # `data_files={split: path}` would read the whole file under any split name
            raise ValueError(
                f"`{path}` (`{argument}`) is one file, which has no `{split}` split: leave out `split=` to read all "
                "of it, or give a folder or Hub dataset that has splits."
            )
        _check_file(path, argument)
        options = {"converters": _csv_text_columns(path, text_columns)} if builder == "csv" else {}
        try:
            with _builder_errors_unlogged(builder):
                ds = datasets.load_dataset(builder, data_files={split: str(path)}, split=split, **options)
        except Exception as err:  # the builders raise many types; the file's own problem is said below
            raise ValueError(_unreadable(path, argument, err)) from err
    elif path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(
                    f"`{path}` (`{argument}`) has no split `{split}`; use `--split` with one of {list(ds)}."
                )
            ds = ds[split]
        elif split != "train" and str(ds.split) != split:
            raise ValueError(
                f"`{path}` (`{argument}`) holds one dataset, not a `{split}` split: leave out `split=` to read it."
            )
    elif path.is_dir():
        try:
            ds = datasets.load_dataset(str(path), name=config_name, split=split)
        except Exception as err:  # no data files, mixed formats, unknown split...: say which argument it was
            raise ValueError(f"Cannot read the folder `{path}` (`{argument}`): {err}") from err
    elif path.suffix.lower() in DATA_FILE_BUILDERS or str(path).startswith((".", "/", "~")):
        raise FileNotFoundError(f"No such file or folder: `{path}` (`{argument}`).")
    else:
        ds = _load_from_hub(os.fspath(source), split, config_name, argument)
    if len(ds) == 0:
        raise ValueError(f"`{source}` (`{argument}`, split `{split}`) is empty: there are no rows to read.")
    return ds


def _load_from_hub(name: str, split: str, config_name: str | None, argument: str):
    import datasets

    from .offline import hub_reachable

    try:
        return datasets.load_dataset(name, name=config_name, split=split)
    except Exception as err:  # offline, datasets says "Couldn't reach ...": say what the name was taken for
        if hub_reachable():
            raise
        raise FileNotFoundError(
            f"`{name}` (`{argument}`) is not a local file or folder, and the Hub is not reachable (or "
            "`HF_HUB_OFFLINE=1`) to load it as a Hub dataset, nor is it in the datasets cache; give a local "
            f"{'/'.join(sorted(DATA_FILE_BUILDERS))} file or a saved dataset folder."
        ) from err


def _check_file(path: Path, argument: str) -> None:
    """Catch a file without rows or a file that is not parquet before `datasets` does (with errors that do not say
    so, a traceback or log spam): no bytes, blank lines, `[]`, a CSV header alone, a parquet file of 0 rows."""
    empty = f"`{path}` (`{argument}`) is empty: give a file with at least one row."
    size = path.stat().st_size
    suffix = path.suffix.lower()
    # A small file is cheap to read whole; a big one is not worth reading to tell.
    if size < 4096:
        text = path.read_bytes().strip()
        if text in (b"", b"[]") or (suffix == ".csv" and b"\n" not in text):
            raise ValueError(empty)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...: all mean "not a parquet file"
            raise ValueError(f"`{path}` (`{argument}`) is not a readable parquet file: {err}") from None
        if rows == 0:
            raise ValueError(empty)
    elif suffix in (".json", ".jsonl"):
        _check_json_rows(path, argument)


def _check_json_rows(path: Path, argument: str) -> None:
    """Refuse JSON whose rows are not objects before `datasets` reads it: pyarrow crashes the interpreter (a segfault,
    no message) on a batch of JSON Lines that starts with `null`, and reads other values into errors that do not say
    so. A `.json` file must start with a list or an object; JSON Lines (a `.jsonl` file, or a `.json` file whose first
    line is a whole object) are read one line at a time (never whole), each line an object in UTF-8 (pyarrow reads
    other bytes in, and fails on them only when the text is used)."""
    with path.open("rb") as f:
        if path.suffix.lower() == ".json":
            head = f.read(64).removeprefix(codecs.BOM_UTF8).lstrip()
            if not head.startswith((b"{", b"[")):
                raise ValueError(
                    f"`{path}` (`{argument}`) holds the JSON value `{_shown(head)}`, not rows: give a list of "
                    "objects (`[{...}, ...]`) or one object per line (JSON Lines)."
                )
            f.seek(0)
            if not head.startswith(b"{") or not _is_object(f.readline(1 << 20).removeprefix(codecs.BOM_UTF8)):
                return  # one JSON document: `datasets` parses it whole, and says where it breaks
            f.seek(0)
        for number, line in enumerate(f, 1):
            text = (line.removeprefix(codecs.BOM_UTF8) if number == 1 else line).strip()
            if text and not text.startswith(b"{"):
                raise ValueError(
                    f"`{path}` (`{argument}`) line {number} is `{_shown(text)}`, not a JSON object; fix or remove "
                    "that line (JSON Lines: one JSON object per line)."
                )
            try:
                text.decode("utf-8")
            except UnicodeDecodeError as bad:
                raise ValueError(_not_utf8(path, argument, number, bad)) from None


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # not a whole JSON value (a pretty-printed object's first line), or not UTF-8
        return False


def _shown(text: bytes) -> str:
    """The start of a value, for a message."""
    first = text.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
    return first if len(first) <= 20 else f"{first[:20]}..."


def _not_utf8(path: Path, argument: str, line: int, err: UnicodeDecodeError) -> str:
    return (
        f"`{path}` (`{argument}`) is not UTF-8 text: line {line} has the byte 0x{err.object[err.start]:02x} at "
        f"column {err.start + 1}. Save it as UTF-8, e.g. from Latin-1: `iconv -f latin1 -t utf-8 {path} > "
        f"{path.stem}.utf8{path.suffix}`."
    )


def _first_non_utf8(path: Path, argument: str) -> str | None:
    """The message for a text file's first line that is not UTF-8, reading one line at a time; `None` if all are."""
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                return _not_utf8(path, argument, number, bad)
    return None


def _csv_text_columns(path: Path, text_columns: Iterable[str]) -> dict[str, Callable]:
    """pandas converters that read a CSV's layout columns (and `text_columns`) as text: pandas would read a column
    whose answers are all numbers (`4`, `3.5`) as numbers, which the layout then refuses as "not text"."""
    from .formats import ROLES

    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        header = next(csv.reader(f), [])
    wanted = {*ROLES, *text_columns}
    return {name: str for name in header if name in wanted}


@contextlib.contextmanager
def _builder_errors_unlogged(builder: str):
    """Drop the ERROR line a `datasets` file builder logs just before it raises: the error becomes one line of ours
    naming the file and the fix, and the builder's own line would print twice before it (through the `datasets`
    handler and the root one)."""
    builder_logger = logging.getLogger(f"datasets.packaged_modules.{builder}.{builder}")

    def below_error(record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR

    builder_logger.addFilter(below_error)
    try:
        yield
    finally:
        builder_logger.removeFilter(below_error)


def _unreadable(path: Path, argument: str, err: Exception) -> str:
    """Why `datasets` could not read a data file: text that is not UTF-8, the first broken line of a JSON (Lines)
    file, else the cause."""
    if path.suffix.lower() in (".json", ".jsonl", ".csv"):
        not_utf8 = _first_non_utf8(path, argument)
        if not_utf8:
            return not_utf8
    if path.suffix.lower() in (".json", ".jsonl"):
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            json.loads(text)
        except json.JSONDecodeError as whole:
            if text.lstrip().startswith("["):  # one JSON document (a list of rows): its own error says where
                return f"`{path}` (`{argument}`) is not valid JSON ({whole.msg} at line {whole.lineno}, column {whole.colno})."
            # JSON Lines: the first line that does not parse is the culprit.
            for number, line in enumerate(text.splitlines(), 1):
                try:
                    if line.strip():
                        json.loads(line)
                except json.JSONDecodeError as bad:
                    return (
                        f"`{path}` (`{argument}`) line {number} is not valid JSON ({bad.msg} at column {bad.colno}); "
                        "fix or remove that line (JSON Lines: one JSON object per line)."
                    )
            return f"`{path}` (`{argument}`) is not valid JSON ({whole.msg} at line {whole.lineno})."
        return (
            f"`{path}` (`{argument}`) is valid JSON but not a list of rows (or one object per line): "
            f"{type(err).__name__}: {err}"
        )
    cause = err.__cause__ or err
    if path.suffix.lower() == ".csv":
        return (
            f"`{path}` (`{argument}`) is not CSV that pandas can read ({type(cause).__name__}: {cause}): fix the "
            "quoting or the separators there, or give the rows as JSON Lines."
        )
    return f"Cannot read `{path}` (`{argument}`): {type(cause).__name__}: {cause}"


def _torch_single_threaded_after_fork() -> None:
    # A worker that `Dataset.map(num_proc=n)` forks after the parent ran torch on CPU hangs in its first parallel op
    # (the OpenMP thread pool does not survive `fork`). Like `DataLoader` workers, forked workers use one thread.
    # Registered here, where every indicator loads its models, so bare indicators under `num_proc` are covered too.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


os.register_at_fork(after_in_child=_torch_single_threaded_after_fork)
