"""The run of arcdiff lora: adapter names and the folders they may replace."""

import pytest

from arcdiff.adapt import run_lora
from arcdiff.errors import CheckpointError, ConfigError
from arcdiff.runs.checkpoint import load_run
from tests.adapt.conftest import CPU, NEW, config


def test_an_adapter_name_never_replaces_a_folder_that_is_not_an_adapter(base_dir, tmp_path):
    base = load_run(base_dir)
    cfg = config(base, "embeddings-only")
    out = tmp_path / "adapters"
    (out / "emb").mkdir(parents=True)
    (out / "emb" / "notes.txt").write_text("mine")
    args = {"modes": ["embeddings-only"], "out": out, "ids": [NEW], "device": CPU}
    with pytest.raises(CheckpointError, match=r"emb: exists and is not an adapter"):
        run_lora(base, cfg, "aa1:train", names=["emb"], evaluate=False, progress=False, **args)
    assert (out / "emb" / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="'baseline' is where the baseline's scores go"):
        run_lora(base, cfg, "aa1:train", names=["baseline"], progress=False, **args)
