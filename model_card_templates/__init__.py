"""Jinja templates of the dataset, rule and model cards.

A package so that setuptools ships the folder inside the wheel as `hf_instructmining.model_card_templates` (see
`setup.py`); the templates are read with `importlib.resources`, never imported.
"""
