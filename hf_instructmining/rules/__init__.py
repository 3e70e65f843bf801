"""Quality rules: [`QualityRule`], the built-in rules, and the checks that validate a rule file.

`rule.py` holds the rule and its JSON round trip; `checks.py` the field validation and the indicator-name check
that loading a rule applies; `scales.py` how a rule reads one row's values (its `transforms` and its `out_of_range`
policy). The built-in rule files ship in `hf_instructmining/builtin_rules/`.
"""

from .rule import (
    DEFAULT_RULE,
    EVAL_LOSS_RESPONSE,
    RULE_FILENAME,
    SCHEMA_VERSION,
    TARGET,
    QualityRule,
    builtin_rules,
)


__all__ = [
    "DEFAULT_RULE",
    "EVAL_LOSS_RESPONSE",
    "RULE_FILENAME",
    "SCHEMA_VERSION",
    "TARGET",
    "QualityRule",
    "builtin_rules",
]
