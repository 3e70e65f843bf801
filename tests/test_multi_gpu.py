"""Several GPUs on one machine: score_on_gpus (and score_with_ray on GPUs) equal the single-process CPU scores.

The GPU test runs its scenario in a fresh interpreter: checking for CUDA with `torch.cuda.is_available()` in the
pytest process would initialise CUDA there, and forked `Dataset.map` workers could then no longer use it.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from hf_instructmining.loading import cuda_device_count


ROOT = Path(__file__).resolve().parents[1]

# Compares the single-process CPU scores with score_on_gpus (and score_with_ray, one GPU per actor), all float32.
_SCENARIO = """
import json, sys
import numpy as np
from datasets import Dataset
from hf_instructmining import KNNDistance, OutputLength, RewardScore, compute_indicators, score_on_gpus
from hf_instructmining.import_utils import is_ray_available

models = json.loads(sys.argv[1])
n = 96
ds = Dataset.from_dict({
    "instruction": [f"Question number {i} about the {['sea', 'sky', 'hills'][i % 3]}" for i in range(n)],
    "output": [" ".join(["wave", "wind", "salt"][: 1 + i % 3] * (1 + i % 5)) + f" number {i}" for i in range(n)],
})

def indicators(device):
    return [
        RewardScore(model=models["reward"], dtype="float32", device=device),
        OutputLength(tokenizer=models["output_length"]),
        KNNDistance(k=6, model=models["knn"], dtype="float32", device=device),
    ]

columns = ["reward", "output_length", "knn_6"]
expected = compute_indicators(ds, columns, models=models, device="cpu")
got = {"gpus": score_on_gpus(ds, indicators(None), batch_size=16)}
import torch
parent_cuda = torch.cuda.is_initialized()
if is_ray_available():
    import ray
    from hf_instructmining import score_with_ray
    ray.init(num_gpus=torch.cuda.device_count(), include_dashboard=False, log_to_driver=False)
    got["ray"] = score_with_ray(ds, indicators(None), num_gpus=1, batch_size=16)
for name, scored in got.items():
    for column in columns:
        np.testing.assert_allclose(scored[column][:], expected[column][:], rtol=1e-4, atol=1e-4, err_msg=name + column)
print(json.dumps({"paths": sorted(got), "parent_cuda": parent_cuda, "gpus": torch.cuda.device_count()}))
"""


@pytest.mark.gpu
# NVML counts GPUs without initialising CUDA in this process (see the module docstring).
@pytest.mark.skipif(cuda_device_count() == 0, reason="needs CUDA")
def test_every_gpu_path_gives_the_single_process_scores(tiny_oa_reward_dir, tiny_tokenizer_dir, tiny_bert_dir):
    models = {"reward": tiny_oa_reward_dir, "output_length": tiny_tokenizer_dir, "knn": tiny_bert_dir}
    result = subprocess.run(
        [sys.executable, "-c", _SCENARIO, json.dumps(models)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "gpus" in report["paths"]
    if report["gpus"] > 1:  # with several GPUs all CUDA work ran in worker processes
        assert report["parent_cuda"] is False


@pytest.mark.skipif(cuda_device_count() > 0, reason="checks the message shown without CUDA")
def test_without_a_gpu_the_multi_gpu_path_says_what_to_use():
    from hf_instructmining import score_on_gpus

    with pytest.raises(ValueError, match="compute_indicators"):
        score_on_gpus(Dataset.from_dict({"instruction": ["a"], "output": ["b"]}), ["mtld"])
