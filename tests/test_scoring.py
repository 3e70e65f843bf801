"""Scoring: `InstructScorer` / `instruct_score` as map functions, `compute_indicators`, dataset summaries."""

import dataclasses
import math
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from datasets.fingerprint import Hasher

from hf_instructmining import InstructScorer, QualityRule, ScoreConfig, compute_indicators, summarize_dataset
from hf_instructmining.errors import InvalidExampleError
from hf_instructmining.indicators import Indicator, OutputLength


ROOT = Path(__file__).resolve().parents[1]
TEXT_RULE = QualityRule(
    1.0,
    {"mtld": -0.01, "output_length": 0.001, "input_length": 0.002},
    {"mtld": {}, "output_length": {}, "input_length": {}},
    name="text-rule",
)
ALPACA = {
    "instruction": ["Give three tips for staying healthy.", "Translate good morning into French.", "Say hi"],
    "input": ["", "", ""],
    "output": ["Eat a balanced diet, exercise regularly and sleep well.", "Bonjour.", "Hello there, my friend."],
}
PROMPT_COMPLETION = {"prompt": ALPACA["instruction"], "completion": ALPACA["output"]}
MESSAGES = {
    "messages": [
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        for q, a in zip(ALPACA["instruction"], ALPACA["output"], strict=True)
    ]
}
LAYOUTS = {"alpaca": ALPACA, "prompt_completion": PROMPT_COMPLETION, "messages": MESSAGES}


def _expected_text_scores():
    from hf_instructmining.indicators.mtld import mtld

    return [
        1.0 - 0.01 * mtld(a) + 0.001 * len(a.split()) + 0.002 * len(q.split())
        for q, a in zip(ALPACA["instruction"], ALPACA["output"], strict=True)
    ]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_scorer_unbatched_and_batched_agree_with_the_formula(layout):
    ds = Dataset.from_dict(LAYOUTS[layout])
    scorer = InstructScorer(rule=TEXT_RULE)
    one = ds.map(scorer)
    many = ds.map(scorer, batched=True, batch_size=2)
    for column in ["mtld", "output_length", "input_length", "instruct_score"]:
        assert one[column][:] == many[column][:], column
    np.testing.assert_allclose(one["instruct_score"][:], _expected_text_scores(), rtol=1e-12)
    assert scorer.columns == ["mtld", "output_length", "input_length", "instruct_score"]


def test_scorer_is_picklable_and_its_fingerprint_is_its_config():
    scorer = InstructScorer(rule=TEXT_RULE)
    before = Hasher.hash(scorer)
    scorer({"instruction": "a", "output": "b c"})
    assert Hasher.hash(scorer) == before
    clone = pickle.loads(pickle.dumps(scorer))
    assert Hasher.hash(clone) == before
    assert clone({"instruction": "a", "output": "b c"}) == scorer({"instruction": "a", "output": "b c"})
    assert Hasher.hash(InstructScorer(rule=TEXT_RULE, on_invalid="nan")) != before


def test_scorer_under_num_proc_and_with_rank():
    ds = Dataset.from_dict({k: v * 4 for k, v in ALPACA.items()})
    scorer = InstructScorer(rule=TEXT_RULE)
    reference = ds.map(scorer, batched=True)["instruct_score"][:]
    assert ds.map(scorer, batched=True, batch_size=3, num_proc=2, with_rank=True)["instruct_score"][:] == reference
    assert ds.map(scorer, num_proc=2)["instruct_score"][:] == reference


def test_two_maps_share_one_cache_file(tmp_path):
    path = tmp_path / "data"
    Dataset.from_dict(ALPACA).save_to_disk(str(path))
    from datasets import load_from_disk

    ds = load_from_disk(str(path))
    first = ds.map(InstructScorer(rule=TEXT_RULE), batched=True)
    second = ds.map(InstructScorer(rule=TEXT_RULE), batched=True)
    assert first.cache_files == second.cache_files


