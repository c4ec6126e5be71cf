"""Model kinds as plug-ins: the paper's plan is unchanged by them, and a kind declared in a module
outside bilateral/ runs through the front door with a dependency to a summary row."""

import json
import os
import subprocess

import pandas as pd
import pytest
import torch

from bilateral.assemble import build_model
from bilateral.comparison import load_comparison, shipped
from bilateral.config import load_config
from bilateral.errors import ConfigError
from bilateral.kinds import all_kinds
from bilateral.plan import RunSpec, build_plan, model_names
from bilateral.store import SweepStore
from tests.conftest import REPO, sweep_cmd, tiny_config


def test_the_paper_kinds_are_declared_in_plan_order_with_their_roles():
    roles = [(k.name, k.role) for k in all_kinds()][:6]
    assert [role for _, role in roles] == ["left", "right", "bilateral", "bilateral", "baseline", "ensemble"]
    paper = ["hemisphere-fine", "hemisphere-coarse", "bilateral-specialised", "bilateral-unspecialised"]
    paper += ["unilateral", "unilateral-resnet18", "unilateral-resnet34", "ensemble-top2", "ensemble-top5"]
    assert model_names(load_config("smoke"))[: len(paper)] == paper  # the default comparison's rows first


def test_a_row_brings_only_what_it_depends_on():
    cfg = load_config("smoke", overrides=["plan.seeds=[0]", "plan.models=[hemisphere-fine]"])
    assert [s.kind for s in build_plan(cfg).runs] == ["hemisphere-fine"]
    cfg = load_config("smoke", overrides=["plan.seeds=[0]", "plan.models=[bilateral-specialised]"])
    plan = build_plan(cfg)
    assert [[s.kind for s in stage] for stage in plan.stages] == [
        ["hemisphere-fine", "hemisphere-coarse"],
        ["bilateral-specialised"],
    ]


