"""Quality rules: the linear InstructMining formula that predicts the log eval loss of a model finetuned on data.

A rule is `log L_eval ≈ β0 + Σ βi · Ii` (paper, Section 3.1): an intercept, one coefficient per indicator
column, and, for each column, the options that rebuild the indicator the coefficient was fitted with
(`get_indicator(column, **rule.indicators[column])`: model id and revision, tokenizer, `k` for KNN, ...).
Lower is better. Applied to one example it ranks data; applied to a dataset's mean indicator values it
estimates the dataset's quality.

A rule is fitted on the mean indicators of whole subsets, which vary far less than single rows do. A fitted rule
therefore carries its `domain`, the range of each mean it was fitted on, and `predict` clips every value into it:
a linear fit says nothing beyond its data, and extrapolating one ranked one-token answers first (a row's
`unconditional_perplexity` of 31,000 against fitted means of 6 to 1,036).

Rules are stored as JSON only (never pickle), in a file named `instructmining_rule.json` inside a folder or a
Hub repository. The file carries a `schema_version`, and loading validates every field: a malformed file
raises [`~hf_instructmining.errors.RuleFormatError`] naming the field and what is wrong with it.
"""

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from .._json import to_jsonable
from ..errors import RuleFormatError, remove_token, shorten
from .checks import as_floats, check_finite, column_names, local_models_checked, read_rule_json, validate_fields
from .clipping import clip_counts, describe_clipping
from .scales import DEFAULT_OUT_OF_RANGE, apply_policy, transform


logger = logging.getLogger(__name__)

# 2 added `domain`, 3 `out_of_range` and `transforms`. A rule is written with the lowest version that holds it (no
# domain: 1; the default policy and no transforms: 2), so that older releases still read it.
SCHEMA_VERSION = 3
RULE_FILENAME = "instructmining_rule.json"
DEFAULT_RULE = "instructmining-llama2-7b"
TARGET = "log_eval_loss"
EVAL_LOSS_RESPONSE = "log L_eval"
_FIELDS = (
    "schema_version",
    "name",
    "target",
    "intercept",
    "coefficients",
    "indicators",
    "provenance",
    "domain",
    "out_of_range",
    "transforms",
)


def builtin_rules() -> list[str]:
    """The names accepted by [`QualityRule.from_builtin`].

    Example:

    ```py
    >>> from hf_instructmining.rules import builtin_rules
    >>> builtin_rules()
    ['instructmining-llama-7b', 'instructmining-llama2-7b', 'instructmining-smollm2-135m']
    ```
    """
    folder = resources.files("hf_instructmining").joinpath("builtin_rules")
    return sorted(entry.name[: -len(".json")] for entry in folder.iterdir() if entry.name.endswith(".json"))


def describe_outside_domain(rule: "QualityRule", columns: Any) -> str | None:
    """A sentence for a warning or a dataset card naming the indicators whose mean over `columns` lies outside the
    range `rule` was fitted on (see [`QualityRule.outside_domain`]), with how many rows of each indicator the rule
    clipped and which terms that left the same on every row, ranking nothing (see
    [`~hf_instructmining.rules.clipping.clip_counts`]); `None` when no mean lies outside."""
    outside = rule.outside_domain(columns)
    if not outside:
        return None
    listed = ", ".join(
        f"`{rule.term(c)}` {mean:.4g} (fitted {rule.domain[c][0]:.4g} to {rule.domain[c][1]:.4g})"
        for c, mean in outside.items()
    )
    many = len(outside) > 1
    clipped = describe_clipping(clip_counts(rule, columns))
    return (
        f"This dataset's {'means' if many else 'mean'} of {listed} {'lie' if many else 'lies'} outside the range the "
        f"rule{f' `{rule.name}`' if rule.name else ''} was fitted on: the rule extrapolates here. "
        f"{f'{clipped} ' if clipped else ''}A rule fitted on data like this one (`fit_rule`) is what can rank it."
    )


