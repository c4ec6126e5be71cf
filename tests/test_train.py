import signal

import numpy as np
import pytest
import torch

from bilateral.errors import CheckpointError
from bilateral.interrupt import Interrupted
from bilateral.models import build_backbone
from bilateral.run_data import load_data, make_splits
from bilateral.store import RunStore, SweepStore
from bilateral.training import run
from tests.conftest import REPO, Killed, die_after_first_epoch


def only(plan, kind):
    (spec,) = [s for s in plan.runs if s.kind == kind]
    return spec


def test_run_writes_record_checkpoints_and_predictions(tmp_path, tiny_plan):
    spec = only(tiny_plan("plan.models=[unilateral]"), "unilateral")
    store = SweepStore(tmp_path)
    record = run(spec, store, device="cpu", data_dir=str(REPO / "data"))
    run_dir = store.run(spec.run_id)
    assert run_dir.is_finished() and run_dir.has_checkpoint("best") and run_dir.has_checkpoint("last")
    assert 0.0 <= record["test_acc_fine"] <= 1.0 and 0.0 <= record["test_acc_coarse"] <= 1.0
    first, last = run_dir.read_metrics()
    assert last["train_loss"] < first["train_loss"]  # it learns
    assert record["split"]["val"] == 200 and record["split"]["test"] == 400
    preds = run_dir.load_arrays("predictions.npz")
    assert preds["logits_fine"].shape == (400, 20) and preds["logits_coarse"].shape == (400, 4)
    assert preds["correct_fine"].mean() == pytest.approx(record["test_acc_fine"])
    np.testing.assert_array_equal(
        preds["correct_coarse"], preds["logits_coarse"].argmax(1) == preds["label_coarse"]
    )
    assert record["params"] > 0 and record["train_images_per_s"] > 0 and record["device"] == "cpu"
    assert record["precision"] in ("fp32", "bf16") and record["tf32"] is None  # a CPU has no TF32
    # a finished run is returned, not retrained
    mtime = run_dir.path("record.json").stat().st_mtime_ns
    assert (
        run(spec, store, device="cpu", data_dir=str(REPO / "data"))["test_acc_fine"]
        == record["test_acc_fine"]
    )
    assert run_dir.path("record.json").stat().st_mtime_ns == mtime


def test_validation_is_held_out_of_train(tiny_plan):
    spec = tiny_plan("plan.models=[unilateral]").runs[0]
    data = load_data(spec.data.source, str(REPO / "data"), True)
    splits = make_splits(data, spec)
    assert not set(splits.train) & set(splits.val)
    assert len(splits.val) == 200 and len(splits.train) == 1000 and len(splits.test) == 400


@pytest.mark.parametrize(
    "loader, kind",
    [("memory", "bilateral-unspecialised"), ("ffcv", "unilateral")],  # FFCV: its own epoch-seeded stream
)
def test_resume_ends_identical_to_uninterrupted(tmp_path, tiny_plan, monkeypatch, loader, kind):
    spec = only(tiny_plan(f"plan.models=[{kind}]", f"data.loader={loader}", "train.epochs=3"), kind)
    full = run(spec, SweepStore(tmp_path / "full"), device="cpu", data_dir=str(REPO / "data"))

    undo = die_after_first_epoch(monkeypatch)
    store = SweepStore(tmp_path / "resumed")
    with pytest.raises(Killed):
        run(spec, store, device="cpu", data_dir=str(REPO / "data"))
    assert not store.run(spec.run_id).is_finished()
    undo()
    resumed = run(spec, store, device="cpu", data_dir=str(REPO / "data"))

    assert resumed["resumed_from_epoch"] == 1 and full["resumed_from_epoch"] is None
    for key in ("test_acc_fine", "test_acc_coarse", "test_loss_fine", "val_score", "best_epoch"):
        assert resumed[key] == full[key], key
    a = SweepStore(tmp_path / "full").run(spec.run_id).load_checkpoint("last")["model"]
    b = store.run(spec.run_id).load_checkpoint("last")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["train_loss"] for m in store.run(spec.run_id).read_metrics()] == [
        m["train_loss"] for m in SweepStore(tmp_path / "full").run(spec.run_id).read_metrics()
    ]


