"""Package discovery; everything else (metadata, dependencies, extras, the console script) is in `setup.cfg`.

`model_card_templates/` sits at the top of the repository and ships inside the package as
`hf_instructmining.model_card_templates`. Automatic discovery cannot find a package mapped from outside its parent
folder, so the mapped package is added to the ones discovery finds.
"""

from setuptools import find_namespace_packages, setup


TEMPLATES = "hf_instructmining.model_card_templates"

setup(
    packages=[*find_namespace_packages(include=["hf_instructmining*"], exclude=["*.__pycache__"]), TEMPLATES],
    package_dir={TEMPLATES: "model_card_templates"},
)
