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
    for folder in ("builtin_rules/", "model_card_templates/", "example_data/"):
        packaged = [n for n in names if n.startswith(f"hf_instructmining/{folder}")]
        on_disk = list((ROOT / "hf_instructmining" / folder).glob("*"))
        assert len(packaged) >= len([p for p in on_disk if p.suffix in (".json", ".md", ".jsonl")]) > 0
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


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300).filter(str.strip),
)
def test_lengths_on_any_unicode(instruction, response):
    example = {"instruction": instruction, "output": response}
    assert InputLength()(example)["input_length"] == len(instruction.split())
    assert OutputLength()(example)["output_length"] == len(response.split()) >= 1
