"""Class alignment: a noise seed per class, accuracy per class and overall, reported by the
diagnostics and the sweep; and runs written before text conditioning still load and resume."""

import orjson
import pytest
import torch
from torch import nn

from arcdiff.image.unet.alignment import alignment_noise, class_alignment, class_seed
from arcdiff.image.unet.diagnostics import write_diagnostics
from arcdiff.image.unet.metrics import FEATURE_DIM
from arcdiff.image.unet.run import load_run
from arcdiff.image.unet.sample import Sampler
from arcdiff.image.unet.text import TABLE_FILE, save_table
from arcdiff.image.unet.train import train_image_model
from arcdiff.runs.checkpoint import load_checkpoint, save_checkpoint

from .test_text import TEXT, random_table
from .test_train import tiny

pytest.importorskip("sklearn")


def test_every_class_starts_from_noise_of_its_own_seed():
    noise = alignment_noise((1, 4, 4), 3, 10, seed=0).view(10, 3, 16)
    for a in range(10):
        for b in range(a + 1, 10):
            assert not torch.equal(noise[a], noise[b]), (a, b)
    # each class's block is what its own seed draws: reproducible, and independent of the others
    again = alignment_noise((1, 4, 4), 3, 4, seed=0).view(4, 3, 16)
    assert torch.equal(again, noise[:4])
    own = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(class_seed(0, 7)))
    assert torch.equal(noise[7], own.view(3, 16))
    assert not torch.equal(alignment_noise((1, 4, 4), 3, 1, seed=1), noise[0].view(3, 1, 4, 4))


class Always(nn.Module):
    """A stand-in metric classifier that names one class for every image."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label

    def embed(self, x):
        return torch.zeros(len(x), FEATURE_DIM)

    def head(self, feats):
        return nn.functional.one_hot(torch.full((len(feats),), self.label), 10).float()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("align") / "run"
    run.mkdir()
    save_table(run / TABLE_FILE, random_table())
    train_image_model(tiny("train.steps=2", *TEXT, "eval.alignment_per_class=3"), run)
    return run


def test_accuracy_per_class_and_overall(text_run):
    run = load_run(text_run)
    result = class_alignment(
        run, Always(4), Sampler("ddim", 2), guidance_scale=2.0, per_class=3, seed=5
    )
    assert result["per_class"] == {str(c): float(c == 4) for c in range(10)}
    assert result["overall"] == pytest.approx(0.1)
    assert result["predicted_counts"] == [0, 0, 0, 0, 30, 0, 0, 0, 0, 0]
    assert result["noise_seeds"] == [class_seed(5, c) for c in range(10)]
    assert result["guidance_scale"] == 2.0 and result["samples_per_class"] == 3


@pytest.mark.slow  # processes of its own or a minute of training: make test-slow (and CI)
def test_diagnostics_and_sweep_report_class_alignment(text_run):
    from typer.testing import CliRunner

    from arcdiff.cli.image import image_app

    summary = write_diagnostics(load_run(text_run), text_run)
    alignment = summary["class_alignment"]
    assert set(alignment["per_class"]) == {str(c) for c in range(10)}
    assert alignment["samples_per_class"] == 3 and 0 <= alignment["overall"] <= 1
    assert (text_run / "alignment.png").stat().st_size > 1000
    assert orjson.loads((text_run / "diagnostics.json").read_bytes())["class_alignment"]
    result = CliRunner().invoke(
        image_app,
        ["sweep", "--run", str(text_run), "--num-samples", "10", "--threads", "1",
         "--set", "eval.sweep_steps=[1]", "--set", "eval.sweep_ddpm=false",
         "--set", "eval.sweep_guidance=[]"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sweep = orjson.loads((text_run / "sweep.json").read_bytes())
    # the same classifier (classifier.pt), sampler and seeds: the same numbers as diagnostics
    assert sweep["class_alignment"] == alignment
    assert "class alignment (3 per class, a noise seed per class" in result.output


def test_a_run_written_before_text_conditioning_loads_and_resumes(tmp_path):
    """Old checkpoints have no text/vae/latent sections nor the new model and eval fields."""
    train_image_model(tiny("train.steps=2", "train.save_every=2"), tmp_path / "run")
    for name in ("final.pt", "last.pt"):
        path = tmp_path / "run" / "checkpoints" / name
        state = load_checkpoint(path)
        config = state["config"]
        for section in ("text", "vae", "latent"):
            del config[section]
        del config["model"]["text_conditional"], config["model"]["cross_attention_resolutions"]
        del config["eval"]["alignment_per_class"], config["eval"]["alignment_guidance"]
        assert "text_conditional" not in state["model_args"]
        save_checkpoint(path, state)
    run = load_run(tmp_path / "run")
    assert run.context is None and run.latent is None and run.ema.class_embed is not None
    resumed = train_image_model(tiny("train.steps=3"), tmp_path / "run", resume=True)
    assert resumed.step == 3
