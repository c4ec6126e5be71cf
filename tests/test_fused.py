"""Fused training of K same-shape models equals training them apart (CPU, float32).

Tolerances: a few steps of the fused network match separate models within rtol 1e-4 / atol 1e-5
(the grouped kernels sum in another order). Whole runs drift apart by float order as any two
thread counts do: after an epoch of SGD the weights differ by ~1e-3 relative L2 (fused vs apart
measured 0.9e-3 to 2.0e-3; 2 threads vs 1 thread 1.6e-3 to 1.7e-3), so runs are compared at 1e-2.
"""

import pytest
import torch
from torch import nn

from bilateral.errors import CheckpointError, ConfigError
from bilateral.models import BilateralNet, UnilateralNet, build_backbone
from bilateral.models.fused import (
    fuse,
    fuse_optimizer_states,
    split_outputs,
    stack_inputs,
    unfuse,
    unfuse_optimizer_state,
)
from bilateral.store import SweepStore
from bilateral.sweep import fusion_groups
from bilateral.training import run, run_group
from bilateral.training.objective import loss_fn
from tests.conftest import REPO, Killed, die_after_first_epoch

DATA = str(REPO / "data")
RUN_TOL = 1e-2  # relative L2 distance of whole runs' weights (see the module docstring)

TOL = dict(rtol=1e-4, atol=1e-5)  # float sums run in another order in the grouped kernels


def nets(backbone: str, k: int) -> list[nn.Module]:
    """K nets of one architecture; "bilateral-<left>-<right>" gives bilateral nets of two backbones."""
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        if backbone.startswith("bilateral-"):
            _, left, right = backbone.split("-")
            left_net, right_net = build_backbone(left, width=0.125), build_backbone(right, width=0.125)
            out.append(BilateralNet(left_net, right_net, 20, 4, dropout=0.0))
        else:
            out.append(UnilateralNet(build_backbone(backbone, width=0.125), 20, 4, dropout=0.0))
        for m in out[-1].modules():  # vgg11's classifier drops out too; fused, one RNG draws other masks
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    return out


def batches(k: int, b: int = 8):
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(b, 3, 32, 32, generator=g) for _ in range(k)]
    fines = [torch.randint(0, 20, (b,), generator=g) for _ in range(k)]
    return xs, fines, [f // 5 for f in fines]


@pytest.mark.parametrize("backbone", ["resnet9", "vgg11", "resnet18", "bilateral-resnet9-vgg11"])
def test_fused_forward_equals_separate(backbone):
    models = nets(backbone, 3)
    fused = fuse(models)
    xs, _, _ = batches(3)
    for mode in (True, False):  # batch statistics and running statistics
        fused.train(mode)
        for m in models:
            m.train(mode)
        together = split_outputs(fused(stack_inputs(xs)), 3)
        for k, (m, x) in enumerate(zip(models, xs, strict=True)):
            apart = m(x)
            for head in ("fine", "coarse"):
                torch.testing.assert_close(together[head][k], apart[head], **TOL)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fused_training_equals_separate_training(optimizer):
    k, steps = 2, 3
    models = nets("resnet9", k)
    fused = fuse(models)

    def make(params):
        if optimizer == "adam":  # eps: Adam's first step turns a 1e-9 gradient into +-lr, so a rounding
            # difference in a near-zero gradient would flip a whole step; a larger eps keeps it linear there
            return torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4, eps=1e-3)
        return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    opt_fused, opts = make(fused.parameters()), [make(m.parameters()) for m in models]
    for step in range(steps):
        xs, fines, coarses = batches(k, b=8 + step)
        outputs = split_outputs(fused(stack_inputs(xs)), k)
        loss = sum(
            loss_fn({h: z[i] for h, z in outputs.items()}, fines[i], coarses[i], 0.0) for i in range(k)
        )
        opt_fused.zero_grad()
        loss.backward()
        opt_fused.step()
        for m, opt, x, f, c in zip(models, opts, xs, fines, coarses, strict=True):
            opt.zero_grad()
            loss_fn(m(x), f, c, 0.0).backward()
            opt.step()
    for m, state in zip(models, unfuse(fused, models[0], k), strict=True):
        for key, value in m.state_dict().items():  # weights and BatchNorm running statistics
            torch.testing.assert_close(state[key], value, **TOL, msg=key)
    # the optimiser state splits into what each separate optimiser holds, and joins back exactly
    fused_state = opt_fused.state_dict()
    members = unfuse_optimizer_state(fused_state, fused, models[0], k)
    for member, opt in zip(members, opts, strict=True):
        apart = opt.state_dict()
        assert member["param_groups"] == apart["param_groups"]
        assert member["state"].keys() == apart["state"].keys()
        for index, values in apart["state"].items():
            for name, value in values.items():
                torch.testing.assert_close(member["state"][index][name], value, **TOL, msg=f"{index}.{name}")
    joined = fuse_optimizer_states(members, fused)
    for index, values in fused_state["state"].items():
        for name, value in values.items():
            assert torch.equal(joined["state"][index][name], value)


