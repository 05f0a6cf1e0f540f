import dataclasses

import orjson
import pytest

from arcdiff.config import (
    PRESET_DIR,
    Config,
    EvalConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    resolve_config_path,
    save_config,
)
from arcdiff.errors import ConfigError

PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.json") if not p.stem.startswith("image_"))


def write(tmp_path, payload, name="cfg.json"):
    path = tmp_path / name
    path.write_bytes(orjson.dumps(payload))
    return path


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads_by_bare_name_with_and_without_suffix(preset):
    by_name = load_config(preset)
    assert by_name == load_config(f"{preset}.json") == load_config(PRESET_DIR / f"{preset}.json")
    assert by_name.name == preset


def test_presets_that_must_exist():
    assert {"toiny_aa1", "smol_aa1", "smol_aa2", "mediom_aa1", "lorge_aa1", "lora_aa2"} <= set(
        PRESETS
    )
    smol = load_config("smol_aa1")
    assert (smol.model.d_model, smol.model.n_heads, smol.model.n_layers) == (384, 6, 4)
    assert (smol.train.batch_size, smol.train.lr, smol.train.warmup_steps) == (128, 4e-4, 2000)
    assert (smol.train.max_steps, smol.train.ema_decay) == (48000, 0.9995)
    assert load_config("smol_aa2").data.train_sources == ["aa2:train"]
    assert load_config("toiny_aa1").data.max_size == 10


def test_unknown_key_names_key_and_file_with_suggestion(tmp_path):
    path = write(tmp_path, {"train": {"lrr": 1e-3}})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert str(path) in message and "train.lrr" in message and "did you mean 'lr'" in message


def test_unknown_section_is_an_error(tmp_path):
    path = write(tmp_path, {"trian": {}})
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*did you mean 'train'"):
        load_config(path)


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("train", "lr", "fast"),
        ("train", "max_steps", 1.5),
        ("train", "bf16", 1),
        ("model", "d_model", True),
        ("diffusion", "kernel", "gaussian"),
        ("data", "train_sources", "aa1:train"),
        ("data", "train_sources", [1, 2]),
    ],
)
def test_mistyped_values_are_errors(tmp_path, section, key, value):
    path = write(tmp_path, {section: {key: value}})
    with pytest.raises(ConfigError, match=rf"{path}.*'{section}\.{key}' must be"):
        load_config(path)


def test_int_is_accepted_for_float_fields_and_becomes_float(tmp_path):
    cfg = load_config(write(tmp_path, {"train": {"lr": 1}}))
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


def test_section_checks_name_the_field(tmp_path):
    path = write(tmp_path, {"model": {"d_model": 100, "n_heads": 3}})
    with pytest.raises(ConfigError, match=r"model.d_model 100 is not divisible"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"data.max_size must be in 1..30"):
        load_config(write(tmp_path, {"data": {"max_size": 31}}))


def test_malformed_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {')
    with pytest.raises(ConfigError, match=r"bad.json: not valid JSON"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"neither a file nor a preset.*did you mean 'smol_aa1'"):
        resolve_config_path("smol_aa1x")


def test_overrides_parse_json_values_and_plain_strings():
    cfg = load_config(
        "toiny_aa1",
        [
            "train.lr=3e-4",
            "model.d_model=256",
            "diffusion.kernel=absorbing",
            "train.wandb=true",
            'data.train_sources=["aa2:train"]',
            "train.max_minutes=null",
        ],
    )
    assert cfg.train.lr == 3e-4 and cfg.model.d_model == 256
    assert cfg.diffusion.kernel == "absorbing" and cfg.train.wandb is True
    assert cfg.data.train_sources == ["aa2:train"] and cfg.train.max_minutes is None
    assert cfg.data.max_size == 10  # untouched fields keep the preset's values


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("train.lrr=1", r"--set train.lrr=1: unknown key 'train.lrr' \(did you mean 'lr'\?\)"),
        ("tran.lr=1", r"unknown section 'tran' \(did you mean 'train'\?\)"),
        ("train.lr", r"expected section.key=value"),
        ("lr=1", r"expected section.key=value"),
        ("train.max_steps=many", r"'train.max_steps' must be int, got 'many'"),
        ("model.n_heads=5", r"model.d_model 128 is not divisible by model.n_heads=5"),
    ],
)
def test_bad_overrides(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config("toiny_aa1", [override])


def test_save_then_load_round_trips(tmp_path):
    cfg = load_config("smol_aa2", ["train.lr=1e-4", 'data.ids=["a","b"]'])
    path = tmp_path / "run" / "config.json"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert orjson.loads(path.read_bytes()) == config_to_dict(cfg)


def test_configs_are_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_defaults_without_a_file():
    assert load_config(None) == Config()
    assert config_from_dict({}) == Config()


@pytest.mark.parametrize(
    "payload, field",
    [
        # a position-blind model: a permutation of the cells permutes its outputs alike
        ({"model": {"rope": False, "abs_pos": False}}, "model.abs_pos"),
        # argmax draws differ only by uninformative starting noise: N copies of one vote
        ({"eval": {"samples": 2}}, "eval.samples"),
        ({"eval": {"sampler": "confidence", "samples": 2}}, "eval.samples"),
        # only the confidence sampler reads these
        ({"eval": {"temperature": 1.0}}, "eval.temperature"),
        ({"eval": {"sampler": "ancestral", "temperature": 0.5}}, "eval.temperature"),
        ({"eval": {"remask": True}}, "eval.remask"),
        ({"eval": {"sampler": "ancestral", "remask": True}}, "eval.remask"),
    ],
)
def test_settings_that_would_change_nothing_are_errors_naming_the_field(tmp_path, payload, field):
    path = write(tmp_path, payload)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert message.startswith(f"{path}: {field} ") and "\n" not in message, message


@pytest.mark.parametrize(
    "payload",
    [
        {"model": {"rope": True, "abs_pos": False}},
        {"model": {"rope": False, "abs_pos": True}},
        {"eval": {"sampler": "ancestral", "samples": 4}},
        {"eval": {"sampler": "confidence", "samples": 4, "temperature": 0.5, "remask": True}},
        {"eval": {"sampler": "argmax", "samples": 1}},
    ],
)
def test_the_settings_those_checks_allow_load(tmp_path, payload):
    cfg = load_config(write(tmp_path, payload))
    section, values = next(iter(payload.items()))
    assert {k: getattr(getattr(cfg, section), k) for k in values} == values


def test_a_check_failing_outside_a_file_is_still_a_config_error():
    """Built straight from options (as `arcdiff evaluate` builds its settings), the check's
    error is a ConfigError the CLI prints as one line."""
    with pytest.raises(ConfigError, match=r"^eval.samples 3 needs draws that differ"):
        EvalConfig(samples=3)
    with pytest.raises(ConfigError, match=r"^--set eval.remask=true: eval.remask true needs"):
        load_config(None, ["eval.remask=true"])


def test_overrides_of_one_section_are_checked_together_in_any_order():
    pair = ["eval.samples=4", 'eval.sampler="confidence"', "eval.temperature=0.5"]
    for order in (pair, pair[::-1]):
        cfg = load_config(None, order)
        assert (cfg.eval.samples, cfg.eval.sampler, cfg.eval.temperature) == (4, "confidence", 0.5)
    with pytest.raises(ConfigError, match=r"^--set eval.samples=4 --set eval.seed=1: eval.samples"):
        load_config(None, ["eval.samples=4", "eval.seed=1"])
