"""The train stage's runs: a failure ends FAILED, a resume continues its run and its whole curve, a
restart from step 0 is a new run that closes the abandoned one, a params change sets the old
checkpoints aside, and the infer stage finds registry models in the params' store.

Everything is real: the stage (`stages.train.main`, what `python -m stages.train` runs, here in this
process so DeepSpeed is imported once), DeepSpeed on gloo, MLflow on a sqlite store, shards of one
tiny text task. DVC deletes the stage's non-persistent outputs before it runs; `dvc_clears_outputs`
does the same before every re-run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shutil
from argparse import Namespace
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest
import yaml

import stages.train as train_stage
from pipeline import tracking
from pipeline.params import load_params
from stages import assets, cli, infer, ingest, materialise, vocab_text

STORE_FILE = "tracked.db"
"""Not MLflow's `mlflow.db`: a lookup that ignored params would look in the wrong place."""
PARAMS = {
    "seed": 7,
    "tasks": {
        "infill": {
            "instruction": '<BOS> what is the complete text of " [TEXT:text,mask_ratio=0.3] "? <EOS> -> <BOS> [TEXT:text] <EOS>',
            "metric": "token_accuracy",
            "source": {"kind": "demo", "generator": "infill", "train": 48, "valid": 8, "test": 8},
        },
    },
    "assets": {"bpe_vocab_size": 300, "num_bins": 16},
    "materialise": {"shard_samples": 40},
    "model": {"d_model": 32, "heads": 2, "ffn_dim": 64, "encoder_layers": 1, "decoder_layers": 1,
              "adaptors": {"IMAGE": {"stem_channels": 32}}},
    "train": {"max_steps": 12, "warmup_steps": 2, "max_batch_size": 8, "pool_size": 32, "grad_accum": 1,
              "log_every": 1, "save_every": 4},
    "tracking": {"uri": f"sqlite:///{STORE_FILE}", "experiment": "runs", "registered_model": "tiny"},
    "infer": {"tasks": ["infill"], "split": "test", "beam_size": 1, "batch_size": 8},
}
STEPS = list(range(1, PARAMS["train"]["max_steps"] + 1))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Raw data, vocabulary and shards of the tiny task, made by the real stages."""
    root = tmp_path_factory.mktemp("built")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    with contextlib.chdir(root):
        params = load_params(Path("params.yaml"))
        ingest.main(Namespace(task="infill"), params)
        vocab_text.main(Namespace(task="infill"), params)
        assets.main(Namespace(), params)
        materialise.main(Namespace(task="infill"), params)
    return root


@pytest.fixture()
def project(built, tmp_path, monkeypatch) -> Path:
    work = tmp_path / "project"
    shutil.copytree(built, work)
    monkeypatch.chdir(work)
    for key in ("RANK", "WORLD_SIZE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    yield work
    while mlflow.active_run() is not None:  # a failing test must not leave a run to the next one
        mlflow.end_run()


def train(**train_overrides) -> None:
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["train"].update(train_overrides)
    Path("params.yaml").write_text(yaml.safe_dump(raw))
    train_stage.main(Namespace(), load_params(Path("params.yaml")))


def dvc_clears_outputs() -> None:
    for out in ("checkpoints/final", "checkpoints/run.json", "plots/train_curve.csv"):
        path = Path(out)
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def stopped_at(step: int, error: type[BaseException] = KeyboardInterrupt):
    """Raise `error` in the stage when it reports `step`: a Ctrl-C (or a crash) at a chosen step.

    It is raised from the progress heartbeat, after the curve row and before MLflow gets the step.
    """
    original = train_stage.ProgressLog.__call__

    def heartbeat(self, at: int, metrics: dict) -> None:
        original(self, at, metrics)
        if at == step:
            raise error()

    train_stage.ProgressLog.__call__ = heartbeat
    try:
        yield
    finally:
        train_stage.ProgressLog.__call__ = original


def client() -> mlflow.MlflowClient:
    uri = f"sqlite:///{Path.cwd() / STORE_FILE}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs() -> list:
    c = client()
    exp = c.get_experiment_by_name(PARAMS["tracking"]["experiment"])
    return sorted(c.search_runs([exp.experiment_id]), key=lambda r: r.info.start_time)


def history(run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client().get_metric_history(run_id, "train/loss"))


def curve_rows() -> list[dict]:
    with open("plots/train_curve.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_an_interrupted_run_ends_failed_and_its_resume_continues_it_with_the_whole_curve(project):
    with stopped_at(6), pytest.raises(KeyboardInterrupt):
        train()
    (first,) = runs()
    assert first.info.status == "FAILED" and first.data.tags["failure"] == "KeyboardInterrupt"
    assert mlflow.active_run() is None
    logged_before = dict(history(first.info.run_id))
    assert sorted(logged_before) == [1, 2, 3, 4, 5]  # step 6 stopped before MLflow got it
    logged = first.data.params  # the resolved configs: defaults params.yaml does not spell out too
    assert "precision" not in PARAMS["train"] and logged["train.precision"] == "auto"
    assert logged["train.max_steps"] == str(PARAMS["train"]["max_steps"])
    assert "d_model" in PARAMS["model"] and logged["model.d_model"] == str(PARAMS["model"]["d_model"])
    assert "dropout" not in PARAMS["model"] and "model.dropout" in logged

    dvc_clears_outputs()
    train()
    (run,) = runs()  # the same run, continued
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_step"] == "4"
    assert "failure" not in run.data.tags and run.data.tags["resumed_after_failure"] == "KeyboardInterrupt"
    values_by_step: dict[int, set[float]] = {}
    for step, value in history(run.info.run_id):
        values_by_step.setdefault(step, set()).add(value)
    assert sorted(values_by_step) == STEPS
    assert all(len(v) == 1 for v in values_by_step.values())  # a re-logged step repeats its value

    rows = curve_rows()
    assert [int(r["step"]) for r in rows] == STEPS  # the whole history, each step once
    for row in rows[:4]:  # up to the checkpoint: the interrupted process's own values
        assert float(row["loss"]) == logged_before[int(row["step"])]
    assert all(float(r["loss"]) == values_by_step[int(r["step"])].pop() for r in rows)


def test_a_run_that_crashed_before_its_first_checkpoint_is_replaced_by_a_new_run(project):
    with stopped_at(2, RuntimeError), pytest.raises(RuntimeError):
        train()
    (first,) = runs()
    assert first.info.status == "FAILED" and first.data.tags["failure"] == "RuntimeError"

    dvc_clears_outputs()
    train()
    old, new = runs()
    assert old.info.run_id == first.info.run_id
    assert new.info.status == "FINISHED" and new.data.tags["previous_run"] == old.info.run_id
    assert old.info.status == "FAILED"
    assert "before the first checkpoint" in old.data.tags["abandoned"]
    assert new.info.run_id in old.data.tags["abandoned"]
    assert [s for s, _ in history(new.info.run_id)] == STEPS  # one value per step, from step 1
    assert [int(r["step"]) for r in curve_rows()] == STEPS


def test_a_run_killed_before_its_first_checkpoint_is_ended_failed_when_replaced(project):
    """A killed process leaves its run RUNNING and checkpoints/ds/run.json naming it, no checkpoint."""
    params = load_params(Path("params.yaml"))
    tracking.setup(params.tracking)
    killed = mlflow.MlflowClient().create_run(mlflow.get_experiment_by_name("runs").experiment_id).info.run_id
    manifests = {"infill": train_stage.shards_manifest("infill")}
    Path("checkpoints/ds").mkdir(parents=True)
    Path("checkpoints/ds/run.json").write_text(json.dumps(
        {"fingerprint": train_stage.run_fingerprint(params, manifests), "run_id": killed}))

    train()
    old, new = runs()
    assert old.info.run_id == killed and old.info.status == "FAILED"
    assert "before the first checkpoint" in old.data.tags["abandoned"]
    assert new.info.run_id != killed and new.info.status == "FINISHED"
    assert [s for s, _ in history(new.info.run_id)] == STEPS


def test_a_params_change_sets_the_old_checkpoints_aside_and_says_why(project, caplog):
    train()
    record = json.loads(Path("checkpoints/ds/run.json").read_text())
    before = sorted(p.name for p in Path("checkpoints/ds").iterdir())

    dvc_clears_outputs()
    with caplog.at_level("WARNING", logger="train"):
        train(lr=0.002)
    (kept,) = Path("checkpoints/previous").iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}Z-" + record["fingerprint"][:12], kept.name)
    assert sorted(p.name for p in kept.iterdir()) == before  # the whole old checkpoints/ds, run.json too
    assert json.loads((kept / "run.json").read_text()) == record
    (line,) = [r.getMessage() for r in caplog.records if "checkpoints/ds" in r.getMessage()]
    assert "(train changed)" in line and str(Path("checkpoints/previous") / kept.name) in line
    assert json.loads(Path("checkpoints/ds/run.json").read_text())["fingerprint"] != record["fingerprint"]
    old, new = runs()
    assert old.info.run_id == record["run_id"] and old.info.status == "FINISHED"  # complete, not abandoned
    assert "abandoned" not in old.data.tags and new.data.tags["previous_run"] == old.info.run_id


def _infer_args(model: str) -> Namespace:
    return Namespace(params=Path("params.yaml"), model=model, manifest=None, task=None, split=None)


def test_infer_finds_a_registry_model_in_the_params_store(project, capsys):
    train()
    infer.main(_infer_args("models:/tiny/1"), load_params(Path("params.yaml")))
    table = pq.read_table("predictions/infill.parquet")
    assert table.num_rows == 8
    assert {"key", "id", "input.text", "prediction", "reference", "score"} <= set(table.column_names)
    assert all(0.0 <= s <= 1.0 for s in table.column("score").to_pylist())  # token accuracy of each row
    with pytest.raises(SystemExit) as exit_:
        cli.run(infer.main, _infer_args("models:/tiny@champion"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"model 'tiny' has no alias 'champion' in the MLflow store sqlite:///{project / STORE_FILE}" in err
    assert "Traceback" not in err
    assert not (project / "mlflow.db").exists()  # no store made up beside the params' one


def test_infer_with_no_store_exits_2_naming_it_and_creates_nothing(project, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(infer.main, _infer_args("models:/tiny@champion"))
    assert exit_.value.code == 2
    assert f"does not exist: no file {project / STORE_FILE}" in capsys.readouterr().err
    assert sorted(p.name for p in project.iterdir()) == ["assets", "data", "params.yaml"]
