"""metrics.jsonl: one writer (runs/metrics.py) for the trainer and the image track, one reader."""

import json
import math

import pytest
import torch

from arcdiff.errors import OutputError
from arcdiff.runs.metrics import MetricsWriter
from arcdiff.runs.paths import read_metrics


def test_rows_are_appended_as_plain_json_and_read_back(tmp_path):
    writer = MetricsWriter(tmp_path / "run")
    writer.restart()
    assert writer.append({"step": 1, "loss": torch.tensor(0.5), "lr": 1e-3}) == {
        "step": 1,
        "loss": 0.5,
        "lr": 1e-3,
    }
    writer.append({"step": 2, "loss": math.nan, "grad_norm": math.inf})
    assert writer.rows == 2
    rows = [{"step": 1, "loss": 0.5, "lr": 1e-3}, {"step": 2, "loss": "nan", "grad_norm": "inf"}]
    assert read_metrics(tmp_path / "run") == rows


def test_restart_keeps_only_the_lines_given(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.restart()
    for step in (1, 2, 3):
        writer.append({"step": step})
    again = MetricsWriter(tmp_path)
    again.restart([b'{"step":1}'])
    assert again.rows == 1
    again.append({"step": 2, "resumed": True})
    assert read_metrics(tmp_path) == [{"step": 1}, {"step": 2, "resumed": True}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temporary left


def test_an_unwritable_run_is_an_output_error_naming_the_file(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()  # a folder where the file should be
    with pytest.raises(OutputError, match="metrics.jsonl: cannot append metrics"):
        MetricsWriter(tmp_path).append({"step": 1})


def stdlib_rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_image_runs_write_rows_read_metrics_reads_back(tmp_path):
    pytest.importorskip("sklearn")  # the digits dataset ships with scikit-learn
    from arcdiff.image.unet.train import lr_at, train_image_model
    from arcdiff.image.unet.vae_train import train_vae
    from tests.image.unet.test_train import tiny

    cfg = tiny("train.steps=4")
    train_image_model(cfg, tmp_path / "unet")
    rows = read_metrics(tmp_path / "unet")
    assert rows == stdlib_rows(tmp_path / "unet")
    assert [(r["step"], r["lr"]) for r in rows] == [(2, lr_at(cfg, 1)), (4, lr_at(cfg, 3))]
    assert all(set(r) == {"step", "loss", "lr", "grad_norm", "wall_s"} for r in rows)

    vae = ["vae.base_channels=8", "vae.groups=4", "vae.batch_size=8", "vae.steps=4"]
    train_vae(tiny(*vae), tmp_path / "vae")
    rows = read_metrics(tmp_path / "vae")
    assert rows == stdlib_rows(tmp_path / "vae")
    assert [r["step"] for r in rows] == [2, 4]
    assert all(set(r) == {"step", "loss", "mse", "kl"} for r in rows)
