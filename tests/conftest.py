"""Test-wide settings: never touch the network, keep caches in tmp, no progress bars, CPU only."""

import pytest


pytest_plugins = ["tests.fixtures.models", "tests.fixtures.hub"]


@pytest.fixture(autouse=True)
def _offline_and_isolated(monkeypatch, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "hf_cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("WANDB_DISABLED", "true")
    # The same dtypes on every machine: `dtype="auto"` stays float32 on CPUs with native bf16 too, so that values
    # compare exactly across machines (tests/test_precision.py simulates both answers of the detection).
    monkeypatch.setenv("INSTRUCTMINING_CPU_BF16", "0")
    # huggingface_hub and datasets read these at import time, before this fixture runs: patch the constants too,
    # so that no test can reach the network (the `fake_hub` fixture turns them back off for its loopback server).
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
