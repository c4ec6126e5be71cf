from collections import Counter

import pytest

from bilateral.config import load_config
from bilateral.errors import ConfigError
from bilateral.plan import RunSpec, build_plan


def plan_for(*overrides):
    return build_plan(load_config("paper", overrides=list(overrides)))


def test_paper_plan_per_seed():
    plan = plan_for()
    runs = plan.runs
    assert len(plan.stages) == 2
    per_seed = Counter(s.model_name for s in runs if s.seed == 0)
    # pool of 10 unilateral members; member 0 is the unilateral baseline; plus resnet18 and resnet34
    assert per_seed == {
        "hemisphere-fine": 1,
        "hemisphere-coarse": 1,
        "bilateral-specialised": 1,
        "bilateral-unspecialised": 1,
        "unilateral": 12,
        "ensemble-top2": 1,
        "ensemble-top5": 1,
    }
    assert len(runs) == 5 * 18 and len({s.run_id for s in runs}) == len(runs)
    stage0 = {s.run_id for s in plan.stages[0]}
    for spec in plan.stages[1]:
        assert spec.depends_on and set(spec.depends_on) <= stage0
        assert all(d.split("-s")[-1].startswith(f"{spec.seed}") for d in spec.depends_on)


def test_specialised_depends_on_its_seeds_hemispheres():
    plan = plan_for("plan.models=[bilateral-specialised]", "plan.seeds=[3]")
    by_id = {s.run_id: s for s in plan.runs}
    (bil,) = plan.stages[1]
    assert sorted(by_id[d].kind for d in bil.depends_on) == ["hemisphere-coarse", "hemisphere-fine"]
    assert all(by_id[d].seed == 3 for d in bil.depends_on)


def test_unilateral_baseline_is_pool_member_zero():
    plan = plan_for(
        "plan.models=[unilateral,ensemble-top2]",
        "plan.seeds=[0]",
        "plan.pool_size=4",
        "plan.ensemble_top=[2]",
    )
    unilateral = [s for s in plan.runs if s.kind == "unilateral"]
    assert sorted(s.member for s in unilateral) == [0, 1, 2, 3]
    (ens,) = plan.stages[1]
    assert len(ens.depends_on) == 4 and unilateral[0].run_id in ens.depends_on


def test_run_id_is_stable_and_depends_on_config():
    a = plan_for("plan.models=[unilateral]", "plan.seeds=[0]").runs[0]
    b = RunSpec.from_dict(a.to_dict())
    c = plan_for("plan.models=[unilateral]", "plan.seeds=[0]", "optim.lr=0.1").runs[0]
    assert a.run_id == b.run_id and a.run_id != c.run_id
    assert a.run_id.startswith("unilateral-resnet9-s0-")


def test_different_right_hemisphere():
    plan = plan_for("plan.models=[bilateral-specialised]", "plan.seeds=[0]", "plan.right_backbone=vgg11")
    kinds = {s.kind: s for s in plan.runs}
    assert kinds["hemisphere-coarse"].backbone == "vgg11"
    assert kinds["bilateral-specialised"].backbone_name == "resnet9+vgg11"


def test_unknown_model_kind():
    with pytest.raises(ConfigError, match="unknown model kind.*bilateral-magic.*bilateral-specialised"):
        plan_for("plan.models=[bilateral-magic]")
