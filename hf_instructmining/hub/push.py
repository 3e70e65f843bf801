"""Publish scored and selected datasets with a dataset card, and quality rules as reusable Hub artifacts.

One layout, written by [`save_scored`] and uploaded by [`push_to_hub`]:

```
README.md                      dataset card (YAML metadata with an `instructmining:` block, and a body for people)
instructmining_rule.json       the rule that made the scores (when given)
instructmining_search.json     the subset-size search trace (when a search ran)
scored/train-*.parquet         config `scored`: every row, its indicator columns, `instruct_score`, `row_index`
selected/train-*.parquet       config `selected`: the selected rows, best first (when a selection exists)
images/*.png                   score histogram, indicators against the score (or their correlations), search curve
```

The folder is complete before anything is uploaded, so a failed upload loses nothing and can be resumed by
pushing the folder. Files are written deterministically, so pushing unchanged data makes no commit. The part of
an existing card outside the generated block (and YAML keys we do not set) is kept when the card is rewritten.
Tokens come from the usual `huggingface_hub` sources (`token=`, `HF_TOKEN`, `hf auth login`) and are only ever
handed to `huggingface_hub`; nothing here writes or logs them, and the errors raised here hold none (not in their
causes' HTTP requests either). A 401 or 403 says whether the token is missing, refused or not allowed to write.
"""

import contextlib
import glob
import json
import logging
import math
import os
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Any

from .._json import to_jsonable
from ..errors import HubUploadError, remove_token, token_in_use
from ..rules import RULE_FILENAME
from ..scoring import provenance
from . import cards
from .config import PushConfig
from .model_cards import build_rule_card


if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import CommitInfo

    from ..rules import QualityRule


logger = logging.getLogger(__name__)

SEARCH_FILENAME = "instructmining_search.json"
_GENERATED_PATTERNS = ["scored/*", "selected/*", "images/*"]  # stale files there are deleted on upload


def save_scored(
    ds: "Dataset",
    folder: str | os.PathLike,
    rule: "QualityRule | None" = None,
    selection: "Dataset | None" = None,
    search: Any = None,
    *,
    config: PushConfig | None = None,
    repo_id: str | None = None,
) -> str:
    """Write a scored dataset, its selection, rule, search, pictures and card to a folder in the Hub layout.

    Args:
        ds (`datasets.Dataset`): the scored rows (with `instruct_score`; `row_index` is added when absent).
        folder (`str` or `os.PathLike`): the output folder (created; our files in it are replaced, others kept).
        rule (`QualityRule`, *optional*): the rule that made the scores, saved as `instructmining_rule.json`. It
            must reproduce the score column from the indicator columns; by default, the rule recorded with the data
            by `compute_indicators` (see [`~hf_instructmining.scoring.provenance`]), if any.
        selection (`datasets.Dataset`, *optional*): the selected rows, as returned by `select_top_k` and friends
            (they carry `row_index`).
        search (`SearchResult`, *optional*): the subset-size search that chose the selection's size.
        config (`PushConfig`, *optional*): card options (license, source, title).
        repo_id (`str`, *optional*): the repo the folder is meant for, used in the card's commands.

    Returns:
        `str`: the folder's path.

    Raises:
        `ValueError`: the score column is missing, or the selection has no `row_index` pointing into `ds`.
        [`~hf_instructmining.errors.ScoreProvenanceError`]: `rule` did not make the scores (nothing is written).

    Example:

    ```py
    >>> import os, tempfile
    >>> from datasets import Dataset
    >>> from hf_instructmining import save_scored, select_top_k
    >>> ds = Dataset.from_dict({"instruction": ["a", "b", "c"], "output": ["x", "y", "z"], "instruct_score": [0.3, 0.1, 0.2]})
    >>> folder = save_scored(ds, tempfile.mkdtemp(), selection=select_top_k(ds, 2))
    >>> sorted(os.listdir(folder))
    ['README.md', 'images', 'scored', 'selected']
    ```
    """
    config = config or PushConfig()
    scored, selection = _check_inputs(ds, selection, config.score_column)
    rule = provenance.check_scores(scored, rule, config.score_column)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    for sub in ("scored", "selected", "images"):
        shutil.rmtree(os.path.join(folder, sub), ignore_errors=True)
    _write_parquet(scored, os.path.join(folder, "scored"), config.max_shard_size)
    if selection is not None:
        _write_parquet(selection, os.path.join(folder, "selected"), config.max_shard_size)
    _write_or_remove(folder, RULE_FILENAME, rule, lambda path: rule.save(path))
    _write_or_remove(
        folder, SEARCH_FILENAME, search, lambda path: _write_json(to_jsonable(cards.search_dict(search)), path)
    )
    _draw_pictures(folder, scored, rule, selection, search, config.score_column)
    card = cards.build_dataset_card(
        scored, rule=rule, selection=selection, search=search, config=config, repo_id=repo_id
    )
    readme = os.path.join(folder, "README.md")
    if os.path.isfile(readme):
        with open(readme, encoding="utf-8") as f:
            card = cards.merge_card(card, f.read())
    card.save(readme)
    logger.info(
        "Saved %d scored rows%s to %s", len(scored), f" and {len(selection)} selected" if selection else "", folder
    )
    return folder


