"""Resumable scoring: finished rows are written to a checkpoint folder in shards, and a rerun starts where it stopped.

[`compute_indicators`] with `checkpoint_dir=` scores the dataset `shard_size` rows at a time. Each finished shard
(its per-row indicator columns, and the embeddings of any KNN indicator whose neighbours are the scored rows) is
written atomically: to a temporary file in the same folder, flushed to disk (`fsync`), then renamed over its final
name (`os.replace`). A shard file therefore exists whole or not at all, and a process killed at any moment loses
only the shard it was computing. KNN's search over the whole dataset runs once every shard is on disk, and its
result is a checkpoint file too; so is the rule's prediction.

`manifest.json` records what defines the values: the rule, the indicators with every option (model, device, dtype,
invalid-row policy, layout; the `Dataset.map` fingerprint of each indicator, which covers its class `version`), the
input (its `datasets` fingerprint, rows and columns), the batch and shard sizes and the library's version. A rerun
whose manifest differs reuses nothing: it logs one warning naming what changed, removes the folder's shard files
and starts afresh there. Use one folder per job.
"""

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Rows per shard by default: a multiple of `compute_indicators`' default batch (256), so that shards cut no batch
# and the values equal those of an unsharded run; at the offline rule's few rows/s, a kill costs minutes.
DEFAULT_SHARD_SIZE = 2048
# What the manifest compares, in the words of the warning when one differs.
_PARTS = {
    "rule": "the rule",
    "indicators": "the indicators or their options",
    "input": "the input rows",
    "layout": "the batch or shard size",
    "code": "the library version",
}
_SHARD_PREFIX = "shard-"
# The files this module writes (shards, KNN searches, the score), and `datasets`' cache files that `cast` writes
# beside them: a fresh start removes these and nothing else a user keeps in the folder.
_OWN_PREFIXES = (MANIFEST, _SHARD_PREFIX, "search-", "score", "cache-")


def fingerprint(plan, ds, *, options: Mapping[str, Any], reference: Any, shard_size: int) -> dict[str, Any]:
    """What defines a checkpoint's values, part by part (see the module docstring); JSON-ready."""
    from datasets.fingerprint import Hasher

    from .._version import __version__

    indicators = {",".join(i.columns): Hasher.hash(i) for i in plan.indicators}
    return {
        "rule": None if plan.rule is None else Hasher.hash(json.dumps(plan.rule.to_dict(), sort_keys=True)),
        "indicators": {
            **indicators,
            "options": Hasher.hash(json.dumps(dict(options), sort_keys=True, default=str)),
            "reference": None if reference is None else Hasher.hash(getattr(reference, "_fingerprint", reference)),
        },
        "input": {"fingerprint": ds._fingerprint, "rows": len(ds), "columns": list(ds.column_names)},
        "layout": {"shard_size": shard_size, "batch_size": options.get("batch_size")},
        "code": __version__,
    }


@dataclass
class Checkpoint:
    """A checkpoint folder: its manifest, its shard files and the atomic write that makes them.

    Args:
        folder (`str` or `os.PathLike`): where the files live; made when missing.
        manifest (`dict`): what defines the values (see [`fingerprint`]).
        num_rows (`int`): rows in the scored dataset.
        shard_size (`int`): rows per shard (the last one may hold fewer).
    """

    folder: Path
    manifest: dict[str, Any]
    num_rows: int
    shard_size: int

    def __post_init__(self):
        self.folder = Path(self.folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"`checkpoint_dir` `{self.folder}` is a file, not a folder.")
        self.folder.mkdir(parents=True, exist_ok=True)
        # A write cut short by a kill left its temporary file: never whole, never read.
        self._remove(p for p in self._own_files() if p.suffix == ".tmp")
        changed = self._changed()
        if changed is None:
            logger.info(
                "Checkpoint folder %s: new job, %d shards of %d rows", self.folder, self.num_shards, self.shard_size
            )
        elif changed:
            old = self._own_files()
            logger.warning(
                "The checkpoint folder `%s` holds shards of another job: %s changed, so none of its %d files is "
                "reused; starting afresh in that folder.",
                self.folder,
                ", ".join(_PARTS[part] for part in changed),
                len(old),
            )
            self._remove(old)
        else:
            done = sum(self.done(i) for i in range(self.num_shards))
            logger.info("Checkpoint folder %s: resuming, %d of %d shards done", self.folder, done, self.num_shards)
        if changed != []:
            self.write_json(MANIFEST, self.manifest)

    @property
    def num_shards(self) -> int:
        return -(-self.num_rows // self.shard_size)

    def rows(self, shard: int) -> range:
        """The dataset rows of shard number `shard`."""
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_rows))

    def shard_path(self, shard: int) -> Path:
        return self.folder / f"{_SHARD_PREFIX}{shard:06d}.arrow"

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.arrow"

    def done(self, shard: int) -> bool:
        """Whether shard number `shard` is on disk (whole: it was renamed into place only once written)."""
        return self.shard_path(shard).exists()

    def pending(self) -> Iterator[int]:
        """The shards not on disk yet, in order."""
        return (i for i in range(self.num_shards) if not self.done(i))

    def write_table(self, path: Path, table) -> None:
        """Write a pyarrow table as an Arrow stream file, atomically (see [`write_batches`])."""
        self.write_batches(path, table.schema, table.to_batches())

    def write_batches(self, path: Path, schema, batches) -> None:
        """Write record batches as an Arrow stream file (the format `Dataset.from_file` memory-maps), atomically:
        to a temporary file beside it, `fsync`, then `os.replace` onto `path`."""
        import pyarrow as pa

        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            with pa.ipc.new_stream(f, schema) as writer:
                for batch in batches:
                    writer.write_batch(batch)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._sync_folder()

    def write_json(self, name: str, value: Any) -> None:
        tmp = self.folder / f"{name}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / name)
        self._sync_folder()

    def _sync_folder(self) -> None:
        # The rename itself is durable only once the folder's entry is on disk (POSIX; Windows cannot open folders).
        if os.name == "posix":
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _changed(self) -> list[str] | None:
        """`None` for a folder without checkpoint files, else the parts of the manifest that differ (empty: resume;
        all of them when the manifest is missing or unreadable: shards of unknown origin are never reused)."""
        path = self.folder / MANIFEST
        if not path.exists():
            return list(_PARTS) if self._own_files() else None
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError):
            return list(_PARTS)
        new = json.loads(json.dumps(self.manifest))  # compared as JSON, the form it is stored in
        return [part for part in _PARTS if old.get(part) != new.get(part)]

    def _own_files(self) -> list[Path]:
        """The files this module writes (never anything else a user keeps in the folder)."""
        return [p for p in self.folder.iterdir() if p.name.startswith(_OWN_PREFIXES) and p.is_file()]

    @staticmethod
    def _remove(paths) -> None:
        for path in paths:
            path.unlink(missing_ok=True)
