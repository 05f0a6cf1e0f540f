"""scripts/gpu_check.sh refuses in one line where torch sees no CUDA device."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "gpu_check.sh"


def test_gpu_check_refuses_in_one_line_without_a_cuda_device(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "no CUDA device is visible to torch" in lines[0]
    assert not (tmp_path / "work").exists()  # nothing was started
