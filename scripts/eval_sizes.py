"""Output-size accuracy of a trained run's size readouts, without sampling any grid.

    .venv/bin/python scripts/eval_sizes.py outputs/toiny_aa1 [outputs/other ...]

For every test input of the run's eval split (aa1 eval, grids <= data.max_size), 8 views
(dihedral ids 0..7, random colour permutations, as ``--maj`` evaluates) read the size head
once at the noisiest sampling step. Reported, as the fraction of test inputs whose output
height and width are right:

    view        each view's own argmax (mean over views)
    majority    the most common size among the 8 views, mapped back to the original frame
    vote        the size vote (summed log-probabilities in the original frame)
    vote+prior  the vote weighing the demonstrations' size rules (the evaluator's default)
    prior       the demonstrations' size rules alone (no model)

Test outputs are read only to score. One forward pass per view, so this takes seconds where a
full evaluation takes minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from arcdiff.data.augment import DIHEDRAL_BITS, augment_canvases, sample_colour_perms
from arcdiff.data.encode import encode_grids
from arcdiff.data.tasks import load_tasks
from arcdiff.diffusion.discrete import DiscreteDiffusion
from arcdiff.eval.sizes import demo_size_prior, size_logprobs, size_votes
from arcdiff.runs.checkpoint import load_run_model
from arcdiff.runs.paths import checkpoint_path

VIEWS = 8


def size_accuracies(run: Path, checkpoint: str) -> dict[str, float]:
    model, cfg, state = load_run_model(checkpoint_path(run, checkpoint))
    s = cfg.data.max_size
    tasks = load_tasks(cfg.eval.split, max_size=s, missing_ok=True)
    index = {task_id: i for i, task_id in enumerate(state["task_ids"])}
    rng = np.random.default_rng(0)
    grids, truths, priors, colours, task_rows = [], [], [], [], []
    for task in tasks:
        for i, test_input in enumerate(task.test_inputs):
            truths.append(tasks.solutions[task.id][i].shape)
            priors.append(demo_size_prior(task, test_input, s))
            colours.append(sample_colour_perms(rng, VIEWS))
            grids += [test_input] * VIEWS
            task_rows += [index[task.id]] * VIEWS
    dihedrals = np.tile(np.arange(VIEWS), len(truths))
    tokens, sizes = encode_grids(grids, s)
    tokens, _ = augment_canvases(tokens, sizes, dihedrals, np.concatenate(colours))
    logp = size_logprobs(
        model,
        DiscreteDiffusion.from_config(cfg.diffusion),
        torch.from_numpy(tokens.astype(np.int64)),
        torch.tensor(task_rows),
        torch.from_numpy(dihedrals),
    ).numpy()
    truth = np.array(truths)  # (T, 2) original frame
    swap = DIHEDRAL_BITS[dihedrals, 0].astype(bool)
    groups = np.repeat(np.arange(len(truth)), VIEWS)
    to_original = lambda hw: np.where(swap[:, None], hw[:, ::-1], hw)  # noqa: E731

    own = to_original(logp.argmax(-1) + 1).reshape(-1, VIEWS, 2)
    majority = []
    for views in own:
        values, counts = np.unique(views, axis=0, return_counts=True)
        majority.append(values[counts.argmax()])

    def right(sizes: np.ndarray) -> float:
        return float((sizes == truth).all(-1).mean())

    first_view = slice(None, None, VIEWS)
    return {
        "view": float((own == truth[:, None]).all(-1).mean()),
        "majority": right(np.array(majority)),
        "vote": right(to_original(size_votes(logp, dihedrals, groups))[first_view]),
        "vote+prior": right(
            to_original(size_votes(logp, dihedrals, groups, np.stack(priors)))[first_view]
        ),
        "prior": right(np.stack(priors).argmax(-1) + 1),
        "test inputs": len(truth),
        "step": state["step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--checkpoint", default="final")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = Table(title="output-size accuracy of each size readout (fraction of test inputs)")
    columns = ("view", "majority", "vote", "vote+prior", "prior")
    table.add_column("run", overflow="fold")
    for column in ("step", *columns, "test inputs"):
        table.add_column(column, justify="right")
    for run in args.runs:
        acc = size_accuracies(run, args.checkpoint)
        cells = [f"{acc[c]:.1%}" for c in columns]
        table.add_row(str(run), str(acc["step"]), *cells, str(acc["test inputs"]))
    Console(width=max(120, Console().width)).print(table)


if __name__ == "__main__":
    main()
