"""Live tracking (bilateral/tracking.py): every run's TensorBoard events, on the local backend and
through a resume that redoes an epoch (each epoch appears once)."""

import json
import os
import subprocess

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bilateral.store import RunStore, SweepStore
from bilateral.training import run
from tests.conftest import REPO, Killed, sweep_cmd

EPOCH_TAGS = {"train/loss", "train/lr", "speed/images_per_s", "val/acc_fine", "val/loss_fine", "val/score"}


def events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return acc


def steps(run_dir, tag: str) -> list[int]:
    return [e.step for e in events(run_dir).Scalars(tag)]


def test_a_run_writes_its_curves_and_settings_as_tensorboard_events(tmp_path, tiny_plan):
    (spec,) = tiny_plan("plan.models=[hemisphere-fine]", "train.epochs=3").runs
    store = SweepStore(tmp_path)
    record = run(spec, store, device="cpu", data_dir=str(REPO / "data"))
    run_dir = store.run(spec.run_id).root
    tags = set(events(run_dir).Tags()["scalars"])
    assert EPOCH_TAGS <= tags, tags
    assert steps(run_dir, "train/loss") == [1, 2, 3]
    hparams = events(run_dir).PluginTagToContent("hparams")
    assert hparams, "no hparams summary"
    assert b"optim.lr" in b"".join(hparams.values())
    assert record["tracking"] == ["tensorboard"]


def test_a_resume_that_redoes_an_epoch_logs_it_once(tmp_path, tiny_plan, monkeypatch):
    (spec,) = tiny_plan("plan.models=[hemisphere-fine]", "train.epochs=3").runs
    save = RunStore.save_checkpoint

    def die_before_second_last(self, name, state):  # epoch 2 is logged, then killed before its checkpoint
        if name == "last" and state["epoch"] == 1:
            raise Killed
        save(self, name, state)

    monkeypatch.setattr(RunStore, "save_checkpoint", die_before_second_last)
    store = SweepStore(tmp_path)
    with pytest.raises(Killed):
        run(spec, store, device="cpu", data_dir=str(REPO / "data"))
    monkeypatch.setattr(RunStore, "save_checkpoint", save)
    record = run(spec, store, device="cpu", data_dir=str(REPO / "data"))
    assert record["resumed_from_epoch"] == 1
    assert steps(store.run(spec.run_id).root, "train/loss") == [1, 2, 3]


def test_without_tensorboard_a_run_still_trains_and_its_record_says_why_it_has_no_events(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    blocked = "import sys\nfor m in ('tensorboard', 'torch.utils.tensorboard'):\n    sys.modules[m] = None\n"
    (site / "sitecustomize.py").write_text(blocked)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    cmd = sweep_cmd(tmp_path / "out", "--seeds", "0", "--models", "hemisphere-fine", "train.epochs=1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no TensorBoard events" in proc.stderr and "pip install tensorboard" in proc.stderr
    (record,) = (tmp_path / "out" / "t" / "runs").glob("*/record.json")
    assert "pip install tensorboard" in json.loads(record.read_text())["tracking"][0]
    assert not list(record.parent.glob("events.out.tfevents*"))


def test_mlflow_and_wandb_log_every_epoch_when_switched_on_and_change_no_run_id(
    tmp_path, tiny_plan, monkeypatch
):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.18's local file store is opt-in
    monkeypatch.setenv("WANDB_SILENT", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    plain = tiny_plan("plan.models=[hemisphere-fine]", "train.epochs=2").runs[0]
    (spec,) = tiny_plan(
        "plan.models=[hemisphere-fine]", "train.epochs=2", f"train.mlflow={uri}", "train.wandb=offline"
    ).runs
    assert spec.run_id == plain.run_id
    store = SweepStore(tmp_path / "sweep")
    record = run(spec, store, device="cpu", data_dir=str(REPO / "data"))
    assert record["tracking"] == ["tensorboard", "mlflow", "wandb"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("sweep")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == spec.run_id and logged.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "train/loss")] == [1, 2]
    assert logged.data.params["optim.lr"] == str(spec.optim.lr)

    run_dir = store.run(spec.run_id).root
    (offline,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"train/loss" in offline.read_bytes() and b"val/acc_fine" in offline.read_bytes()
