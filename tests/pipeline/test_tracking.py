"""MLflow tracking against a real sqlite store: registration and the champion alias rule."""

from __future__ import annotations

import mlflow
import pytest

from pipeline import tracking
from pipeline.params import TrackingParams


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = TrackingParams(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="t", registered_model="m")
    tracking.setup(params)
    yield params
    mlflow.end_run()


def _version(tmp_path, step_value: float) -> tuple[str, str]:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "config.json").write_text("{}")
    with mlflow.start_run() as run:
        logger = tracking.MetricLogger(run.info.run_id)
        logger(1, {"train/loss/a": step_value})
    return run.info.run_id, tracking.register_checkpoint(run.info.run_id, ckpt, "m")


def test_register_creates_versions_with_artifacts(store, tmp_path):
    run_id, v1 = _version(tmp_path, 1.0)
    _, v2 = _version(tmp_path, 2.0)
    assert (v1, v2) == ("1", "2")
    client = mlflow.MlflowClient()
    assert client.get_model_version("m", "1").run_id == run_id
    assert [m.value for m in client.get_metric_history(run_id, "train/loss/a")] == [1.0]
    files = [f.path for f in client.list_artifacts(run_id, "model")]
    assert "model/config.json" in files


def test_champion_and_evaluations_round_trip_through_version_tags(store, tmp_path):
    _, v1 = _version(tmp_path, 1.0)
    _, v2 = _version(tmp_path, 1.0)
    assert tracking.champion("m") == (None, None)
    tracking.record_evaluation("m", v1, '{"a": 1}')
    tracking.set_champion("m", v1)
    assert tracking.champion("m") == (v1, '{"a": 1}')
    assert tracking.evaluation_of("m", v2) is None


def _promote(store, version, *flags):
    import argparse
    from types import SimpleNamespace

    from pipeline.params import EvaluateParams
    from stages import promote

    args = argparse.Namespace(version=version, force="--force" in flags, dry_run="--dry-run" in flags)
    promote.main(args, SimpleNamespace(tracking=store, evaluate=EvaluateParams()))


def test_promoting_by_hand_checks_baselines_unless_forced(store, tmp_path):
    from pipeline.selection import PromotionRefused, TaskEvaluation, encode

    _, v1 = _version(tmp_path, 1.0)
    _, v2 = _version(tmp_path, 1.0)
    _, v3 = _version(tmp_path, 1.0)
    tracking.record_evaluation("m", v1, encode({"vqa": TaskEvaluation("accuracy", 0.9, 0.2, True, False, "a")}))
    tracking.record_evaluation("m", v2, encode({"asr": TaskEvaluation("wer", 0.3, 0.9, False, False, "b")}))
    tracking.record_evaluation("m", v3, encode({"asr": TaskEvaluation("wer", 0.95, 0.9, False, False, "b")}))
    tracking.set_champion("m", v1)
    _promote(store, int(v2), "--dry-run")
    assert tracking.champion("m")[0] == v1
    _promote(store, int(v2))  # other tasks: the rule cannot compare, a person can start the new line
    assert tracking.champion("m")[0] == v2
    promotion = mlflow.MlflowClient().get_model_version("m", v2).tags[tracking.PROMOTION_TAG]
    assert promotion.startswith("promoted by hand (was version 1); rule: not promoted: champion version 1 was")
    with pytest.raises(PromotionRefused, match="asr: wer 0.95 does not beat its baseline 0.9; pass --force"):
        _promote(store, int(v3))
    _promote(store, int(v3), "--force")
    assert tracking.champion("m")[0] == v3
    with pytest.raises(FileNotFoundError, match="--version 9: model 'm' has no such version"):
        _promote(store, 9)


def test_params_are_flattened_and_batched(store):
    with mlflow.start_run() as run:
        tracking.log_params({f"k{i}": i for i in range(150)})
    assert len(mlflow.get_run(run.info.run_id).data.params) == 150


def test_a_relative_sqlite_store_is_pinned_to_the_project_dir(tmp_path):
    assert tracking.store_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.store_uri("sqlite:///db/m.db?timeout=5", tmp_path) == f"sqlite:///{tmp_path}/db/m.db?timeout=5"
    for fixed in ("sqlite:////abs/m.db", "http://127.0.0.1:5000", "sqlite:///:memory:"):
        assert tracking.store_uri(fixed, tmp_path) == fixed


def test_setup_opens_the_project_store_whatever_the_working_directory(tmp_path, monkeypatch):
    project, other = tmp_path / "project", tmp_path / "other"
    project.mkdir()
    other.mkdir()
    monkeypatch.chdir(other)
    tracking.setup(TrackingParams(uri="sqlite:///mlflow.db", experiment="t"), project)
    with mlflow.start_run():
        pass
    assert (project / "mlflow.db").is_file() and list(other.iterdir()) == []


def test_a_failed_run_ends_failed_with_what_failed(store):
    run = mlflow.start_run()
    tracking.end_failed(run.info.run_id, ValueError("bad batch"))
    assert mlflow.active_run() is None
    got = mlflow.get_run(run.info.run_id)
    assert got.info.status == "FAILED" and got.data.tags["failure"] == "ValueError: bad batch"


def test_abandoning_ends_a_running_run_but_leaves_a_finished_one(store):
    client = mlflow.MlflowClient()
    exp = mlflow.get_experiment_by_name("t").experiment_id
    running, finished = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
    client.set_terminated(finished)
    assert tracking.abandon(running, "restarted from step 0 in run x")
    assert not tracking.abandon(finished, "params changed")
    assert not tracking.abandon("0" * 32, "unknown run")
    assert client.get_run(running).info.status == "FAILED"
    assert client.get_run(running).data.tags["abandoned"] == "restarted from step 0 in run x"
    assert client.get_run(finished).info.status == "FINISHED" and "abandoned" not in client.get_run(finished).data.tags


def test_the_experiment_opens_on_its_training_runs_in_mlflow_ui(store):
    tags = mlflow.get_experiment_by_name(store.experiment).tags
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_an_experiment_made_before_the_tag_existed_gets_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/old.db"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("old")
    tracking.setup(TrackingParams(uri=uri, experiment="old"))
    assert mlflow.get_experiment_by_name("old").tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