def test_a_kind_from_a_module_outside_bilateral_trains_after_its_dependency(tmp_path):
    args = ["--models", "finetuned-left", "--seeds", "0", "plan.kind_modules=[tests.kinds_plugin]"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # as a user's own module is found: PYTHONPATH=.
    proc = subprocess.run(sweep_cmd(tmp_path, *args), capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    assert set(summary.index) == {"hemisphere-fine", "finetuned-left"}
    assert summary.loc["finetuned-left", "coarse_acc_mean"] > 0  # both heads, unlike its dependency
    store = SweepStore(tmp_path / "t")
    records = {r["kind"]: r for r in store.read_records()[0]}
    tuned, left = records["finetuned-left"], records["hemisphere-fine"]
    assert tuned["spec"]["plugin"] == "tests.kinds_plugin" and tuned["spec"]["depends_on"] == [left["run_id"]]
    spec = json.loads(store.run(tuned["run_id"]).path("spec.json").read_text())
    assert spec["plugin"] == "tests.kinds_plugin"
    # its prepare() put the hemisphere's best backbone into a fresh net, as the run started from
    run_spec = RunSpec.from_dict(spec)
    model = build_model(run_spec, 20, 4)
    run_spec.kind_spec.prepare(run_spec, store, model)
    best = store.run(left["run_id"]).load_checkpoint("best")["model"]
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, best[f"backbone.{key}"]), key


def test_a_comparison_file_makes_rows_of_its_own(tmp_path):
    """A row made from a kind's row with other backbones: its runs carry its name, its dependencies
    (the hemispheres) take its backbones, and the paper's rows keep their run ids."""
    path = tmp_path / "mine.yaml"
    path.write_text(
        "rows:\n  - bilateral-specialised\n  - name: bilateral-vgg-right\n    kind: bilateral-specialised\n"
        "    right_backbone: vgg11\n"
    )
    cfg = load_config("smoke", overrides=["plan.seeds=[0]", f"plan.experiment={path}"])
    plan = build_plan(cfg)
    rows = {s.model_name: s for s in plan.runs}
    hemispheres = {"hemisphere-fine", "hemisphere-coarse"}
    assert set(rows) == {*hemispheres, "bilateral-specialised", "bilateral-vgg-right"}
    custom, paper = rows["bilateral-vgg-right"], rows["bilateral-specialised"]
    assert custom.row == "bilateral-vgg-right" and custom.right_backbone == "vgg11"
    coarse = [s for s in plan.runs if s.kind == "hemisphere-coarse"]
    assert sorted(s.backbone for s in coarse) == ["resnet9", "vgg11"]  # one per bilateral row
    default = build_plan(load_config("smoke", overrides=["plan.seeds=[0]"]))
    assert paper.run_id in {s.run_id for s in default.runs}


def test_the_dry_run_prints_rows_with_their_dependencies_and_parameters(tmp_path):
    proc = subprocess.run(
        sweep_cmd(tmp_path, "--seeds", "0", "--dry-run"), capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()

    def columns(row: str) -> list[str]:
        return next(x for x in lines if x.strip().startswith(row + " ")).split()

    specialised = next(x for x in lines if x.strip().startswith("bilateral-specialised"))
    assert "<- hemisphere-coarse, hemisphere-fine" in specialised
    _, _, _, params, trained, mflops, pflops, *_ = columns("bilateral-specialised")
    params, trained = int(params.replace(",", "")), int(trained.replace(",", ""))
    assert 0 < trained < params / 10  # heads only: the hemispheres are frozen
    fine = columns("hemisphere-fine")
    assert int(fine[3].replace(",", "")) == int(fine[4].replace(",", ""))  # trains every parameter
    # two frozen hemispheres: the net's inference FLOPs are twice one hemisphere's (plus the heads)
    assert float(mflops) == pytest.approx(2 * float(fine[5]), rel=0.01)
    assert pflops == "-"  # synthetic data: its training size is known only once decoded


def test_run_cost_counts_forward_and_backward_of_what_trains():
    """A unilateral ResNet-9 trains everything: 3x its forward per image (forward, then gradients of
    inputs and weights); frozen hemispheres cost their forward alone."""
    from bilateral.cost import run_cost
    from bilateral.models.profile import profile_backbone

    runs = {s.model_name: s for s in build_plan(load_config("smoke", overrides=["plan.seeds=[0]"])).runs}
    backbone = profile_backbone("resnet9", 0.125, 32)["flops"]
    unilateral = run_cost(runs["unilateral"], 100, 20, 32)
    assert unilateral.inference_flops == pytest.approx(backbone, rel=0.01)
    assert unilateral.train_flops_per_image == 3 * unilateral.inference_flops
    assert unilateral.training_flops(1000) == 1000 * unilateral.train_flops_per_image
    specialised = run_cost(runs["bilateral-specialised"], 100, 20, 32)
    heads = specialised.inference_flops - 2 * backbone
    assert specialised.train_flops_per_image == pytest.approx(2 * backbone + 3 * heads, rel=1e-6)
    ensemble = run_cost(runs["ensemble-top2"], 100, 20, 32)
    assert ensemble.inference_flops == 2 * unilateral.inference_flops and ensemble.train_flops_per_image == 0


@pytest.mark.parametrize(
    "text, message",
    [
        ("rows: [bilateral-magic]\n", "row 'bilateral-magic' is made from 'bilateral-magic', which no known"),
        ("rows:\n  - name: x\n    kind: nothing\n", "row 'x' is made from 'nothing'"),
        ("rows:\n  - name: x\n    colour: red\n", "unknown key(s) ['colour']"),
        ("rows: [unilateral, unilateral]\n", "names row(s) ['unilateral'] twice"),
        ("rows: [unilateral\n", "is not valid YAML at line"),
        ("settings: {plan.seeds: [0]}\nrows: [unilateral]\n", "setting 'plan.seeds' is not a key of a run's"),
        ("settings: {data.holdout_per_coarse: -1}\nrows: [unilateral]\n", "holdout_per_coarse"),
    ],
)
def test_bad_comparison_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        build_plan(load_config("smoke", overrides=[f"plan.experiment={path}"]))
    assert message in str(error.value)


@pytest.mark.parametrize("name", shipped())
def test_every_shipped_comparison_builds_a_plan_with_a_run_of_each_row(name):
    cfg = tiny_config(f"plan.experiment={name}", "data.source=navon")
    plan = build_plan(cfg)
    rows = [row for row in load_comparison(name).rows if row.name != "ensemble"]  # a kind: its rows
    for row in rows:  # each row alone brings its own runs and dependencies
        alone = build_plan(
            tiny_config(f"plan.experiment={name}", "data.source=navon", f"plan.models=[{row.name}]")
        )
        assert {s.run_id for s in alone.runs} <= {s.run_id for s in plan.runs} and alone.runs
