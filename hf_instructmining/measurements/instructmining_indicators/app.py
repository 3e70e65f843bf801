"""The measurement's Gradio widget, for this folder published as a Hugging Face Space."""

import os

import evaluate
from evaluate.utils import launch_gradio_widget


# A Space shows one family: set the Space variable INDICATOR_FAMILY to pick it (`lengths` needs no model).
module = evaluate.load(
    os.path.dirname(os.path.abspath(__file__)), config_name=os.environ.get("INDICATOR_FAMILY", "lengths")
)
launch_gradio_widget(module)