def push_to_hub(
    ds: "Dataset | str | os.PathLike",
    repo_id: str,
    rule: "QualityRule | None" = None,
    selection: "Dataset | None" = None,
    search: Any = None,
    *,
    config: PushConfig | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
) -> "CommitInfo":
    """Publish a scored dataset (and its selection, rule, search, pictures and card) as a Hub dataset repo.

    The folder is written completely first (see [`save_scored`]), then uploaded in one commit. Unchanged files are
    not uploaded again, so pushing the same data twice makes no second commit. When the repo already has a card,
    its hand-written parts (outside the generated block) and YAML keys we do not set are kept.

    Args:
        ds (`datasets.Dataset`, `str` or `os.PathLike`): the scored rows, or a folder written by [`save_scored`]
            (to resume an interrupted upload).
        repo_id (`str`): the dataset repo, e.g. `"me/alpaca-instructmining"`; created when missing.
        rule, selection, search: as in [`save_scored`] (ignored when `ds` is a folder).
        config (`PushConfig`, *optional*): card and layout options.
        private (`bool`, *optional*): visibility. `None` keeps an existing repo's visibility (a new repo gets the
            Hub's default); `True` or `False` sets it, also on an existing repo.
        token (`str` or `bool`, *optional*): Hub token; by default the usual `huggingface_hub` sources.
        revision (`str`, *optional*): branch to push to (created from `main` when missing).
        create_pr (`bool`, *optional*, defaults to `False`): open a pull request instead of committing directly.
        commit_message (`str`, *optional*): the commit title.

    Returns:
        `huggingface_hub.CommitInfo`: the commit (its `pr_url` when `create_pr=True`).

    Raises:
        [`~hf_instructmining.errors.HubUploadError`]: the upload failed; the local folder is complete and the
            message says how to resume.

    Example (needs a Hub account, so it is not run here):

    ```py
    >>> from hf_instructmining import push_to_hub, select_top_k
    >>> push_to_hub(scored, "me/alpaca-instructmining", rule=rule, selection=select_top_k(scored, 1000))  # doctest: +SKIP
    ```
    """
    config = config or PushConfig()
    if isinstance(ds, str | os.PathLike):
        folder, temporary = os.fspath(ds), False
        if not os.path.isfile(os.path.join(folder, "README.md")):
            raise ValueError(f"`{folder}` is not a folder written by `save_scored` (it has no README.md).")
        _check_folder(folder, config.score_column)
    else:
        if not (config.license or ds.info.license) and config.source_dataset:
            config = _with_source_license(config, token)
        temporary = config.local_dir is None
        folder = config.local_dir or tempfile.mkdtemp(prefix="instructmining-")
        save_scored(ds, folder, rule, selection, search, config=config, repo_id=repo_id)
    # Resuming goes through `push_to_hub` again (not `hf upload`), so that the card is merged and the folder checked.
    call = f"push_to_hub({folder!r}, {repo_id!r})"
    resume = (
        f"The local folder `{folder}` is complete; resume with `hf_instructmining.{call}` (from a shell: "
        f'`python -c "from hf_instructmining import push_to_hub; {call}"`), or run the same command again.'
    )
    info = _upload(
        folder,
        repo_id,
        "dataset",
        resume,
        config=config,
        private=private,
        token=token,
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message or "Publish data scored with hf-instructmining",
        delete_patterns=_GENERATED_PATTERNS,
    )
    if temporary:
        shutil.rmtree(folder, ignore_errors=True)
    return info


