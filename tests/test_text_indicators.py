import json
import math
import pickle
from pathlib import Path

import pytest
from datasets import Dataset
from datasets.fingerprint import Hasher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_instructmining.errors import InvalidExampleError
from hf_instructmining.indicators import (
    MTLD,
    CompressionRatio,
    InputLength,
    OutputLength,
    available_indicators,
    get_indicator,
    register_indicator,
)
from hf_instructmining.indicators.mtld import mtld, tokenize
from hf_instructmining.offline import example_data_path


lexicalrichness = pytest.importorskip("lexicalrichness")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_eval_outputs"
EXAMPLE_DATA = Path(example_data_path())

ROWS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, move daily."},
    {"instruction": "Translate.", "input": "good morning", "output": "Bonjour, bonjour, bonjour, bonjour."},
    {"instruction": "Name a color.", "input": "", "output": "Blue"},
    {"instruction": "Explain rain.", "input": "", "output": "Water evaporates, condenses into clouds and falls."},
]


def oracle_mtld(text: str) -> float:
    return lexicalrichness.LexicalRichness(text).mtld(threshold=0.72)


def real_responses(limit: int | None = None) -> list[str]:
    if SHARED_DATA.is_dir():
        texts = [row["output"] for path in sorted(SHARED_DATA.glob("*.json")) for row in json.loads(path.read_text())]
    elif EXAMPLE_DATA.is_file():
        texts = [json.loads(line)["output"] for line in EXAMPLE_DATA.read_text().splitlines() if line.strip()]
    else:
        pytest.skip("no real text available (neither ../shared/data nor the packaged example data)")
    return texts[:limit]


def test_mtld_matches_oracle_on_real_text():
    texts = [t for t in real_responses() if tokenize(t)]
    assert len(texts) > 100
    worst = max(abs(mtld(t) - oracle_mtld(t)) for t in texts)
    assert worst <= 1e-9


def test_mtld_edge_cases():
    assert mtld("") == 0.0
    assert mtld("123 -- !!!") == 0.0
    assert mtld("word") == 1.0
    assert mtld("alpha beta gamma") == 3.0
    assert mtld(["a", "b", "a"]) == pytest.approx(oracle_mtld("a b a"))
    with pytest.raises(ValueError, match="threshold"):
        MTLD(threshold=1.5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_mtld_property_any_unicode(text):
    value = mtld(text)
    assert math.isfinite(value) and value >= 0
    if tokenize(text):
        assert value == pytest.approx(oracle_mtld(text), abs=1e-9)
    else:
        assert value == 0.0


@settings(max_examples=10, deadline=None)
@given(
    st.lists(st.sampled_from(["the", "cat", "sat", "on", "a", "mat", "über", "日本", "x1"]), min_size=1, max_size=40),
    st.integers(min_value=50, max_value=300),
)
def test_mtld_very_long_texts(words, repeats):
    text = " ".join(words * repeats)
    assert mtld(text) == pytest.approx(oracle_mtld(text), abs=1e-9)
    assert MTLD()({"instruction": "Repeat.", "output": text})["mtld"] == mtld(text)


@pytest.mark.parametrize("indicator", [MTLD(), InputLength(), OutputLength()], ids=lambda i: i.name)
def test_map_batched_unbatched_and_num_proc_agree(indicator):
    ds = Dataset.from_list(ROWS * 4)
    unbatched = ds.map(indicator)[indicator.name]
    batched = ds.map(indicator, batched=True, batch_size=3)[indicator.name]
    parallel = ds.map(indicator, batched=True, batch_size=2, num_proc=2)[indicator.name]
    assert unbatched == batched == parallel
    assert all(isinstance(v, float) for v in unbatched)


def test_lengths_count_whitespace_words_and_joined_input():
    ds = Dataset.from_list(ROWS).map(InputLength()).map(OutputLength())
    assert ds["input_length"] == [6.0, 3.0, 3.0, 2.0]
    assert ds["output_length"] == [5.0, 4.0, 1.0, 7.0]


def test_lengths_with_a_local_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    ds = Dataset.from_list(ROWS).map(OutputLength(tokenizer=tiny_tokenizer_dir), batched=True)
    expected = [float(len(tokenizer(r["output"], add_special_tokens=False)["input_ids"])) for r in ROWS]
    assert ds["output_length"] == expected
    with pytest.raises(TypeError, match="Hub id or a local path"):
        OutputLength(tokenizer=tokenizer)


def test_missing_tokenizer_gives_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="Could not load the tokenizer"):
        OutputLength(tokenizer=str(tmp_path / "nowhere"))({"instruction": "a", "output": "b"})


