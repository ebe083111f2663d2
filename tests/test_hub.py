"""Model card rendering and the Hub upload path (modeling_mckd/hub.py).

The upload tests run the real ``huggingface_hub`` client in a subprocess whose ``HF_ENDPOINT``
points at a loopback stand-in of the Hub API (tests/hub_server.py). A subprocess is needed
because ``huggingface_hub.constants`` reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, constants
from huggingface_hub.repocard_data import model_index_to_eval_results

from modeling_mckd import hub
from modeling_mckd.hub import (
    HubAuthError,
    HubPushError,
    build_eval_results,
    card_dataset,
    push_folder_to_hub,
    render_model_card,
    write_model_card,
)

_spec = importlib.util.spec_from_file_location("mckd_hub_server", Path(__file__).with_name("hub_server.py"))
hub_server = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = hub_server  # dataclasses look their module up while the file runs
_spec.loader.exec_module(hub_server)

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "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0123456789"

VALIDATION = {
    "t2v_R@1": 12.5, "t2v_R@5": 37.25, "t2v_R@10": 50.0, "t2v_MdR": 10.0, "t2v_MnR": 31.75,
    "v2t_R@1": 13.0, "v2t_R@5": 36.0, "v2t_R@10": 52.5, "v2t_MdR": 9.0, "v2t_MnR": 28.5,
    "rsum": 201.25,
}
TEST = {
    "t2v_R@1": 11.0, "t2v_R@5": 33.0, "t2v_R@10": 47.5, "t2v_MdR": 12.0, "t2v_MnR": 35.0,
    "v2t_R@1": 10.5, "v2t_R@5": 34.5, "v2t_R@10": 49.0, "v2t_MdR": 11.0, "v2t_MnR": 33.25,
    "rsum": 185.5,
}
RESULTS = {"validation": VALIDATION, "test": TEST}
STUDENT_CONFIG = {
    "RunArguments": {"output_dir": "outputs/student", "learning_rate": 0.001, "seed": 7, "hub_token": SECRET},
    "DistillArguments": {"teacher": "outputs/teacher", "kd_weight": 0.35, "disc_weight": 0.125,
                         "kd_mode": "pearson", "kd_temperature": 0.07, "ranking_margin": 0.2},
}


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    header, _, _ = text[4:].partition("\n---\n")
    return yaml.safe_load(header)


def student_card(**overrides) -> ModelCard:
    kwargs = dict(
        role="student", model_name="mckd-student-tiny", results=RESULTS, training_config=STUDENT_CONFIG,
        teacher="someone/mckd-teacher", teacher_results={"test": VALIDATION}, repo_id="someone/mckd-student-tiny",
    )
    kwargs.update(overrides)
    return render_model_card(**kwargs)


# -- eval results and model-index --------------------------------------------------------------


def test_build_eval_results_one_entry_per_split_direction_metric():
    results = build_eval_results(RESULTS, dataset_name="MSR-VTT 1k-A", dataset_type="msrvtt")
    assert len(results) == 2 * (2 * 5 + 1)
    by_key = {(r.dataset_split, r.metric_type): r for r in results}
    assert by_key[("validation", "t2v_R@1")].metric_value == 12.5
    assert by_key[("validation", "t2v_R@1")].metric_name == "t2v R@1"
    assert by_key[("test", "v2t_MnR")].metric_value == 33.25
    assert by_key[("test", "rsum")].metric_value == 185.5
    assert {r.dataset_name for r in results} == {"MSR-VTT 1k-A"}
    assert {r.task_type for r in results} == {hub.TASK_TYPE}
    # Order within a split: t2v then v2t, R@K by K, then MdR, MnR; rsum last.
    test_order = [r.metric_type for r in results if r.dataset_split == "test"]
    assert test_order == ["t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MdR", "t2v_MnR",
                          "v2t_R@1", "v2t_R@5", "v2t_R@10", "v2t_MdR", "v2t_MnR", "rsum"]


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"test": {"t2v_R@1": 1.0, "accuracy": 0.5}}, "unknown metric 'accuracy'"),
        ({"test": {"t2v_R@1": float("nan")}}, "finite"),
        ({"test": {"t2v_R@1": "12"}}, "expected a number"),
        ({"test": [1.0, 2.0]}, "expected a mapping"),
    ],
)
def test_build_eval_results_rejects_bad_input_naming_the_field(results, message):
    with pytest.raises(ValueError, match=message) as error:
        build_eval_results(results, dataset_name="x", dataset_type="x")
    assert "test" in str(error.value)


def test_student_card_front_matter_has_model_index_equal_to_inputs():
    card = student_card()
    metadata = front_matter(str(card))
    assert metadata["library_name"] == "transformers"
    assert {"video-text-retrieval", "mckd", "student", "knowledge-distillation"} <= set(metadata["tags"])
    (entry,) = metadata["model-index"]
    assert entry["name"] == "mckd-student-tiny"
    assert [r["dataset"]["split"] for r in entry["results"]] == ["validation", "test"]
    for result in entry["results"]:
        expected = RESULTS[result["dataset"]["split"]]
        assert {m["type"]: m["value"] for m in result["metrics"]} == expected
        assert result["task"]["type"] == hub.TASK_TYPE
    # huggingface_hub parses it back into the same flat results.
    name, parsed = model_index_to_eval_results(metadata["model-index"])
    assert name == "mckd-student-tiny"
    assert len(parsed) == 22
    assert ModelCard(str(card)).data.eval_results[0].metric_value == 12.5
    assert card.data.model_name == "mckd-student-tiny"


def test_student_card_names_teacher_states_loss_weights_and_redacts_secrets():
    text = student_card().text
    assert "someone/mckd-teacher" in text
    assert r"\lambda_{\text{kd}} = 0.35" in text and r"\lambda_{\text{disc}} = 0.125" in text
    assert "λ_kd = 0.35, λ_disc = 0.125" in text
    assert "mode `pearson`, temperature τ_kd = 0.07" in text
    assert "margin 0.2" in text
    assert "- `pearson`: one minus the Pearson correlation" in text and "- `kl`:" not in text
    # The full configuration is there as YAML, with the token redacted.
    config_block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = yaml.safe_load(config_block)
    assert config["DistillArguments"] == STUDENT_CONFIG["DistillArguments"]
    assert config["RunArguments"]["hub_token"] == "<redacted>"
    assert SECRET not in str(student_card())
    # Teacher results appear in the body (the teacher's val R@1 12.50 is in its own table) but not in model-index.
    assert "The teacher `someone/mckd-teacher` on the same data" in text
    assert len(front_matter(str(student_card()))["model-index"][0]["results"]) == 2


def test_results_table_rows_match_inputs():
    text = student_card(teacher_results=None).text
    assert "| test | text → video | 11.00 | 33.00 | 47.50 | 12.00 | 35.00 |" in text
    assert "| validation | video → text | 13.00 | 36.00 | 52.50 | 9.00 | 28.50 |" in text
    assert "validation **201.25**, test **185.50**" in text
    assert "The teacher" not in text


def test_teacher_card_synthetic_and_ablation_wording():
    card = render_model_card(
        role="teacher", model_name="mckd-teacher", results={"test": TEST}, training_config={"seed": 1},
        loss_description={"modality_pairs": ["video-text", "audio-text", "video-audio"], "temperature": 0.05},
    )
    text = card.text
    assert "**teacher**" in text and "Teacher:" not in text
    assert "this run used: video-text, audio-text, video-audio" in text
    assert "(τ = 0.05)" in text
    assert "synthetic benchmark" in text and "synthetic-data" in card.data.tags
    assert "IEEE Transactions on Circuits and Systems for Video Technology" in text
    assert "2023" in text
    assert len(front_matter(str(card))["model-index"][0]["results"][0]["metrics"]) == 11

    empty = render_model_card(role="teacher", model_name="untested", results={}, training_config={})
    assert "model-index" not in front_matter(str(empty))
    assert "No evaluation results were recorded" in empty.text

    baseline = student_card(training_config={"kd_weight": 0, "disc_weight": 0.0, "kd_mode": "kl", "kd_temperature": 0.05},
                            dataset_name="MSR-VTT", dataset_type="someone/msrvtt")
    assert "ranking-only baseline" in baseline.text
    combined = student_card(training_config={**STUDENT_CONFIG["DistillArguments"], "kd_mode": "kl+relation"}).text
    assert "mode `kl+relation`" in combined and "- `kl`: cross-modal" in combined and "- `relation`:" in combined
    assert "synthetic benchmark" not in baseline.text
    assert baseline.data.datasets == ["someone/msrvtt"]
    assert "Per part" not in combined and "Towers from the teacher" not in combined

    parts = student_card(training_config={**STUDENT_CONFIG["DistillArguments"], "kd_parts": True,
                                          "init_from_teacher": "text,audio", "freeze_from_teacher": False}).text
    assert "**Per part** (`kd_parts`)" in parts
    assert "the student's text,audio tower(s) started as copies of the teacher's and were trained" in parts
    frozen = student_card(training_config={**STUDENT_CONFIG["DistillArguments"], "init_from_teacher": "text",
                                           "freeze_from_teacher": True}).text
    assert "text tower(s) started as copies of the teacher's and stayed frozen" in frozen
    assert "Dataset-level structure" not in parts  # kd_anchor_weight absent
    anchored = student_card(training_config={**STUDENT_CONFIG["DistillArguments"], "kd_parts": True,
                                             "kd_anchor_weight": 0.5}).text
    assert "**Dataset-level structure** (`kd_anchor_weight` = 0.5)" in anchored and "(and each part)" in anchored
    unanchored = student_card(training_config={**STUDENT_CONFIG["DistillArguments"], "kd_anchor_weight": 0.0}).text
    assert "Dataset-level structure" not in unanchored


def test_card_names_the_dataset_never_by_a_path_of_this_disk(tmp_path):
    folder = tmp_path / "data" / "msrvtt"
    folder.mkdir(parents=True)
    assert card_dataset(str(folder)) == {"dataset_name": "msrvtt", "dataset_type": "local", "datasets": None}
    assert card_dataset(str(folder) + "/") == card_dataset(str(folder))
    assert card_dataset(None) == {"dataset_name": "mckd-synthetic", "dataset_type": "synthetic", "datasets": None}
    # not a folder here: load_dataset took it from the Hub, so it is a Hub id, linked in `datasets`
    for hub_id in ("someone/msrvtt", "msr_vtt"):
        fields = card_dataset(hub_id)
        assert fields == {"dataset_name": hub_id, "dataset_type": hub_id, "datasets": [hub_id]}
        card = render_model_card(role="teacher", model_name="t", results=RESULTS, training_config={}, **fields)
        header = front_matter(str(card))
        assert header["datasets"] == [hub_id]
        assert {r["dataset"]["type"] for r in header["model-index"][0]["results"]} == {hub_id}
    local = render_model_card(role="teacher", model_name="t", results=RESULTS, training_config={},
                              **card_dataset(str(folder)))
    header = front_matter(str(local))
    assert "datasets" not in header and str(tmp_path) not in str(local)
    assert {(r["dataset"]["name"], r["dataset"]["type"]) for r in header["model-index"][0]["results"]} == {
        ("msrvtt", "local")}


def test_teacher_card_lists_the_pairs_the_objective_used():
    from modeling_mckd import MCKDConfig, MCKDModel
    from modeling_mckd.runner import _loss_description

    fused = MCKDModel(MCKDConfig(video_input="features", video_feature_dim=4, projection_dim=8, text_hidden_size=8,
                                 vocab_size=20, extra_modalities={"audio": {"feature_dim": 3}},
                                 fuse_modalities=["audio"]))
    assert _loss_description("teacher", fused)["modality_pairs"] == [
        "text-video", "text-visual", "text-audio", "visual-audio"]
    assert _loss_description("teacher", fused, part_pairs=False)["modality_pairs"] == [
        "text-video", "text-audio", "video-audio"]
    assert _loss_description("student", fused) is None


def test_card_argument_errors_are_clear():
    with pytest.raises(ValueError, match="teacher"):
        student_card(teacher=None)
    with pytest.raises(ValueError, match=r"\['kd_mode', 'kd_temperature'\]"):
        student_card(training_config={"kd_weight": 1.0, "disc_weight": 1.0})
    with pytest.raises(ValueError, match="role"):
        student_card(role="assistant")
    with pytest.raises(FileNotFoundError, match="model_card.md"):
        student_card(template_path=REPO_ROOT / "no_such_dir" / "model_card.md")


def test_default_template_is_the_package_template_and_write_model_card(tmp_path):
    assert hub.TEMPLATE_PATH == REPO_ROOT / "modeling_mckd" / "templates" / "model_card.md.jinja"
    path = write_model_card(tmp_path / "out", role="student", model_name="m", results={"test": TEST},
                            training_config=STUDENT_CONFIG, teacher="t")
    assert path == tmp_path / "out" / "README.md"
    loaded = ModelCard.load(path)
    assert loaded.data.eval_results[-1].metric_type == "rsum"
    assert loaded.data.eval_results[-1].metric_value == 185.5


# -- push: argument checks in process (no server, no network) ----------------------------------


def test_push_refuses_offline_before_any_network(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE"):
        push_folder_to_hub(tmp_path, "someone/model", token=SECRET)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        push_folder_to_hub(tmp_path / "missing", "someone/model", token=SECRET)
    with pytest.raises(ValueError, match="hub_model_id"):
        push_folder_to_hub(tmp_path, "a/b/c", token=SECRET)


# -- push: the real client against the loopback stand-in --------------------------------------

PUSH_SCRIPT = r"""
import json, logging, sys, traceback
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from huggingface_hub.utils import logging as hf_logging
hf_logging.set_verbosity_debug()
from modeling_mckd.hub import push_folder_to_hub
calls = json.loads(sys.argv[1])
for kwargs in calls:
    try:
        url = push_folder_to_hub(**kwargs)
    except Exception as error:
        traceback.print_exc()
        print(json.dumps({"error_type": type(error).__name__, "error": str(error)}))
        sys.exit(3)
    print(json.dumps({"url": url}))
