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
        notes (`str`, *optional*):
            The text of a new card's hand-written "Notes" section (what the data is, what it is for). A card pushed
            again keeps the notes it has.
        score_column (`str`, *optional*, defaults to `"instruct_score"`):
            The score column (lower is better).
        local_dir (`str`, *optional*):
            Where [`push_to_hub`] writes the folder before uploading it. By default a temporary folder, removed
            after a successful upload and kept (its path in the error) after a failed one.
        max_shard_size (`int`, *optional*, defaults to `500_000_000`):
            Largest parquet shard in bytes (of in-memory Arrow data).
        timeout_s (`float`, *optional*, defaults to `60.0`):
            How long any one exchange with the Hub (connecting, sending a chunk, waiting for an answer) may stall
            before the attempt fails; a large file that keeps moving never times out. It applies to every request
            `huggingface_hub` sends while the push runs, in this process. `huggingface_hub` itself retries the
            pre-upload call and LFS transfers up to 5 times, so a hang there costs up to 6 × `timeout_s` + 23 s.
        max_retries (`int`, *optional*, defaults to `2`):
            How many times a publishing attempt that failed on a timeout, a lost connection, a 429 or a 5xx answer is
            tried again (after 1, 2, 4, then 8 seconds). Retrying is safe: unchanged files are not sent again and a
            commit that did land makes no second one. Other failures (a refused token, a bad request) stop at once.
    """

    license: str | None = field(default=None, metadata={"help": "License id; default: carried over from the source."})
    source_dataset: str | None = field(default=None, metadata={"help": "Hub id of the data that was scored."})
    pretty_name: str | None = field(default=None, metadata={"help": "Human-readable title of the card."})
    notes: str | None = field(default=None, metadata={"help": "Text of a new card's hand-written Notes section."})
    score_column: str = field(default="instruct_score", metadata={"help": "Score column (lower is better)."})
    local_dir: str | None = field(
        default=None, metadata={"help": "Folder written before upload; default: a temporary one, kept on failure."}
    )
    max_shard_size: int = field(default=500_000_000, metadata={"help": "Largest parquet shard, in bytes."})
    timeout_s: float = field(
        default=60.0, metadata={"help": "Seconds any one exchange with the Hub may stall before the attempt fails."}
    )
    max_retries: int = field(
        default=2, metadata={"help": "Retries of an attempt that timed out, lost its connection, or got a 429/5xx."}
    )

    def __post_init__(self):
        if self.max_shard_size <= 0:
            raise ValueError(f"`max_shard_size` must be a positive number of bytes, got `{self.max_shard_size}`.")
        if isinstance(self.timeout_s, bool) or not (
            isinstance(self.timeout_s, int | float) and 0 < self.timeout_s < 1e9
        ):
            raise ValueError(f"`timeout_s` must be a positive number of seconds, got `{self.timeout_s!r}`.")
        if not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool) or self.max_retries < 0:
            raise ValueError(f"`max_retries` must be a whole number >= 0, got `{self.max_retries!r}`.")
