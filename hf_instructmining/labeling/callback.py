"""`EvalLossCallback`: record every evaluation loss of a `Trainer`/`SFTTrainer` run into a `LabelStore`."""

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback

from .metrics import AnswerScorer, load_metrics
from .store import LabelStore, is_eval_loss, library_versions


logger = logging.getLogger(__name__)


class EvalLossCallback(TrainerCallback):
    """A [`~transformers.TrainerCallback`] that writes each eval loss, with the subset it labels, to a `LabelStore`.

    At the start of training it writes one `"train_begin"` record (base model, training arguments, PEFT config,
    library versions); on every evaluation it writes one `"eval"` record per `eval*_loss` metric (`eval_loss`, or
    `eval_<name>_loss` for each named eval set) with `state.global_step` and `state.epoch`. Only the world main
    process writes, and a metric already recorded at a step is not written twice. The callback never changes
    training.

    With `metrics`, each evaluation also answers the prompts of `generation_dataset` greedily (batched, under
    `torch.inference_mode`) and scores the answers against the completions with every metric. The scores go into
    the record, next to the loss, as `scores` (e.g. `{"eval_rougeL": 0.31}`, or `eval_<name>_rougeL` for a named
    eval set, the keys `Seq2SeqTrainer` would use) with the `generation` settings, and into the evaluation's metrics,
    so `trainer.evaluate()` returns them and, in a single process, `metric_for_best_model="eval_rougeL"` works.
    Only the main process generates: under DDP the scores are recorded, but only the main process's metrics carry
    them, so keep `metric_for_best_model` on a loss there. Sharded models (FSDP, DeepSpeed ZeRO-3) are not supported.

    Args:
        store (`LabelStore` or `str`): the store, or the path of its JSONL file.
        subset_id (`str`): the id of the training subset this run labels.
        metadata (`Mapping[str, Any]`, *optional*): extra JSON-safe fields added to every record (e.g. the eval
            set's fingerprint, the subset's composition).
        run_id (`str`, *optional*): identifies this attempt at the subset; a fresh one is made when omitted.
        metrics (`str`, `evaluate.EvaluationModule` or a list of them, *optional*): metrics on generated answers,
            as local module paths (a folder `<name>/<name>.py`; offline-safe), Hub names (`"rouge"`, which needs the
            Hub or evaluate's cache) or loaded modules.
        generation_dataset (`datasets.Dataset` or `dict[str, datasets.Dataset]`, *optional*): the prompts to answer
            and their reference completions, as TRL prompt/completion rows (strings, or chat messages) formatted like
            the training data; keep it small, it is answered at every evaluation. A dict scores each named eval set
            on its own rows. Required with `metrics`.
        max_new_tokens (`int`, *optional*, defaults to `64`): tokens generated per answer.
        generation_batch_size (`int`, *optional*, defaults to `8`): prompts per `generate` call.

    Example:

    ```py
    >>> import tempfile, os
    >>> from hf_instructmining import EvalLossCallback, LabelStore
    >>> store = LabelStore(os.path.join(tempfile.mkdtemp(), "labels.jsonl"))
    >>> callback = EvalLossCallback(store, "subset-0001")
    >>> # trainer = SFTTrainer(model=..., args=..., train_dataset=..., eval_dataset=...,
    >>> #                      callbacks=[EvalLossCallback(store, "subset-0001")])
    >>> # with ROUGE-L of greedy answers to 16 eval prompts, from a local copy of evaluate's `rouge` module:
    >>> # EvalLossCallback(store, "subset-0001", metrics=["metrics/rouge"], generation_dataset=eval_ds.select(range(16)))
    ```
    """

    def __init__(
        self,
        store: LabelStore | str,
        subset_id: str,
        metadata: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        *,
        metrics: Any = None,
        generation_dataset: Any = None,
        max_new_tokens: int = 64,
        generation_batch_size: int = 8,
    ):
        if isinstance(store, str):
            store = LabelStore(store)
        if not isinstance(store, LabelStore):
            raise TypeError(f"`EvalLossCallback` needs a `LabelStore` or a path, got `{type(store).__name__}`.")
        if not isinstance(subset_id, str) or not subset_id:
            raise ValueError(f"`EvalLossCallback` needs a non-empty string `subset_id`, got `{subset_id!r}`.")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"`metadata` must be a mapping, got `{type(metadata).__name__}`.")
        self.store = store
        self.subset_id = subset_id
        self.metadata = dict(metadata or {})
        self.run_id = run_id or uuid.uuid4().hex
        self._recorded: set[tuple[int, str]] = set()
        self.scorer = None
        if metrics is not None or generation_dataset is not None:
            if metrics is None or generation_dataset is None:
                raise ValueError(
                    "Generated-answer metrics need both `metrics=` and `generation_dataset=` (the prompts to answer)."
                )
            self.scorer = AnswerScorer(
                load_metrics(metrics),
                generation_dataset,
                max_new_tokens=max_new_tokens,
                batch_size=generation_batch_size,
            )
        # (step, loss key) -> its scores, so that a repeated evaluation gets them back without generating again.
        self._scores: dict[tuple[int, str], dict[str, float]] = {}

    def _record(self, kind: str, **fields: Any) -> None:
        self.store.append(
            {"kind": kind, "subset_id": self.subset_id, "run_id": self.run_id, **self.metadata, **fields}
        )

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        peft_config = getattr(model, "peft_config", None)
        self._record(
            "train_begin",
            base_model=_base_model_name(model),
            training_args=args.to_dict(),
            peft_config={name: cfg.to_dict() for name, cfg in peft_config.items()} if peft_config else None,
            library_versions=library_versions(),
            max_steps=state.max_steps,
        )

    def on_evaluate(self, args, state, control, metrics=None, model=None, processing_class=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        losses = [key for key in metrics if is_eval_loss(key)]
        for key in losses:
            eval_name = key[len("eval_") : -len("_loss")] or None
            if (state.global_step, key) in self._recorded:
                metrics.update(self._scores.get((state.global_step, key), {}))
                continue
            self._recorded.add((state.global_step, key))
            runtime = metrics.get(f"eval_{eval_name}_runtime" if eval_name else "eval_runtime")
            loss = float(metrics[key])
            extra = {}
            if self.scorer is not None and self.scorer.rows(eval_name) is not None:
                scores = self.scorer.score(model, processing_class, eval_name)
                self._scores[(state.global_step, key)] = scores
                metrics.update(scores)
                extra = {"scores": scores, "generation": self.scorer.settings(eval_name)}
            self._record(
                "eval",
                metric=key,
                eval_name=eval_name,
                loss=loss,
                step=state.global_step,
                epoch=state.epoch,
                eval_runtime_s=runtime,
                **extra,
            )


def _base_model_name(model) -> str | None:
    """The checkpoint a (possibly PEFT-wrapped) model was loaded from."""
    if model is None:
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    return getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)
