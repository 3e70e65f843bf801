import math

import pytest
from datasets import Dataset

from hf_instructmining.errors import InvalidExampleError, UnknownFormatError
from hf_instructmining.formats import detect_format, extract_pairs


ALPACA = {"instruction": "Translate to French.", "input": "good morning", "output": "Bonjour."}
PROMPT_COMPLETION = {"prompt": "Say hi.", "completion": "Hello there!"}
CONVERSATIONAL_PC = {
    "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
    "completion": [{"role": "assistant", "content": "Hi!"}],
}
CHAT = {
    "messages": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6."},
    ]
}


def _batch(rows):
    return {key: [row[key] for row in rows] for key in rows[0]}


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["instruction", "output"], "alpaca"),
        (["instruction", "input", "output", "extra"], "alpaca"),
        (["prompt", "completion"], "prompt_completion"),
        (["messages", "source"], "messages"),
    ],
)
def test_detect_format(columns, expected):
    assert detect_format(columns) == expected


def test_detect_format_errors_name_the_columns():
    with pytest.raises(UnknownFormatError, match=r"\['answer', 'question'\]"):
        detect_format(["question", "answer"])
    with pytest.raises(UnknownFormatError, match="several layouts"):
        detect_format(["instruction", "output", "messages"])


def test_column_mapping_overrides_detection():
    mapping = {"instruction": "question", "output": "answer"}
    assert detect_format(["question", "answer"], mapping) == "alpaca"
    pairs = extract_pairs({"question": "Why?", "answer": "Because."}, column_mapping=mapping)
    assert (pairs.instructions, pairs.responses) == (["Why?"], ["Because."])
    # A mapping disambiguates a dataset that fits several layouts.
    both = {"instruction": "a", "output": "b", "messages": [{"role": "assistant", "content": "c"}]}
    assert extract_pairs(both, column_mapping={"messages": "messages"}).responses == ["c"]
    with pytest.raises(ValueError, match="unknown role"):
        extract_pairs(ALPACA, column_mapping={"question": "instruction"})


def test_alpaca_joins_input():
    pairs = extract_pairs(ALPACA)
    assert pairs.instructions == ["Translate to French.\n\ngood morning"]
    assert pairs.prompts == [[{"role": "user", "content": "Translate to French.\n\ngood morning"}]]
    assert not pairs.batched
    assert extract_pairs({**ALPACA, "input": ""}).instructions == ["Translate to French."]
    assert extract_pairs({"instruction": "Hi", "output": "Hello"}).instructions == ["Hi"]


def test_prompt_completion_plain_and_conversational():
    assert extract_pairs(PROMPT_COMPLETION).responses == ["Hello there!"]
    pairs = extract_pairs(CONVERSATIONAL_PC)
    assert not pairs.batched
    assert pairs.responses == ["Hi!"]
    assert pairs.instructions == ["Be brief.\n\nSay hi."]
    assert [m["role"] for m in pairs.prompts[0]] == ["system", "user"]


def test_multi_turn_chat_uses_last_assistant_turn():
    pairs = extract_pairs(CHAT)
    assert pairs.responses == ["6."]
    assert pairs.instructions == ["What is 2+2?\n\n4.\n\nAnd 3+3?"]
    assert len(pairs.prompts[0]) == 3


@pytest.mark.parametrize("example", [ALPACA, PROMPT_COMPLETION, CONVERSATIONAL_PC, CHAT])
def test_batched_and_unbatched_agree(example):
    single = extract_pairs(example)
    batch = extract_pairs(_batch([example, example]))
    assert batch.batched and not single.batched
    assert batch.instructions == single.instructions * 2
    assert batch.responses == single.responses * 2


