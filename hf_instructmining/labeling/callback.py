"""`EvalLossCallback`: record every evaluation loss of a `Trainer`/`SFTTrainer` run into a `LabelStore`."""

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback

from .store import LabelStore, library_versions


logger = logging.getLogger(__name__)


class EvalLossCallback(TrainerCallback):
    """A [`~transformers.TrainerCallback`] that writes each eval loss, with the subset it labels, to a `LabelStore`.

    At the start of training it writes one `"train_begin"` record (base model, training arguments, PEFT config,
    library versions); on every evaluation it writes one `"eval"` record per `eval*_loss` metric (`eval_loss`, or
    `eval_<name>_loss` for each named eval set) with `state.global_step` and `state.epoch`. Only the world main
    process writes, and a metric already recorded at a step is not written twice. The callback never changes
    training.

    Args:
        store (`LabelStore` or `str`): the store, or the path of its JSONL file.
        subset_id (`str`): the id of the training subset this run labels.
        metadata (`Mapping[str, Any]`, *optional*): extra JSON-safe fields added to every record (e.g. the eval
            set's fingerprint, the subset's composition).
        run_id (`str`, *optional*): identifies this attempt at the subset; a fresh one is made when omitted.

    Example:

    ```py
    >>> import tempfile, os
    >>> from hf_instructmining import EvalLossCallback, LabelStore
    >>> store = LabelStore(os.path.join(tempfile.mkdtemp(), "labels.jsonl"))
    >>> callback = EvalLossCallback(store, "subset-0001")
    >>> # trainer = SFTTrainer(model=..., args=..., train_dataset=..., eval_dataset=...,
    >>> #                      callbacks=[EvalLossCallback(store, "subset-0001")])
    ```
    """

    def __init__(
        self,
        store: LabelStore | str,
        subset_id: str,
        metadata: Mapping[str, Any] | None = None,
        run_id: str | None = None,
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

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        for key, value in metrics.items():
            if not (key.startswith("eval") and key.endswith("_loss")) or (state.global_step, key) in self._recorded:
                continue
            self._recorded.add((state.global_step, key))
            eval_name = key[len("eval_") : -len("_loss")] or None
            runtime = metrics.get(f"eval_{eval_name}_runtime" if eval_name else "eval_runtime")
            self._record(
                "eval",
                metric=key,
                eval_name=eval_name,
                loss=float(value),
                step=state.global_step,
                epoch=state.epoch,
                eval_runtime_s=runtime,
            )


def _base_model_name(model) -> str | None:
    """The checkpoint a (possibly PEFT-wrapped) model was loaded from."""
    if model is None:
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    return getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)