def test_invalid_rows_raise_or_score_nan():
    ds = Dataset.from_dict({"instruction": ["a", "b", "c"], "output": ["fine answer", "", "also fine"]})
    with pytest.raises(ValueError, match="row 1|example 1"):
        ds.map(InstructScorer(rule=TEXT_RULE), batched=True)
    for batched in (False, True):
        scored = ds.map(InstructScorer(rule=TEXT_RULE, on_invalid="nan"), batched=batched)
        scores = scored["instruct_score"][:]
        assert math.isnan(scores[1]) and not math.isnan(scores[0]) and not math.isnan(scores[2])
        assert math.isnan(scored["mtld"][1])


def test_rule_given_by_name_file_and_dict(tmp_path):
    path = TEXT_RULE.save(tmp_path / "rule.json")
    (tmp_path / "folder").mkdir()
    TEXT_RULE.save(tmp_path / "folder")
    for rule in (path, str(tmp_path / "folder"), TEXT_RULE.to_dict()):
        assert InstructScorer(rule=rule).rule == TEXT_RULE
    assert InstructScorer().rule.name == "instructmining-llama2-7b"
    with pytest.raises(TypeError, match="`rule` must be"):
        InstructScorer(rule=3)


def test_models_keys_are_checked_and_overrides_warn_once(tiny_tokenizer_dir):
    with pytest.raises(ValueError, match=r"key\(s\) \['perplexty'\].*did you mean"):
        InstructScorer(rule=TEXT_RULE, models={"perplexty": "x"})
    with pytest.raises(ValueError, match="uses no model"):
        InstructScorer(rule=TEXT_RULE, models={"mtld": "x"})
    with pytest.warns(UserWarning, match="not calibrated") as record:
        scorer = InstructScorer(rule=TEXT_RULE, models={"output_length": tiny_tokenizer_dir})
    assert len(record) == 1 and "`output_length`: None -> " in str(record[0].message)
    indicator = next(i for i in scorer._indicators if "output_length" in i.columns)
    assert indicator.tokenizer == tiny_tokenizer_dir
    # the workers' copies do not warn again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pickle.loads(pickle.dumps(scorer))


def test_models_must_be_names_not_objects():
    with pytest.raises(TypeError, match="pass names, not loaded models"):
        InstructScorer(rule=TEXT_RULE, models={"output_length": object()})


def test_knn_rule_needs_a_reference_set():
    with pytest.raises(ValueError, match="reference=.*compute_indicators"):
        InstructScorer(rule="instructmining-llama-7b")


def test_score_config_validates():
    with pytest.raises(ValueError, match="on_invalid"):
        ScoreConfig(on_invalid="skip")
    with pytest.raises(ValueError, match="Unknown format"):
        ScoreConfig(format="sharegpt")
    assert ScoreConfig().rule == "instructmining-llama2-7b"


def test_compute_indicators_any_set_and_with_rule():
    ds = Dataset.from_dict(ALPACA)
    out = compute_indicators(ds, ["mtld", "output_length"])
    assert {"mtld", "output_length"} <= set(out.column_names) and "instruct_score" not in out.column_names
    scored = compute_indicators(ds, rule=TEXT_RULE)
    np.testing.assert_allclose(scored["instruct_score"][:], _expected_text_scores(), rtol=1e-12)
    assert scored["instruct_score"][:] == ds.map(InstructScorer(rule=TEXT_RULE))["instruct_score"][:]
    with pytest.raises(ValueError, match="Unknown indicator `bogus`"):
        compute_indicators(ds, ["bogus"])
    with pytest.raises(ValueError, match="Name the indicators"):
        compute_indicators(ds)


def test_compute_indicators_takes_indicator_objects_and_checks_their_row_count_first():
    from hf_instructmining.indicators import MTLD, KNNDistance

    ds = Dataset.from_dict(ALPACA)
    assert compute_indicators(ds, [MTLD()])["mtld"][:] == compute_indicators(ds, ["mtld"])["mtld"][:]
    with pytest.raises(ValueError, match=f"`knn_{len(ds)}` needs at least {len(ds) + 1} rows"):
        compute_indicators(ds, [KNNDistance(k=len(ds))])


