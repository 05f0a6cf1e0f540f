"""``arcdiff image toy2d --config FILE --set key=value``: fields from the defaults, the file, the
flags and --set in that order; unknown keys and mistyped values are one error line."""

import dataclasses

import orjson
import pytest
from typer.testing import CliRunner

from arcdiff.cli.image import image_app
from arcdiff.errors import ConfigError
from arcdiff.image.toy2d.config import Toy2dConfig, apply_toy2d_overrides, load_toy2d_config

from ..cli_errors import one_error_line


def write(path, payload):
    path.write_bytes(orjson.dumps(payload))
    return path


def test_file_then_flags_then_set(tmp_path):
    config = write(
        tmp_path / "toy.json",
        {"datasets": ["line"], "train_steps": 7, "num_points": 400, "eval_samples": 60,
         "num_timesteps": 20, "sample_steps": 20, "lr": 1e-3, "threads": 1},
    )  # fmt: skip
    out = tmp_path / "run"
    result = CliRunner().invoke(
        image_app,
        ["toy2d", "--config", str(config), "--out", str(out), "--train-steps", "5",
         "--set", "train_steps=6", "--set", "sample_steps=4", "--set", "warmup_steps=2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = orjson.loads((out / "config.json").read_bytes())
    assert saved["datasets"] == ["line"] and saved["embeddings"] == ["sinusoidal"]
    assert saved["train_steps"] == 6 and saved["sample_steps"] == 4  # --set beats the flag
    assert saved["lr"] == 1e-3 and saved["warmup_steps"] == 2 and saved["num_points"] == 400
    assert set(orjson.loads((out / "sinusoidal" / "final_info.json").read_bytes())) == {"line"}
    # a run's config.json is a --config file that gives the same config back
    assert load_toy2d_config(out / "config.json") == Toy2dConfig(
        **{**saved, "datasets": ("line",), "embeddings": ("sinusoidal",)}
    )


def test_flags_alone_keep_their_old_meaning():
    base = Toy2dConfig()
    assert base.datasets == ("circle", "dino", "line", "moons")
    assert base.embeddings == ("sinusoidal",)
    assert load_toy2d_config(None) == base


def test_set_applies_every_override_at_once():
    cfg = apply_toy2d_overrides(
        Toy2dConfig(), ["sample_steps=40", "num_timesteps=40", 'datasets=["dino", "line"]']
    )
    assert (cfg.sample_steps, cfg.num_timesteps, cfg.datasets) == (40, 40, ("dino", "line"))
    assert apply_toy2d_overrides(cfg, ["schedule=cosine"]).schedule == "cosine"  # plain string
    assert apply_toy2d_overrides(cfg, ["lr=1"]).lr == 1.0  # int -> float, losslessly
    assert dataclasses.replace(cfg, threads=None) == apply_toy2d_overrides(cfg, ["threads=null"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("trian_steps=5", "error: --set trian_steps=5: unknown key 'trian_steps' "
                          "(did you mean 'train_steps'?)"),
        ("train_steps=many", "error: --set train_steps=many: 'train_steps' must be int, "
                             "got 'many'"),
        ("train_steps", "error: --set 'train_steps': expected key=value"),
        ("datasets=[\"mars\"]", "error: unknown dataset 'mars'"),
    ],
)  # fmt: skip
def test_bad_set_is_one_line_naming_the_key(tmp_path, override, message):
    result = CliRunner().invoke(
        image_app, ["toy2d", "--out", str(tmp_path / "r"), "--set", override]
    )
    assert one_error_line(result).startswith(message)
    assert not (tmp_path / "r").exists()


def test_bad_config_file_is_one_line_naming_file_and_key(tmp_path):
    config = write(tmp_path / "toy.json", {"datasets": ["line"], "emebddings": ["scaled"]})
    result = CliRunner().invoke(
        image_app, ["toy2d", "--config", str(config), "--out", str(tmp_path / "r")]
    )
    line = one_error_line(result)
    assert line == f"error: {config}: unknown key 'emebddings' (did you mean 'embeddings'?)"
    missing = CliRunner().invoke(image_app, ["toy2d", "--config", str(tmp_path / "no.json")])
    assert "no such file" in one_error_line(missing)
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_toy2d_config(write(tmp_path / "list.json", ["line"]))