@dataclass
class QualityRule:
    """A linear InstructMining rule: predicted log eval loss = intercept + Σ coefficient · indicator.

    Args:
        intercept (`float`): β0.
        coefficients (`dict[str, float]`): indicator column -> coefficient, e.g. `{"reward": -0.0078}`.
        indicators (`dict[str, dict]`): indicator column -> the options that rebuild its indicator with
            `get_indicator(column, **options)` (model id, revision, tokenizer, `k`, ...). Every coefficient needs one
            (`{}` means the indicator's defaults).
        provenance (`dict`, *optional*): where the numbers come from: `source`, `base_model`, `eval_set`,
            `library_versions`, `created_at`, and `fit` statistics for fitted rules.
        name (`str`, *optional*): a short name, e.g. `"instructmining-llama2-7b"`.
        domain (`dict[str, tuple[float, float]]`, *optional*): indicator column -> the `(low, high)` range of its
            mean over the subsets the rule was fitted on ([`~hf_instructmining.fit_rule`] records it). `predict`
            clips the column's values into it, so that no row scores beyond what the fit saw. `None` (the paper's
            rules, whose fitting data is not published) clips nothing.
        out_of_range (`str`, *optional*, defaults to `"clip"`): what a value outside the `domain` counts for:
            `"clip"` (the domain's edge, both sides), `"clip_helpful"` (the edge on the side that would make the row
            look better, the value itself on the harmful side), `"clip_helpful_saturate"` (the same, with the
            harmful side extrapolated on a log scale of the domain's width) or `"none"` (every value as it is). See
            `hf_instructmining.rules.scales`.
        transforms (`dict[str, str]`, *optional*): indicator column -> the scale the rule reads it on (`"log"`,
            `"log1p"`, `"signed_log1p"`, `"exp"`); the coefficient and the domain are on that scale. Columns not
            named are read as they are.

    Raises:
        [`~hf_instructmining.errors.RuleFormatError`]: when a field has the wrong type, a number is not finite,
            a column has no indicator spec (or a spec has no coefficient), or a column is not a known indicator, or a
            domain range is not `[low, high]` of a coefficient's column, or `out_of_range` or `transforms` names
            an unknown policy, transform or column.

    Example:

    ```py
    >>> from hf_instructmining import QualityRule
    >>> rule = QualityRule(1.0, {"mtld": -0.01, "output_length": 0.001}, {"mtld": {}, "output_length": {}})
    >>> rule.predict({"mtld": [50.0, 10.0], "output_length": [100, 20]}).round(3).tolist()
    [0.6, 0.92]
    >>> clipped = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}}, domain={"mtld": (20.0, 60.0)})
    >>> clipped.predict({"mtld": [10.0, 50.0, 470.0]}).round(3).tolist()
    [0.8, 0.5, 0.4]
    >>> helpful = QualityRule(
    ...     1.0, {"mtld": -0.01}, {"mtld": {}}, domain={"mtld": (20.0, 60.0)}, out_of_range="clip_helpful"
    ... )
    >>> helpful.predict({"mtld": [10.0, 50.0, 470.0]}).round(3).tolist()
    [0.9, 0.5, 0.4]
    >>> QualityRule.from_builtin("instructmining-llama2-7b").formula()
    'log L_eval = 0.0274 - 0.0078·reward + 0.4421·unieval_understandability - 0.3212·unieval_naturalness - 0.152·unieval_coherence'
    ```
    """

    intercept: float
    coefficients: dict[str, float]
    indicators: dict[str, dict[str, Any]]
    provenance: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    domain: dict[str, tuple[float, float]] | None = None
    out_of_range: str = DEFAULT_OUT_OF_RANGE
    transforms: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        checked = validate_fields(
            {
                "intercept": self.intercept,
                "coefficients": self.coefficients,
                "indicators": self.indicators,
                "provenance": self.provenance,
                "name": self.name,
                "domain": self.domain,
                "out_of_range": self.out_of_range,
                "transforms": self.transforms,
            }
        )
        self.intercept = checked["intercept"]
        self.coefficients = checked["coefficients"]
        self.indicators = checked["indicators"]
        self.provenance = checked["provenance"]
        self.domain = checked["domain"]
        self.out_of_range = checked["out_of_range"]
        self.transforms = checked["transforms"]

    @property
    def columns(self) -> list[str]:
        """The indicator columns the rule reads, in coefficient order."""
        return list(self.coefficients)

    @property
    def response(self) -> str:
        """What the rule predicts, lower is better: `"log L_eval"`, the log eval loss (of one eval set or the mean
        of several), unless [`~hf_instructmining.fit_rule`] fitted it to another label, whose response its
        `provenance["fit"]` records, e.g. `"log(1 - eval_rougeL)"` for a score where higher is better.

        Example:

        ```py
        >>> from hf_instructmining import QualityRule
        >>> QualityRule.from_builtin().response
        'log L_eval'
        >>> QualityRule(0.1, {"mtld": -0.01}, {"mtld": {}}, {"fit": {"target": "log(1 - eval_rougeL)"}}).response
        'log(1 - eval_rougeL)'
        ```
        """
        fit = self.provenance.get("fit")
        fitted = fit.get("target") if isinstance(fit, dict) else None
        # `fit_rule` records `log(eval_loss)`, `log(eval_<name>_loss)`, `log(1 - <score>)` or `log(<other label>)`.
        if not isinstance(fitted, str) or re.fullmatch(r"log\(eval(_.+)?_loss\)", fitted):
            return EVAL_LOSS_RESPONSE
        return fitted

    def formula(self) -> str:
        """The rule as a readable formula, e.g. `log L_eval = 0.0274 - 0.0078·reward + ...` (the left side is
        [`QualityRule.response`]); a column read on another scale shows it, e.g. `log(perplexity)`."""
        terms = [f"{self.response} = {self.intercept:g}"]
        for column, coefficient in self.coefficients.items():
            terms.append(f"{'-' if coefficient < 0 else '+'} {abs(coefficient):g}·{self.term(column)}")
        return " ".join(terms)

    def term(self, column: str) -> str:
        """The indicator column as the rule reads it: `column`, or e.g. `log(perplexity)` where a transform puts it
        on another scale (its coefficient and `domain` are on that scale)."""
        scale = self.transforms.get(column)
        return f"{scale}({column})" if scale else column

    def predict(self, columns: Any, *, allow_nan: bool = False, on_rule_scale: bool = False) -> np.ndarray:
        """Predict the log eval loss of each row from its indicator values ([`QualityRule.response`] for a rule
        fitted to another label). Each value is read on the rule's scale (`transforms`) and, outside the rule's
        `domain`, counts as its `out_of_range` policy says (by default: clipped into the domain); see
        [`QualityRule.used_values`].

        Args:
            columns (`Mapping[str, Sequence[float]]`, `pandas.DataFrame` or `datasets.Dataset`): the indicator
                values, one sequence per column (a batch dict from `Dataset.map(batched=True)` works as is);
                scalar values count as one row. Extra columns are ignored.
            allow_nan (`bool`, *optional*, defaults to `False`): rows with a NaN indicator (invalid rows scored
                with `on_invalid="nan"`) get a NaN prediction instead of raising. Infinite values always raise.
            on_rule_scale (`bool`, *optional*, defaults to `False`): the values are already on the rule's scale
                (`transforms` applied), e.g. a dataset's mean of `log(perplexity)` for the dataset-level estimate,
                which is the mean of the transformed values, not the transform of the mean.

        Returns:
            `np.ndarray`: one float per row (1-D), lower is better.

        Raises:
            `KeyError`: a column the rule needs is missing (the message lists them and the columns present).
            `ValueError`: a value is not a number, not finite, or the columns have different lengths.

        Example:

        ```py
        >>> from hf_instructmining import QualityRule
        >>> rule = QualityRule.from_builtin("instructmining-llama-7b")
        >>> rule.predict({"reward": [1.0], "output_length": [100.0], "knn_6": [0.5]}).round(5).tolist()
        [0.46036]
        ```
        """
        used, _, _ = self.used_values(columns, allow_nan=allow_nan, on_rule_scale=on_rule_scale)
        prediction = np.full(len(next(iter(used.values()))), self.intercept, dtype=float)
        for column, coefficient in self.coefficients.items():
            prediction += coefficient * used[column]  # NaN stays NaN
        return prediction

    def used_values(
        self, columns: Any, *, allow_nan: bool = True, on_rule_scale: bool = False
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The values each coefficient multiplies, and which of them were clipped: the one place that reads a row's
        indicators as the rule does, for [`QualityRule.predict`] and for counting clipped values (cards, summaries).

        Each column is read on the rule's scale (`transforms`), then placed by the `out_of_range` policy: `"clip"`
        clips every value outside the `domain` to its edge, `"clip_helpful"` and `"clip_helpful_saturate"` clip
        only those on the side where they would make the row look better (the others are extrapolated), `"none"`
        clips nothing.

        Args:
            columns (`Mapping[str, Sequence[float]]`, `pandas.DataFrame` or `datasets.Dataset`): the indicator
                values, as for [`QualityRule.predict`].
            allow_nan (`bool`, *optional*, defaults to `True`): whether NaN values (invalid rows) are allowed; they
                stay NaN and count as neither clipped side.
            on_rule_scale (`bool`, *optional*, defaults to `False`): the values are already on the rule's scale, as
                for [`QualityRule.predict`].

        Returns:
            `tuple[dict, dict, dict]`: column -> the used values (`np.ndarray`, on the rule's scale), column -> a
            boolean mask of the rows clipped up to the domain's low edge, column -> the rows clipped down to its
            high edge.

        Raises:
            `KeyError`, `ValueError`: as [`QualityRule.predict`]; also a value where its transform is undefined.

        Example:

        ```py
        >>> from hf_instructmining import QualityRule
        >>> rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}}, domain={"mtld": (20.0, 60.0)})
        >>> used, below, above = rule.used_values({"mtld": [10.0, 50.0, 470.0]})
        >>> used["mtld"].tolist(), below["mtld"].tolist(), above["mtld"].tolist()
        ([20.0, 50.0, 60.0], [True, False, False], [False, False, True])
        ```
        """
        present = column_names(columns)
        missing = [c for c in self.coefficients if c not in present]
        if missing:
            raise KeyError(
                f"The rule {self._label} needs the indicator column(s) {missing}, which are missing; columns "
                f"present: {sorted(present)}. Compute them with `compute_indicators(ds, {missing})` or "
                "`ds.map(InstructScorer(rule=...))`."
            )
        values = {c: as_floats(columns[c], c) for c in self.coefficients}
        lengths = {c: len(v) for c, v in values.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"The indicator columns have different numbers of rows: {lengths}.")
        for column, array in values.items():
            check_finite(array, column, allow_nan=allow_nan)
        domain = self.domain or {}
        used, below, above = {}, {}, {}
        for column, coefficient in self.coefficients.items():
            low, high = domain.get(column, (-np.inf, np.inf))
            scaled = (
                values[column] if on_rule_scale else transform(values[column], self.transforms.get(column), column)
            )
            used[column], below[column], above[column] = apply_policy(
                scaled, low, high, coefficient, self.out_of_range
            )
        return used, below, above

    def outside_domain(self, columns: Any) -> dict[str, float]:
        """The indicator columns whose mean over these rows lies outside the rule's `domain`, with that mean.

        The domain is the range of each indicator's mean over the subsets the rule was fitted on, so a dataset whose
        mean lies outside it is unlike any of them: the rule extrapolates, and since `predict` clips, that indicator
        barely ranks its rows. Single rows outside the range are normal (rows vary far more than means); a mean
        outside it is what to watch. Columns the rows lack, and rules without a domain, give nothing.

        Example:

        ```py
        >>> from hf_instructmining import QualityRule
        >>> rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}}, domain={"mtld": (20.0, 60.0)})
        >>> rule.outside_domain({"mtld": [5.0, 50.0, 470.0]}), rule.outside_domain({"mtld": [5.0, 50.0]})
        ({'mtld': 175.0}, {})
        ```
        """
        present = column_names(columns)
        outside = {}
        for column, (low, high) in (self.domain or {}).items():
            if column in present:
                # The domain holds means on the rule's scale: the mean of the transformed values.
                values = transform(as_floats(columns[column], column), self.transforms.get(column), column)
                mean = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
                if mean < low or mean > high:
                    outside[column] = mean
        return outside

    @property
    def _label(self) -> str:
        return f"`{self.name}`" if self.name else "(unnamed)"

    # -- serialisation -------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: `schema_version`, `name`, `target`, `intercept`, `coefficients`, `indicators`,
        `provenance` (non-finite statistics in the provenance become `null`, since JSON has no NaN), `domain` when
        the rule has one (as `[low, high]` lists; version 1 files have none), and `out_of_range` and `transforms` when
        they differ from the defaults (`"clip"`, none; version 3), so that a rule without them is written as before."""
        version = (
            3 if self.transforms or self.out_of_range != DEFAULT_OUT_OF_RANGE else 1 if self.domain is None else 2
        )
        data = {
            "schema_version": version,
            "name": self.name,
            "target": TARGET,
            "intercept": self.intercept,
            "coefficients": dict(self.coefficients),
            "indicators": {c: dict(spec) for c, spec in self.indicators.items()},
            "provenance": to_jsonable(self.provenance),
        }
        if self.domain is not None:
            data["domain"] = {c: list(bounds) for c, bounds in self.domain.items()}
        if self.out_of_range != DEFAULT_OUT_OF_RANGE:
            data["out_of_range"] = self.out_of_range
        if self.transforms:
            data["transforms"] = dict(self.transforms)
        return data

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> "QualityRule":
        """Build a rule from [`QualityRule.to_dict`]'s form, validating every field.

        Args:
            data (`dict`): the parsed JSON object.
            source (`str`, *optional*): where it came from, prefixed to error messages.

        Raises:
            [`~hf_instructmining.errors.RuleFormatError`]: the message names the field and what is wrong.
        """
        if not isinstance(data, dict):
            raise RuleFormatError(f"a rule must be a JSON object, got {type(data).__name__}", path=source)
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise RuleFormatError(f"unknown field(s) {shorten(unknown)}; the fields are {list(_FIELDS)}", path=source)
        missing = [k for k in ("schema_version", "intercept", "coefficients", "indicators") if k not in data]
        if missing:
            raise RuleFormatError(f"missing field(s) {missing}", path=source)
        version = data["schema_version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RuleFormatError(
                f"`schema_version` must be a positive integer, got `{shorten(version)}`", path=source
            )
        if version > SCHEMA_VERSION:
            raise RuleFormatError(
                f"`schema_version` {version} is newer than this version of hf-instructmining reads "
                f"({SCHEMA_VERSION}); upgrade with `pip install -U hf-instructmining`",
                path=source,
            )
        if data.get("target", TARGET) != TARGET:
            raise RuleFormatError(f"`target` must be `{TARGET}`, got `{shorten(data['target'])}`", path=source)
        checked = validate_fields(data, source=source)
        return cls(**checked)

    def save(self, path: str | os.PathLike) -> str:
        """Write the rule as JSON; a folder gets `instructmining_rule.json` inside it. Returns the file path.

        Example:

        ```py
        >>> import tempfile
        >>> from hf_instructmining import QualityRule
        >>> rule = QualityRule.from_builtin("instructmining-llama2-7b")
        >>> folder = tempfile.mkdtemp()
        >>> QualityRule.load(rule.save(folder)) == rule
        True
        ```
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, RULE_FILENAME)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)  # a crash mid-write never leaves a truncated rule behind
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, allow_local_paths: bool = False) -> "QualityRule":
        """Read a rule written by [`QualityRule.save`] (a JSON file, or a folder holding `instructmining_rule.json`).

        A rule file is data: it cannot switch on `trust_remote_code` or any other option that loads code (see
        `Indicator.rule_options`), and it names each model or tokenizer by Hub id or by a folder inside its own folder
        (made absolute here, so that it loads from any working directory).

        Args:
            path (`str` or `os.PathLike`): the file, or a folder holding it.
            allow_local_paths (`bool`, *optional*, defaults to `False`): also accept models and tokenizers at local
                paths outside the rule's folder, as they are written; only for a rule you made yourself, such as one
                fitted on your own local models.

        Raises:
            `FileNotFoundError`: no such file.
            [`~hf_instructmining.errors.RuleFormatError`]: the file is not a rule: not a regular file, not UTF-8 JSON
                (a pickle, a binary, a duplicate key, a huge number, deep nesting, ...) or not a valid rule (a field's
                type or value, an unknown indicator, an option its indicator does not take or a rule may not set, a
                local path outside the rule's folder); the message names the file and the fault.
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, RULE_FILENAME)
        data = read_rule_json(path)
        return cls.from_dict(data if allow_local_paths else local_models_checked(data, path), source=path)

    @classmethod
    def from_builtin(cls, name: str = DEFAULT_RULE) -> "QualityRule":
        """One of the rules published with InstructMining, by name (see [`builtin_rules`]).

        Args:
            name (`str`, *optional*, defaults to `"instructmining-llama2-7b"`): the paper's LLaMA-2-7B rule (v2/v3,
                the default) or `"instructmining-llama-7b"` (v1).

        Example:

        ```py
        >>> from hf_instructmining import QualityRule
        >>> QualityRule.from_builtin("instructmining-llama-7b").columns
        ['reward', 'output_length', 'knn_6']
        ```
        """
        names = builtin_rules()
        if name not in names:
            raise ValueError(f"Unknown built-in rule `{name}`; the built-in rules are {names}.")
        entry = resources.files("hf_instructmining").joinpath("builtin_rules", f"{name}.json")
        return cls.from_dict(json.loads(entry.read_text(encoding="utf-8")), source=f"built-in rule {name}")

    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_dir: str | os.PathLike,
        revision: str | None = None,
        token: str | bool | None = None,
        repo_type: str | None = None,
        *,
        allow_local_paths: bool = False,
    ) -> "QualityRule":
        """Load the `instructmining_rule.json` of a local folder or a Hub repository.

        The file is checked as [`QualityRule.load`] checks it: a rule is data, and cannot make scoring run code.

        Args:
            repo_id_or_dir (`str`): a local folder (or JSON file), or a Hub repo id.
            revision (`str`, *optional*): branch, tag or commit on the Hub.
            token (`str` or `bool`, *optional*): Hub token.
            repo_type (`str`, *optional*): `"model"` or `"dataset"`; by default a model repo is tried, then a
                dataset repo (scored datasets pushed with [`~hf_instructmining.push_to_hub`] carry their rule).
            allow_local_paths (`bool`, *optional*, defaults to `False`): see [`QualityRule.load`].

        Example:

        ```py
        >>> import tempfile
        >>> from hf_instructmining import QualityRule
        >>> folder = tempfile.mkdtemp()
        >>> _ = QualityRule.from_builtin().save(folder)
        >>> QualityRule.from_pretrained(folder).name
        'instructmining-llama2-7b'
        ```
        """
        local = os.fspath(repo_id_or_dir)
        if os.path.isdir(local) or os.path.isfile(local):
            if os.path.isdir(local) and not os.path.isfile(os.path.join(local, RULE_FILENAME)):
                raise FileNotFoundError(f"The folder `{local}` has no `{RULE_FILENAME}`.")
            return cls.load(local, allow_local_paths=allow_local_paths)
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

        kinds = [repo_type] if repo_type else ["model", "dataset"]
        for i, kind in enumerate(kinds):
            try:
                path = hf_hub_download(local, RULE_FILENAME, revision=revision, token=token, repo_type=kind)
            except Exception as err:
                if isinstance(err, RepositoryNotFoundError | EntryNotFoundError) and i < len(kinds) - 1:
                    continue  # try the next kind of repo
                remove_token(err, token)  # re-raised as is, without the credentials its request held
                raise
            return cls.load(path, allow_local_paths=allow_local_paths)
        raise AssertionError("unreachable")

    def push_to_hub(self, repo_id: str, **kwargs) -> Any:
        """Upload the rule as `instructmining_rule.json` (see [`~hf_instructmining.hub.push_rule_to_hub`])."""
        from ..hub import push_rule_to_hub

        return push_rule_to_hub(self, repo_id, **kwargs)