"""


def run_push(server_url: str, home: Path, calls: list[dict], *, env_token: str | None, disable_xet: bool = False):
    env = {k: v for k, v in os.environ.items()
           if k not in {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "TRANSFORMERS_OFFLINE"}
           and "proxy" not in k.lower()}
    env.update(
        HF_ENDPOINT=server_url,
        HF_HUB_OFFLINE="0",  # for this subprocess only: the rest of the suite stays offline
        HF_HOME=str(home),  # an empty home: no stored token can be picked up
        HF_DEBUG="1",  # the client's most verbose logging (curl lines of every request)
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if env_token is not None:
        env["HF_TOKEN"] = env_token
    if disable_xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    completed = subprocess.run(
        [sys.executable, "-c", PUSH_SCRIPT, json.dumps(calls)],
        env=env, capture_output=True, text=True, timeout=120, cwd=str(home),
    )
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return completed, lines


def make_output_folder(root: Path) -> dict[str, bytes]:
    """An output folder as train.py leaves it; returns the files that must be uploaded."""
    write_model_card(root, role="student", model_name="tiny", results=RESULTS, training_config=STUDENT_CONFIG,
                     teacher="someone/mckd-teacher")
    uploaded = {
        "config.json": json.dumps({"model_type": "mckd", "hidden_size": 8}).encode(),
        "model.safetensors": bytes(range(256)) * 16 + b"\x00\xff",
        "processor/vocab.txt": "[PAD]\n[CLS]\nguitar\n".encode(),
        "all_results.json": json.dumps(RESULTS).encode(),
    }
    ignored = {
        "checkpoints/checkpoint-4/optimizer.bin": b"opt",
        "runs/events.out.tfevents.1": b"tb",
        "best_model/model.safetensors": b"dup",
        ".tmp-checkpoint-6/model.safetensors": b"partial",
        "scratch.tmp": b"tmp",
    }
    for relative, data in {**uploaded, **ignored}.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    uploaded["README.md"] = (root / "README.md").read_bytes()
    return uploaded


@pytest.mark.parametrize("disable_xet", [False, True], ids=["pipelined-upload", "create-commit"])
def test_push_uploads_every_file_through_the_real_client(tmp_path, disable_xet):
    folder = tmp_path / "student"
    expected = make_output_folder(folder)
    with hub_server.HubStandIn() as server:
        completed, outputs = run_push(
            server.url, tmp_path,
            [
                {"folder": str(folder), "repo_id": "someone/mckd-student", "private": True},
                # Second push to an existing repo, on a new branch, with the token given directly.
                {"folder": str(folder), "repo_id": "someone/mckd-student", "revision": "v1",
                 "token": SECRET, "commit_message": "second"},
                # A bare name goes to the token owner's namespace, which the Hub's answer tells.
                {"folder": str(folder), "repo_id": "bare-name"},
            ],
            env_token=SECRET, disable_xet=disable_xet,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        bare_id = f"{hub_server.DEFAULT_NAMESPACE}/bare-name"
        assert outputs == [{"url": f"{server.url}/someone/mckd-student"}] * 2 + [{"url": f"{server.url}/{bare_id}"}]
        assert server.repos["someone/mckd-student"].private is True
        assert server.repos[bare_id].private is False
        assert len(server.commits) == 3
        for commit, repo_id, revision, summary in zip(
            server.commits,
            ["someone/mckd-student", "someone/mckd-student", bare_id],
            ["main", "v1", "main"],
            ["Upload MCKD model", "second", "Upload MCKD model"],
        ):
            assert (commit.repo_id, commit.revision, commit.summary) == (repo_id, revision, summary)
            assert commit.files == expected  # every file, byte for byte; nothing ignored was sent
            assert commit.authorization == f"Bearer {SECRET}"
        # The README front matter is validated once per push (twice on the create_commit path).
        assert set(server.validated_readmes) == {expected["README.md"].decode()}
        assert len(server.validated_readmes) >= 2
        hosts = {request.headers["host"] for request in server.requests}
        assert hosts == {server.url.removeprefix("http://")}
        paths = [request.path for request in server.requests]
        assert all(path.startswith("/api/") for path in paths), paths
        assert paths.count("/api/repos/create") == 3
    assert not server.running
    # The client ran with debug logging on: the token is in neither output stream.
    assert SECRET not in completed.stdout and SECRET not in completed.stderr
    assert "/api/repos/create" in completed.stderr  # the debug log was really produced


def test_push_without_token_fails_clearly_before_any_request(tmp_path):
    folder = tmp_path / "teacher"
    make_output_folder(folder)
    with hub_server.HubStandIn() as server:
        completed, outputs = run_push(server.url, tmp_path, [{"folder": str(folder), "repo_id": "someone/t"}],
                                      env_token=None)
        assert server.requests == []
    assert completed.returncode == 3
    assert outputs[0]["error_type"] == "HubAuthError"
    assert "hf auth login" in outputs[0]["error"] and "HF_TOKEN" in outputs[0]["error"]


def test_token_echoed_by_a_failing_server_is_redacted(tmp_path):
    folder = tmp_path / "student"
    make_output_folder(folder)
    with hub_server.HubStandIn(error_echoes_authorization=True) as server:
        completed, outputs = run_push(server.url, tmp_path, [{"folder": str(folder), "repo_id": "someone/s"}],
                                      env_token=SECRET, disable_xet=True)
        assert server.commits == [] and any("/commit/" in request.path for request in server.requests)
    assert completed.returncode == 3
    assert outputs[0]["error_type"] == "HubPushError"
    assert "<redacted>" in outputs[0]["error"] and "500" in outputs[0]["error"]
    assert SECRET not in completed.stdout and SECRET not in completed.stderr


def test_in_process_push_error_never_carries_the_token(tmp_path, caplog, capsys, monkeypatch):
    """The no-token path in this process: nothing logged or printed mentions a token."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HubAuthError) as error:
        push_folder_to_hub(tmp_path, "someone/model")
    assert "hf auth login" in str(error.value)
    # With a token but offline: refused, and the token appears nowhere.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPushError) as offline_error:
        push_folder_to_hub(tmp_path, "someone/model", token=SECRET)
    captured = capsys.readouterr()
    assert SECRET not in str(offline_error.value) + caplog.text + captured.out + captured.err


