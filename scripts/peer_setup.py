"""Setting the peer up for the benchmark (scripts/bench_peer.py): its copy and patch, its
interpreter, the width that matches arcdiff's parameter count and its config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
from peer_format import patch_training
from peer_report import PEER_BATCH

from arcdiff.console import console, err_console
from arcdiff.errors import ArcdiffError, DataError

PEER_FOLDER = Path("experimental/diffusion")
PEER_IMPORTS = ("torch", "numpy", "tqdm", "matplotlib")  # what experimental/diffusion imports
PEER_LAYERS, PEER_HEADS, PEER_LR = 3, 4, 5e-4  # configs/toiny_config_aa1.json
PEER_REFERENCE_STEPS, PEER_WARMUP, PEER_EMA_WARMUP, PEER_EMA = 48_000, 2_000, 2_000, 0.9995


def run_script(main: Callable[[], object]) -> None:
    """A benchmark script's entry: a fault is one line (exit 1), Ctrl-C "interrupted" (130)."""
    try:
        main()
    except (ArcdiffError, subprocess.CalledProcessError) as e:
        err_console.print(f"error: {e}", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)


def one_thread_env() -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def git_commit(path: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown (not a git checkout)"


def copy_peer(peer_dir: Path, root: Path) -> str:
    """Copy the peer's folder into ``root`` and patch its training loop; returns the diff."""
    source = peer_dir / PEER_FOLDER
    if not (source / "train_diffusion_backbone.py").is_file():
        raise DataError(f"{peer_dir}: no {PEER_FOLDER}/train_diffusion_backbone.py (--peer-dir)")
    target = root / PEER_FOLDER
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    (root / "experimental" / "__init__.py").touch()
    training = target / "src" / "training.py"
    patched, diff = patch_training(training.read_text(), "experimental/diffusion/src/training.py")
    training.write_text(patched)
    return diff


def peer_python(out: Path) -> str:
    """arcdiff's interpreter when it has what the peer imports; else a venv beside the output."""
    check = [f"import {m}" for m in PEER_IMPORTS]
    if subprocess.run([sys.executable, "-c", "; ".join(check)]).returncode == 0:
        return sys.executable
    venv = out / "peer-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        console.print(f"making a virtual environment for the peer: {venv}")
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True
        )
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_IMPORTS[1:]], check=True)
    return str(python)


PARAMS_SNIPPET = """
import sys
from experimental.diffusion.src.model import ARCDiffusionModel
from experimental.diffusion.utils.noise_scheduler import DiscreteNoiseScheduler
tasks, size, layers, heads = (int(a) for a in sys.argv[1:5])
for d in (int(a) for a in sys.argv[5:]):
    ns = DiscreteNoiseScheduler(num_timesteps=128, vocab_size=11, schedule_type="cosine")
    m = ARCDiffusionModel(vocab_size=11, d_model=d, nhead=heads, num_layers=layers,
        max_size=size, max_tasks=tasks, size_head_hidden_dim=216, noise_scheduler=ns)
    print(d, sum(p.numel() for p in m.parameters()))
"""


def peer_width(python: str, root: Path, tasks: int, max_size: int, target: int) -> tuple[int, int]:
    """The peer's d_model (a multiple of 4) whose parameter count is nearest ``target``."""
    widths = [str(d) for d in range(32, 513, 4)]
    args = [str(tasks), str(max_size), str(PEER_LAYERS), str(PEER_HEADS), *widths]
    done = subprocess.run(
        [python, "-c", PARAMS_SNIPPET, *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=one_thread_env(),
        check=True,
    )
    counts = [tuple(int(v) for v in line.split()) for line in done.stdout.split("\n") if line]
    d, n = min(counts, key=lambda dn: abs(dn[1] - target))
    return d, n


def peer_config(
    root: Path,
    d_model: int,
    max_size: int,
    steps: int,
    seconds: float,
    batch: int = PEER_BATCH,
    lr: float = PEER_LR,
    seed: int = 0,
) -> Path:
    """The peer's toiny recipe at ``d_model``, its schedule scaled to ``steps``; ``batch`` and
    ``lr`` its own (128, 5e-4) unless given; ``seed`` seeds torch, numpy and random (the
    benchmark's patch: the peer itself seeds nothing)."""
    scale = steps / PEER_REFERENCE_STEPS
    ema_horizon = max(scale / (1 - PEER_EMA), 10.0)  # 2,000 of 48,000 steps -> the same share
    config = {
        "model_version": "toiny-bench",
        "tag": "aa1",
        "model": {
            "vocab_size": 11,
            "d_model": d_model,
            "nhead": PEER_HEADS,
            "num_layers": PEER_LAYERS,
            "max_size": max_size,
            "embedding_dropout": 0.1,
            "input_grid_dropout": 0.05,
        },
        "training": {
            "num_timesteps": 128,
            "schedule_type": "cosine",
            "batch_size": batch,
            "learning_rate": lr,
            "weight_decay": 0.01,
            "optimizer_steps": steps,
            "lr_warmup_steps": max(1, round(PEER_WARMUP * scale)),
            "gradient_accumulation_steps": 1,
            "augment": True,
            "log_every": 100,
            "val_every_steps": 10**9,  # no validation set: evaluation outputs are not given
            "vis_every_steps": 10**9,
            "eval_every_steps": 0,
            "best_model_metric": "val_loss",
            "use_mixed_precision": True,  # the peer turns it off on CPU itself
            "pixel_noise_prob": 0.0,
            "pixel_noise_rate": 0.0,
            "use_ema": True,
            "ema_decay": round(1 - 1 / ema_horizon, 6),
            "ema_warmup_steps": max(1, round(PEER_EMA_WARMUP * scale)),
            "max_seconds": seconds,  # the benchmark's patch
            "seed": seed,  # the benchmark's patch
        },
        "data": {
            "data_dir": "data/arc-prize-2024",
            "datasets": ["training_challenges", "evaluation_challenges"],
            "include_training_test_examples": True,
            "max_val_examples": 0,
            "eval_weight": 1.0,
        },
        "auxiliary_loss": {
            "include_size_head": True,
            "size_head_hidden_dim": 216,
            "auxiliary_size_loss_weight": 0.12,
            "auxiliary_size_loss_warmup": 0,
        },
        "output": {"output_dir": "outputs/toiny", "use_wandb": False},
    }
    path = root / "bench_config.json"
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
    return path