def test_compute_indicators_names_the_dataset_row_on_errors():
    ds = Dataset.from_dict({"instruction": ["a"] * 5, "output": ["x", "y", "z", "", "w"]})
    with pytest.raises(ValueError, match="row 3"):
        compute_indicators(ds, ["mtld"], batch_size=2)
    with pytest.raises(ValueError, match="empty"):
        compute_indicators(ds.select([]), ["mtld"])


class SeenRank(Indicator):
    """Writes the rank it was called with (-1 for none): shows what `map` passed where."""

    name = "seen_rank"

    def compute(self, pairs, rank=None):
        return {self.name: [-1.0 if rank is None else float(rank)] * len(pairs)}


def _rows_with_a_bad_one(bad: int, n: int = 2010) -> Dataset:
    output = ["an answer"] * n
    output[bad] = ""
    return Dataset.from_dict({"instruction": ["a question"] * n, "output": output})


MAP_CALLS = [
    {"batched": True},
    {},
    {"batched": True, "with_indices": True},
    {"with_indices": True},
    {"with_rank": True},
    {"batched": True, "with_indices": True, "with_rank": True},
    {"with_indices": True, "with_rank": True},
    {"batched": True, "num_proc": 2},  # the bad row is in the second worker's shard
    {"with_indices": True, "with_rank": True, "num_proc": 2},
]


