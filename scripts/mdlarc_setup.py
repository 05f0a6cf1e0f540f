"""Setting mdlARC up for the benchmark (scripts/bench_mdlarc.py): its recipe, the arguments
file and driver its patched copy runs with, and its interpreter."""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from arcdiff.console import console

# run_script.py's args_dict with PRESETS["low"] (commit 8afc20d): 90 epochs, 80 augmentations
LOW_RECIPE: dict[str, Any] = {
    "name": "submission_run",
    "checkpoint_path": None,
    "checkpoint_epochs": [],
    "epochs": 90,
    "batch_size": 32,
    "gradient_accumulation_steps": 1,
    "do_validate": False,
    "val_batch_size": 70,
    "enable_aug": True,
    "max_augments": 80,
    "enable_color_aug": True,
    "color_apply_to_test": True,
    "enable_dihedral_aug": True,
    "dihedral_apply_to_test": True,
    "optimizer": "normuon",
    "normuon_lr": 1.66e-3,
    "normuon_momentum": 0.95,
    "normuon_beta2": 0.95,
    "adamw_lr": 3e-4,
    "warmup_pct": 0.02,
    "wsd_decay_start_pct": 0.8,
    "lr_floor": 0.0,
    "weight_decay": 0.1,
    "attention_weight_decay": 0.01,
    "token_embedding_weight_decay": 0.01,
    "task_embedding_weight_decay": 0.01,
    "grad_clip": 1.0,
    "dropout": 0.1,
    "attention_dropout": None,
    "seed": 42,
    "inference_temperature": None,
    "inference_top_k": None,
    "train_log_mode": "never",
    "log_location": "none",
}
SMALLEST = {"d_model": 128, "n_heads": 4, "d_ff": 512, "n_layers": 4}  # its model's defaults
EVAL_BATCH = 100  # run_script.py's run_evaluation(batch_size=100)
EVAL_RUN = "submission_eval"  # run_script.py's run name: runs/<name>/submission.json
CALIBRATION_EPOCHS = 1000  # a schedule far longer than the calibration's budget


def mdlarc_args(
    root: Path,
    name: str,
    *,
    epochs: int,
    seconds: float,
    seed: int,
    eval_augments: int = LOW_RECIPE["max_augments"],
) -> Path:
    """The arguments file for one run of the driver: the low recipe at the smallest shape,
    ``epochs`` long, stopped after ``seconds`` of training, ``eval_augments`` augmentations
    per test input at inference; outputs under ``runs/<name>*``."""
    args = (
        LOW_RECIPE
        | SMALLEST
        | {
            "epochs": epochs,
            "seed": seed,
            "eval_augments": eval_augments,  # the driver's
            "data_path": "assets/challenges.json",
            "train_log_file": f"runs/{name}_log.txt",
            "save_path": f"runs/{name}.pt",
            "max_seconds": seconds,  # the benchmark's patch
            "bench_log": f"runs/{name}_loss.jsonl",  # the benchmark's patch
            "compile": False,  # the benchmark's patch
            "info_path": f"runs/{name}_info.json",  # the driver's
            "eval_batch_size": EVAL_BATCH,  # the driver's
            "eval_run": EVAL_RUN,  # the driver's
        }
    )
    path = root / f"bench_{name}_args.json"
    path.write_bytes(orjson.dumps(args, option=orjson.OPT_INDENT_2))
    return path


DRIVER = '''"""arcdiff's benchmark driver for mdlARC: run_script.py's build, train and evaluate
steps, one phase per process, with the arguments of a JSON file (scripts/bench_mdlarc.py writes
both).

    python bench_run.py train|eval ARGS.json [TASK_ID ...]
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd() / "src"))
os.environ["MDLARC_DISABLE_OPTIMIZER_COMPILE"] = "1"  # no torch.compile of NorMuon's update
import build  # noqa: E402
import evaluate  # noqa: E402
import train  # noqa: E402

phase, raw = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
for key in ("data_path", "train_log_file", "save_path"):
    raw[key] = Path(raw[key])
cfg = argparse.Namespace(**raw)
Path("runs").mkdir(exist_ok=True)  # as run_script.py
if phase == "train":
    model, dataset, dataloader, device, data_path = build.build_model_and_data(cfg)
    info = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_sequences": len(dataset),
        "steps_per_epoch": len(dataset) // cfg.batch_size,  # train_model drops the last batch
        "device": str(device),
    }
    print(info)
    Path(cfg.info_path).write_text(json.dumps(info))
    train.train_model(
        cfg, model=model, dataloader=dataloader, dataset=dataset, device=device,
        data_path=data_path,
    )
else:
    evaluate.run_evaluation(
        cfg, run_name=cfg.eval_run, max_augments=cfg.eval_augments, data_path=cfg.data_path,
        checkpoint_path=cfg.save_path, batch_size=cfg.eval_batch_size, splits=["test"],
        task_ids=sys.argv[3:] or None,
    )
'''


def write_driver(root: Path) -> Path:
    path = root / "bench_run.py"
    path.write_text(DRIVER)
    return path


def _numba_version(python: str) -> str | None:
    done = subprocess.run(
        [python, "-c", "import numba; print(numba.__version__)"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _see_arcdiff_packages(python: str) -> None:
    """Put arcdiff's site-packages (torch, numpy) on the path of the venv at ``python``, after
    its own: a .pth file in its site-packages."""
    done = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    (Path(done.stdout.strip()) / "arcdiff-packages.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n"
    )


def mdlarc_python(out: Path) -> tuple[str, str | None]:
    """An interpreter for mdlARC and its numba version: arcdiff's when it has numba, else a venv
    beside the output (arcdiff's packages, and numba from PyPI), else arcdiff's without numba
    (the patch then runs numba's loop as plain Python). mdlARC's other imports (torch, numpy)
    are arcdiff's own."""
    version = _numba_version(sys.executable)
    if version:
        return sys.executable, version
    venv = out / "mdlarc-venv"
    python = str(venv / "bin" / "python")
    if not (venv / "bin" / "python").exists():
        console.print(f"making a virtual environment with numba for mdlARC: {venv}", markup=False)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        _see_arcdiff_packages(python)
        subprocess.run([python, "-m", "pip", "install", "-q", "numba"])
    version = _numba_version(python)
    if version:
        return python, version
    console.print("numba did not install: mdlARC's position loop runs as Python", markup=False)
    return sys.executable, None
