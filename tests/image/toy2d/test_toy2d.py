"""2D toy suite: datasets as the baseline makes them, the kNN KL estimator, the MLP embedding
variants, and the ``arcdiff image toy2d`` command end to end."""

import math
import os
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from typer.testing import CliRunner

from arcdiff.cli.image import image_app
from arcdiff.errors import DataError
from arcdiff.image.embeddings import EMBEDDINGS
from arcdiff.image.toy2d import data as D
from arcdiff.image.toy2d.metrics import gaussian_kl_bits, knn_kl_divergence
from arcdiff.image.toy2d.model import MLPDenoiser
from arcdiff.image.toy2d.run import METRIC_KEYS

# the shared data folder sits beside the repository (here and in CI)
SHARED_TSV = Path(__file__).resolve().parents[4] / "shared" / "data" / "DatasaurusDozen.tsv"
TSV = Path(os.environ.get("ARCDIFF_DATASAURUS", SHARED_TSV))
needs_tsv = pytest.mark.skipif(not TSV.is_file(), reason=f"no Datasaurus TSV at {TSV}")


# --- datasets ----------------------------------------------------------------------------

# First two of the 100,000 points and the mean, as the baseline's datasets.py makes them
# (checked against pandas + scikit-learn running the baseline's code).
PINNED = {
    "circle": ([[1.3061609, 2.7078216], [-0.0287937, 3.0232801]], [0.0101602, -0.0042594]),
    "dino": ([[-2.3470440, 0.7537657], [0.5299329, -2.4447246]], [0.0161702, -0.0177553]),
    "line": ([[1.0958242, 3.5109859], [-0.2444862, 3.5809782]], [0.0024998, -0.0053214]),
    "moons": ([[1.7407302, -1.5832256], [2.2178233, -1.4060793]], [0.6001103, 0.6502118]),
}


@pytest.mark.parametrize("name", D.DATASETS)
def test_datasets_reproduce_the_baseline(name):
    if name == "dino" and not TSV.is_file():
        pytest.skip("no Datasaurus TSV")
    points = D.get_dataset(name, 100_000, dino_tsv=TSV)
    assert points.shape == (100_000, 2) and points.dtype == np.float32
    first, mean = PINNED[name]
    np.testing.assert_allclose(points[:2], first, atol=1e-6)
    np.testing.assert_allclose(points.mean(0), mean, atol=1e-6)


def test_moons_equal_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    x, _ = sklearn_datasets.make_moons(n_samples=5001, random_state=42, noise=0.03)
    x[:, 0] = (x[:, 0] + 0.3) * 2 - 1
    x[:, 1] = (x[:, 1] + 0.3) * 3 - 1
    np.testing.assert_array_equal(D.moons(5001), x.astype(np.float32))


def test_missing_tsv_is_one_clear_error(tmp_path):
    missing = tmp_path / "nowhere.tsv"
    with pytest.raises(DataError) as err:
        D.get_dataset("dino", 10, dino_tsv=missing)
    message = str(err.value)
    assert str(missing) in message and "DatasaurusDozen.tsv" in message
    assert D.DATASAURUS_ENV in message and "\n" not in message


