"""Recipe configuration: overrides, type checks, loading config files."""

import pytest

from vlbeit_keras.config import Config
from vlbeit_keras.config import apply_overrides
from vlbeit_keras.config import load_config


def make():
    return Config({"seed": 0, "optimizer": {"learning_rate": 1e-3, "clip": None},
                   "objectives": ("mlm", "mim"), "smoke": False, "name": "x"})


def test_overrides_parse_and_coerce():
    c = apply_overrides(make(), ["optimizer.learning_rate=2", "seed=7", "smoke=true",
                                 "objectives=mlm,mvlm", "optimizer.clip=3.0", "--config.name=y"])
    assert c.optimizer.learning_rate == 2.0 and isinstance(c.optimizer.learning_rate, float)
    assert c.seed == 7 and c.smoke is True and c.objectives == ("mlm", "mvlm")
    assert c.optimizer.clip == 3.0 and c.name == "y"


@pytest.mark.parametrize("override, match", [
    ("optimizer.lr=1", "Unknown config field 'optimizer.lr'.*learning_rate"),
    ("nope.x=1", "Unknown config field 'nope'"),
    ("seed=abc", "type str"),
    ("smoke=1", "true/false"),
    ("seed", "field=value"),
    ("objectives=[mlm, mim", "neither a Python nor a JSON literal"),
])
def test_bad_overrides(override, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(make(), [override])


def test_json_literals_are_values_not_strings():
    c = apply_overrides(make(), ['optimizer.clip={"a": true, "b": null}', "objectives=[true, false]"])
    assert c.optimizer.clip == {"a": True, "b": None}
    assert c.objectives == (True, False)  # not ("[true", "false]")
    assert apply_overrides(make(), ["objectives=[mlm, mvlm]"]).objectives == ("mlm", "mvlm")


def test_load_config_file(tmp_path):
    f = tmp_path / "cfg.py"
    f.write_text("def get_config(arg):\n    return {'arg': arg, 'nested': {'a': 1}}\n")
    c = load_config(f"{f}:demo")
    assert c.arg == "demo" and c.nested.a == 1
    assert load_config(str(f)).arg is None
    with pytest.raises(FileNotFoundError):
        load_config(str(tmp_path / "missing.py"))
    (tmp_path / "bad.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="get_config"):
        load_config(str(tmp_path / "bad.py"))