def test_unfused_state_loads_strictly():
    models = nets("resnet9", 2)
    states = unfuse(fuse(models), models[0], 2)
    for m, state in zip(models, states, strict=True):
        m.load_state_dict(state, strict=True)


def test_members_fused_with_different_batch_counts_keep_their_own():
    """A fused BatchNorm has one num_batches_tracked; members whose checkpoints come from different
    epochs (say, two seeds' best hemispheres) must get their own count back, plus the steps trained."""
    models = [nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)) for _ in range(2)]
    models[0][1].num_batches_tracked.fill_(30)
    models[1][1].num_batches_tracked.fill_(15)
    fused = fuse(models)
    fused.train()
    fused(torch.randn(2, 6, 8, 8))  # one training step of both members
    counts = [int(state["1.num_batches_tracked"]) for state in unfuse(fused, models[0], 2)]
    assert counts == [31, 16]


def test_different_architectures_refused():
    a = UnilateralNet(build_backbone("resnet9", width=0.125), 20, 4)
    b = UnilateralNet(build_backbone("resnet9", width=0.25), 20, 4)
    with pytest.raises(ConfigError, match="same architecture"):
        fuse([a, b])


def _relative_distance(a: dict, b: dict) -> float:
    keys = [k for k in b if b[k].is_floating_point() and "running" not in k]
    num = sum(float(((a[k] - b[k]) ** 2).sum()) for k in keys)
    return (num / sum(float((b[k] ** 2).sum()) for k in keys)) ** 0.5


def _last(root, run_id: str) -> dict:
    return SweepStore(root).run(run_id).load_checkpoint("last")


def pool(tiny_plan, *overrides: str):
    """The ensemble pool of seed 0: two unilateral runs that differ only in their member index."""
    plan = tiny_plan("plan.models=[ensemble-top1]", "model.dropout=0", *overrides)
    return [s for s in plan.runs if s.kind == "unilateral"]


@pytest.mark.parametrize("kind", ["unilateral", "bilateral-unspecialised"])
def test_fused_runs_equal_separate_runs(tmp_path, tiny_plan, kind):
    sgd = ("optim.name=sgd", "optim.lr=0.01", "train.epochs=1")
    if kind == "unilateral":
        specs = pool(tiny_plan, *sgd)
    else:  # two seeds of the bilateral net: features of two hemispheres concatenated per member
        specs = tiny_plan(f"plan.models=[{kind}]", "plan.seeds=[0,1]", "model.dropout=0", *sgd).runs
    fused = run_group(specs, SweepStore(tmp_path / "fused"), device="cpu", data_dir=DATA)
    apart = [run(s, SweepStore(tmp_path / "apart"), device="cpu", data_dir=DATA) for s in specs]
    for spec, f, a in zip(specs, fused, apart, strict=True):
        assert f["run_id"] == a["run_id"] == spec.run_id  # fusing does not change what a run is
        assert f["fused_with"] == [s.run_id for s in specs] and a["fused_with"] == []
        assert f["params"] == a["params"] and f["best_epoch"] == a["best_epoch"] == 0
        f_last, a_last = _last(tmp_path / "fused", spec.run_id), _last(tmp_path / "apart", spec.run_id)
        assert f_last["model"].keys() == a_last["model"].keys()  # one checkpoint format
        assert _relative_distance(f_last["model"], a_last["model"]) < RUN_TOL
        f_loss = SweepStore(tmp_path / "fused").run(spec.run_id).read_metrics()[0]["train_loss"]
        a_loss = SweepStore(tmp_path / "apart").run(spec.run_id).read_metrics()[0]["train_loss"]
        assert f_loss == pytest.approx(a_loss, rel=1e-3)
    assert _relative_distance(*(_last(tmp_path / "apart", s.run_id)["model"] for s in specs)) > 0.1


