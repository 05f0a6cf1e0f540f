"""Image datasets read with numpy: the digits bundled with scikit-learn, and MNIST idx,
CIFAR-10 python batches and STL-10 binaries written here in their published formats."""

import gzip
import pickle

import numpy as np
import pytest

from arcdiff.errors import DataError
from arcdiff.image.unet.data import load_images, read_idx, resize


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_digits_are_16x16_in_unit_range_with_a_fixed_split():
    pytest.importorskip("sklearn")
    train, test = load_images("digits"), load_images("digits", split="test")
    assert train.images.shape == (1500, 1, 16, 16) and test.images.shape == (297, 1, 16, 16)
    assert train.images.dtype == np.float32
    assert train.images.min() == 0.0 and 0.9 < train.images.max() <= 1.0
    assert set(train.labels.tolist()) == set(range(10)) and train.num_classes == 10
    assert list(train.labels[:10]) == list(range(10))
    # upsampling keeps the mean brightness of the 8x8 originals (bilinear, no clipping here)
    assert load_images("digits", image_size=8).images.mean() == pytest.approx(
        train.images.mean(), abs=0.01
    )


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, array)
    np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_corrupt_idx_headers_are_clear_errors(tmp_path):
    bad_magic = tmp_path / "magic"
    bad_magic.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(bad_magic)
    short = tmp_path / "short"
    write_idx(short, np.zeros((4, 5), dtype=np.uint8))
    short.write_bytes(short.read_bytes()[:-3])
    with pytest.raises(DataError, match=r"shape \(4, 5\) \(32 bytes\).*has 29 bytes"):
        read_idx(short)


def test_mnist_from_idx_files(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    write_idx(folder / "train-labels-idx1-ubyte", np.array([3, 1, 4, 1, 5]))
    data = load_images("mnist", root=tmp_path)
    assert data.images.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(data.images[:, 0] * 255, images, atol=1e-4)
    assert data.labels.tolist() == [3, 1, 4, 1, 5]
    assert load_images("mnist", root=tmp_path, image_size=14).images.shape == (5, 1, 14, 14)


def test_missing_dataset_names_the_path_and_the_source(tmp_path):
    for name, expected in [
        ("mnist", "mnist/train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("stl10", "stl10_binary/train_X.bin"),
    ]:
        with pytest.raises(DataError) as err:
            load_images(name, root=tmp_path)
        message = str(err.value)
        assert str(tmp_path / expected) in message and "https://" in message
        assert "\n" not in message


def test_cifar10_from_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (2, 3072)).astype(np.uint8), b"labels": [i, 9 - i]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    data = load_images("cifar10", root=tmp_path)
    assert data.images.shape == (10, 3, 32, 32) and data.labels.tolist()[:2] == [1, 8]
    raw = pickle.loads((folder / "data_batch_1").read_bytes())[b"data"][0]
    # CIFAR rows are 1024 red, 1024 green, 1024 blue values, each row-major
    np.testing.assert_allclose(data.images[0, 1, 0, :4] * 255, raw[1024:1028], atol=1e-4)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 python batch"):
        load_images("cifar10", root=tmp_path)


def test_stl10_binary_is_column_major(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    image = np.zeros((3, 96, 96), dtype=np.uint8)
    image[0, 0, 5] = 255  # red channel, row 0, column 5
    image.transpose(0, 2, 1).tofile(folder / "train_X.bin")  # the file stores columns first
    np.array([4], dtype=np.uint8).tofile(folder / "train_y.bin")
    data = load_images("stl10", root=tmp_path)
    assert data.images.shape == (1, 3, 96, 96) and data.labels.tolist() == [3]
    assert data.images[0, 0, 0, 5] == 1.0 and data.images[0, 0, 5, 0] == 0.0
    assert data.class_names[3] == "cat"


def test_unknown_dataset_is_an_error():
    with pytest.raises(DataError, match="unknown image dataset 'imagenet'"):
        load_images("imagenet")


def test_resize_down_averages():
    images = np.zeros((1, 1, 4, 4), dtype=np.float32)
    images[0, 0, :2, :2] = 1.0
    np.testing.assert_allclose(resize(images, 2)[0, 0], [[1.0, 0.0], [0.0, 0.0]])
