"""`PushConfig`: what a published dataset and its card say beyond the data. Apart from the upload code so that the
card builders import it without importing the upload."""

from dataclasses import dataclass, field


@dataclass
class PushConfig:
    """What the published dataset and its card say beyond the data itself.

    Args:
        license (`str`, *optional*):
            The dataset's license id (e.g. `"apache-2.0"`). By default it is carried over from the data
            (`ds.info.license`) or, when pushing, from the card of `source_dataset`; left out when unknown.
        source_dataset (`str`, *optional*):
            Hub id of the data that was scored; recorded in `source_datasets` and in the reproduction commands.
        pretty_name (`str`, *optional*):
            A human-readable title for the card.
        score_column (`str`, *optional*, defaults to `"instruct_score"`):
            The score column (lower is better).
        local_dir (`str`, *optional*):
            Where [`push_to_hub`] writes the folder before uploading it. By default a temporary folder, removed
            after a successful upload and kept (its path in the error) after a failed one.
        max_shard_size (`int`, *optional*, defaults to `500_000_000`):
            Largest parquet shard in bytes (of in-memory Arrow data).
    """

    license: str | None = field(default=None, metadata={"help": "License id; default: carried over from the source."})
    source_dataset: str | None = field(default=None, metadata={"help": "Hub id of the data that was scored."})
    pretty_name: str | None = field(default=None, metadata={"help": "Human-readable title of the card."})
    score_column: str = field(default="instruct_score", metadata={"help": "Score column (lower is better)."})
    local_dir: str | None = field(
        default=None, metadata={"help": "Folder written before upload; default: a temporary one, kept on failure."}
    )
    max_shard_size: int = field(default=500_000_000, metadata={"help": "Largest parquet shard, in bytes."})

    def __post_init__(self):
        if self.max_shard_size <= 0:
            raise ValueError(f"`max_shard_size` must be a positive number of bytes, got `{self.max_shard_size}`.")
