"""Adapting a trained run to tasks it has never seen: new task embeddings plus peft LoRA.

A run knows its tasks by their rows of the denoiser's ``task_embed``; a new task has none. The
adapted model keeps the base run's rows (a known task keeps its own) and appends one row per new
task, initialised from the mean of the trained rows. What trains is ``lora.mode``:

    shared           one LoRA adapter on the attention and MLP linears for all the tasks, plus
                     the new rows; ``lora.steps`` steps
    per-task         a fresh adapter (and the task's row) per task, trained on that task alone:
                     the test-time-training setting; ``lora.steps`` steps per task
    embeddings-only  the new rows only
    full             every weight, as a comparison

The base weights stay frozen (bit-identical) in every mode but ``full``. Training sees the
tasks' demonstration pairs only, with a fresh augmentation per example: the adapter works on
:class:`Task` objects, which carry no test outputs; only the scorer reads those. The base run's
files are never written.

    config.py   the base run and the merged adaptation config
    model.py    the adapted model (new task rows, peft adapters)
    fit.py      the training loop on train/step.py's TrainStep
    store.py    adapter folders: save, merge, find, load (and the model ``evaluate`` samples)
    compare.py  scores, comparison.json and the comparison table
    run.py      ``arcdiff lora``: every mode, saved, scored, compared
"""

from arcdiff.adapt.compare import BASELINE, ModeResult, comparison_table, score_adapted
from arcdiff.adapt.config import lora_config, with_mode
from arcdiff.adapt.fit import adapt
from arcdiff.adapt.model import Adapted, TaskRows, adapted_task_ids, expanded_model, prepare
from arcdiff.adapt.run import run_lora
from arcdiff.adapt.store import (
    LoadedAdapter,
    adapter_eval_model,
    find_adapter,
    load_adapted,
    save_adapted,
    save_merged,
)

__all__ = [
    "BASELINE",
    "Adapted",
    "LoadedAdapter",
    "ModeResult",
    "TaskRows",
    "adapt",
    "adapted_task_ids",
    "adapter_eval_model",
    "comparison_table",
    "expanded_model",
    "find_adapter",
    "load_adapted",
    "lora_config",
    "prepare",
    "run_lora",
    "save_adapted",
    "save_merged",
    "score_adapted",
    "with_mode",
]