def push_rule_to_hub(
    rule: "QualityRule",
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    config: PushConfig | None = None,
) -> "CommitInfo":
    """Publish a quality rule as a model repo holding `instructmining_rule.json` and a card.

    `QualityRule.from_pretrained(repo_id)` reads it back; `QualityRule.push_to_hub(repo_id)` calls this.
    Arguments are as in [`push_to_hub`]; of `config`, only `timeout_s` and `max_retries` apply.

    Returns:
        `huggingface_hub.CommitInfo`: the commit.

    Example (needs a Hub account, so it is not run here):

    ```py
    >>> from hf_instructmining import QualityRule
    >>> QualityRule.from_builtin().push_to_hub("me/my-instructmining-rule")  # doctest: +SKIP
    ```
    """
    with tempfile.TemporaryDirectory(prefix="instructmining-rule-") as folder:
        rule.save(folder)
        build_rule_card(rule, repo_id).save(os.path.join(folder, "README.md"))
        resume = f"Nothing was lost: push the rule again with `rule.push_to_hub({repo_id!r})`."
        return _upload(
            folder,
            repo_id,
            "model",
            resume,
            config=config or PushConfig(),
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or f"Publish InstructMining rule {rule.name or ''}".strip(),
        )


# -- upload ----------------------------------------------------------------------------------------------------


def _upload(
    folder, repo_id, repo_type, resume, *, config, private, token, revision, create_pr, commit_message, **kwargs
):
    from huggingface_hub import HfApi

    api = HfApi(token=token)

    def attempt():
        _ensure_repo(api, repo_id, repo_type, private, config.timeout_s)
        if revision and not create_pr and not revision.startswith("refs/"):
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        _merge_remote_card(api, folder, repo_id, repo_type, revision)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type=repo_type,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message,
            **kwargs,
        )

    tries = 0
    try:
        with _client_timeout(config.timeout_s):
            while True:
                tries += 1
                try:
                    info = attempt()
                    break
                except Exception as err:
                    if tries > config.max_retries or not _transient(err):
                        raise
                    wait = min(2 ** (tries - 1), 8)
                    logger.warning(
                        "Publishing to `%s` failed (%s); trying again in %d s (retry %d of %d).",
                        repo_id,
                        _what_failed(err),
                        wait,
                        tries,
                        config.max_retries,
                    )
                    time.sleep(wait)
    except Exception as err:  # any failure: keep the cause, add what is safe and how to go on
        remove_token(err, token)
        hint = _access_hint(err, repo_id, token) or _transient_hint(err, config, tries)
        token = api = None  # the cause's traceback keeps this frame's variables: drop the credentials
        # One line, as the command line prints it: the cause's own message may span several.
        cause = " ".join(line.strip() for line in str(err).splitlines() if line.strip()).rstrip(".")
        raise HubUploadError(
            f"Publishing to `{repo_id}` failed: {cause or type(err).__name__}. {hint}{resume}",
            repo_id=repo_id,
            folder=folder,
        ) from err
    logger.info("Published %s to %s (%s)", folder, repo_id, info.pr_url or info.commit_url)
    return info


@contextlib.contextmanager
def _client_timeout(seconds: float):
    """Give every request that `huggingface_hub` sends meanwhile a timeout of `seconds` (connect, read, write, pool).

    Its shared HTTP client waits without limit by default, and most calls (the commit among them) pass no timeout of
    their own. `huggingface_hub` builds its clients with a factory and rebuilds the client after a connection error,
    so the timeout goes into the factory, on top of whatever factory is in place (a user's proxy settings stay), and
    the factory in place before is restored afterwards.
    """
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)

    def with_timeout():
        client = previous()
        client.timeout = seconds
        return client

    set_client_factory(with_timeout)
    try:
        yield
    finally:
        set_client_factory(previous)


