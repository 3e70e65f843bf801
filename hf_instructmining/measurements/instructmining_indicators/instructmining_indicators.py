"""InstructMining indicators: the mean of one family of natural-language quality indicators over instruction data."""

import evaluate

from hf_instructmining.measurements._measure import (
    COUNTS_DESCRIPTION,
    INDICATOR_FAMILIES,
    INPUTS_DESCRIPTION,
    check_indicators,
    counts_and_means,
    family_rule,
    measurement_info,
    summarize_pairs,
)


_DESCRIPTION = """\
The indicators of InstructMining (Cao, Kang, Wang and Sun, arXiv 2307.06290), one family per configuration:
`lengths` (input and output length), `mtld` (lexical diversity of the response), `reward` (a reward model's score),
`perplexity` (of the response under a causal LM), `unieval` (UniEval naturalness, coherence and understandability)
and `knn` (distance to the k-th nearest neighbour in embedding space, over the whole set). Each configuration
returns the mean of its columns over the (instruction, response) pairs, and how many rows could not be read.
Set the indicator's options (its model, revision, `k`, ...) with
`hf_instructmining.load_indicator_measurement(family, options)`.
"""

_KWARGS_DESCRIPTION = (
    INPUTS_DESCRIPTION
    + """
Returns:
"""
    + COUNTS_DESCRIPTION
    + """    mean_<column> (`float`): the mean of each column of the family, e.g. `mean_input_length` and
        `mean_output_length` for `lengths`, `mean_knn_6` for `knn` with the default `k`.

Examples:
    >>> import hf_instructmining as im
    >>> measurement = im.load_indicator_measurement("lengths")
    >>> results = measurement.compute(instructions=["Say hi", "Count"], responses=["Hello there, friend.", "one two three"])
    >>> results["mean_input_length"], results["mean_output_length"], results["num_invalid"]
    (1.5, 3.0, 0)
"""
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class InstructMiningIndicators(evaluate.Measurement):
    """The mean of one InstructMining indicator family; see `hf_instructmining.load_indicator_measurement`."""

    def __init__(self, config_name=None, options=None, device=None, on_invalid="nan", **kwargs):
        if config_name in (None, "default"):
            raise ValueError(f"Pick an indicator family as `config_name`: one of {list(INDICATOR_FAMILIES)}.")
        self.rule = family_rule(config_name, options)
        self.device = device
        self.on_invalid = on_invalid
        check_indicators(self.rule, None, device, on_invalid)
        super().__init__(config_name=config_name, **kwargs)

    def _info(self):
        return measurement_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, instructions, responses):
        summary = summarize_pairs(instructions, responses, self.rule, device=self.device, on_invalid=self.on_invalid)
        return counts_and_means(summary)
