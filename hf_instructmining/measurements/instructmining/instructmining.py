"""InstructMining: how good a set of instruction data is for finetuning, as the rule's predicted log eval loss."""

import warnings

import datasets
import evaluate


_DESCRIPTION = """\
InstructMining (Cao, Kang, Wang and Sun, arXiv 2307.06290) estimates the quality of instruction-tuning data with a
linear rule over natural-language indicators (reward-model score, UniEval naturalness, coherence and
understandability, lengths, KNN distances, ...). Applied to the mean indicator values of a dataset, the rule predicts
the log evaluation loss of a model finetuned on that dataset: lower is better.

This measurement computes the indicators the rule needs for the given (instruction, response) pairs (KNN indicators
over the whole set) and returns their means, the predicted log eval loss, and how many rows could not be read.
Pick the rule and replace its models with `hf_instructmining.load_measurement(rule=..., models=...)`.
"""

_KWARGS_DESCRIPTION = """
Args:
    instructions (`list[str]`): the instruction of each example (for Alpaca data, instruction and input joined by a
        blank line).
    responses (`list[str]`): the response of each example.

Returns:
    predicted_log_eval_loss (`float`): the rule applied to the mean indicator values; lower is better.
    predicted_eval_loss (`float`): its exponential.
    num_rows (`int`): how many examples were given.
    num_invalid (`int`): how many could not be scored (e.g. an empty response); they count in no mean.
    mean_<indicator> (`float`): the mean of each indicator the rule uses, e.g. `mean_reward`.

Examples:
    >>> import hf_instructmining as im
    >>> rule = im.QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}})
    >>> measurement = im.load_measurement(rule=rule)
    >>> results = measurement.compute(instructions=["Say hi", "Count"], responses=["Hello there, friend.", "one two three"])
    >>> round(results["predicted_log_eval_loss"], 4), results["num_rows"], results["num_invalid"], results["mean_mtld"]
    (0.97, 2, 0, 3.0)
"""

_CITATION = """\
@inproceedings{cao2024instruction,
  title     = {Instruction Mining: Instruction Data Selection for Tuning Large Language Models},
  author    = {Cao, Yihan and Kang, Yanbin and Wang, Chi and Sun, Lichao},
  booktitle = {First Conference on Language Modeling (COLM)},
  year      = {2024},
  url       = {https://arxiv.org/abs/2307.06290}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class InstructMining(evaluate.Measurement):
    """The InstructMining dataset-quality estimate; see `hf_instructmining.load_measurement`."""

    def __init__(self, rule=None, models=None, device=None, on_invalid="nan", **kwargs):
        # Imported here as in every entry point: the rule is resolved before evaluate builds the module info.
        from hf_instructmining.scoring import ScoreConfig, plan_indicators, resolve_rule

        self.rule = resolve_rule(rule if rule is not None else ScoreConfig().rule)
        self.models = dict(models or {})
        self.device = device
        self.on_invalid = on_invalid
        # Check the options now, and warn here, once, when `models` replaces a model the rule was fitted with.
        config = ScoreConfig(models=self.models, device=device, on_invalid=on_invalid)
        plan_indicators(self.rule.indicators, config, fitted=self.rule)
        super().__init__(**kwargs)

    def _info(self):
        return evaluate.MeasurementInfo(
            module_type="measurement",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"instructions": datasets.Value("string"), "responses": datasets.Value("string")}
            ),
            reference_urls=["https://arxiv.org/abs/2307.06290"],
        )

    def _compute(self, instructions, responses):
        from hf_instructmining.scoring import compute_indicators
        from hf_instructmining.summary import summarize_dataset

        pairs = datasets.Dataset.from_dict({"instruction": list(instructions), "output": list(responses)})
        with warnings.catch_warnings():
            # Already said once, when the measurement was loaded.
            warnings.filterwarnings("ignore", message="The coefficients of the rule", category=UserWarning)
            scored = compute_indicators(
                pairs, rule=self.rule, models=self.models, device=self.device, on_invalid=self.on_invalid
            )
        summary = summarize_dataset(scored, rule=self.rule)
        result = {
            "predicted_log_eval_loss": summary.predicted_log_eval_loss,
            "predicted_eval_loss": summary.predicted_eval_loss,
            "num_rows": summary.num_rows,
            "num_invalid": summary.num_invalid,
        }
        result.update({f"mean_{column}": mean for column, mean in summary.means.items()})
        return result
