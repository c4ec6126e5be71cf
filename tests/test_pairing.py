"""Paired arms (data.pairing=seed): within a seed every arm trains on the same batches and the same
augmentation draws, so a paired test between arms pairs something; pool members and seeds differ."""

import hashlib

import pytest
import torch

from bilateral.config import load_config
from bilateral.models import BilateralNet, UnilateralNet
from bilateral.plan import RunSpec, build_plan
from bilateral.store import SweepStore
from bilateral.training import run
from tests.conftest import tiny_config


def _training_inputs(spec: RunSpec, store: SweepStore) -> list[str]:
    """Digests of the images each training step of the run fed its network, in order (a forward
    hook that watches, changing nothing)."""
    seen: list[str] = []

    def watch(module, args):
        if isinstance(module, (BilateralNet, UnilateralNet)) and module.training:
            seen.append(hashlib.sha256(args[0].float().contiguous().numpy().tobytes()).hexdigest())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(watch)
    try:
        run(spec, store, device="cpu", data_dir=tiny_config().data_dir)
    finally:
        handle.remove()
    return seen


def test_arms_of_a_seed_draw_identical_batches_and_augmentations(tmp_path):
    cfg = tiny_config("plan.seeds=[0,1]", "train.epochs=1", "data.train_subset=256")
    runs = {(s.model_name, s.seed, s.member): s for s in build_plan(cfg).runs}
    store = SweepStore(tmp_path)
    arms = {
        key: _training_inputs(runs[key], store)
        for key in [
            ("hemisphere-fine", 0, 0),
            ("hemisphere-coarse", 0, 0),
            ("bilateral-unspecialised", 0, 0),
            ("unilateral", 0, 0),
            ("unilateral", 0, 1),  # pool member 1: its own stream
            ("hemisphere-fine", 1, 0),  # another seed: another stream
        ]
    }
    reference = arms[("hemisphere-fine", 0, 0)]
    assert len(reference) == 256 // 64
    for key in [("hemisphere-coarse", 0, 0), ("bilateral-unspecialised", 0, 0), ("unilateral", 0, 0)]:
        assert arms[key] == reference, key
    assert not set(arms[("unilateral", 0, 1)]) & set(reference)
    assert not set(arms[("hemisphere-fine", 1, 0)]) & set(reference)
    records = [store.run(runs[key].run_id).read_record() for key in arms]
    assert {r["pairing"] for r in records} == {"seed"}
    assert len({r["data_seed"] for r in records[:4]}) == 1
    assert records[4]["data_seed"] != records[0]["data_seed"]
    assert len({r["init_seed"] for r in records[:4]}) == 4  # initialisation still differs by kind


def test_unpaired_arms_each_draw_their_own(tmp_path):
    cfg = tiny_config("train.epochs=1", "data.train_subset=256", "data.pairing=run")
    runs = {s.model_name: s for s in build_plan(cfg).runs}
    store = SweepStore(tmp_path)
    fine = _training_inputs(runs["hemisphere-fine"], store)
    unilateral = _training_inputs(runs["unilateral"], store)
    assert not set(fine) & set(unilateral)


def test_sweeps_from_before_pairing_keep_their_run_ids():
    """data.pairing=run is how every sweep ran before pairing existed: its run ids are the old ones
    (measured with the code of before), and a spec written then reads back as pairing=run."""
    plan = build_plan(load_config("smoke", overrides=["plan.seeds=[0]", "data.pairing=run"]))
    assert [s.run_id for s in plan.runs][:3] == [
        "hemisphere-fine-resnet9-s0-0f4f83cd",
        "hemisphere-coarse-resnet9-s0-060b8b61",
        "bilateral-unspecialised-resnet9-s0-963f19d9",
    ]
    old = plan.runs[0].to_dict()
    del old["data"]["pairing"]
    assert RunSpec.from_dict(old).data.pairing == "run"
    assert RunSpec.from_dict(old).run_id == plan.runs[0].run_id
    paired = build_plan(load_config("smoke", overrides=["plan.seeds=[0]"]))
    assert paired.runs[0].run_id != plan.runs[0].run_id


def test_old_sweep_directory_is_refused_with_its_fix(tmp_path):
    """A folder of runs trained before paired data orders: a paired plan has other run ids for the
    same rows and seeds, so it is refused (one table would pool both), naming data.pairing=run."""
    from bilateral.errors import ConfigError
    from bilateral.sweep import check_one_configuration

    old_cfg = tiny_config("data.pairing=run", "plan.models=[hemisphere-fine]", "train.epochs=1")
    store = SweepStore(tmp_path)
    old = build_plan(old_cfg).runs[0]
    run(old, store, device="cpu", data_dir=old_cfg.data_dir)
    record = store.run(old.run_id).read_record()
    record["spec"]["data"].pop("pairing")  # as written before pairing existed
    store.run(old.run_id).write_record(record)
    with pytest.raises(ConfigError, match="data.pairing=run"):
        check_one_configuration(build_plan(tiny_config("plan.models=[hemisphere-fine]")), store)
    check_one_configuration(build_plan(old_cfg), store)  # the old settings resume it


@pytest.mark.parametrize("value", ["both", ""])
def test_pairing_value_is_checked(value):
    from bilateral.errors import ConfigError

    with pytest.raises(ConfigError, match="data.pairing"):
        load_config("smoke", overrides=[f"data.pairing={value}"])
