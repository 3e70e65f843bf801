"""InstructMining: how good a set of instruction data is for finetuning, as the rule's predicted log eval loss."""

import evaluate

from hf_instructmining.measurements._measure import (
    COUNTS_DESCRIPTION,
    INPUTS_DESCRIPTION,
    check_indicators,
    counts_and_means,
    measurement_info,
    summarize_pairs,
)


_DESCRIPTION = """\
InstructMining (Cao, Kang, Wang and Sun, arXiv 2307.06290) estimates the quality of instruction-tuning data with a
linear rule over natural-language indicators (reward-model score, UniEval naturalness, coherence and
understandability, lengths, KNN distances, ...). Applied to the mean indicator values of a dataset, the rule predicts
the log evaluation loss of a model finetuned on that dataset: lower is better.

This measurement computes the indicators the rule needs for the given (instruction, response) pairs (KNN indicators
over the whole set) and returns their means, the predicted log eval loss, and how many rows could not be read.
Pick the rule and replace its models with `hf_instructmining.load_measurement(rule=..., models=...)`.
"""

_KWARGS_DESCRIPTION = (
    INPUTS_DESCRIPTION
    + """
Returns:
    predicted_log_eval_loss (`float`): the rule applied to the mean indicator values; lower is better.
    predicted_eval_loss (`float`): its exponential.
    response (`str`): what the rule predicts: `log L_eval` for a rule fitted to eval loss (the paper's); for a rule
        fitted to a score where higher is better, e.g. `log(1 - eval_rougeL)`, and then the two values above are
        that log error rate and the error rate `1 - score`, not a loss.
"""
    + COUNTS_DESCRIPTION
    + """    mean_<indicator> (`float`): the mean of each indicator the rule uses, e.g. `mean_reward`.

Examples:
    >>> import hf_instructmining as im
    >>> rule = im.QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}})
    >>> measurement = im.load_measurement(rule=rule)
    >>> results = measurement.compute(instructions=["Say hi", "Count"], responses=["Hello there, friend.", "one two three"])
    >>> round(results["predicted_log_eval_loss"], 4), results["num_rows"], results["num_invalid"], results["mean_mtld"]
    (0.97, 2, 0, 3.0)
"""
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class InstructMining(evaluate.Measurement):
    """The InstructMining dataset-quality estimate; see `hf_instructmining.load_measurement`."""

    def __init__(self, rule=None, models=None, device=None, on_invalid="nan", **kwargs):
        # Imported here as in every entry point: the rule is resolved before evaluate builds the module info.
        from hf_instructmining.scoring import ScoreConfig, resolve_rule

        self.rule = resolve_rule(rule if rule is not None else ScoreConfig().rule)
        self.models = dict(models or {})
        self.device = device
        self.on_invalid = on_invalid
        check_indicators(self.rule, self.models, device, on_invalid)
        super().__init__(**kwargs)

    def _info(self):
        return measurement_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, instructions, responses):
        summary = summarize_pairs(
            instructions, responses, self.rule, models=self.models, device=self.device, on_invalid=self.on_invalid
        )
        return {
            "predicted_log_eval_loss": summary.predicted_log_eval_loss,
            "predicted_eval_loss": summary.predicted_eval_loss,
            "response": self.rule.response,
            **counts_and_means(summary),
        }
