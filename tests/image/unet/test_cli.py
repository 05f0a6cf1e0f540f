"""``arcdiff image train | sample | sweep`` through typer's CliRunner, and their one-line errors."""

import numpy as np
import orjson
import pytest
import torch
from typer.testing import CliRunner

from arcdiff.cli.image import image_app
from arcdiff.image.unet.metrics import classifier_for_run, embed, sample_quality
from arcdiff.image.unet.run import load_data, load_run, to_model_range
from arcdiff.image.unet.sample import Sampler, generate
from arcdiff.runs.checkpoint import save_checkpoint

from ..cli_errors import one_error_line
from .test_train import TINY

pytest.importorskip("sklearn")

SETS = [arg for item in [*TINY, "train.steps=3"] for arg in ("--set", item)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step run trained through the command line, without the diagnostic pictures."""
    run = tmp_path_factory.mktemp("image") / "run"
    result = CliRunner().invoke(image_app, ["train", "--out", str(run), "--no-diagnostics", *SETS])
    assert result.exit_code == 0, result.output
    assert "final loss" in result.output and "parameters" in result.output
    return run


def test_train_writes_a_loadable_run(trained):
    assert (trained / "checkpoints" / "final.pt").is_file()
    config = orjson.loads((trained / "config.json").read_bytes())
    assert config["train"]["steps"] == 3 and config["model"]["base_channels"] == 8
    assert orjson.loads((trained / "train_summary.json").read_bytes())["steps"] == 3


def test_sample_writes_a_grid_and_the_arrays(trained):
    result = CliRunner().invoke(
        image_app, ["sample", "--run", str(trained), "--num", "2", "--class", "3", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    saved = np.load(trained / "samples_ddim4_g2_seed0.npz")  # the preset guides at 2
    assert saved["images"].shape == (2, 1, 16, 16) and saved["labels"].tolist() == [3, 3]
    assert (trained / "samples_ddim4_g2_seed0.png").is_file()
    result = CliRunner().invoke(
        image_app, ["sample", "--run", str(trained), "--unconditional", "--num", "3",
                    "--sampler", "ddpm", "--steps", "5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert np.load(trained / "samples_ddpm5_g2_seed0.npz")["labels"].tolist() == [-1, -1, -1]


def test_sample_rejects_a_class_the_run_does_not_have(trained):
    result = CliRunner().invoke(image_app, ["sample", "--run", str(trained), "--class", "10"])
    assert "--class 10 is not a class of this run (0..9)" in one_error_line(result)


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
def test_sweep_table_and_json(trained):
    result = CliRunner().invoke(
        image_app,
        ["sweep", "--run", str(trained), "--threads", "1", "--num-samples", "12",
         "--set", "eval.sweep_steps=[1, 2]", "--set", "eval.sweep_guidance=[0.0]"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sweep = orjson.loads((trained / "sweep.json").read_bytes())
    settings = [(r["sampler"], r["num_steps"], r["guidance_scale"]) for r in sweep["rows"]]
    assert settings == [("ddim", 1, 1.0), ("ddim", 2, 1.0), ("ddpm", 50, 1.0), ("ddim", 4, 0.0)]
    assert all(r["wall_s"] > 0 for r in sweep["rows"]) and sweep["num_samples"] == 12
    # 3 training steps sample noise: every row is farther from the data than real digits are
    reference = sweep["reference"]["frechet_distance_train_subset"]
    assert 0 < reference < min(r["frechet_distance"] for r in sweep["rows"])
    # a row scores what its own setting samples: the guidance-0 row, recomputed
    run = load_run(trained, device="cpu")
    train = load_data(run.cfg, "train")
    images, labels = to_model_range(train.images), torch.from_numpy(train.labels)
    classifier = classifier_for_run(trained / "classifier.pt", images, labels, 10, steps=1, seed=0)
    s = run.cfg.sample
    noise = torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(s.seed + 100))
    classes = torch.arange(12) % 10
    how = Sampler(s.sampler, s.num_steps, s.eta, s.spacing)
    samples = generate(run.ema, run.diffusion, noise, classes, how, guidance_scale=0.0, seed=s.seed)
    quality = sample_quality(
        classifier, embed(classifier, images)[0], samples, classes, k=run.cfg.eval.knn_k
    )
    row = sweep["rows"][-1]
    assert {key: row[key] for key in quality.to_dict()} == pytest.approx(quality.to_dict())
    assert "Inception" in sweep["metric"] and "Inception" in result.output
    assert "ddpm" in result.output and "held-out" in result.output
    assert (trained / "sweep.png").is_file() and (trained / "classifier.pt").is_file()


@pytest.mark.slow
def test_train_writes_every_diagnostic_picture(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(image_app, ["train", "--out", str(run), *SETS])
    assert result.exit_code == 0, result.output
    for name in ("samples", "loss_per_t", "train_loss", "denoising", "reconstruction",
                 "interpolation", "alignment"):  # fmt: skip
        assert (run / f"{name}.png").stat().st_size > 1000, name
    diagnostics = orjson.loads((run / "diagnostics.json").read_bytes())
    assert len(diagnostics["loss_per_t"]["loss"]) == 10
    assert set(diagnostics["reconstruction_mse"]) == {"4", "14", "24", "34", "44"}
    assert len(diagnostics["class_alignment"]["per_class"]) == 10


def test_missing_dataset_is_one_line_and_writes_nothing(tmp_path):
    result = CliRunner().invoke(
        image_app,
        ["train", "--out", str(tmp_path / "r"), *SETS, "--set", "data.dataset=mnist",
         "--set", f"data.root={tmp_path}"],
    )  # fmt: skip
    line = one_error_line(result)
    assert "mnist not found: expected" in line and "train-images-idx3-ubyte" in line
    assert not (tmp_path / "r").exists()


def test_bad_config_key_is_one_line(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_bytes(orjson.dumps({"trian": {}}))
    line = one_error_line(CliRunner().invoke(image_app, ["train", "--config", str(path)]))
    assert "unknown key 'trian'" in line and "did you mean 'train'" in line


def test_sample_needs_an_image_run(tmp_path):
    line = one_error_line(CliRunner().invoke(image_app, ["sample", "--run", str(tmp_path)]))
    assert "not a run directory" in line
    save_checkpoint(tmp_path / "checkpoints" / "final.pt", {"model": {}, "config": {"name": "x"}})
    line = one_error_line(CliRunner().invoke(image_app, ["sample", "--run", str(tmp_path)]))
    assert "not an image U-Net checkpoint" in line
