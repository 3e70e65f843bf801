"""The measurement's Gradio widget, for this folder published as a Hugging Face Space."""

import os

import evaluate
from evaluate.utils import launch_gradio_widget


# The folder itself: the same module whether the Space runs it or a user runs `python app.py` offline.
module = evaluate.load(os.path.dirname(os.path.abspath(__file__)))
launch_gradio_widget(module)
