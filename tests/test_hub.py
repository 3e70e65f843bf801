"""Publishing against a loopback fake Hub: the real `huggingface_hub` and `datasets` clients push and read back."""

import json
import logging
import os
import subprocess
import sys

import datasets
import pytest
from huggingface_hub import DatasetCard, HfApi, ModelCard

from hf_instructmining import PushConfig, QualityRule, push_to_hub, select_top_k
from hf_instructmining.errors import HubUploadError
from hf_instructmining.hub import push_rule_to_hub
from hf_instructmining.offline import example_data_path
from hf_instructmining.scoring import InstructScorer
from tests.test_cards import FULL_LAYOUT, make_rule, make_scored, make_search


REPO = "me/scored"
FAKE_TOKEN = "hf_fakeSECRETtoken0123456789abcdef"
EXAMPLES = example_data_path()


def load_config(repo_id, name, tmp_path, revision=None):
    return datasets.load_dataset(repo_id, name, split="train", revision=revision, cache_dir=str(tmp_path / "read"))


def all_files(folder):
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(folder)
        for name in names
    }


def test_push_then_read_back_card_parquet_and_rule(fake_hub, tmp_path):
    rule, scored = make_rule(), make_scored()
    selection = select_top_k(scored, 10)

    info = push_to_hub(scored, REPO, rule, selection, make_search(), config=PushConfig(license="mit"))

    assert info.oid == fake_hub.repo(REPO).refs["main"]
    assert sorted(HfApi().list_repo_files(REPO, repo_type="dataset")) == [".gitattributes", *FULL_LAYOUT]
    card = DatasetCard.load(REPO)
    assert card.data.license == "mit"
    assert card.data.instructmining["selection"]["size"] == 10
    assert card.data.instructmining["rule"]["coefficients"] == rule.coefficients
    assert f'load_dataset("{REPO}", "selected", split="train")' in card.text
    assert DatasetCard(str(card)).data.to_dict() == card.data.to_dict()

    assert load_config(REPO, "selected", tmp_path).to_list() == selection.to_list()
    scored_back = load_config(REPO, "scored", tmp_path)
    assert scored_back["row_index"] == list(range(len(scored)))
    assert QualityRule.from_pretrained(REPO, repo_type="dataset") == rule


def test_pushing_the_same_data_twice_makes_no_second_commit(fake_hub, tmp_path):
    scored = make_scored()
    local = str(tmp_path / "folder")
    push_to_hub(scored, REPO, make_rule(), select_top_k(scored, 10), config=PushConfig(local_dir=local))
    commits = fake_hub.commit_titles(REPO)

    push_to_hub(scored, REPO, make_rule(), select_top_k(scored, 10))
    push_to_hub(local, REPO)

    assert fake_hub.commit_titles(REPO) == commits


def test_repush_keeps_hand_written_parts_and_drops_stale_files(fake_hub, tmp_path):
    scored = make_scored()
    push_to_hub(scored, REPO, make_rule(), select_top_k(scored, 10), make_search())
    card = fake_hub.files(REPO)["README.md"].decode()
    card = card.replace("---\n", "---\nlanguage:\n- en\n", 1).replace("[More Information Needed]", "Our notes.")
    HfApi().upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=REPO, repo_type="dataset")

    push_to_hub(scored, REPO, make_rule(), select_top_k(scored, 5))  # no search this time

    card = DatasetCard.load(REPO)
    assert "Our notes." in card.text and card.data.language == ["en"]
    assert card.data.instructmining["selection"]["size"] == 5
    assert "images/search_curve.png" not in fake_hub.files(REPO)
    assert len(load_config(REPO, "selected", tmp_path)) == 5


