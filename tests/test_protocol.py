"""The authors' protocol as a preset (presets/authors.yaml), each of its settings, rows with settings of
their own (experiments/protocol.yaml), and the check against the authors' figures."""

import dataclasses
import math
import re
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bilateral import fidelity
from bilateral.assemble import build_model
from bilateral.comparison import load_comparison
from bilateral.config import load_config, to_dict
from bilateral.data import normalize
from bilateral.errors import ConfigError
from bilateral.plan import RunSpec, build_plan
from bilateral.report import markdown, runs_table, setting_effects, summarize, write_report
from bilateral.run_data import load_data
from bilateral.store import SweepStore, write_json
from bilateral.training import run
from tests.conftest import REPO, tiny_config

AUTHORS = {  # each setting of the authors' protocol that `paper` makes differently
    "model.bn_momentum": 0.9,
    "model.frozen_bn_update": True,
    "train.test_checkpoint": "last",
    "train.eval_every": 2,
    "report.std_ddof": 0,
}


def flat(cfg) -> dict:
    return {
        f"{s}.{k}": v for s, keys in to_dict(cfg).items() if isinstance(keys, dict) for k, v in keys.items()
    }


def test_the_authors_preset_is_paper_plus_its_named_differences():
    paper, authors = flat(load_config("paper")), flat(load_config("authors"))
    assert {k: v for k, v in authors.items() if paper[k] != v} == AUTHORS
    text = (resources.files("bilateral") / "presets" / "authors.yaml").read_text()
    for key in AUTHORS:  # each difference is named where it is set
        (line,) = [line for line in text.splitlines() if line.strip().startswith(key.split(".")[1] + ":")]
        assert "AUTHORS" in line and "paper:" in line


def test_no_setting_lets_the_test_set_choose_a_checkpoint():
    with pytest.raises(
        ConfigError, match="train.test_checkpoint='test' is not supported: choose one of best, last"
    ):
        load_config("authors", overrides=["train.test_checkpoint=test"])
    plan = build_plan(load_config("authors", overrides=["plan.seeds=[0]"]))
    for spec in plan.runs:  # a hemisphere is tested, and used, at its best checkpoint on validation
        if spec.kind_spec.role in ("left", "right"):
            assert (spec.train.test_checkpoint, spec.model.frozen_bn_update) == ("best", False)
        elif spec.trains:
            assert spec.train.test_checkpoint == "last" and spec.model.bn_momentum == 0.9


