"""Live tracking (bilateral/tracking.py): every run's TensorBoard events, on the local backend and
through a resume that redoes an epoch (each epoch appears once)."""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bilateral.store import RunStore, SweepStore
from bilateral.train import run
from tests.conftest import REPO, Killed

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
    run(spec, store, device="cpu", data_dir=str(REPO / "data"))
    run_dir = store.run(spec.run_id).root
    tags = set(events(run_dir).Tags()["scalars"])
    assert EPOCH_TAGS <= tags, tags
    assert steps(run_dir, "train/loss") == [1, 2, 3]
    hparams = events(run_dir).PluginTagToContent("hparams")
    assert hparams, "no hparams summary"
    assert b"optim.lr" in b"".join(hparams.values())


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
