"""Image runs: the config loader, the LR schedule, save/load/resume through the shared
checkpoint module, clear errors for foreign checkpoints, and the classifier-feature metric."""

import math

import numpy as np
import orjson
import pytest
import torch

from arcdiff.errors import CheckpointError, ConfigError
from arcdiff.image.unet.config import ImageConfig, apply_image_overrides, load_image_config
from arcdiff.image.unet.metrics import frechet_distance, precision_recall
from arcdiff.image.unet.run import load_run
from arcdiff.image.unet.train import lr_at, train_image_model
from arcdiff.runs.checkpoint import load_checkpoint, save_checkpoint

pytest.importorskip("sklearn")  # the digits dataset ships with scikit-learn

TINY = [
    "model.base_channels=8",
    "model.groups=4",
    "model.num_heads=2",
    "model.channel_mults=[1, 2]",
    "diffusion.num_timesteps=50",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.log_every=2",
    "train.threads=1",
    "data.limit=64",
    "sample.num_steps=4",
    "sample.per_class=1",
    "eval.sweep_steps=[2, 4]",
    "eval.sweep_guidance=[0.0, 2.0]",
    "eval.num_samples=20",
    "eval.classifier_steps=5",
]


def tiny(*extra: str) -> ImageConfig:
    return apply_image_overrides(ImageConfig(name="tiny"), [*TINY, *extra])


def test_presets_load():
    for name in ("image_digits", "image_mnist", "image_cifar10"):
        cfg = load_image_config(name)
        assert cfg.name == name and cfg.data.dataset in name


def test_unknown_and_mistyped_keys_name_the_key_and_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(orjson.dumps({"model": {"base_chanels": 8}}))
    with pytest.raises(
        ConfigError, match=r"bad.json: unknown key 'model.base_chanels'.*base_channels"
    ):
        load_image_config(path)
    path.write_bytes(orjson.dumps({"train": {"steps": "many"}}))
    with pytest.raises(ConfigError, match=r"bad.json: 'train.steps' must be int"):
        load_image_config(path)
    with pytest.raises(ConfigError, match="not in 1..diffusion.num_timesteps=50"):
        apply_image_overrides(tiny(), ["eval.sweep_steps=[100]"])
    with pytest.raises(ConfigError, match="data.dataset"):
        apply_image_overrides(tiny(), ["data.dataset=imagenet"])


def test_lr_warms_up_then_decays_to_zero():
    cfg = tiny("train.steps=102", "train.warmup_steps=2", "train.lr=0.01")
    assert lr_at(cfg, 0) == pytest.approx(0.005) and lr_at(cfg, 1) == pytest.approx(0.01)
    assert lr_at(cfg, 52) == pytest.approx(0.005)  # half way through the cosine
    assert lr_at(cfg, 102) == pytest.approx(0.0, abs=1e-12)


def test_training_saves_a_checkpoint_that_loads_back_exactly(tmp_path):
    run = train_image_model(tiny("train.steps=4"), tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    assert loaded.step == 4 and loaded.class_names == [str(i) for i in range(10)]
    for a, b in zip(run.ema.state_dict().values(), loaded.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 40])
    with torch.no_grad():
        assert torch.equal(run.ema(x, t), loaded.ema(x, t))
    summary = orjson.loads((tmp_path / "run" / "train_summary.json").read_bytes())
    assert summary["steps"] == 4 and math.isfinite(summary["final_loss"])
    assert summary["parameters"] > 0


@pytest.mark.parametrize(
    "schedule, prediction",
    [("linear", "eps"), ("cosine", "eps"), ("linear", "v"), ("cosine", "x0")],
)
def test_every_schedule_and_objective_trains_with_accumulation(tmp_path, schedule, prediction):
    cfg = tiny(
        "train.steps=2",
        "train.grad_accum=2",
        f"diffusion.schedule={schedule}",
        f"diffusion.prediction={prediction}",
    )
    train_image_model(cfg, tmp_path / "run")
    summary = orjson.loads((tmp_path / "run" / "train_summary.json").read_bytes())
    assert math.isfinite(summary["final_loss"]) and summary["images_seen"] == 2 * 8 * 2
    assert load_run(tmp_path / "run").diffusion.prediction == prediction


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = train_image_model(tiny("train.steps=6"), tmp_path / "straight")
    train_image_model(tiny("train.steps=3"), tmp_path / "split")
    resumed = train_image_model(tiny("train.steps=6"), tmp_path / "split", resume=True)
    assert resumed.step == 6
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    metrics = (tmp_path / "split" / "metrics.jsonl").read_bytes().split()
    # every log_every = 2 steps and at the end of each call; the resumed call appends
    assert [orjson.loads(line)["step"] for line in metrics] == [2, 3, 4, 6]


def test_resume_with_another_architecture_names_the_key(tmp_path):
    train_image_model(tiny("train.steps=2"), tmp_path / "run")
    with pytest.raises(CheckpointError, match="model.base_channels: expected 8, found 16"):
        train_image_model(
            tiny("train.steps=4", "model.base_channels=16"), tmp_path / "run", resume=True
        )


def test_foreign_and_mismatched_checkpoints_are_clear_errors(tmp_path):
    train_image_model(tiny("train.steps=2"), tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / "final.pt"
    state = load_checkpoint(path)
    state["model_args"]["base_channels"] = 16  # weights of one U-Net, arguments of another
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match=r"final.pt \(model\): parameter '.*' has shape"):
        load_run(tmp_path / "run")
    save_checkpoint(path, {"model": {}, "config": {}})  # e.g. an ARC transformer checkpoint
    with pytest.raises(CheckpointError, match="not an image U-Net checkpoint"):
        load_run(tmp_path / "run")


def test_frechet_distance_exact_small_example():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(4000, 2))
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    # same covariance, means 3 apart along one axis: the distance is 9 (+ sampling noise)
    assert frechet_distance(real, real + np.array([3.0, 0.0])) == pytest.approx(9.0, abs=1e-6)
    # N(0, I) vs N(0, 4I) in 2-D: tr(I + 4I - 2 * 2I) = 2
    wide = rng.normal(size=(4000, 2)) * 2
    assert frechet_distance(real, wide) == pytest.approx(2.0, abs=0.2)


def test_precision_recall_separate_fidelity_from_coverage():
    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.normal(size=(500, 2)))
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    collapsed = real[:5].repeat(20, 1) + 1e-3  # faithful but covers only 5 points
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.1
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
