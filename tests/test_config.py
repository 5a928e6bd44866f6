"""Config loading, command-line overrides and validation."""

from pathlib import Path

import pytest

from sejax.configs import default
from sejax.configs import loading as config_lib
from sejax.configs.validation import validate
from sejax.errors import ConfigError


def test_defaults_are_the_reference_front_end_and_network():
    c = default.get_config()
    f, m = c.features, c.model
    assert (f.sample_rate, f.duration_s, f.n_fft, f.win_length, f.hop_length) == (
        16000, 3.0, 512, 400, 160)  # fmt: skip
    assert (f.n_mels, f.fmin, f.fmax, f.center, f.window) == (64, 0.0, 8000.0, True, "hann")
    assert tuple(m.conv_channels) == (32, 64, 128, 128)
    assert (m.lstm_layers, m.lstm_units, m.temporal_pooling) == (2, 128, "mean")
    assert (m.conv_dropout, m.head_dropout, m.num_classes) == (0.1, 0.3, 8)
    validate(c)


def test_overrides_are_typed_and_applied():
    c = default.get_config()
    pairs = config_lib.parse_override_args(
        ["--config.train.batch_size=64", "--config.model.conv_channels=(8,16)",
         "--config.train.learning_rate", "3e-4", "--config.data.path=/x/y",
         "--config.features.center=false", "--config.train.num_epochs=2"]
    )  # fmt: skip
    config_lib.apply_overrides(c, pairs)
    assert c.train.batch_size == 64 and isinstance(c.train.batch_size, int)
    assert c.model.conv_channels == (8, 16)
    assert c.train.learning_rate == pytest.approx(3e-4)
    assert c.data.path == "/x/y"
    assert c.features.center is False
    # an int where a float is expected is accepted and stored as a float
    config_lib.apply_overrides(c, [("train.learning_rate", "1")])
    assert c.train.learning_rate == 1.0 and isinstance(c.train.learning_rate, float)


def test_unknown_key_names_it_and_suggests():
    c = default.get_config()
    with pytest.raises(ConfigError, match=r"unknown config key 'batch_size'.*train\.batch_size"):
        config_lib.apply_overrides(c, [("batch_size", "3")])


def test_wrong_type_names_the_key():
    c = default.get_config()
    with pytest.raises(ConfigError, match=r"train\.batch_size.*expects a int"):
        config_lib.apply_overrides(c, [("train.batch_size", "big")])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.parallel", "'gpu'", r"train\.parallel='gpu'.*\['pmap', 'jit'\]"),
        ("train.batch_size", "0", r"train\.batch_size=0 must be > 0"),
        ("features.win_length", "1024", r"features\.win_length=1024 must be <= features\.n_fft"),
        ("features.fmax", "9000.0", r"features\.fmin.*features\.fmax"),
        ("features.duration_s", "0.1", r"features\.duration_s=0\.1.*too small"),
        ("model.temporal_pooling", "'sum'", r"model\.temporal_pooling"),
        ("data.test_actors", "(21,)", r"data\.val_actors and data\.test_actors overlap"),
        ("model.head_dropout", "1.5", r"model\.head_dropout=1\.5 must be in \[0, 1\)"),
        ("eval.average_last_checkpoints", "-1", r"eval\.average_last_checkpoints=-1 must be"),
        ("eval.average_last_checkpoints", "3", r"=3 .* train\.keep_checkpoints=2"),
    ],
)
def test_impossible_values_fail_naming_the_key(key, value, message):
    c = config_lib.apply_overrides(default.get_config(), [(key, value)])
    with pytest.raises(ConfigError, match=message):
        validate(c)


def test_load_config_file_and_errors(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(
        "from sejax.configs import default\n"
        "def get_config():\n    c = default.get_config()\n    c.seed = 7\n    return c\n"
    )
    assert config_lib.load_config(path).seed == 7
    with pytest.raises(ConfigError, match="config file not found"):
        config_lib.load_config(tmp_path / "missing.py")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no get_config"):
        config_lib.load_config(bad)


def test_json_round_trip_keeps_tuples():
    c = default.get_config()
    import json

    back = config_lib.from_dict(json.loads(config_lib.to_json(c)))
    assert back.model.conv_channels == c.model.conv_channels
    assert back.to_dict() == c.to_dict()


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[1] / "experiments" / "configs").glob("*.py")),
    ids=lambda p: p.name,
)
def test_experiment_configs_load_and_validate(path):
    """Every shipped experiment config builds and passes validation (a renamed key or an
    impossible value there would otherwise surface only at the start of a long run)."""
    validate(config_lib.load_config(path))


def test_best_recipe_is_the_converged_recipe_plus_gain():
    """`ravdess_best.py`'s docstring claims one lever on top of the converged recipe, and its
    numbers were measured with exactly that: a second difference would make them wrong."""
    configs = Path(__file__).parents[1] / "experiments" / "configs"
    best = config_lib.flatten(config_lib.load_config(configs / "ravdess_best.py").to_dict())
    converged = config_lib.flatten(
        config_lib.load_config(configs / "ravdess_converged.py").to_dict()
    )
    differ = {k for k in best.keys() | converged.keys() if best.get(k) != converged.get(k)}
    assert differ == {"augment.gain_db"}
    assert best["augment.gain_db"] == 6.0
