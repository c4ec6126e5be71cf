"""The controls of the core comparison: same-label pairs (fine+fine, coarse+coarse), two frozen
random backbones, and a two-net ensemble without selection; each trains heads only where its
backbones already exist."""

import json
import subprocess

import pandas as pd
import pytest

from bilateral.errors import ConfigError
from bilateral.plan import build_plan
from tests.conftest import REPO, sweep_cmd, tiny_config


def _runs(*overrides):
    return {(s.model_name, s.seed, s.member): s for s in build_plan(tiny_config(*overrides)).runs}


def test_same_label_pairs_on_one_substrate_use_this_seed_and_the_next():
    runs = _runs("plan.seeds=[0,1]", "plan.models=[bilateral-fine-fine,bilateral-coarse-coarse]")
    for row, hemisphere in [
        ("bilateral-fine-fine", "hemisphere-fine"),
        ("bilateral-coarse-coarse", "hemisphere-coarse"),
    ]:
        for seed in (0, 1):
            deps = runs[(row, seed, 0)].depends_on
            assert deps == (runs[(hemisphere, seed, 0)].run_id, runs[(hemisphere, seed + 1, 0)].run_id)
    # seed 2's hemispheres train as partners of seed 1, and only those
    assert {k for k in runs if k[1] == 2} == {("hemisphere-fine", 2, 0), ("hemisphere-coarse", 2, 0)}


def test_same_label_pairs_on_two_substrates_use_this_seed_of_each():
    runs = build_plan(
        tiny_config("plan.models=[bilateral-fine-fine]", "plan.right_backbone=resnet9-dilated")
    ).runs
    pair = next(s for s in runs if s.kind == "bilateral-fine-fine")
    deps = {s.run_id: s for s in runs if s.run_id in pair.depends_on}
    assert sorted((s.backbone, s.seed) for s in deps.values()) == [("resnet9", 0), ("resnet9-dilated", 0)]


def test_random_floor_depends_on_nothing_and_ensemble_pool_is_its_own():
    runs = _runs("plan.experiment=core", "plan.pool_size=10")
    assert runs[("bilateral-random", 0, 0)].depends_on == ()
    ensemble = runs[("ensemble-2", 0, 0)]
    assert ensemble.top_k == 2 and len(ensemble.depends_on) == 2  # the row's pool, not plan.pool_size
    assert {k[2] for k in runs if k[0] == "unilateral"} == {0, 1}


def test_an_ensemble_larger_than_its_pool_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rows:\n  - {name: e, kind: ensemble-top2, options: {pool: 1}}\n")
    with pytest.raises(ConfigError, match="options.pool=1"):
        build_plan(tiny_config(f"plan.experiment={path}"))


def test_the_core_comparison_trains_heads_only_on_frozen_backbones(tmp_path):
    """Through the front door, one seed: the controls' records say that their heads alone trained,
    and every row of the comparison is in the summary."""
    args = ["--experiment", "core", "--seeds", "0", "train.epochs=1"]
    proc = subprocess.run(sweep_cmd(tmp_path, *args), capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {
        r["model"]: r
        for r in (json.loads(p.read_text()) for p in (tmp_path / "t" / "runs").glob("*/record.json"))
        if r["seed"] == 0 and r["member"] == 0
    }
    for row in (
        "bilateral-specialised",
        "bilateral-fine-fine",
        "bilateral-coarse-coarse",
        "bilateral-random",
    ):
        assert records[row]["trained_parts"] == ["heads"], row
        assert 0 < records[row]["trainable_params"] < records[row]["params"] / 10
    assert records["bilateral-unspecialised"]["trained_parts"] == ["left", "right", "heads"]
    summary = pd.read_csv(tmp_path / "summary.csv")
    rows = {"hemisphere-fine", "hemisphere-coarse", "bilateral-specialised", "bilateral-unspecialised"}
    rows |= {"unilateral", "ensemble-2", "bilateral-fine-fine", "bilateral-coarse-coarse", "bilateral-random"}
    assert rows <= set(summary["model"])


def test_head_epochs_apply_to_heads_only_runs_and_leave_other_run_ids_alone():
    rows = "plan.models=[bilateral-specialised,bilateral-random,unilateral]"
    plain = {s.model_name: s for s in build_plan(tiny_config(rows)).runs}
    short = {s.model_name: s for s in build_plan(tiny_config(rows, "train.head_epochs=1")).runs}
    for row in ("bilateral-specialised", "bilateral-random"):
        assert short[row].train.epochs == 1 and plain[row].train.epochs == 2
        assert short[row].run_id != plain[row].run_id
    for row in ("hemisphere-fine", "hemisphere-coarse", "unilateral"):
        assert short[row].run_id == plain[row].run_id and short[row].train.epochs == 2