def test_bn_momentum_of_the_preset_reaches_every_batchnorm():
    plan = build_plan(tiny_config("model.bn_momentum=0.9", "plan.models=[bilateral-specialised]"))
    for spec in plan.runs:
        norms = [m for m in build_model(spec, 20, 4).modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and {m.momentum for m in norms} == {0.9}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One seed of specialised bilateral nets on tiny synthetic data: the paper's settings, and the
    authors' frozen-BN updates, last-epoch test and validation every 2 epochs, on shared hemispheres."""
    store = SweepStore(tmp_path_factory.mktemp("protocol"))
    out = {}
    for name, extra in {
        "paper": [],
        "authors": ["model.frozen_bn_update=true", "train.test_checkpoint=last"],
    }.items():
        plan = build_plan(
            tiny_config("plan.models=[bilateral-specialised]", "train.epochs=3", "train.eval_every=2", *extra)
        )
        out[name] = {
            spec.kind: run(spec, store, device="cpu", data_dir=str(REPO / "data")) for spec in plan.runs
        }
    return store, out


def test_validation_every_2_epochs_and_at_the_end_chooses_among_those_only(trained):
    store, out = trained
    record = out["paper"]["hemisphere-fine"]
    rows = store.run(record["run_id"]).read_metrics()
    validated = [row["epoch"] for row in rows if "val_score" in row]
    assert [row["epoch"] for row in rows] == [0, 1, 2] and validated == [1, 2]
    best = max((row for row in rows if "val_score" in row), key=lambda row: row["val_score"])
    assert record["best_epoch"] == best["epoch"]  # the best on validation, never on test


def test_the_hemispheres_are_shared_and_tested_at_best(trained):
    _, out = trained
    for kind in ("hemisphere-fine", "hemisphere-coarse"):
        assert out["paper"][kind]["run_id"] == out["authors"][kind]["run_id"]
        assert out["authors"][kind]["tested_checkpoint"] == "best"


def test_last_epoch_selection_tests_the_last_weights(trained):
    store, out = trained
    record = out["authors"]["bilateral-specialised"]
    assert (record["tested_checkpoint"], record["tested_epoch"]) == ("last", 2)
    spec_run = store.run(record["run_id"])
    preds = spec_run.load_arrays("predictions.npz")
    spec = RunSpec.from_dict(record["spec"])
    data = load_data(spec.data.source, str(REPO / "data"), True)
    model = build_model(spec, data.num_fine, data.num_coarse)
    model.load_state_dict(spec_run.load_checkpoint("last")["model"])
    mean, std = (torch.tensor(v, dtype=torch.float32) for v in data.mean_std())
    x = normalize(torch.from_numpy(data.test.images[preds["test_index"]]).permute(0, 3, 1, 2), mean, std)
    with torch.no_grad():
        logits = model.eval()(x.contiguous())["fine"]
    np.testing.assert_allclose(logits.numpy(), preds["logits_fine"], rtol=1e-4, atol=1e-4)
    assert out["paper"]["bilateral-specialised"]["tested_checkpoint"] == "best"


def test_frozen_hemispheres_keep_their_bn_statistics_unless_the_authors_setting_is_on(trained):
    store, out = trained

    def running_means(record, prefix):
        state = store.run(record["run_id"]).load_checkpoint("last")["model"]
        return {
            k.removeprefix(prefix): v
            for k, v in state.items()
            if k.startswith(prefix) and "running_mean" in k
        }

    hemisphere = running_means(out["paper"]["hemisphere-fine"], "backbone.")
    paper = running_means(out["paper"]["bilateral-specialised"], "left.")
    authors = running_means(out["authors"]["bilateral-specialised"], "left.")
    assert hemisphere.keys() == paper.keys() == authors.keys() and hemisphere
    best_state = store.run(out["paper"]["hemisphere-fine"]["run_id"]).load_checkpoint("best")["model"]
    best = {k.removeprefix("backbone."): v for k, v in best_state.items() if "running_mean" in k}
    assert all(torch.equal(paper[k], best[k]) for k in best)  # fixed: the statistics they were trained with
    assert not all(torch.equal(authors[k], best[k]) for k in best)  # the authors': they moved


RECORD = {"backbone": "resnet9", "member": 0, "params": 1, "wall_time_s": 60.0, "spec": {"depends_on": []}}


def records(model, accs, base_model=None, settings=""):
    return [
        {
            **RECORD,
            "run_id": f"{model}-{seed}",
            "model": model,
            "seed": seed,
            "test_acc_fine": f,
            "test_acc_coarse": c,
            "base_model": base_model or model,
            "settings": settings,
        }
        for seed, (f, c) in enumerate(accs)
    ]


def test_std_ddof_0_is_the_population_std_and_the_report_says_which():
    runs = runs_table(records("bilateral-specialised", [(0.70, 0.80), (0.72, 0.84), (0.74, 0.82)]))
    sample, population = summarize(runs, 1).iloc[0], summarize(runs, 0).iloc[0]
    assert sample["fine_acc_std"] == pytest.approx(0.02)
    assert population["fine_acc_std"] == pytest.approx(0.02 * math.sqrt(2 / 3))
    assert "ddof=0" in markdown(runs, "t", config={"report": {"std_ddof": 0}})


def test_write_report_takes_ddof_from_the_sweep_config(tmp_path):
    store = SweepStore(tmp_path)
    for r in records("bilateral-specialised", [(0.70, 0.80), (0.72, 0.84), (0.74, 0.82)]):
        store.run(r["run_id"]).write_record(r)
    write_json(tmp_path / "sweep.json", {"config": to_dict(load_config("authors")), "runs": []})
    write_report(tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["fine_acc_std"].iloc[0] == pytest.approx(0.02 * math.sqrt(2 / 3))


def test_a_rows_settings_effect_is_paired_with_the_row_it_varies():
    runs = runs_table(
        records("bilateral-specialised", [(0.70, 0.80), (0.72, 0.84), (0.74, 0.82)])
        + records(
            "specialised-bn",
            [(0.71, 0.78), (0.74, 0.83), (0.75, 0.79)],
            "bilateral-specialised",
            "model.bn_momentum=0.9",
        )
    )
    (effect,) = setting_effects(runs).to_dict("records")
    assert (effect["model"], effect["of"], effect["pairs"]) == ("specialised-bn", "bilateral-specialised", 3)
    assert effect["fine_diff_mean"] == pytest.approx(np.mean([0.01, 0.02, 0.01]))
    assert effect["coarse_diff_mean"] == pytest.approx(np.mean([-0.02, -0.01, -0.03]))
    assert "the row minus the row it varies" in markdown(runs, "t")


def test_the_protocol_comparison_shares_what_a_setting_does_not_change():
    plan = build_plan(tiny_config("plan.experiment=protocol"))
    by_name = {spec.model_name: spec for spec in plan.runs}
    assert {r.name for r in load_comparison("protocol").rows} <= by_name.keys()
    assert "hemisphere-fine [model.bn_momentum=0.9]" in by_name  # the hemispheres a setting retrains
    paper_hemispheres = by_name["bilateral-specialised"].depends_on
    for row in ("specialised-frozen-bn-update", "specialised-last-epoch"):  # hemispheres never read these
        assert by_name[row].depends_on == paper_hemispheres
    assert by_name["specialised-bn-momentum"].depends_on != paper_hemispheres
    authors = by_name["specialised-authors"]
    assert (authors.model.bn_momentum, authors.model.frozen_bn_update, authors.train.test_checkpoint) == (
        0.9,
        True,
        "last",
    )
    assert len(plan.runs) == 19
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", spec.run_id) for spec in plan.runs)  # a safe directory name
    assert by_name["hemisphere-fine [model.bn_momentum=0.9]"].run_id.startswith(
        "hemisphere-fine_model.bn_momentum-0.9-resnet9-s0-"
    )


def test_a_rows_settings_are_checked_where_they_enter(tmp_path):
    def comparison(settings: str):
        path = tmp_path / "c.yaml"
        path.write_text(f"rows:\n  - name: x\n    kind: bilateral-specialised\n    settings: {settings}\n")
        return str(path)

    with pytest.raises(ConfigError, match="setting 'plan.seeds' is not a key of a run's config: use one of"):
        load_comparison(comparison("{plan.seeds: [0]}"))
    with pytest.raises(ConfigError, match=r"row 'x'.*model.bn_momentum=2.0 is out of range"):
        build_plan(tiny_config(f"plan.experiment={comparison('{model.bn_momentum: 2.0}')}"))


def test_the_fidelity_check_flags_hemispheres_outside_the_authors_bands():
    config = to_dict(load_config("paper"))
    assert fidelity.applies(config)
    assert not fidelity.applies({**config, "data": {**config["data"], "source": "cifar10"}})
    assert not fidelity.applies({**config, "preset": "fast"})
    summary = pd.DataFrame(
        {
            "model": ["hemisphere-fine", "hemisphere-coarse"],
            "backbone": ["resnet9", "resnet9"],
            "fine_acc_mean": [0.675, np.nan],
            "coarse_acc_mean": [np.nan, 0.61],
        }
    )
    (line,) = fidelity.outside_bands(summary)
    assert line.startswith("hemisphere-coarse coarse accuracy 0.6100 is outside the authors' 0.73-0.75")
    runs = runs_table(records("hemisphere-coarse", [(np.nan, 0.61)]))
    assert "something in this setup differs" in markdown(runs, "t", config=config)
    assert "Against the authors' figures" not in markdown(runs, "t", config={**config, "preset": "smoke"})


def test_an_older_record_without_the_new_fields_keeps_its_run_id_and_defaults():
    spec = build_plan(tiny_config("plan.models=[unilateral]")).runs[0]
    old = spec.to_dict()
    del old["settings"], old["train"]["eval_every"], old["train"]["test_checkpoint"]
    again = RunSpec.from_dict(old)
    assert again.run_id == spec.run_id and again.train.test_checkpoint == "best"
    assert (
        dataclasses.replace(spec, train=dataclasses.replace(spec.train, eval_every=2)).run_id != spec.run_id
    )
