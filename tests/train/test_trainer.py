import math

import pytest
import torch

from arcdiff.config import load_config
from arcdiff.data.dataset import Batch, stream_from_config
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.errors import CheckpointError, OutputError, TrainingError
from arcdiff.runs.checkpoint import (
    build_model,
    load_checkpoint,
    load_run_model,
    load_state_strict,
    save_checkpoint,
)
from arcdiff.train.logging import read_metrics
from arcdiff.train.optim import ema_decay_at, ema_update
from arcdiff.train.step import diffusion_loss
from arcdiff.train.trainer import train
from arcdiff.train.validate import validate
from tests.conftest import tiny_overrides


def tiny(**extra):
    return load_config(None, tiny_overrides(**extra))


def quiet_train(cfg, run_dir, **kw):
    return train(cfg, run_dir, device=torch.device("cpu"), progress=False, **kw)


def test_run_directory_layout_and_metrics(tmp_path):
    result = quiet_train(tiny(), tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "config.json").exists()
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt", "best.pt", "final.pt"}
    rows = read_metrics(run)
    steps = [r for r in rows if "loss" in r and "skipped" not in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 for r in steps)
    assert {f"val_acc_b{k}" for k in range(5)} <= set(steps[2]) and "val_loss" in steps[5]
    assert rows[-1]["done"] == "max_steps" and result.step == 6
    state = load_checkpoint(run / "checkpoints" / "final.pt")
    assert state["step"] == 6 and state["config"]["model"]["d_model"] == 32
    assert set(state) >= {"model", "ema", "optimizer", "scheduler", "rng", "config", "code_version"}


@pytest.mark.parametrize(
    ("bucket_window", "optimizer", "self_supervised"),
    [(0, "adamw", 0.0), (4, "adamw", 0.0), (4, "muon", 0.3)],
)
def test_resume_continues_exactly(tmp_path, bucket_window, optimizer, self_supervised):
    cfg = tiny(
        train__max_steps=20,
        train__eval_every=5,
        model__dropout=0.1,
        data__bucket_window=bucket_window,  # 4: step 10 stops inside a window of buckets
        train__optimizer=optimizer,  # muon: both optimizers' states resume
        data__self_supervised=self_supervised,
    )
    straight = quiet_train(cfg, tmp_path / "a")
    first = quiet_train(cfg, tmp_path / "b", until_step=10)
    assert first.step == 10 and first.stop_reason == "until_step"
    assert not (tmp_path / "b" / "checkpoints" / "final.pt").exists()
    resumed = quiet_train(cfg, tmp_path / "b", resume=True)
    assert resumed.step == 20
    resumed_weights = resumed.model.state_dict()
    for name, a in straight.model.state_dict().items():
        assert torch.equal(a, resumed_weights[name]), name
    for a, b in zip(straight.ema.parameters(), resumed.ema.parameters(), strict=True):
        assert torch.equal(a, b)
    losses = lambda run: [r["loss"] for r in read_metrics(run) if "loss" in r]  # noqa: E731
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_a_finished_run_is_not_overwritten_without_resume(tmp_path):
    quiet_train(tiny(), tmp_path / "run")
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        quiet_train(tiny(), tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_with_another_architecture_names_the_key(tmp_path):
    quiet_train(tiny(), tmp_path / "run", until_step=3)
    with pytest.raises(CheckpointError, match=r"model.d_model: expected 32, found 48"):
        quiet_train(tiny(model__d_model=48), tmp_path / "run", resume=True)


def test_strict_load_names_the_first_differing_parameter(tmp_path):
    small = quiet_train(tiny(), tmp_path / "a").model
    before = [p.clone() for p in small.parameters()]
    other = quiet_train(tiny(model__n_layers=2), tmp_path / "b").model
    with pytest.raises(CheckpointError, match=r"unexpected parameter 'blocks.1.attn.proj.weight'"):
        load_state_strict(small, other.state_dict(), "b")
    with pytest.raises(CheckpointError, match=r"parameter 'blocks.1.attn.proj.weight' is missing"):
        load_state_strict(other, small.state_dict(), "a")
    wider = quiet_train(tiny(model__d_model=48), tmp_path / "c").model
    with pytest.raises(CheckpointError, match=r"'blocks.0.attn.proj.weight' has shape \(48, 48\)"):
        load_state_strict(small, wider.state_dict(), "c")
    # nothing was copied by the failed loads
    assert all(torch.equal(a, b) for a, b in zip(before, small.parameters(), strict=True))


def test_a_checkpoint_rebuilds_its_model_alone(tmp_path):
    result = quiet_train(tiny(), tmp_path / "run")
    model, cfg, state = load_run_model(tmp_path / "run" / "checkpoints" / "final.pt")
    assert cfg.model.d_model == 32 and state["task_ids"]
    for a, b in zip(model.parameters(), result.ema.parameters(), strict=True):
        assert torch.equal(a, b)


def test_unreadable_checkpoints_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(junk)


def test_a_crash_mid_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {}, "step": 1})

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(
        OutputError, match=r"last.pt: could not write .*disk full.*previous version is intact"
    ):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "config": {}, "step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no .tmp left behind


