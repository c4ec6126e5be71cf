"""Declared contrasts in comparison files: parsing, and the errors that name their fix."""

import pytest

from bilateral.comparison import Contrast, load_comparison
from bilateral.config import load_config
from bilateral.errors import ConfigError
from bilateral.plan import model_names


def comparison(tmp_path, contrasts: str, rows: str = "[bilateral-specialised, unilateral, ensemble]"):
    path = tmp_path / "c.yaml"
    path.write_text(f"rows: {rows}\ncontrasts: {contrasts}\n")
    return load_comparison(str(path))


def test_contrasts_parse_with_default_heads_and_a_margin(tmp_path):
    c = comparison(
        tmp_path,
        "{margin: 1.0, primary: [{row: bilateral-specialised, minus: unilateral},"
        " {row: bilateral-specialised, minus: ensemble-top2, heads: [fine]}]}",
    )
    assert c.margin == 1.0
    assert c.contrasts == [
        Contrast("bilateral-specialised", "unilateral", ("fine", "coarse")),
        Contrast("bilateral-specialised", "ensemble-top2", ("fine",)),
    ]


def test_a_comparison_without_contrasts_declares_none():
    paper = load_comparison("paper")
    assert paper.contrasts == [] and paper.margin is None


@pytest.mark.parametrize(
    ("block", "says"),
    [
        ("{margin: -1, primary: [{row: a, minus: b}]}", "positive number of accuracy points"),
        ("{margin: 1}", "contrasts.primary must be a non-empty list"),
        ("{primary: [{row: a}]}", "keys row and minus"),
        ("{primary: [{row: a, minus: b, heads: [middle]}]}", "distinct heads among fine, coarse"),
        ("{primary: [{row: a, minus: a}]}", "compares a row with itself"),
        ("{primary: [{row: a, minus: b}, {row: a, minus: b}]}", "declared twice"),
        ("{primary: [], alpha: 0.1}", "mapping of margin and primary"),
    ],
)
def test_bad_contrasts_fail_naming_the_fix(tmp_path, block, says):
    with pytest.raises(ConfigError, match=says):
        comparison(tmp_path, block)


def test_contrast_rows_are_checked_against_the_expanded_rows(tmp_path):
    """`ensemble` is a kind's name that expands into ensemble-top2 and -top5: those are rows."""
    cfg = load_config("smoke")
    good = comparison(tmp_path, "{primary: [{row: bilateral-specialised, minus: ensemble-top2}]}")
    good.check_contrast_rows(model_names(cfg, good))
    typo = comparison(tmp_path, "{primary: [{row: bilateral-specialised, minus: ensemble-2}]}")
    with pytest.raises(ConfigError, match=r"names row\(s\) \['ensemble-2'\].*ensemble-top2"):
        typo.check_contrast_rows(model_names(cfg, typo))
