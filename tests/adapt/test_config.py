"""The adaptation config: merged onto the base's, checked against it."""

import orjson
import pytest

from arcdiff.adapt import lora_config, prepare
from arcdiff.errors import CheckpointError, ConfigError
from arcdiff.runs.checkpoint import load_run


def test_a_config_that_does_not_match_the_base_is_a_checkpoint_error(base_dir, tmp_path):
    base = load_run(base_dir)
    path = tmp_path / "lora_wide.json"
    path.write_bytes(orjson.dumps({"model": {"d_model": 64}, "lora": {"rank": 2}}))
    with pytest.raises(CheckpointError, match=r"model.d_model: expected 32, found 64"):
        lora_config(base, path)
    with pytest.raises(CheckpointError, match=r"data.max_size: expected 5, found 10"):
        lora_config(base, None, ["data.max_size=10"])
    matching = tmp_path / "lora_ok.json"
    matching.write_bytes(orjson.dumps({"model": {"d_model": 32}, "lora": {"rank": 2}}))
    cfg = lora_config(base, matching, ["lora.steps=7"])
    assert (cfg.lora.rank, cfg.lora.steps, cfg.name) == (2, 7, "lora_ok")
    assert cfg.model == base.cfg.model and cfg.data == base.cfg.data


def test_config_typos_are_config_errors(base_dir, tasks, tmp_path):
    base = load_run(base_dir)
    path = tmp_path / "typo.json"
    path.write_bytes(orjson.dumps({"lora": {"rnak": 4}}))
    with pytest.raises(ConfigError, match="unknown key 'lora.rnak' \\(did you mean 'rank'\\?\\)"):
        lora_config(base, path)
    with pytest.raises(ConfigError, match="lora.mode"):
        lora_config(base, None, ["lora.mode=perTask"])
    cfg = lora_config(base, None, ['lora.target_modules=["qkv", "fc3"]'])
    with pytest.raises(ConfigError, match=r"no linear layer named fc3 .*qkv"):
        prepare(base, base.task_ids, cfg.lora, "shared")
