"""Run every `Example:` in the package's docstrings, offline.

HF-style examples sit inside ```py fences; plain `doctest` would read the closing fence as expected output,
so fence lines are stripped from the expected output first. An example that needs the Hub or a large model
marks its lines `# doctest: +SKIP`.
"""

import doctest
import importlib
import pkgutil
import re

import pytest

import hf_instructmining


FENCE = re.compile(r"^```\w*\s*$\n?", re.MULTILINE)
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(hf_instructmining.__path__, "hf_instructmining.")
    if ".cli" not in m.name and not m.name.endswith("__main__")
)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module_name):
        if test.name.split(".")[-1].startswith("_") and not test.name.endswith("__init__"):
            continue
        for example in test.examples:
            example.want = FENCE.sub("", example.want)
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} docstring example(s) failed in {module_name}"
