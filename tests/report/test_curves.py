import numpy as np

from arcdiff.report.curves import robust_limits, smooth


def test_smoothing_is_bias_corrected():
    assert np.allclose(smooth(np.full(5, 2.0), span=10), 2.0)  # no pull towards zero at start
    assert np.allclose(smooth(np.array([0.0, 1.0, 4.0]), span=1), [0.0, 1.0, 4.0])
    noisy = np.tile([0.0, 1.0], 50)
    assert smooth(noisy, span=20)[50:].std() < 0.2 * noisy.std()


def test_a_few_spikes_do_not_set_the_loss_axis():
    rng = np.random.default_rng(0)
    size_loss = rng.uniform(0.2, 0.3, 500)
    size_loss[[50, 300]] = 40.0  # two spikes of the raw size loss
    colour_loss = np.linspace(2.0, 1.0, 500)
    bottom, top, clipped = robust_limits([colour_loss, size_loss], log=True)
    assert clipped and top < 3.0 and bottom < 0.2  # every ordinary value shows, not the spikes
    bottom, top, clipped = robust_limits([colour_loss], log=False)
    assert not clipped and bottom < 1.0 and top > 2.0