def test_non_finite_losses_are_skipped_then_stop_training(tmp_path, monkeypatch):
    real_loss = DiscreteDiffusion.loss
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        loss, parts = real_loss(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] in (2,) or calls["n"] > 4:  # one bad step, then a run of them
            return loss * float("nan"), parts
        return loss, parts

    monkeypatch.setattr(DiscreteDiffusion, "loss", poisoned)
    cfg = tiny(
        train__max_steps=50, train__eval_every=2, model__self_condition=False, data__val_pairs=0
    )
    with pytest.raises(TrainingError, match=r"5 non-finite losses in a row at step 3.*last good"):
        quiet_train(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert sum(r.get("skipped", 0) for r in rows) == 6
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_wandb_offline_run_logs_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    quiet_train(tiny(train__wandb=True), tmp_path / "run")
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (records,) = runs[0].glob("*.wandb")  # wandb's record log of the offline run
    data = records.read_bytes()
    for key in (b"colour_loss", b"val_acc_b4", b"grad_norm"):
        assert key in data, key


def test_periodic_checkpoints_and_the_time_budget(tmp_path):
    quiet_train(tiny(train__save_every=3), tmp_path / "a")
    names = {p.name for p in (tmp_path / "a" / "checkpoints").iterdir()}
    assert {"step_0000003.pt", "step_0000006.pt"} <= names
    # snapshots by the clock: min_0 after the first step, min_1000 never
    quiet_train(tiny(train__snapshot_minutes=[0, 1000]), tmp_path / "c")
    snapshot = load_checkpoint(tmp_path / "c" / "checkpoints" / "min_0.pt")
    assert snapshot["step"] == 1 and not (tmp_path / "c" / "checkpoints" / "min_1000.pt").exists()
    result = quiet_train(tiny(train__max_steps=1000, train__max_minutes=0.0), tmp_path / "b")
    assert result.stop_reason == "max_minutes" and result.step == 0
    assert (tmp_path / "b" / "checkpoints" / "final.pt").exists()
    # a run stopped by the clock is validated at its last step
    assert [r["step"] for r in read_metrics(tmp_path / "b") if "val_loss" in r] == [0]


@pytest.mark.parametrize(
    "extra",
    [
        {"diffusion__kernel": "absorbing"},
        {"model__self_condition": False, "train__grad_accum": 2},
        {"diffusion__schedule": "linear", "train__lr_schedule": "constant"},
        {"data__bucket_window": 4, "model__size_copy": False},
    ],
)
def test_variants_learn_and_sample(tmp_path, extra):
    from arcdiff.eval.sample import sample

    cfg = tiny(train__max_steps=30, train__eval_every=30, **extra)
    result = quiet_train(cfg, tmp_path / "run")
    stream = stream_from_config(cfg.data)
    torch.manual_seed(cfg.train.seed)  # the trainer's initial weights
    untrained = build_model(cfg, stream.num_tasks)
    diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
    before = validate(untrained, stream.validation_batch(), diffusion, cfg, torch.device("cpu"))
    assert result.val["val_loss"] < before["val_loss"] - 0.1  # each variant trains
    inputs = stream.validation_batch().inputs
    zeros = torch.zeros(len(inputs), dtype=torch.long)
    out = sample(result.ema, diffusion, inputs, zeros, zeros, num_steps=4, argmax=False)
    inside = out.tokens != 10
    assert torch.equal(inside.sum(dim=(1, 2)), out.sizes.prod(1))
    assert (out.tokens[inside] < 10).all()  # ancestral sampling ends on colours, never MASK


def test_grad_accumulation_equals_one_full_batch():
    """Two micro-batches of 4, each loss / 2, give the gradient of the batch of 8: the colour
    loss is a mean over each example's cells, then over examples, whatever the grid sizes."""
    # every aa1:train task within 5x5, not only SMALL_TASKS (whose outputs are all 3x3)
    cfg = tiny(data__ids=None, diffusion__kernel="absorbing", model__self_condition=False)
    stream = stream_from_config(cfg.data)
    batch = stream.sample(8)
    assert len(set(batch.output_sizes.prod(1).tolist())) > 1  # grids of several sizes
    diffusion = DiscreteDiffusion.from_config(cfg.diffusion)
    steps = torch.full((8,), cfg.diffusion.num_timesteps - 1)  # all MASK: no noise to match
    torch.manual_seed(0)
    model = build_model(cfg, stream.num_tasks)

    def grads(*parts):
        model.zero_grad()
        for part in parts:
            loss, _, _ = diffusion_loss(
                model, part, diffusion, steps[: len(part)], torch.Generator(), 0.1, False
            )
            (loss / len(parts)).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    def rows(sl):
        return Batch(**{k: v[sl] for k, v in vars(batch).items()})

    whole = grads(batch)
    accumulated = grads(rows(slice(0, 4)), rows(slice(4, 8)))
    for a, b in zip(whole, accumulated, strict=True):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-5)