@pytest.mark.parametrize(("method", "path"), [("PUT", "/__lfs/"), ("POST", "/commit/"), ("POST", "/preupload/")])
def test_a_failed_upload_loses_nothing_and_can_be_resumed(fake_hub, tmp_path, method, path):
    scored = make_scored()
    selection = select_top_k(scored, 10)
    local = str(tmp_path / "folder")
    fake_hub.fail(method, path)

    with pytest.raises(HubUploadError, match="resume") as caught:
        push_to_hub(scored, REPO, make_rule(), selection, config=PushConfig(local_dir=local))

    assert caught.value.folder == local and local in str(caught.value)
    assert fake_hub.commit_titles(REPO) == ["initial commit"]
    assert {"README.md", "instructmining_rule.json", "scored/train-00000-of-00001.parquet"} <= set(all_files(local))
    assert "selected/train-00000-of-00001.parquet" in all_files(local)

    push_to_hub(local, REPO)  # what the error message says to do

    assert load_config(REPO, "selected", tmp_path).to_list() == selection.to_list()
    assert fake_hub.files(REPO)["README.md"] == all_files(local)["README.md"]


def test_tokens_are_used_but_never_written_or_logged(fake_hub, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    local = str(tmp_path / "folder")
    scored = make_scored()
    push_to_hub(
        scored, REPO, make_rule(), select_top_k(scored, 10), config=PushConfig(local_dir=local), token=FAKE_TOKEN
    )
    push_rule_to_hub(make_rule(), "me/rule", token=FAKE_TOKEN)
    fake_hub.fail("POST", "/commit/")
    with pytest.raises(HubUploadError) as caught:
        push_to_hub(make_scored(n=12), REPO, config=PushConfig(local_dir=local), token=FAKE_TOKEN)

    assert any(r["headers"].get("authorization") == f"Bearer {FAKE_TOKEN}" for r in fake_hub.requests)
    written = [*all_files(local).values(), *fake_hub.files(REPO).values()]
    written += fake_hub.files("me/rule", "model").values()
    assert not any(FAKE_TOKEN.encode() in content for content in written)
    assert FAKE_TOKEN not in caplog.text and FAKE_TOKEN not in str(caught.value)


def _reachable(err: BaseException) -> str:
    """Everything an exception exposes: messages, arguments, HTTP requests and the variables of traceback frames,
    along its whole chain of causes and contexts."""
    seen, parts, pending = set(), [], [err]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current.args)]
        for holder in (current, getattr(current, "response", None)):
            try:
                request = getattr(holder, "request", None)
            except RuntimeError:  # an httpx response without its request
                continue
            parts.append(repr(dict(getattr(request, "headers", {}) or {})))
        if current is not err:  # the raised error's own frames include the caller's, which passed the token
            tb = current.__traceback__
            while tb is not None:
                parts += [repr(value) for value in tb.tb_frame.f_locals.values()]
                tb = tb.tb_next
        pending += [current.__cause__, current.__context__]
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("status", "token", "advice"),
    [
        (401, FAKE_TOKEN, "did not accept the token .*https://huggingface.co/settings/tokens"),
        (401, False, "No Hub token was found .*hf auth login"),
        (403, FAKE_TOKEN, "may not write to `me/scored` .*`write` role"),
    ],
)
def test_401_and_403_say_what_is_wrong_with_the_token(fake_hub, tmp_path, status, token, advice):
    fake_hub.fail("POST", "/commit/", status=status)
    local = str(tmp_path / "folder")
    with pytest.raises(HubUploadError, match=advice) as caught:
        push_to_hub(make_scored(), REPO, config=PushConfig(local_dir=local), token=token)
    assert "resume with" in str(caught.value)  # the folder is complete: once the token is fixed, push it
    assert caught.value.__cause__.response.status_code == status
    assert FAKE_TOKEN not in _reachable(caught.value)
    assert caught.value.__cause__.response.request.headers.get("authorization") != f"Bearer {FAKE_TOKEN}"


def test_hub_errors_on_reading_a_rule_hold_no_token(fake_hub):
    fake_hub.fail("GET", "/resolve/", status=500, times=20)
    with pytest.raises(Exception) as caught:  # noqa: PT011 (whatever huggingface_hub raises, re-raised)
        QualityRule.from_pretrained("me/rule", repo_type="model", token=FAKE_TOKEN)
    assert any(r["headers"].get("authorization") == f"Bearer {FAKE_TOKEN}" for r in fake_hub.requests)
    assert FAKE_TOKEN not in _reachable(caught.value)


def test_private_repos_stay_private_unless_told(fake_hub):
    scored = make_scored()
    push_to_hub(scored, REPO, private=True)
    assert fake_hub.repo(REPO).private

    push_to_hub(make_scored(n=20), REPO)
    assert fake_hub.repo(REPO).private

    push_to_hub(make_scored(n=30), REPO, private=False)
    assert not fake_hub.repo(REPO).private