def _transient(err: BaseException) -> bool:
    """Whether `err` is worth another attempt: a timeout, a lost connection, a 408, a 429 or a 5xx answer."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, httpx2.TimeoutException | httpx2.NetworkError | httpx2.RemoteProtocolError):
        return True
    status = getattr(getattr(err, "response", None), "status_code", None)
    return isinstance(err, HfHubHTTPError) and (status in (408, 429) or (status or 0) >= 500)


def _what_failed(err: BaseException) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    return f"HTTP {status}" if status else type(err).__name__


def _transient_hint(err: BaseException, config: PushConfig, tries: int) -> str:
    """What a timeout or a server error means for this upload (empty for other failures)."""
    import httpx2

    attempts = f"{tries} attempt{'s' if tries > 1 else ''}"
    if isinstance(err, httpx2.TimeoutException):
        return (
            f"The Hub did not answer within {config.timeout_s:g} s ({attempts}; raise `timeout_s` or `max_retries` "
            "in `PushConfig`, or `--timeout_s`/`--max_retries`, for a slow connection). "
        )
    if _transient(err):
        return f"The Hub or the connection failed ({_what_failed(err)}, {attempts}); try again later. "
    return ""


def _access_hint(err: Exception, repo_id: str, token: str | bool | None) -> str:
    """What a 401 or 403 from the Hub means for this upload, and how to fix it (empty for other failures)."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status == 401 and token_in_use(token) is None:
        return (
            "No Hub token was found (401 Unauthorized): log in with `hf auth login`, set `HF_TOKEN`, or pass "
            "`token=`, with a token that has write access. "
        )
    if status == 401:
        return (
            "The Hub did not accept the token (401 Unauthorized: invalid, expired or revoked): create a new one with "
            "write access at https://huggingface.co/settings/tokens and log in with `hf auth login` or set `HF_TOKEN`. "
        )
    if status == 403:
        return (
            f"The token may not write to `{repo_id}` (403 Forbidden): use a token with the `write` role, or a "
            "fine-grained token allowed to write to this repository or its organisation "
            "(https://huggingface.co/settings/tokens), or push to a namespace you own. "
        )
    return ""


def _ensure_repo(api, repo_id: str, repo_type: str, private: bool | None, timeout_s: float) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    try:  # `repo_info` sends its own timeout, "none" unless given
        current = api.repo_info(repo_id, repo_type=repo_type, timeout=timeout_s).private
    except RepositoryNotFoundError:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        return
    if private is not None and bool(current) != private:
        logger.warning("Making %s repo `%s` %s, as asked.", repo_type, repo_id, "private" if private else "public")
        api.update_repo_settings(repo_id, repo_type=repo_type, private=private)


def _merge_remote_card(api, folder: str, repo_id: str, repo_type: str, revision: str | None) -> None:
    """Fold the Hub card's hand-written parts into the folder's README.md before it is uploaded.

    Only the Hub's 404 for the file (or the branch) means "no card". Any other failure to read it raises, so the
    push stops before it writes: a card replaced because the Hub was down would lose its hand-written parts. The
    card is read directly, not through `hf_hub_download`, which answers a 5xx or a lost connection with a cached
    copy (possibly older than the card) or with an error that subclasses "entry not found".
    """
    from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
    from huggingface_hub.errors import RemoteEntryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo_id, "README.md", repo_type=repo_type, revision=revision, endpoint=api.endpoint)
    response = get_session().get(url, headers=build_hf_headers(token=api.token, library_name="hf-instructmining"))
    try:
        hf_raise_for_status(response)
    except (RemoteEntryNotFoundError, RevisionNotFoundError):
        return
    readme = os.path.join(folder, "README.md")
    with open(readme, encoding="utf-8") as g:
        merged = cards.merge_card(cards.load_card(g.read(), repo_type), response.text)
    merged.save(readme)


def _with_source_license(config: PushConfig, token) -> PushConfig:
    """Carry the source dataset's license over, when its card says one (best effort: the source may be private)."""
    from dataclasses import replace

    from huggingface_hub import DatasetCard
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    try:
        license = DatasetCard.load(config.source_dataset, token=token).data.license
    except (HfHubHTTPError, EntryNotFoundError, OSError) as err:
        logger.warning(
            "Could not read the license of `%s` (%s); pass `PushConfig(license=...)`.",
            config.source_dataset,
            type(err).__name__,
        )
        return config
    return replace(config, license=license) if license else config


# -- folder contents ---------------------------------------------------------------------------------------------


def _check_inputs(ds, selection, score_column: str):
    from datasets import Dataset

    if not isinstance(ds, Dataset):
        raise TypeError(f"`ds` must be a `datasets.Dataset` (one split), got {type(ds).__name__}.")
    for name, data in (("ds", ds), ("selection", selection)):
        if data is not None and score_column not in data.column_names:
            raise ValueError(
                f"`{name}` has no `{score_column}` column (columns: {data.column_names}); score it first, e.g. "
                "`ds.map(instruct_score, batched=True)`."
            )
    if "row_index" not in ds.column_names:
        ds = ds.add_column("row_index", list(range(len(ds))))
    if selection is not None:
        if "row_index" not in selection.column_names:
            raise ValueError(
                "`selection` has no `row_index` column: select with `select_top_k`, `select_fraction` or "
                "`select_threshold`, which record each row's position in the scored dataset."
            )
        indices = selection["row_index"]
        if len(indices) and (min(indices) < 0 or max(indices) >= len(ds)):
            raise ValueError(f"`selection.row_index` points outside the {len(ds)} scored rows; was it made from `ds`?")
    return ds, selection


