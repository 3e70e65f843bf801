"""Score a model's greedy answers to a fixed sample of eval prompts with `evaluate` metrics (e.g. ROUGE-L).

Eval loss is the paper's label; a metric on generated answers is another one, closer to what users see.
`load_metrics` loads metric modules (local paths work offline), `generate_answers` answers prompts the way TRL's
`SFTTrainer` tokenised them for training, and `AnswerScorer` ties both together for one model at one evaluation.
"""

import inspect
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..import_utils import require
from .store import is_eval_loss


logger = logging.getLogger(__name__)


def load_metrics(metrics: Any) -> dict[str, Any]:
    """Load `evaluate` metric modules by local path (or Hub name), keeping already loaded ones as they are.

    Args:
        metrics (`str`, `evaluate.EvaluationModule`, a list of them, or a dict name -> one): a module folder
            (`<name>/<name>.py`) or script path, a Hub name such as `"rouge"` (needs the Hub, or evaluate's cache),
            or a loaded module; any object with `compute(predictions=..., references=...)` returning a dict works.

    Returns:
        `dict[str, Any]`: the module's name -> the module, in the order given.

    Raises:
        `FileNotFoundError`: a path with no module script, or a Hub name that cannot be fetched (e.g. offline with
            `HF_HUB_OFFLINE=1`); the message says to pass a local module path.
        `ValueError`: two modules with the same name.

    Example:

    ```py
    >>> from hf_instructmining.labeling.metrics import load_metrics
    >>> class ExactMatch:
    ...     def compute(self, predictions, references):
    ...         return {"exact_match": sum(p == r for p, r in zip(predictions, references)) / len(references)}
    >>> metrics = load_metrics({"em": ExactMatch()})
    >>> list(metrics), metrics["em"].compute(predictions=["a", "b"], references=["a", "c"])
    (['em'], {'exact_match': 0.5})
    >>> # load_metrics(["metrics/rouge"])  # a local copy of evaluate's `rouge` module: works offline
    ```
    """
    if isinstance(metrics, Mapping):
        specs = list(metrics.items())
    elif isinstance(metrics, str | os.PathLike) or hasattr(metrics, "compute"):
        specs = [(None, metrics)]
    else:
        specs = [(None, spec) for spec in metrics]
    loaded: dict[str, Any] = {}
    for name, spec in specs:
        module = _load_one(os.fspath(spec)) if isinstance(spec, str | os.PathLike) else spec
        if not callable(getattr(module, "compute", None)):
            raise TypeError(f"A metric needs a `compute(predictions=..., references=...)` method; got `{spec!r}`.")
        name = name or getattr(module, "name", None) or type(module).__name__
        if name in loaded:
            raise ValueError(f"Two metrics are named `{name}`; pass each metric once.")
        loaded[name] = module
    return loaded


def metric_sources(metrics: Mapping[str, Any]) -> list[dict[str, str | None]]:
    """Name and script path of each loaded module: recorded with the labels, and enough to reload it elsewhere."""
    sources = []
    for name, module in metrics.items():
        try:
            path = inspect.getfile(type(module))
        except (TypeError, OSError):
            path = None
        sources.append({"name": name, "path": path})
    return sources


def _load_one(spec: str):
    require("evaluate", "metrics on generated answers")
    import evaluate

    try:
        return evaluate.load(spec)
    except (FileNotFoundError, ConnectionError) as err:
        if os.path.exists(spec) or os.sep in spec or spec.endswith(".py"):
            raise FileNotFoundError(
                f"No `evaluate` module script at `{spec}`: a local metric is a folder `<name>/` holding `<name>.py` "
                "(the layout of evaluate's own metrics), or the path of that script."
            ) from err
        from huggingface_hub import constants

        offline = constants.HF_HUB_OFFLINE or evaluate.config.HF_EVALUATE_OFFLINE
        why = "the Hub is offline (`HF_HUB_OFFLINE=1`)" if offline else "the Hub has no such module or is unreachable"
        raise FileNotFoundError(
            f"`evaluate.load({spec!r})` needs the Hugging Face Hub to fetch the module script, but {why} and it is "
            f"not in evaluate's cache. Pass the path of a local module instead: a folder `{spec}/` holding "
            f"`{spec}.py` (for example a copy of https://github.com/huggingface/evaluate/tree/main/metrics/{spec}), "
            "or load it once while online so that it is cached."
        ) from err


def _prompt_ids(tokenizer, prompt) -> list[int]:
    """The prompt's token ids exactly as TRL's SFT tokenises a prompt/completion example's prompt."""
    if isinstance(prompt, list):  # conversational
        encoded = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
        return list(encoded["input_ids"])
    return list(tokenizer(text=prompt)["input_ids"])