# -- one redaction path for every Hub call -----------------------------------------------------


def test_redact_covers_the_token_headers_and_hf_tokens():
    text = f"500 for url; Authorization={'Bearer ' + SECRET}; headers {{'authorization': 'Bearer other'}} hf_abcdefgh1234"
    redacted = hub.redact(text, SECRET)
    assert SECRET not in redacted and "other" not in redacted and "hf_abcdefgh1234" not in redacted
    assert redacted.startswith("500 for url; Authorization=<redacted>")
    assert hub.redact("nothing secret here", None) == "nothing secret here"


def test_call_hub_raises_without_a_chained_token():
    def failing():
        raise RuntimeError(f"server said: Authorization: Bearer {SECRET}")

    with pytest.raises(HubPushError) as error:
        hub.call_hub(failing, failure="pushing x failed", token=SECRET)
    assert str(error.value) == "pushing x failed (RuntimeError: server said: Authorization: <redacted>)"
    assert error.value.__cause__ is None and error.value.__context__ is None
    with pytest.raises(KeyError):  # wrap_all=False keeps a credential-free error as it is
        hub.call_hub(lambda: {}["missing"], failure="f", token=SECRET, wrap_all=False)


DATASET_PUSH_SCRIPT = r"""
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from modeling_mckd.data_prep.common import make_row, run_cli, write_dataset_dict
rows = {"train": [make_row("v1", ["a caption"], "train")]}
run_cli(lambda: write_dataset_dict(rows, sys.argv[1], push_to_hub="someone/mckd-dataset"))
"""


