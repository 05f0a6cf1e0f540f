"""The run directory's layout is spelled in arcdiff/runs/ alone: everything else asks paths.py."""

import re
from pathlib import Path

from arcdiff.runs.paths import checkpoint_path, checkpoints_dir

ROOT = Path(__file__).parents[2]
SPELLED = re.compile(r"""["']checkpoints["']""")


def spellers() -> set[str]:
    files = [*(ROOT / "arcdiff").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]
    return {
        p.relative_to(ROOT).as_posix()
        for p in files
        if SPELLED.search(p.read_text()) and (ROOT / "arcdiff" / "runs") not in p.parents
    }


def test_only_runs_spells_the_checkpoints_folder():
    assert spellers() == set()


def test_checkpoint_paths():
    run = Path("outputs/r")
    assert checkpoints_dir(run) == Path("outputs/r/checkpoints")
    assert checkpoint_path(run) == Path("outputs/r/checkpoints/final.pt")
    assert checkpoint_path(run, "step_0000100") == Path("outputs/r/checkpoints/step_0000100.pt")
