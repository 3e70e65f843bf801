"""Publishing: scored and selected data with its dataset card, and rules with their rule card, on the Hub.

- `config.py`: [`PushConfig`], what the card says beyond the data.
- `push.py`: [`save_scored`] (the folder layout), [`push_to_hub`] and [`push_rule_to_hub`] (the upload).
- `cards.py`: the dataset card; `model_cards.py`: the rule and model cards; both render the templates of
  `model_card_templates/`.
"""

from .config import PushConfig
from .push import SEARCH_FILENAME, push_rule_to_hub, push_to_hub, save_scored


__all__ = ["SEARCH_FILENAME", "PushConfig", "push_rule_to_hub", "push_to_hub", "save_scored"]