class EchoingHub(hub_server.HubStandIn):
    """The stand-in failing every request with the Authorization header in its answer (the worst server)."""

    def handle(self, request):
        self.requests.append(request)
        return 500, {"error": f"stand-in failure, Authorization={request.headers.get('authorization')}"}, {}


def test_dataset_push_failure_never_prints_the_token(tmp_path):
    """A dataset --push-to-hub against a Hub that fails and echoes the Authorization header."""
    with EchoingHub() as server:
        env = {k: v for k, v in os.environ.items()
               if k not in {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE"} and "proxy" not in k.lower()}
        env.update(HF_ENDPOINT=server.url, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "home"), HF_TOKEN=SECRET,
                   HF_DEBUG="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1",
                   NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONPATH=str(REPO_ROOT))
        completed = subprocess.run([sys.executable, "-c", DATASET_PUSH_SCRIPT, str(tmp_path / "ds")], env=env,
                                   capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
        echoed = [r for r in server.requests if r.headers.get("authorization") == f"Bearer {SECRET}"]
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert echoed, "the client never sent the token: the test would prove nothing"
    assert "someone/mckd-dataset" in completed.stderr and "<redacted>" in completed.stderr
    assert SECRET not in completed.stdout and SECRET not in completed.stderr
    assert "Traceback" not in completed.stderr