@pytest.mark.parametrize("options", MAP_CALLS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain")
@pytest.mark.parametrize("function", ["indicator", "scorer"])
def test_errors_name_the_dataset_row_under_every_map_call(function, options):
    fn = OutputLength() if function == "indicator" else InstructScorer(rule=TEXT_RULE)
    with pytest.raises(InvalidExampleError, match=r"^row 1507: the response") as caught:
        _rows_with_a_bad_one(1507).map(fn, load_from_cache_file=False, **options)  # batches of 1,000 rows
    assert caught.value.row == 1507 and not caught.value.in_batch


@pytest.mark.parametrize(
    ("options", "ranks"),
    [
        ({"with_indices": True}, {-1}),  # an index, not a rank
        ({"with_rank": True}, {-1}),  # one process: datasets passes rank None
        ({"batched": True, "with_indices": True}, {-1}),
        ({"batched": True, "with_rank": True, "num_proc": 2}, {0, 1}),
        ({"with_indices": True, "with_rank": True, "num_proc": 2}, {0, 1}),
    ],
)
def test_map_arguments_go_to_indices_and_rank(options, ranks):
    ds = Dataset.from_dict({"instruction": ["q"] * 8, "output": ["a b"] * 8})
    assert set(ds.map(SeenRank(), batch_size=2, load_from_cache_file=False, **options)["seen_rank"]) == ranks
    assert SeenRank()({"instruction": "q", "output": "a"}, 1) == {"seen_rank": 1.0}  # a direct call: the rank
    with pytest.raises(InvalidExampleError, match="^example 1 of this batch"):  # outside `map`: the batch position
        OutputLength()({"instruction": ["q", "q"], "output": ["a", ""]})


def test_the_scorer_stays_cheap_to_hash_and_pickle_with_map_arguments():
    scorer = InstructScorer(rule=TEXT_RULE)
    before = Hasher.hash(scorer)
    _rows_with_a_bad_one(0, n=4).select([1, 2, 3]).map(scorer, with_indices=True)
    assert Hasher.hash(scorer) == before and Hasher.hash(pickle.loads(pickle.dumps(scorer))) == before


def test_summary_means_rows_invalid_and_prediction():
    ds = Dataset.from_dict({"instruction": ["a", "b", "c", "d"], "output": ["one two", "", "three four five", "six"]})
    scored = compute_indicators(ds, rule=TEXT_RULE, on_invalid="nan")
    summary = summarize_dataset(scored, rule=TEXT_RULE)
    assert summary.num_rows == 4 and summary.num_invalid == 1
    assert summary.means["output_length"] == pytest.approx(2.0)
    assert summary.stats["output_length"].to_dict() == {
        "n": 3,
        "mean": 2.0,
        "std": pytest.approx(math.sqrt(2 / 3)),
        "min": 1.0,
        "max": 3.0,
    }
    # a linear rule: the prediction at the means is the mean of the valid rows' scores
    valid_scores = [s for s in scored["instruct_score"][:] if not math.isnan(s)]
    assert summary.predicted_log_eval_loss == pytest.approx(np.mean(valid_scores))
    assert summary.predicted_eval_loss == pytest.approx(math.exp(summary.predicted_log_eval_loss))
    as_dict = summary.to_dict()
    assert as_dict["rule"] == "text-rule" and as_dict["indicators"]["instruct_score"]["n"] == 3


def test_the_dataset_estimate_of_a_rule_with_a_log_scale_is_at_the_mean_of_the_logs():
    # The rule was fitted on subset means of log(perplexity): a dataset's estimate reads the mean of the logs (here
    # log 10 = 2.30), not the log of the mean (log 50.5 = 3.92), and without clipping it is the mean row score.
    rule = QualityRule(
        0.5, {"perplexity": 0.1}, {"perplexity": {}}, out_of_range="none", transforms={"perplexity": "log"}
    )
    rows = {"perplexity": [1.0, 100.0]}
    summary = summarize_dataset(rows, rule=rule)
    assert summary.means["perplexity"] == pytest.approx(50.5)
    assert summary.scaled["perplexity"].mean == pytest.approx(math.log(10.0))
    assert summary.predicted_log_eval_loss == pytest.approx(0.5 + 0.1 * math.log(10.0))
    assert summary.predicted_log_eval_loss == pytest.approx(rule.predict(rows).mean())
    halves = summarize_dataset({"perplexity": [1.0]}, rule=rule).merge(
        summarize_dataset({"perplexity": [100.0]}, rule=rule)
    )
    assert halves.predicted_log_eval_loss == pytest.approx(summary.predicted_log_eval_loss)


def test_summaries_merge_like_the_whole():
    scored = compute_indicators(Dataset.from_dict({k: v * 3 for k, v in ALPACA.items()}), rule=TEXT_RULE)
    whole = summarize_dataset(scored, rule=TEXT_RULE)
    parts = [summarize_dataset(scored.shard(3, i, contiguous=True), rule=TEXT_RULE) for i in range(3)]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.num_rows == whole.num_rows
    for column, stats in whole.stats.items():
        for key, value in stats.to_dict().items():
            assert merged.stats[column].to_dict()[key] == pytest.approx(value), (column, key)
    assert merged.predicted_log_eval_loss == pytest.approx(whole.predicted_log_eval_loss)


def test_instruct_score_is_lazy_and_light():
    code = (
        "import sys, hf_instructmining as im; s = im.instruct_score; "
        "from hf_instructmining.scoring import instruct_score; assert s is instruct_score; "
        "print(type(s).__name__, s.rule.name, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["InstructScorer", "instructmining-llama2-7b", "False"]


LLAMA2_COLUMNS = ["reward", "unieval_understandability", "unieval_naturalness", "unieval_coherence"]


@pytest.fixture(scope="module")
def tiny_models(tiny_oa_reward_dir, tiny_t5_dir):
    return {"reward": tiny_oa_reward_dir, "unieval": tiny_t5_dir}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_default_rule_with_tiny_models_unbatched_equals_batched(layout, tiny_models):
    ds = Dataset.from_dict(LAYOUTS[layout])
    with pytest.warns(UserWarning, match="not calibrated"):
        scorer = InstructScorer(rule="instructmining-llama2-7b", models=tiny_models, device="cpu")
    one, many = ds.map(scorer), ds.map(scorer, batched=True, batch_size=2)
    for column in [*LLAMA2_COLUMNS, "instruct_score"]:
        np.testing.assert_allclose(one[column][:], many[column][:], rtol=1e-5, atol=1e-6, err_msg=column)
    # the rule's formula, by hand, from the indicator columns
    expected = [
        0.0274 - 0.0078 * r + 0.4421 * u - 0.3212 * n - 0.1520 * c
        for r, u, n, c in zip(*(many[column][:] for column in LLAMA2_COLUMNS), strict=True)
    ]
    np.testing.assert_allclose(many["instruct_score"][:], expected, rtol=1e-12)
    assert all(0 < v < 1 for column in LLAMA2_COLUMNS[1:] for v in many[column][:])


def test_unieval_columns_share_one_indicator(tiny_models):
    with pytest.warns(UserWarning):
        scorer = InstructScorer(models=tiny_models)
    families = sorted(type(i).__name__ for i in scorer._indicators)
    assert families == ["RewardScore", "UniEval"]
    unieval = next(i for i in scorer._indicators if type(i).__name__ == "UniEval")
    assert sorted(unieval.columns) == sorted(LLAMA2_COLUMNS[1:]) and unieval.model == tiny_models["unieval"]
    assert unieval.revision is None and unieval.device is None


def test_default_rule_under_num_proc_with_rank(tiny_models):
    ds = Dataset.from_dict({k: v * 2 for k, v in ALPACA.items()})
    with pytest.warns(UserWarning):
        scorer = InstructScorer(models=tiny_models, device="cpu")
    hash_before = Hasher.hash(scorer)
    single = ds.map(scorer, batched=True)
    assert Hasher.hash(scorer) == hash_before  # loading the models does not change the fingerprint
    parallel = ds.map(scorer, batched=True, batch_size=2, num_proc=2, with_rank=True)
    np.testing.assert_allclose(parallel["instruct_score"][:], single["instruct_score"][:], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_v1_models(tiny_oa_reward_dir, tiny_tokenizer_dir, tiny_bert_dir):
    return {"reward": tiny_oa_reward_dir, "output_length": tiny_tokenizer_dir, "knn": tiny_bert_dir}


def _eight_examples():
    return Dataset.from_dict(
        {
            "instruction": [f"Question number {i} about the sea" for i in range(8)],
            "output": [" ".join(["wave"] * (i + 1)) + " and wind" for i in range(8)],
        }
    )


def test_knn_rule_over_the_whole_dataset_with_compute_indicators(tiny_v1_models):
    ds = _eight_examples()
    with pytest.warns(UserWarning, match="not calibrated"):
        scored = compute_indicators(ds, rule="instructmining-llama-7b", models=tiny_v1_models, device="cpu")
    for column in ["reward", "output_length", "knn_6", "instruct_score"]:
        assert not any(math.isnan(v) for v in scored[column][:]), column
    expected = [
        1.0694 - 0.1498 * r + 8.257e-5 * n - 0.9350 * d
        for r, n, d in zip(scored["reward"][:], scored["output_length"][:], scored["knn_6"][:], strict=True)
    ]
    np.testing.assert_allclose(scored["instruct_score"][:], expected, rtol=1e-12)
    # the neighbour set is the whole dataset: scoring a part changes the distances, never silently per batch
    part = compute_indicators(ds.select(range(7)), ["knn_6"], models={"knn": tiny_v1_models["knn"]})
    assert part["knn_6"][:] != scored["knn_6"][:7]
    summary = summarize_dataset(scored, rule="instructmining-llama-7b")
    assert summary.num_invalid == 0 and summary.predicted_log_eval_loss == pytest.approx(np.mean(expected))


def test_knn_rule_in_map_uses_the_reference_set(tiny_v1_models):
    ds = _eight_examples()
    with pytest.warns(UserWarning):
        scorer = InstructScorer(rule="instructmining-llama-7b", models=tiny_v1_models, device="cpu", reference=ds)
    one, many = ds.map(scorer), ds.map(scorer, batched=True, batch_size=3)
    np.testing.assert_allclose(one["instruct_score"][:], many["instruct_score"][:], rtol=1e-5, atol=1e-6)
    # the reference set includes each row itself (distance 0): the 6th neighbour is then the 5th other row
    whole = compute_indicators(ds, ["knn_5"], models={"knn": tiny_v1_models["knn"]})
    np.testing.assert_allclose(many["knn_6"][:], whole["knn_5"][:], rtol=1e-5, atol=1e-6)
    clone = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_allclose(ds.map(clone, batched=True)["knn_6"][:], many["knn_6"][:], rtol=1e-5, atol=1e-6)


def test_scorer_from_config_and_repr():
    scorer = InstructScorer.from_config(ScoreConfig(rule="instructmining-llama2-7b", on_invalid="nan"))
    assert scorer.rule.name == "instructmining-llama2-7b" and scorer.config.on_invalid == "nan"
    assert repr(scorer) == "InstructScorer(rule='instructmining-llama2-7b', on_invalid='nan')"


def test_compute_indicators_with_num_proc_matches_one_process():
    ds = Dataset.from_dict({k: v * 4 for k, v in ALPACA.items()})
    one = compute_indicators(ds, rule=TEXT_RULE, batch_size=5)
    two = compute_indicators(ds, rule=TEXT_RULE, batch_size=5, num_proc=2)
    assert two["instruct_score"][:] == one["instruct_score"][:]


def test_extra_columns_with_other_models_do_not_warn_about_the_rule(tiny_tokenizer_dir):

    rule = QualityRule(1.0, {"mtld": -0.01}, {"mtld": {}}, name="mtld-only")
    ds = Dataset.from_dict({"instruction": ["Say hi", "Count"], "output": ["Hello there", "one two three"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scored = compute_indicators(ds, ["output_length"], rule=rule, models={"output_length": tiny_tokenizer_dir})
    assert {"output_length", "mtld", "instruct_score"} <= set(scored.column_names)


def test_compute_indicators_warns_when_the_data_lies_outside_the_rules_range():
    ds = Dataset.from_dict(ALPACA)
    inside = dataclasses.replace(TEXT_RULE, domain={"output_length": (0.0, 1000.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = compute_indicators(ds, rule=inside)["instruct_score"]
    np.testing.assert_allclose(expected, TEXT_RULE.predict(compute_indicators(ds, rule=TEXT_RULE)))
    outside = dataclasses.replace(TEXT_RULE, domain={"output_length": (100.0, 1000.0)})
    message = r"mean of `output_length` [\d.]+ \(fitted 100 to 1000\) lies outside the range the rule `text-rule`"
    with pytest.warns(UserWarning, match=message):
        scored = compute_indicators(ds, rule=outside)
    # Every row is shorter than 100: clipped to the floor, output_length adds the same 0.1 to each.
    np.testing.assert_allclose(
        scored["instruct_score"], np.asarray(expected) + 0.1 - 0.001 * np.asarray(scored["output_length"])
    )


def test_a_scorer_says_what_it_takes():
    with pytest.raises(TypeError, match=r"^Expected one example \(a dict of column -> value.* got `str`"):
        InstructScorer(rule=TEXT_RULE)("hello")


def test_an_unbatched_scorer_names_an_empty_conversation_s_row_or_scores_it_nan():
    ds = Dataset.from_dict({"messages": [MESSAGES["messages"][0], []]})
    with pytest.raises(InvalidExampleError, match=r"^row 1: `messages` is not a non-empty list of messages"):
        ds.map(InstructScorer(rule=TEXT_RULE))
    scores = ds.map(InstructScorer(rule=TEXT_RULE, on_invalid="nan"))["instruct_score"][:]
    assert not math.isnan(scores[0]) and math.isnan(scores[1])


def test_mapping_a_scorer_offline_points_to_the_offline_rule_as_the_command_line_does():
    """The same one-line error as `compute_indicators` (and so `instructmining score`), not a tokenizer's OSError."""
    ds = Dataset.from_dict({key: values[:1] for key, values in ALPACA.items()})
    with pytest.raises(ValueError) as mapped:
        ds.map(InstructScorer())
    with pytest.raises(ValueError) as computed:
        compute_indicators(ds, rule="instructmining-llama2-7b")
    message = str(mapped.value)
    assert message == str(computed.value)
    assert "Cannot load `OpenAssistant/" in message and "['instructmining-smollm2-135m']" in message
