"""The package as users meet it: light import, a public API that matches DESIGN.md, a wheel with its data."""

import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hf_instructmining
from hf_instructmining.indicators import InputLength, OutputLength


ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "flaml", "peft", "statsmodels", "sentence_transformers")


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_is_light():
    loaded = run_python(
        "import sys, hf_instructmining as im; im.MTLD; im.get_indicator; im.indicators.OutputLength;"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert loaded == ""


def test_all_is_sorted_and_every_name_resolves():
    names = [n for n in hf_instructmining.__all__ if n != "__version__"]
    assert hf_instructmining.__all__ == sorted(hf_instructmining.__all__)
    for name in names:
        assert getattr(hf_instructmining, name) is not None, name
    with pytest.raises(AttributeError):
        hf_instructmining.not_a_name  # noqa: B018


def test_every_submodule_imports_in_a_fresh_interpreter():
    modules = [m.name for m in pkgutil.walk_packages(hf_instructmining.__path__, "hf_instructmining.")]
    assert "hf_instructmining.formats" in modules
    for module in modules:
        run_python(f"import {module}")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel as `pip wheel .` builds it, and what the build printed."""
    folder = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-v",
            "-w",
            str(folder),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (path,) = folder.glob("hf_instructmining-*.whl")
    return path, build.stdout + build.stderr


@pytest.mark.slow
def test_wheel_ships_templates_rules_example_data_and_types_without_warnings(wheel):
    path, log = wheel
    assert "would be ignored" not in log  # setuptools' package-discovery warnings
    names = zipfile.ZipFile(path).namelist()
    assert "hf_instructmining/py.typed" in names
    for folder in ("builtin_rules/", "example_data/"):
        packaged = [n for n in names if n.startswith(f"hf_instructmining/{folder}")]
        on_disk = list((ROOT / "hf_instructmining" / folder).glob("*"))
        assert len(packaged) >= len([p for p in on_disk if p.suffix in (".json", ".md", ".jsonl")]) > 0
    # The card templates sit at the top of the repository and ship inside the package; there is no second copy.
    assert not (ROOT / "hf_instructmining" / "model_card_templates").exists()
    templates = sorted(p.name for p in (ROOT / "model_card_templates").glob("*.md"))
    assert len(templates) == 3
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("hf_instructmining/model_card_templates/")) == [
        "__init__.py",
        *templates,
    ]
    assert not any(n.startswith("model_card_templates/") for n in names)
    assert "hf_instructmining/example_data/instructions.jsonl" in names
    assert not any("__pycache__" in n for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)


@pytest.mark.slow
def test_the_demo_runs_from_an_installed_wheel_in_any_folder(wheel, tmp_path):
    import os

    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel[0])]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    command = [sys.executable, "-m", "hf_instructmining", "demo", "--max_rows", "24", "--output_dir", "demo"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows scored    24" in result.stdout
    assert (elsewhere / "demo" / "README.md").is_file()
    # the code that ran is the installed wheel's, not this checkout's
    where = subprocess.run(
        [sys.executable, "-c", "import hf_instructmining; print(hf_instructmining.__file__)"],
        capture_output=True, text=True, cwd=elsewhere, env=env, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(site))


RENDER_EVERY_CARD = """
import datasets
from hf_instructmining import QualityRule, select_top_k
from hf_instructmining.hub.cards import build_dataset_card, template_folder
from hf_instructmining.hub.model_cards import build_model_card, build_rule_card
from hf_instructmining.search import SearchResult

rule = QualityRule(0.9, {"mtld": -0.004}, {"mtld": {}}, name="toy")
ds = datasets.Dataset.from_dict({"instruction": ["a?", "b?"], "output": ["x y", "z"], "mtld": [10.0, 20.0]})
scored = ds.add_column("instruct_score", rule.predict(ds).tolist())
search = SearchResult(best_k=1, best_loss=1.0, trace=[{"trial": 1, "k": 1, "loss": 1.0, "time_s": 1.0, "selection": "rule"}], low=1, high=2)
cards = [
    build_dataset_card(scored, rule=rule, selection=select_top_k(scored, 1), search=search),
    build_rule_card(rule),
    build_model_card("me/model", "base/model", "me/data", rule=rule),
]
assert all(len(str(card)) > 500 for card in cards)
print(template_folder())
"""


@pytest.mark.slow
def test_an_installed_wheel_renders_every_card_from_its_own_templates(wheel, tmp_path):
    import os

    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel[0])]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", RENDER_EVERY_CARD], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(site / "hf_instructmining" / "model_card_templates")


@pytest.mark.slow
def test_an_editable_install_renders_every_card_from_the_top_level_templates(tmp_path):
    """`pip install -e .` (the Makefile's install) maps the templates package onto the top-level folder."""
    import os
    import sysconfig

    prefix = tmp_path / "prefix"
    # `--ignore-installed`: pip would otherwise uninstall this environment's own install of the package first.
    install = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--ignore-installed",
        "-e",
        str(ROOT),
    ]
    build = subprocess.run([*install, "--prefix", str(prefix), "-v"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    assert "would be ignored" not in build.stdout + build.stderr
    site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    # Only the editable install's site folder and its import hook (`-S`: no other site folder, no other install).
    code = f"import site; site.addsitedir({site!r}); import hf_instructmining.model_card_templates as t; print(t.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(ROOT / "model_card_templates" / "__init__.py")


def test_a_source_checkout_renders_every_card_from_the_top_level_templates():
    """Run from the checkout (`PYTHONPATH=.`, as an editable install also does): the top-level folder is read."""
    assert run_python(RENDER_EVERY_CARD) == str(ROOT / "model_card_templates")


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300).filter(str.strip),
)
def test_lengths_on_any_unicode(instruction, response):
    example = {"instruction": instruction, "output": response}
    assert InputLength()(example)["input_length"] == len(instruction.split())
    assert OutputLength()(example)["output_length"] == len(response.split()) >= 1