def _check_folder(folder: str, score_column: str) -> None:
    """Run on a saved folder the checks [`save_scored`] ran on the dataset: the folder's rule (or the one recorded
    with its data) must have made its scores, and its selection must be rows of its scored data, unchanged. A file
    edited since the folder was written is refused before anything is uploaded.
    """
    from datasets import Dataset

    from ..rules import QualityRule

    parts = {}
    for config in ("scored", "selected"):
        files = sorted(glob.glob(os.path.join(glob.escape(folder), config, "*.parquet")))
        parts[config] = Dataset.from_parquet(files) if files else None
    if parts["scored"] is None:
        raise ValueError(f"`{folder}` has no `scored/*.parquet`: write it with `save_scored`, then push it.")
    scored, selection = _check_inputs(parts["scored"], parts["selected"], score_column)
    rule_file = os.path.join(folder, RULE_FILENAME)
    # The rule is only compared here, never run: models at local paths (a rule fitted on local models) are fine.
    rule = QualityRule.load(rule_file, allow_local_paths=True) if os.path.isfile(rule_file) else None
    provenance.check_scores(scored, rule, score_column)
    if selection is not None:
        differs = _first_difference(scored.select(selection["row_index"]), selection)
        if differs:
            raise ValueError(
                f"`{os.path.join(folder, 'selected')}` is not a selection of `{os.path.join(folder, 'scored')}`: "
                f"{differs}. Write the folder again with `save_scored` (or `instructmining push --folder`)."
            )


def _first_difference(expected: "Dataset", actual: "Dataset") -> str | None:
    """Where `actual` first differs from `expected`, column by column (NaN equals NaN), or `None`."""
    import numpy as np
    import pyarrow as pa

    if len(expected) != len(actual):
        return f"{len(actual)} rows, not {len(expected)}"
    left, right = expected.with_format("arrow")[:], actual.with_format("arrow")[:]
    for column in left.column_names:
        if column not in right.column_names:
            return f"it has no `{column}` column"
        a, b = left.column(column), right.column(column)
        if a.type == b.type and pa.types.is_floating(a.type):
            same = np.isclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=0, equal_nan=True)
        elif a.equals(b):
            continue
        else:
            same = np.array([x == y for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)])
        if not same.all():
            row = int(np.flatnonzero(~same)[0])
            return f"row {row} (`row_index` {actual['row_index'][row]}) differs in `{column}`"
    return None


def _write_parquet(ds, folder: str, max_shard_size: int) -> None:
    os.makedirs(folder, exist_ok=True)
    num_shards = max(1, math.ceil(ds.data.nbytes / max_shard_size))
    for index in range(num_shards):
        shard = ds.shard(num_shards, index, contiguous=True) if num_shards > 1 else ds
        shard.to_parquet(os.path.join(folder, f"train-{index:05d}-of-{num_shards:05d}.parquet"))


def _write_or_remove(folder: str, filename: str, value, write) -> None:
    path = os.path.join(folder, filename)
    if value is None:
        if os.path.exists(path):
            os.remove(path)  # a stale file from an earlier save would describe other data
        return
    write(path)


def _write_json(data: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, allow_nan=False, default=str)
        f.write("\n")


def _draw_pictures(folder, scored, rule, selection, search, score_column) -> None:
    from .. import plots

    for name, path in cards.pictures(scored, rule, search).items():
        target = os.path.join(folder, path)
        if name == "score_histogram":
            selected = None if selection is None else selection[score_column]
            plots.score_histogram(scored[score_column], target, selected=selected)
        elif name == "indicator_correlations":
            columns = [*cards.indicator_columns(scored, rule), score_column]
            plots.indicator_correlations(cards.picture_columns(scored, rule, columns), target)
        elif name == "indicators_against_score":
            columns = cards.indicator_columns(scored, rule)
            plots.indicators_against_score(cards.picture_columns(scored, rule, columns), scored[score_column], target)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            search.plot(target)