def test_time_based_checkpoints_write_at_the_end_and_at_a_stop_and_resume_identical(
    tmp_path, tiny_plan, monkeypatch
):
    """train.checkpoint_minutes: no `last` before the minutes are up (here: never before the end);
    a stop mid-run writes the last epoch end held in memory, and the rerun resumes from it and ends
    as an uninterrupted run; the run id is that of checkpoints every epoch."""
    spec = only(tiny_plan("plan.models=[unilateral]", "train.epochs=3"), "unilateral")
    timed = only(
        tiny_plan("plan.models=[unilateral]", "train.epochs=3", "train.checkpoint_minutes=1000"), "unilateral"
    )
    assert timed.run_id == spec.run_id
    full = run(spec, SweepStore(tmp_path / "full"), device="cpu", data_dir=str(REPO / "data"))

    writes = []
    save = RunStore.save_checkpoint

    def recorded(self, name, state):
        writes.append((name, state["epoch"]))
        save(self, name, state)

    monkeypatch.setattr(RunStore, "save_checkpoint", recorded)

    def stop_in_epoch_2(row):  # as SIGTERM does, after epoch 1 was validated, before it is written
        if row["epoch"] == 1:
            raise Interrupted(signal.SIGTERM)

    store = SweepStore(tmp_path / "timed")
    with pytest.raises(Interrupted):
        run(timed, store, device="cpu", data_dir=str(REPO / "data"), on_epoch=stop_in_epoch_2)
    assert [w for w in writes if w[0] == "last"] == [("last", 0)]  # written at the stop, from memory
    assert store.run(timed.run_id).checkpoint_epoch("last") == 0
    writes.clear()
    resumed = run(timed, store, device="cpu", data_dir=str(REPO / "data"))
    assert [w for w in writes if w[0] == "last"] == [("last", 2)]  # epoch 1 ended unwritten: not due
    assert resumed["resumed_from_epoch"] == 1
    for key in ("test_acc_fine", "test_acc_coarse", "val_score", "best_epoch"):
        assert resumed[key] == full[key], key
    assert [m["train_loss"] for m in store.run(timed.run_id).read_metrics()] == [
        m["train_loss"] for m in SweepStore(tmp_path / "full").run(spec.run_id).read_metrics()
    ]


def test_specialised_bilateral_keeps_its_hemispheres_frozen(tmp_path, tiny_plan):
    plan = tiny_plan("plan.models=[bilateral-specialised]")
    store = SweepStore(tmp_path)
    for spec in plan.runs:
        run(spec, store, device="cpu", data_dir=str(REPO / "data"))
    bilateral = only(plan, "bilateral-specialised")
    final = store.run(bilateral.run_id).load_checkpoint("last")["model"]
    for side, kind in (("left", "hemisphere-fine"), ("right", "hemisphere-coarse")):
        hemisphere = store.run(only(plan, kind).run_id).load_checkpoint("best")["model"]
        for key, value in hemisphere.items():
            if key.startswith("backbone."):  # weights and BN running statistics
                assert torch.equal(final[f"{side}.{key.removeprefix('backbone.')}"], value), key
    record = store.run(bilateral.run_id).read_record()
    assert record["trainable_params"] < record["params"] / 5  # only the heads train


def test_ensemble_selects_on_validation_and_averages(tmp_path, tiny_plan):
    plan = tiny_plan("plan.models=[ensemble-top1,ensemble-top2]")
    store = SweepStore(tmp_path)
    for spec in plan.runs:
        run(spec, store, device="cpu", data_dir=str(REPO / "data"))
    pool = [store.run(s.run_id).read_record() for s in plan.runs if s.kind == "unilateral"]
    top1 = next(store.run(s.run_id).read_record() for s in plan.runs if s.model_name == "ensemble-top1")
    best = max(pool, key=lambda r: (r["val_score"], -r["member"]))
    assert top1["members"] == [best["run_id"]]
    assert top1["test_acc_fine"] == pytest.approx(best["test_acc_fine"])
    top2 = next(s for s in plan.runs if s.model_name == "ensemble-top2")
    logits = store.run(top2.run_id).load_arrays("predictions.npz")["logits_fine"]
    members = [store.run(r["run_id"]).load_arrays("predictions.npz")["logits_fine"] for r in pool]
    np.testing.assert_allclose(logits, np.mean(members, axis=0), rtol=1e-5, atol=1e-5)


def test_checkpoint_of_another_architecture_is_refused(tmp_path, tiny_plan):
    spec = only(tiny_plan("plan.models=[unilateral]"), "unilateral")
    store = SweepStore(tmp_path)
    wrong = build_backbone("resnet18", width=0.125).state_dict()
    store.run(spec.run_id).save_checkpoint("last", {"model": wrong, "epoch": 0})
    with pytest.raises(CheckpointError, match="last.pt"):
        run(spec, store, device="cpu", data_dir=str(REPO / "data"))
    assert store.run(spec.run_id).has_checkpoint("last")  # nothing deleted