def test_fused_group_resumes_exactly_and_its_checkpoints_resume_apart(tmp_path, tiny_plan, monkeypatch):
    specs = pool(tiny_plan, "train.epochs=3")
    full = run_group(specs, SweepStore(tmp_path / "full"), device="cpu", data_dir=DATA)
    undo = die_after_first_epoch(monkeypatch, specs[-1].run_id)  # every member has saved epoch 0
    for name in ("resumed", "apart"):
        with pytest.raises(Killed):
            run_group(specs, SweepStore(tmp_path / name), device="cpu", data_dir=DATA)
    undo()

    resumed = run_group(specs, SweepStore(tmp_path / "resumed"), device="cpu", data_dir=DATA)
    for spec, r, f in zip(specs, resumed, full, strict=True):
        assert r["resumed_from_epoch"] == 1 and f["resumed_from_epoch"] is None
        for key in ("test_acc_fine", "test_acc_coarse", "val_score", "best_epoch"):
            assert r[key] == f[key], key
        a, b = _last(tmp_path / "full", spec.run_id), _last(tmp_path / "resumed", spec.run_id)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    # the same fused checkpoints resume as separate runs (weights and optimiser state split per run)
    for spec in specs:
        record = run(spec, SweepStore(tmp_path / "apart"), device="cpu", data_dir=DATA)
        assert record["resumed_from_epoch"] == 1 and record["fused_with"] == []
        assert (
            _relative_distance(
                _last(tmp_path / "apart", spec.run_id)["model"],
                _last(tmp_path / "full", spec.run_id)["model"],
            )
            < RUN_TOL
        )


def test_fused_specialised_nets_keep_their_hemispheres_frozen(tmp_path, tiny_plan):
    plan = tiny_plan("plan.models=[bilateral-specialised]", "plan.seeds=[0,1]")
    store = SweepStore(tmp_path)
    for stage in plan.stages:
        for group in fusion_groups(stage, 2, store):
            assert len(group) == 2  # per stage: two seeds of each kind
            run_group(group, store, device="cpu", data_dir=DATA)
    hemispheres = {(s.kind, s.seed): s.run_id for s in plan.stages[0]}
    for spec in plan.stages[1]:
        final = store.run(spec.run_id).load_checkpoint("last")["model"]
        for side, kind in (("left", "hemisphere-fine"), ("right", "hemisphere-coarse")):
            trained = store.run(hemispheres[(kind, spec.seed)]).load_checkpoint("best")["model"]
            for key, value in trained.items():
                if key.startswith("backbone."):  # weights and BN running statistics, this seed's own
                    assert torch.equal(final[f"{side}.{key.removeprefix('backbone.')}"], value), key
        record = store.run(spec.run_id).read_record()
        assert record["trainable_params"] < record["params"] / 5 and len(record["fused_with"]) == 2


def test_fusion_groups_share_a_key_and_a_last_epoch(tmp_path, tiny_plan):
    plan = tiny_plan("plan.seeds=[0,1]", "plan.pool_size=3")
    store = SweepStore(tmp_path)
    stage = plan.stages[0]
    groups = fusion_groups(stage, 4, store)
    assert sorted(s.run_id for g in groups for s in g) == sorted(s.run_id for s in stage)
    assert all(len(g) <= 4 and len({s.fusion_key for s in g}) == 1 for g in groups)
    sizes = [len(g) for g in groups if (g[0].kind, g[0].backbone) == ("unilateral", "resnet9")]
    assert sizes == [4, 2]  # 2 seeds x 3 pool members
    assert [len(g) for g in groups if g[0].kind == "hemisphere-fine"] == [2]  # one per seed
    assert [len(g) for g in fusion_groups(stage, 1, store)] == [1] * len(stage)
    assert all(len(g) == 1 for g in fusion_groups(plan.stages[1], 4, store) if g[0].kind == "ensemble")
    # a run with a checkpoint of another epoch resumes in a group of its own
    unilateral = [s for s in stage if s.kind == "unilateral" and s.backbone == "resnet9"]
    store.run(unilateral[0].run_id).save_checkpoint("last", {"epoch": 0})
    groups = fusion_groups(unilateral, 10, store)
    assert sorted(len(g) for g in groups) == [1, 5] and [unilateral[0]] in groups


def test_groups_that_cannot_fuse_are_refused(tmp_path, tiny_plan):
    plan = tiny_plan("plan.models=[hemisphere-fine,unilateral]")
    with pytest.raises(ConfigError, match="cannot train fused"):
        run_group(plan.runs, SweepStore(tmp_path), device="cpu", data_dir=DATA)
    specs = pool(tiny_plan)
    store = SweepStore(tmp_path)
    store.run(specs[0].run_id).save_checkpoint("last", {"epoch": 0})
    with pytest.raises(CheckpointError, match="different epochs"):
        run_group(specs, store, device="cpu", data_dir=DATA)
    assert store.run(specs[0].run_id).has_checkpoint("last")  # nothing deleted