def test_malformed_tsv(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("dataset\tx\ty\ndino\t1.0\toops\n")
    with pytest.raises(DataError, match="bad.tsv:2"):
        D.get_dataset("dino", 10, dino_tsv=bad)


# --- kNN KL estimator ---------------------------------------------------------------------


def test_knn_kl_exact_small_example():
    # 1-D, k = 1: rho = (1, 1, 2), nu = (0.5, 0.5, 1), so D = mean log(nu / rho) + log(2 / 2)
    real = np.array([[0.0], [1.0], [3.0]])
    generated = np.array([[0.5], [2.0]])
    assert knn_kl_divergence(real, generated, k=1) == pytest.approx(-1.0)


def test_knn_kl_matches_gaussian_closed_form():
    rng = np.random.default_rng(0)
    cov_q = np.array([[1.5, 0.3], [0.3, 0.8]])
    p = rng.normal(size=(40_000, 2))
    q = rng.multivariate_normal([0.5, -0.3], cov_q, size=10_000)
    exact = gaussian_kl_bits(np.zeros(2), np.eye(2), np.array([0.5, -0.3]), cov_q)
    # by hand: det = 1.11, tr(inv) = 2.3 / 1.11, mahalanobis = 0.425 / 1.11,
    # nats = (2.07207 + 0.38288 - 2 + ln 1.11) / 2 = 0.279657 -> 0.40346 bits
    assert exact == pytest.approx(0.40346, abs=1e-5)
    assert knn_kl_divergence(p, q, k=5) == pytest.approx(exact, abs=0.06)
    same = knn_kl_divergence(p, rng.normal(size=(10_000, 2)), k=5)
    assert abs(same) < 0.03


def test_gaussian_kl_closed_form_simple():
    # KL(N(0, 1) || N(1, 4)) in 1-D = log 2 + (1 + 1) / 8 - 1/2 nats
    nats = math.log(2) + 2 / 8 - 0.5
    assert gaussian_kl_bits(np.zeros(1), np.eye(1), np.ones(1), 4 * np.eye(1)) == pytest.approx(
        nats / math.log(2)
    )


# --- embeddings ---------------------------------------------------------------------------


@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_every_variant_starts_as_the_sinusoidal_baseline(embedding):
    torch.manual_seed(0)
    base = MLPDenoiser(embedding="sinusoidal")
    torch.manual_seed(0)
    variant = MLPDenoiser(embedding=embedding)
    variant.input.load_state_dict(base.input.state_dict())
    variant.blocks.load_state_dict(base.blocks.state_dict())
    variant.output.load_state_dict(base.output.state_dict())
    x, t = torch.randn(16, 2), torch.randint(0, 100, (16,))
    assert torch.allclose(variant(x, t), base(x, t), atol=1e-5)
    table = variant.modulation_table(torch.arange(100))
    if embedding == "sinusoidal":
        assert table is None
    else:
        assert table.shape == (100, 64) and torch.allclose(table, torch.ones(100, 64), atol=1e-6)


def test_time_mlp_modulation_can_vary_with_time():
    torch.manual_seed(0)
    model = MLPDenoiser(embedding="time_mlp")
    torch.nn.init.normal_(model.modulations[0].net[-1].weight)
    table = model.modulation_table(torch.arange(100))
    assert not torch.allclose(table[0], table[99])
    assert (table > 0).all() and (table < 2).all()


# --- the command ----------------------------------------------------------------------------

TINY = ["--train-steps", "100", "--batch-size", "64", "--num-points", "3000",
        "--eval-samples", "500", "--num-timesteps", "50", "--sample-steps", "20",
        "--threads", "1"]  # fmt: skip


@needs_tsv
def test_toy2d_end_to_end_learns_the_line_and_reports_its_samples(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        image_app,
        ["toy2d", "--datasets", "line,dino", "--out", str(out), "--dino-tsv", str(TSV), *TINY],
    )
    assert result.exit_code == 0, result.output
    info = orjson.loads((out / "sinusoidal" / "final_info.json").read_bytes())
    assert set(info) == {"line", "dino"}
    samples = np.load(out / "sinusoidal" / "samples.npz")
    noise = np.random.default_rng(0).normal(size=(500, 2))
    for name, metrics in info.items():
        assert set(metrics) == set(METRIC_KEYS)
        assert metrics["training_time"] > 0 and metrics["eval_loss"] > 0
        # the reported KL is the one of the saved samples against the dataset
        data = D.get_dataset(name, 3000, dino_tsv=TSV)
        assert samples[name].shape == (500, 2)
        assert metrics["kl_divergence"] == knn_kl_divergence(data, samples[name], k=5)
    # 100 steps learn the line's wide uniform box: KL 0.54 bits, N(0, I) noise scores 1.53
    line = D.get_dataset("line", 3000)
    assert info["line"]["kl_divergence"] < knn_kl_divergence(line, noise, k=5) / 2
    assert (out / "samples.png").stat().st_size > 0 and (out / "train_loss.png").stat().st_size > 0
    assert "kl" in result.output.lower() and "line" in result.output


def test_toy2d_study_trains_every_embedding_and_writes_modulation_plot(tmp_path):
    out = tmp_path / "study"
    args = ["toy2d", "--study", "--datasets", "line", "--out", str(out), *TINY]
    args[args.index("--train-steps") + 1] = "30"
    result = CliRunner().invoke(image_app, args)
    assert result.exit_code == 0, result.output
    baseline = np.load(out / "sinusoidal" / "samples.npz")["line"]
    for embedding in EMBEDDINGS:
        assert set(orjson.loads((out / embedding / "final_info.json").read_bytes())) == {"line"}
        if embedding != "sinusoidal":
            # each variant is its own model: same seed and data, other samples, a trained table
            assert not np.allclose(np.load(out / embedding / "samples.npz")["line"], baseline)
            table = np.load(out / embedding / "modulation.npz")["line"]
            assert table.shape == (50, 64) and not np.allclose(table, 1.0)
    assert (out / "modulation.png").is_file() and (out / "samples.png").is_file()


def test_toy2d_missing_tsv_is_one_line_and_nonzero(tmp_path):
    result = CliRunner(env={"ARCDIFF_DATASAURUS": str(tmp_path / "missing.tsv")}).invoke(
        image_app, ["toy2d", "--datasets", "dino", "--out", str(tmp_path / "r"), *TINY]
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Datasaurus Dozen TSV not found")
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # failed before training


def test_toy2d_bad_option_is_one_line(tmp_path):
    result = CliRunner().invoke(
        image_app,
        ["toy2d", "--datasets", "line", "--prediction", "eps", "--zero-terminal-snr", *TINY],
    )
    assert result.exit_code == 1
    assert (
        result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1
    )
