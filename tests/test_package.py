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


@pytest.mark.slow
def test_wheel_ships_templates_rules_and_types(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("hf_instructmining-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hf_instructmining/py.typed" in names
    for folder in ("builtin_rules/", "model_card_templates/"):
        packaged = [n for n in names if n.startswith(f"hf_instructmining/{folder}")]
        on_disk = list((ROOT / "hf_instructmining" / folder).glob("*"))
        assert len(packaged) >= len([p for p in on_disk if p.suffix in (".json", ".md")]) > 0
    assert any(n.endswith("entry_points.txt") for n in names)


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300).filter(str.strip),
)
def test_lengths_on_any_unicode(instruction, response):
    example = {"instruction": instruction, "output": response}
    assert InputLength()(example)["input_length"] == len(instruction.split())
    assert OutputLength()(example)["output_length"] == len(response.split()) >= 1