def test_ema_follows_the_warm_up_decay():
    ema, model = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        ema.weight.fill_(0.0)
        model.weight.fill_(1.0)
    ema_update(ema, model, ema_decay_at(1, 0.999))  # decay min(0.999, 2 / 11)
    assert ema.weight.item() == pytest.approx(9 / 11)
    ema_update(ema, model, ema_decay_at(90, 0.5))  # decay min(0.5, 91 / 100)
    assert ema.weight.item() == pytest.approx(1 - 0.5 * 2 / 11)


def test_the_trained_ema_is_the_average_the_decay_says(tmp_path):
    copy = quiet_train(tiny(train__ema_decay=0.0), tmp_path / "copy")  # decay 0: the weights
    for a, b in zip(copy.model.parameters(), copy.ema.parameters(), strict=True):
        assert torch.equal(a, b)
    slow = quiet_train(tiny(train__ema_decay=0.999), tmp_path / "slow")  # decay (1+k)/(10+k)
    torch.manual_seed(0)
    initial = build_model(tiny(), len(slow.ema.task_embed.weight))

    def moved(model):
        pairs = zip(model.parameters(), initial.parameters(), strict=True)
        return sum((p - i).abs().sum().item() for p, i in pairs)

    assert 0 < moved(slow.ema) < moved(slow.model)  # the EMA lags the trained weights


def test_quick_eval_runs_only_when_asked(tmp_path):
    calls = []

    def on_eval(model, step):
        calls.append(step)
        return {"quick_pass2": 0.5}

    quiet_train(tiny(), tmp_path / "off", on_eval=on_eval)  # quick_eval_every unset
    assert calls == []
    quiet_train(tiny(train__quick_eval_every=2), tmp_path / "on", on_eval=on_eval)
    assert calls == [2, 4, 6]
    logged = [r["step"] for r in read_metrics(tmp_path / "on") if "quick_pass2" in r]
    assert logged == [2, 4, 6]


def test_the_time_budget_counts_the_time_before_a_resume(tmp_path):
    cfg = tiny(train__max_minutes=10.0)
    quiet_train(cfg, tmp_path / "run", until_step=3)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert 0 < state["elapsed_s"] < 60
    save_checkpoint(last, {**state, "elapsed_s": 10.0 * 60})  # the budget spent before resuming
    resumed = quiet_train(cfg, tmp_path / "run", resume=True)
    assert resumed.stop_reason == "max_minutes" and resumed.step == 3


def test_checkpoint_branches_are_checkpoint_errors(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not an arcdiff checkpoint"):
        load_checkpoint(foreign)
    quiet_train(tiny(), tmp_path / "run", until_step=2)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    incomplete = tmp_path / "incomplete.pt"
    save_checkpoint(incomplete, {k: v for k, v in state.items() if k != "model_args"})
    with pytest.raises(CheckpointError, match=r"incomplete.pt: incomplete checkpoint"):
        load_run_model(incomplete)
    save_checkpoint(last, {**state, "task_ids": state["task_ids"][::-1]})
    with pytest.raises(CheckpointError, match="last.pt: the checkpoint was trained on other tasks"):
        quiet_train(tiny(), tmp_path / "run", resume=True)


def test_batch_size_must_split_into_accumulation_steps(tmp_path):
    with pytest.raises(
        TrainingError, match="train.batch_size=8 is not divisible by train.grad_accum=3"
    ):
        quiet_train(tiny(train__grad_accum=3), tmp_path / "run")


def test_the_learning_rate_is_a_function_of_the_step_and_its_horizon():
    from arcdiff.train.optim import lr_factor

    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(9, 10, 100) == 1.0
    assert lr_factor(10, 10, 100) == 1.0 and lr_factor(100, 10, 100) == pytest.approx(0.1)
    assert lr_factor(55, 10, 100) == pytest.approx(0.55)  # half-way down the cosine to 0.1
    assert lr_factor(55, 10, 1000) > 0.99  # a farther horizon anneals later
    assert lr_factor(5000, 10, 100) == pytest.approx(0.1)  # past the horizon: the floor
    assert lr_factor(50, 10, 100, "constant") == 1.0
