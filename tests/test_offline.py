import pytest
import torch

from hf_instructmining.offline import minilm_path, smollm2_gguf, smollm2_path


pytestmark = pytest.mark.slow


def test_minilm_folder_loads_offline():
    from transformers import AutoModel

    model = AutoModel.from_pretrained(minilm_path())
    assert model.config.hidden_size == 384


def test_smollm2_conversion_matches_the_gguf_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_path(tmp_path)
    assert smollm2_path(tmp_path) == folder  # converted once, reused after
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template
    assert "quantization_config" not in AutoModelForCausalLM.from_pretrained(folder).config.to_dict()
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    gguf_folder, gguf_file = smollm2_gguf()
    with torch.inference_mode():
        converted = AutoModelForCausalLM.from_pretrained(folder)(ids).logits
        original = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=gguf_file)(ids).logits
    torch.testing.assert_close(converted, original)


def test_the_smollm2_copy_says_what_its_weights_are_not_what_they_run_in():
    # The card shows the copy's note beside the `dtype` the indicator ran in (bfloat16 on CPUs with native bf16):
    # the note must not name another one.
    from hf_instructmining.offline import OFFLINE_COPIES

    note = OFFLINE_COPIES["HuggingFaceTB/SmolLM2-135M-Instruct"].description
    assert "dequantised" in note and "float32" not in note and "`dtype`" in note
