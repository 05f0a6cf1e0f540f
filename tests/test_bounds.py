"""pyproject's lower bounds: the installed versions satisfy them, and no bound is below what
arcdiff's code needs (the table says why each minimum is what it is)."""

import re
from importlib.metadata import version
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
from packaging.requirements import Requirement  # noqa: E402  (peft depends on packaging)
from packaging.version import Version  # noqa: E402

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# package -> (the lowest version the code runs on, why)
NEEDED = {
    "torch": (
        "2.9",
        "arcdiff/train/muon.py subclasses torch.optim.Muon at import (first in 2.9, "
        "pytorch#160213); train/optim.py imports it on every training path",
    ),
    "peft": (
        "0.10",
        "LoraConfig, get_peft_model, PeftModel.from_pretrained, save_pretrained and "
        "peft.utils' get_/set_peft_model_state_dict, load_peft_weights are all in 0.10.0; "
        "the adapt tests pass on it",
    ),
    "rich": (
        "13",
        "arcdiff never nests live displays (nested Live would need rich 14.1); the CLI, "
        "train and lora tests pass on rich 13.0.0",
    ),
}


def bounds() -> dict[str, Version]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    out = {}
    for text in deps:
        req = Requirement(text)
        (spec,) = [s for s in req.specifier if s.operator == ">="]
        out[req.name] = Version(spec.version)
    return out


def test_every_dependency_has_a_lower_bound_the_installed_version_meets():
    found = bounds()
    assert set(NEEDED) <= set(found)
    for name, bound in found.items():
        installed = Version(re.sub(r"\+.*", "", version(name)))  # 2.13.0+cpu -> 2.13.0
        assert installed >= bound, f"{name} {installed} is below pyproject's >= {bound}"


@pytest.mark.parametrize("name", sorted(NEEDED))
def test_each_bound_is_at_least_what_the_code_needs(name):
    needed, why = NEEDED[name]
    assert bounds()[name] >= Version(needed), f"{name} >= {needed}: {why}"
