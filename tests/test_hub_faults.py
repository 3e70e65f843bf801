"""A flaky or hung Hub never costs a card its hand-written parts, never waits forever, and always says how to resume."""

import os
import re
import shlex
import subprocess
import sys
import time

import pytest
from huggingface_hub import HfApi

from hf_instructmining import PushConfig, push_to_hub, save_scored, select_top_k
from hf_instructmining.errors import HubUploadError
from tests.test_cards import make_rule, make_scored
from tests.test_hub import REPO, all_files


CARD = "/resolve/main/README.md"


def _publish_with_notes(fake_hub):
    """A repo whose card has hand-written notes and a YAML key of its own, as a user leaves it after editing."""
    scored = make_scored()
    push_to_hub(scored, REPO, make_rule(), select_top_k(scored, 10))
    card = fake_hub.files(REPO)["README.md"].decode()
    card = card.replace("---\n", "---\nlanguage:\n- en\n", 1).replace("[More Information Needed]", "Our notes.")
    HfApi().upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=REPO, repo_type="dataset")
    return fake_hub.files(REPO)["README.md"]


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        (lambda hub: [hub.fail(method, CARD, status=500, times=50) for method in ("HEAD", "GET")], {}),
        (lambda hub: [hub.fail(method, CARD, status=503, times=50) for method in ("HEAD", "GET")], {}),
        (
            lambda hub: [hub.hang(method, CARD, seconds=30, times=50) for method in ("HEAD", "GET")],
            {"timeout_s": 2, "max_retries": 1},
        ),
    ],
    ids=["500", "503", "hang"],
)
def test_a_failed_card_read_stops_the_push_and_keeps_the_hand_written_card(fake_hub, tmp_path, fault, options):
    card = _publish_with_notes(fake_hub)
    commits = fake_hub.commit_titles(REPO)
    local = str(tmp_path / "folder")
    fault(fake_hub)

    with pytest.raises(HubUploadError, match="resume with") as caught:
        push_to_hub(make_scored(n=12), REPO, config=PushConfig(local_dir=local, **options))

    assert "\n" not in str(caught.value) and local in str(caught.value)
    assert fake_hub.commit_titles(REPO) == commits and fake_hub.files(REPO)["README.md"] == card
    fake_hub.failures.clear()
    push_to_hub(local, REPO)  # what the message says to do, once the Hub answers again
    text = fake_hub.files(REPO)["README.md"].decode()
    assert "Our notes." in text and "- en" in text and "n<1K" in text


def test_only_a_404_means_the_repo_has_no_card(fake_hub, tmp_path):
    """A card read that fails once and then answers is retried: the notes survive and the push goes through."""
    _publish_with_notes(fake_hub)
    fake_hub.fail("GET", CARD, status=502)
    fake_hub.fail("HEAD", CARD, status=502)

    push_to_hub(make_scored(n=12), REPO, config=PushConfig(max_retries=1))

    assert "Our notes." in fake_hub.files(REPO)["README.md"].decode()
    assert len(fake_hub.files(REPO)["scored/train-00000-of-00001.parquet"]) > 0


@pytest.mark.parametrize("max_retries", [0, 1])
def test_a_hung_commit_fails_within_the_timeout_with_the_resume_command(fake_hub, tmp_path, max_retries):
    scored = make_scored()
    folder = save_scored(scored, tmp_path / "folder", make_rule(), select_top_k(scored, 10))
    before = all_files(folder)
    fake_hub.hang("POST", "/commit/", seconds=120, times=10)
    timeout_s = 2.0

    start = time.monotonic()
    with pytest.raises(HubUploadError, match="resume with") as caught:
        push_to_hub(folder, REPO, config=PushConfig(timeout_s=timeout_s, max_retries=max_retries))
    elapsed = time.monotonic() - start

    commits = [r for r in fake_hub.requests if r["method"] == "POST" and "/commit/" in r["path"]]
    assert len(commits) == 1 + max_retries
    waits = sum(min(2**attempt, 8) for attempt in range(max_retries))  # the backoff between attempts
    assert elapsed < (1 + max_retries) * timeout_s + waits + 3.0, elapsed
    message = str(caught.value)
    assert f"{timeout_s:g} s" in message and "timeout_s" in message and folder in message
    assert all_files(folder) == before
    assert fake_hub.commit_titles(REPO) == ["initial commit"]

    fake_hub.failures.clear()
    shell = re.search(r'from a shell: `(python -c "[^"]+")`', message).group(1)  # what the message says to run
    env = {**os.environ, **fake_hub.env, "HF_HUB_OFFLINE": "0"}
    subprocess.run([sys.executable, *shlex.split(shell)[1:]], env=env, check=True, capture_output=True)
    assert fake_hub.files(REPO)["README.md"] == all_files(folder)["README.md"]


def test_timeout_and_retries_are_push_flags():
    from hf_instructmining.cli.push import make_parser

    parser = make_parser()
    args = parser.parse_args_and_config(
        ["--dataset", "x.parquet", "--repo_id", "me/x", "--timeout_s", "5", "--max_retries", "0"]
    )
    config = next(a for a in args if isinstance(a, PushConfig))
    assert (config.timeout_s, config.max_retries) == (5.0, 0)
    with pytest.raises(ValueError, match="timeout_s"):
        PushConfig(timeout_s=0)
    with pytest.raises(ValueError, match="max_retries"):
        PushConfig(max_retries=-1)