def test_empty_batch():
    pairs = extract_pairs({"messages": []})
    assert pairs.batched and len(pairs) == 0


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"instruction": "Hi", "output": ""}, "empty"),
        ({"instruction": "Hi", "output": "   \n"}, "empty"),
        ({"instruction": "Hi", "output": None}, "missing"),
        ({"instruction": "Hi", "output": 42}, "not text"),
        ({"instruction": None, "output": "Hello"}, "instruction is missing"),
        ({"messages": [{"role": "user", "content": "Hi"}]}, "no assistant turn"),
        ({"messages": "Hi"}, "not a non-empty list"),
        ({"messages": [{"role": "assistant"}]}, "role, content"),
        ({"messages": [{"role": "assistant", "content": ["x"]}]}, "not text"),
        (
            {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "user", "content": "x"}]},
            "no assistant",
        ),
    ],
)
def test_invalid_rows_raise_with_row_and_columns(bad, reason):
    with pytest.raises(InvalidExampleError, match=reason) as info:
        extract_pairs(bad, indices=17)
    assert info.value.row == 17
    assert "row 17" in str(info.value)
    assert info.value.columns == list(bad)


def test_invalid_rows_become_nan_rows_and_are_counted(caplog):
    batch = _batch([ALPACA, {**ALPACA, "output": ""}, ALPACA])
    pairs = extract_pairs(batch, on_invalid="nan")
    assert pairs.valid == [True, False, True]
    assert pairs.num_invalid == 1
    assert "1 of 3 examples are invalid" in caplog.text
    assert pairs.select_valid().responses == ["Bonjour.", "Bonjour."]


def test_batch_error_names_position_in_batch():
    with pytest.raises(InvalidExampleError, match="example 1 of this batch"):
        extract_pairs(_batch([ALPACA, {**ALPACA, "output": ""}]))


def test_forced_format_and_bad_arguments():
    with pytest.raises(UnknownFormatError, match="needs the column"):
        extract_pairs(ALPACA, format="messages")
    with pytest.raises(ValueError, match="Unknown format"):
        extract_pairs(ALPACA, format="sharegpt")
    with pytest.raises(ValueError, match="on_invalid"):
        extract_pairs(ALPACA, on_invalid="drop")
    with pytest.raises(TypeError, match="column_mapping"):
        extract_pairs(ALPACA, column_mapping=["instruction"])


def test_works_on_real_dataset_rows():
    ds = Dataset.from_list([CHAT, CHAT])
    pairs = extract_pairs(ds[:2])
    assert pairs.responses == ["6.", "6."]
    assert extract_pairs(ds[0]).responses == ["6."]


def test_an_empty_conversation_in_unbatched_map_names_its_row_or_scores_nan():
    from hf_instructmining.indicators import OutputLength

    ds = Dataset.from_dict({"messages": [CHAT["messages"], [], CHAT["messages"]]})
    with pytest.raises(InvalidExampleError, match=r"^row 1: `messages` is not a non-empty list of messages; "):
        ds.map(OutputLength())
    for batched in (False, True):
        lengths = ds.map(OutputLength(on_invalid="nan"), batched=batched)["output_length"][:]
        assert lengths[0] == lengths[2] == 1.0 and math.isnan(lengths[1])


def test_a_list_typed_response_of_one_example_is_said_to_be_not_text():
    example = {"instruction": "Name two colours.", "output": ["red", "blue"]}
    with pytest.raises(InvalidExampleError, match=r"^row 3: the response \(`output`\) is not text \(got `list`\)"):
        extract_pairs(example, indices=3)
    with pytest.raises(InvalidExampleError, match=r"the response \(`output`\) is not text \(got `list`\)"):
        extract_pairs(example)  # called directly: a list in only one column is no batch either
    assert extract_pairs(example, on_invalid="nan", indices=3).valid == [False]


def test_sharegpt_turns_and_roles_get_a_hint():
    roles = [{"role": "human", "content": "Hi"}, {"role": "gpt", "content": "Hello!"}]
    with pytest.raises(InvalidExampleError, match=r"roles seen: \['human', 'gpt'\].*`gpt` -> `assistant`"):
        extract_pairs({"messages": roles})
    turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]
    with pytest.raises(InvalidExampleError, match=r"ShareGPT turns \(`from`/`value`\).*`from` to `role`"):
        extract_pairs({"messages": turns})


@pytest.mark.parametrize("examples", ["hello", ["hello"], None])
def test_what_is_neither_an_example_nor_a_batch_is_a_type_error(examples):
    with pytest.raises(TypeError, match=r"Expected one example \(a dict of column -> value.*got `"):
        extract_pairs(examples)
