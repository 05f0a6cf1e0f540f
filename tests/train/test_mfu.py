"""The analytic FLOP count of bench_train's MFU against torch's own FLOP counter."""

import pytest
from torch.utils.flop_counter import FlopCounterMode

from arcdiff.config import load_config
from arcdiff.model.denoiser import example_inputs
from arcdiff.runs.checkpoint import build_model
from arcdiff.train.mfu import model_flops


@pytest.mark.parametrize("side", [10, 4])  # a full canvas and a size bucket's cropped one
def test_model_flops_match_the_counter_on_full_and_cropped_canvases(side):
    cfg = load_config("toiny_aa1", ["model.d_model=32", "model.n_heads=2", "model.n_layers=2"])
    model = build_model(cfg, num_tasks=7)
    b = 3
    args = example_inputs(b, side)
    with FlopCounterMode(display=False) as counter:
        model(*args)
    counted = counter.get_total_flops()
    n, d = 1 + 2 * side * side, cfg.model.d_model
    # on the CPU the counter does not see the two matmuls inside scaled_dot_product_attention
    attention = cfg.model.n_layers * b * 2 * 2 * n * n * d
    expected = model_flops(cfg, b, side).forward
    assert counted + attention == pytest.approx(expected, rel=1e-3)
    assert model_flops(cfg, b, side).no_sc == 3 * expected
