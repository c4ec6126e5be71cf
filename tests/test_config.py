import pytest

from bilateral.config import load_config, parse_seeds
from bilateral.errors import ConfigError


def test_preset_then_overrides():
    cfg = load_config("paper", overrides=["train.epochs=3", "plan.seeds=[7,8]", "data.source=synthetic"])
    assert cfg.train.epochs == 3 and cfg.plan.seeds == [7, 8] and cfg.data.source == "synthetic"
    assert cfg.optim.lr == 1e-4 and cfg.train.batch_size == 256 and cfg.optim.hemisphere_weight_decay == 1e-3


def test_config_file_applies_between_preset_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 9\n  batch_size: 64\n")
    cfg = load_config("smoke", path, ["train.epochs=2"])
    assert (cfg.train.epochs, cfg.train.batch_size) == (2, 64)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epochz=3", "train.epochz"),
        ("nope=1", "nope"),
        ("train.epochs=abc", "train.epochs"),
        ("optim.name=lion", "optim.name"),
        ("train.epochs", "key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config("smoke", overrides=[override])


def test_unknown_key_lists_known_keys():
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config("smoke", overrides=["train.epochz=3"])


def test_unknown_preset():
    with pytest.raises(ConfigError, match="smoke, small, fast, paper"):
        load_config("huge")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("smoke", tmp_path / "none.yaml")


@pytest.mark.parametrize(
    "text, seeds", [("0,1,2", [0, 1, 2]), ("0-4", [0, 1, 2, 3, 4]), ("3", [3]), ("1, 5-6", [1, 5, 6])]
)
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["a", "0,,1", "4-2", "1,1", "-3", "0-x"])
def test_malformed_seeds(text):
    with pytest.raises(ConfigError, match="seeds"):
        parse_seeds(text)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.dropout=1.5", "model.dropout=1.5 is out of range: it must be in [0, 1)"),
        ("optim.lr=-0.1", "optim.lr=-0.1 is out of range: it must be > 0"),
        ("optim.momentum=1", "optim.momentum=1.0 is out of range: it must be in [0, 1)"),
        ("model.width=0", "model.width=0.0 is out of range: it must be > 0"),
        ("optim.weight_decay=-1e-4", "optim.weight_decay=-0.0001 is out of range: it must be >= 0"),
        ("train.eval_batch_size=0", "train.eval_batch_size=0 is out of range: it must be >= 1"),
        ("data.train_subset=0", "data.train_subset=0 is out of range: it must be >= 1"),
        ("plan.pool_size=0", "plan.pool_size=0 is out of range: it must be >= 1"),
    ],
)
def test_values_out_of_range_name_key_value_range_and_fix(override, message):
    with pytest.raises(ConfigError) as error:
        load_config("smoke", overrides=[override])
    key = override.split("=")[0]
    assert str(error.value).startswith(message) and f"Fix: set {key} to a value" in str(error.value)


def test_values_at_the_edges_of_their_range_are_accepted():
    edges = ["model.dropout=0", "optim.label_smoothing=0", "model.bn_momentum=1"]
    cfg = load_config("smoke", overrides=edges)
    assert (cfg.model.dropout, cfg.model.bn_momentum) == (0.0, 1.0)


def test_malformed_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 3}\n\tbad: 1\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line 2, column 1"):
        load_config("smoke", path)
