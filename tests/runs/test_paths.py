"""The run-directory helpers every command shares."""

import os

import orjson
import pytest
import torch

from arcdiff.errors import ConfigError
from arcdiff.runs.checkpoint import newest_checkpoint, save_checkpoint
from arcdiff.runs.paths import latest_run, select_device, write_json


def test_write_json_replaces_atomically_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "scores.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert orjson.loads(path.read_bytes()) == {"a": 2}
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # not serialisable: nothing is written
    assert orjson.loads(path.read_bytes()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_select_device_names_a_mistyped_device():
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device 'gpu0': not a device"):
        select_device("gpu0")


def test_latest_run_is_the_one_with_the_newest_checkpoint(tmp_path):
    for name, when in (("old", 100), ("new", 200)):
        ckpt = tmp_path / name / "checkpoints" / "last.pt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"x")
        os.utime(ckpt, (when, when))
    assert latest_run(tmp_path) == tmp_path / "new"


def test_the_newest_checkpoint_is_the_highest_readable_step(tmp_path):
    state = lambda step: {"model": {}, "config": {}, "step": step}  # noqa: E731
    save_checkpoint(tmp_path / "last.pt", state(4))
    save_checkpoint(tmp_path / "step_0000006.pt", state(6))
    (tmp_path / "step_0000008.pt").write_bytes(b"cut short")
    path, found, problems = newest_checkpoint(tmp_path)
    assert path.name == "step_0000006.pt" and found["step"] == 6
    assert len(problems) == 1 and "step_0000008.pt: not a readable checkpoint" in problems[0]
    assert newest_checkpoint(tmp_path / "none") is None