def _reference(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def generate_answers(model, tokenizer, prompts: Sequence, *, max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers to `prompts` (strings, or chat messages), in batches, left-padded, under `inference_mode`.

    Greedy decoding makes the answer a function of the model alone, so a label does not move between reruns.
    """
    import torch
    from transformers import GenerationConfig

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = getattr(getattr(model, "generation_config", None), "eos_token_id", None) or tokenizer.eos_token_id
    generation = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=eos_id
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers = []
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                ids = [_prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
                width = max(len(seq) for seq in ids)
                input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
                for row, seq in enumerate(ids):  # left padding: every answer starts at column `width`
                    input_ids[row, width - len(seq) :] = torch.tensor(seq)
                    attention_mask[row, width - len(seq) :] = 1
                output = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=generation,
                )
                answers += [tokenizer.decode(seq, skip_special_tokens=True).strip() for seq in output[:, width:]]
    finally:
        model.train(was_training)
    return answers


class AnswerScorer:
    """Answer a fixed set of eval prompts with a model and score the answers with `evaluate` metrics.

    Args:
        metrics (`dict[str, Any]`): from [`load_metrics`].
        datasets (`datasets.Dataset` or `dict[str, datasets.Dataset]`): TRL prompt/completion rows (strings or chat
            messages); the completions are the references. A dict scores each named eval set on its own rows.
        max_new_tokens (`int`): tokens generated per answer.
        batch_size (`int`): prompts per `generate` call.
    """

    def __init__(self, metrics: Mapping[str, Any], datasets, *, max_new_tokens: int, batch_size: int):
        if not metrics:
            raise ValueError("`AnswerScorer` needs at least one metric.")
        self.metrics = dict(metrics)
        self.datasets = dict(datasets) if isinstance(datasets, Mapping) else datasets
        for ds in self.datasets.values() if isinstance(self.datasets, dict) else [self.datasets]:
            missing = {"prompt", "completion"} - set(ds.column_names)
            if missing or len(ds) == 0:
                raise ValueError(
                    f"Generated-answer metrics need non-empty prompt/completion rows; got {len(ds)} rows with the "
                    f"columns {ds.column_names}."
                )
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(
                f"`max_new_tokens` and the batch size must be positive; got {max_new_tokens}, {batch_size}."
            )
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.latest: dict[str, float] = {}  # the last scores of every eval set

    def rows(self, eval_name: str | None):
        """The rows answered for the eval set `eval_name` (`None`: the unnamed one); `None` when it has none."""
        if isinstance(self.datasets, dict):
            return self.datasets.get(eval_name or "")
        return self.datasets

    def settings(self, eval_name: str | None = None) -> dict[str, Any]:
        """What the scores were computed on, for the records: of `eval_name`, or of every set when not given."""
        if eval_name is None and isinstance(self.datasets, dict) and "" not in self.datasets:
            num_samples: Any = {name: len(ds) for name, ds in self.datasets.items()}
        else:
            rows = self.rows(eval_name)
            num_samples = None if rows is None else len(rows)
        return {
            "metrics": list(self.metrics),
            "num_samples": num_samples,
            "max_new_tokens": self.max_new_tokens,
            "do_sample": False,
        }

    def score(self, model, tokenizer, eval_name: str | None) -> dict[str, float]:
        """`eval[_<name>]_<key>` -> value for every numeric result of every metric; `{}` when `eval_name` has no rows."""
        rows = self.rows(eval_name)
        if rows is None:
            return {}
        if tokenizer is None:
            raise ValueError("Generated-answer metrics need the tokenizer: pass `processing_class=` to the trainer.")
        answers = generate_answers(
            model, tokenizer, rows["prompt"], max_new_tokens=self.max_new_tokens, batch_size=self.batch_size
        )
        references = [_reference(c) for c in rows["completion"]]
        prefix = f"eval_{eval_name}_" if eval_name else "eval_"
        scores: dict[str, float] = {}
        for name, module in self.metrics.items():
            for key, value in module.compute(predictions=answers, references=references).items():
                if isinstance(value, bool) or not (
                    isinstance(value, int | float) or getattr(value, "ndim", None) == 0
                ):
                    logger.debug("Metric %s: skipping the non-scalar result `%s`.", name, key)
                    continue
                if is_eval_loss(prefix + key):
                    # The eval loss is the label: a metric's own `loss` must not replace or join it.
                    logger.warning("Metric %s: not recording `%s`, which would be read as an eval loss.", name, key)
                    continue
                if prefix + key in scores:
                    raise ValueError(f"Two metrics return `{key}`; pass only one of them.")
                scores[prefix + key] = float(value)
        bad = [k for k, v in scores.items() if not math.isfinite(v)]
        if bad:
            logger.warning("Generated-answer metrics %s are not finite for eval set %r.", bad, eval_name)
        self.latest.update(scores)
        return scores