def test_all_layouts_give_the_same_values():
    alpaca = Dataset.from_list([{"instruction": "Say hi", "output": "Hello there friend"}])
    pc = Dataset.from_list([{"prompt": "Say hi", "completion": "Hello there friend"}])
    chat = Dataset.from_list(
        [{"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hello there friend"}]}]
    )
    for indicator in (MTLD(), InputLength(), OutputLength()):
        values = {ds.map(indicator, batched=True)[indicator.name][0] for ds in (alpaca, pc, chat)}
        assert len(values) == 1


def test_invalid_rows_raise_or_become_nan():
    ds = Dataset.from_list(ROWS + [{"instruction": "Empty", "input": "", "output": " "}])
    with pytest.raises(InvalidExampleError, match="response"):
        ds.map(MTLD(), batched=True)
    scored = ds.map(MTLD(on_invalid="nan"), batched=True)
    assert math.isnan(scored["mtld"][-1]) and len(scored) == len(ds)
    assert all(math.isfinite(v) for v in scored["mtld"][:-1])


def test_returns_only_own_columns_and_never_mutates_input():
    example = dict(ROWS[0])
    out = MTLD()(example)
    assert set(out) == {"mtld"}
    assert example == ROWS[0]


def test_fingerprint_is_config_and_cache_is_reused(tmp_path):
    indicator = OutputLength()
    before = Hasher.hash(indicator)
    indicator(ROWS[0])
    assert Hasher.hash(indicator) == before
    assert Hasher.hash(MTLD(threshold=0.72)) == Hasher.hash(MTLD())
    assert Hasher.hash(MTLD(threshold=0.7)) != Hasher.hash(MTLD())

    Dataset.from_list(ROWS).to_parquet(tmp_path / "rows.parquet")
    ds = Dataset.from_parquet(str(tmp_path / "rows.parquet"), cache_dir=str(tmp_path / "cache"))
    first = ds.map(MTLD(), batched=True)
    second = ds.map(MTLD(), batched=True)
    assert first.cache_files == second.cache_files
    assert pickle.loads(pickle.dumps(MTLD(threshold=0.7))).threshold == 0.7


def test_registry_builds_by_name_and_lists_known_names():
    assert isinstance(get_indicator("mtld"), MTLD)
    assert get_indicator("output_length", tokenizer=None).name == "output_length"
    assert "knn_{k}" in available_indicators()
    with pytest.raises(ValueError, match="Known indicators"):
        get_indicator("bleu")
    with pytest.raises(ValueError, match="built-in"):
        register_indicator("mtld", MTLD)
    register_indicator("mtld_strict", lambda **options: MTLD(threshold=0.8, **options))
    assert get_indicator("mtld_strict").threshold == 0.8


def test_compression_ratio_is_the_compressed_share_of_the_response():
    import zlib

    loop = "A dictionary is a dict and a dict is a dictionary. " * 10
    rows = {"instruction": ["Explain dicts", "Explain dicts", "Greet"], "output": [loop, ROWS[0]["output"], "Héllo!"]}
    values = Dataset.from_dict(rows).map(get_indicator("compression_ratio"), batched=True)["compression_ratio"]
    empty = len(zlib.compress(b"", 9))
    expected = [(len(zlib.compress(r.encode(), 9)) - empty) / len(r.encode()) for r in rows["output"]]
    assert values == pytest.approx(expected, rel=1e-12)
    assert values[0] < 0.15 < values[1]  # the loop compresses to a fraction of a varied answer
    assert CompressionRatio()({"instruction": "Greet", "output": "Héllo!"}) == {"compression_ratio": values[2]}
