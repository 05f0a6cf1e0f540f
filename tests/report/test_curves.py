import numpy as np

from arcdiff.report.curves import smooth


def test_smoothing_is_bias_corrected():
    assert np.allclose(smooth(np.full(5, 2.0), span=10), 2.0)  # no pull towards zero at start
    assert np.allclose(smooth(np.array([0.0, 1.0, 4.0]), span=1), [0.0, 1.0, 4.0])
    noisy = np.tile([0.0, 1.0], 50)
    assert smooth(noisy, span=20)[50:].std() < 0.2 * noisy.std()
