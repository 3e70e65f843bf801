"""Cards of quality-rule repos and of models finetuned on a selected subset, from `model_card_templates/`."""

from typing import TYPE_CHECKING

from .._json import to_jsonable
from .cards import TAGS, coefficient_table, fit_summary, fmt, render, response_kwargs, rule_block


if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from ..rules import QualityRule


def build_rule_card(rule: "QualityRule", repo_id: str | None = None) -> "ModelCard":
    """Render the card of a rule repo: the formula, coefficients, fit statistics, provenance and how to use it.

    Example:

    ```py
    >>> from hf_instructmining import QualityRule
    >>> from hf_instructmining.hub.model_cards import build_rule_card
    >>> card = build_rule_card(QualityRule.from_builtin(), "me/rule")
    >>> card.data.instructmining["rule"]["name"]
    'instructmining-llama2-7b'
    ```
    """
    from huggingface_hub import ModelCardData

    from .._version import __version__

    data = ModelCardData(
        library_name="hf-instructmining",
        tags=[*TAGS, "quality-rule"],
        instructmining={"package_version": __version__, "rule": rule_block(rule), "indicators": rule.indicators},
    )
    data.instructmining = to_jsonable(data.instructmining)
    kwargs = {
        "rule_name": rule.name,
        "repo_id": repo_id or "<repo_id>",
        "formula": f"`{rule.formula()}`",
        **response_kwargs(rule),
        "coefficient_table": coefficient_table(rule),
        "fit_summary": fit_summary(rule),
        "provenance": _provenance(rule),
        "package_version": __version__,
    }
    return render("rule_card.md", "model", data, kwargs)


def build_model_card(
    model_name: str,
    base_model: str,
    dataset_repo_id: str,
    *,
    rule: "QualityRule | None" = None,
    rule_repo_id: str | None = None,
    num_train_rows: int | None = None,
    eval_loss: float | None = None,
    training: str | None = None,
    license: str | None = None,
) -> "ModelCard":
    """Render the card of a model finetuned on a selected subset, linking the dataset and the rule.

    Args:
        model_name (`str`): the model's repo id or name.
        base_model (`str`): the model that was finetuned.
        dataset_repo_id (`str`): the dataset repo pushed with [`~hf_instructmining.push_to_hub`] (its `selected`
            config is the training data).
        rule (`QualityRule`, *optional*): the rule that selected the data.
        rule_repo_id (`str`, *optional*): where the rule is published, when separately from the dataset.
        num_train_rows (`int`, *optional*): rows trained on.
        eval_loss (`float`, *optional*): the final evaluation loss.
        training (`str`, *optional*): how it was trained (e.g. `"TRL SFTTrainer, LoRA r=16, 3 epochs"`).
        license (`str`, *optional*): the model's license id.

    Example:

    ```py
    >>> from hf_instructmining.hub.model_cards import build_model_card
    >>> card = build_model_card("me/llama-selected", "meta-llama/Llama-2-7b-hf", "me/alpaca-instructmining")
    >>> card.data.datasets
    ['me/alpaca-instructmining']
    ```
    """
    from huggingface_hub import ModelCardData

    from .._version import __version__

    data = ModelCardData(
        base_model=base_model,
        datasets=[dataset_repo_id],
        license=license,
        library_name="transformers",
        tags=["instructmining", "trl", "sft"],
    )
    kwargs = {
        "model_name": model_name,
        "dataset_repo_id": dataset_repo_id,
        "rule_name": None if rule is None else rule.name,
        "rule_repo_id": rule_repo_id or dataset_repo_id,
        "formula": None if rule is None else f"`{rule.formula()}`",
        **response_kwargs(rule),
        "num_train_rows": num_train_rows,
        "eval_loss": None if eval_loss is None else fmt(eval_loss),
        "training": training,
        "package_version": __version__,
    }
    return render("model_card.md", "model", data, kwargs)


def _provenance(rule) -> str | None:
    keys = ("source", "base_model", "eval_set", "created_at", "library_versions")
    items = [f"- {k.replace('_', ' ')}: `{rule.provenance[k]}`" for k in keys if rule.provenance.get(k)]
    return "\n".join(items) or None