def test_push_to_a_branch_and_as_a_pull_request(fake_hub, tmp_path):
    scored = make_scored()
    push_to_hub(scored, REPO)
    main = fake_hub.files(REPO)

    push_to_hub(scored, REPO, selection=select_top_k(scored, 7), revision="v2")
    info = push_to_hub(scored, REPO, selection=select_top_k(scored, 3), create_pr=True)

    assert fake_hub.files(REPO) == main
    assert len(load_config(REPO, "selected", tmp_path, revision="v2")) == 7
    assert info.pr_url is not None
    assert len(load_config(REPO, "selected", tmp_path, revision="refs/pr/1")) == 3


def test_license_is_carried_over_from_the_source_dataset(fake_hub):
    api = HfApi()
    api.create_repo("someone/source", repo_type="dataset")
    readme = b"---\nlicense: cc-by-nc-4.0\n---\n# Source\n"
    api.upload_file(path_or_fileobj=readme, path_in_repo="README.md", repo_id="someone/source", repo_type="dataset")

    push_to_hub(make_scored(), REPO, config=PushConfig(source_dataset="someone/source"))

    card = DatasetCard.load(REPO)
    assert card.data.license == "cc-by-nc-4.0" and card.data.source_datasets == ["someone/source"]


def test_rule_pushed_and_pulled_back_predicts_the_same(fake_hub):
    rule, scored = make_rule(), make_scored()

    rule.push_to_hub("me/rule", private=True)
    pulled = QualityRule.from_pretrained("me/rule")

    assert pulled == rule
    assert pulled.predict(scored).tolist() == rule.predict(scored).tolist()
    assert fake_hub.repo("me/rule", "model").private
    card = ModelCard.load("me/rule")
    assert card.data.instructmining["rule"]["name"] == "toy-rule" and "quality-rule" in card.data.tags
    commits = fake_hub.commit_titles("me/rule", "model")
    push_rule_to_hub(rule, "me/rule")
    assert fake_hub.commit_titles("me/rule", "model") == commits


def test_example_data_scored_selected_pushed_and_loaded_in_a_fresh_process(fake_hub, tmp_path):
    rule = QualityRule(0.8, {"mtld": -0.003, "output_length": 0.0005}, {"mtld": {}, "output_length": {}}, name="demo")
    ds = datasets.load_dataset("json", data_files=EXAMPLES, split="train", cache_dir=str(tmp_path / "examples"))
    scored = ds.map(InstructScorer(rule=rule), batched=True)
    selection = select_top_k(scored, 50)

    push_to_hub(scored, "me/examples", rule, selection)

    # A fresh interpreter configured only through the environment, as a user would be.
    script = (
        "import datasets, json, sys\n"
        "from huggingface_hub import DatasetCard\n"
        "ds = datasets.load_dataset('me/examples', 'selected', split='train', cache_dir=sys.argv[1])\n"
        "card = DatasetCard.load('me/examples', repo_type='dataset')\n"
        "print(json.dumps({'rows': ds.to_list(), 'size': card.data.instructmining['selection']['size']}))\n"
    )
    env = {**os.environ, **fake_hub.env, "HF_HUB_OFFLINE": "0", "HF_DATASETS_CACHE": str(tmp_path / "child")}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "child")], env=env, capture_output=True, text=True, check=True
    )
    read = json.loads(result.stdout.strip().splitlines()[-1])
    assert read["size"] == 50
    assert read["rows"] == selection.to_list()
    assert QualityRule.from_pretrained("me/examples", repo_type="dataset").predict(read["rows"][0]).tolist() == [
        read["rows"][0]["instruct_score"]
    ]


def test_the_fake_hub_checks_card_metadata_like_the_hub(fake_hub):
    HfApi().create_repo(REPO, repo_type="dataset")
    bad = b"---\nsize_categories:\n- lots\n---\n# Bad\n"
    with pytest.raises(ValueError, match="size_categories"):
        HfApi().upload_file(path_or_fileobj=bad, path_in_repo="README.md", repo_id=REPO, repo_type="dataset")
