"""The built-in digits data: scikit-learn's bundled file, read without importing scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from hpsearch.workloads.digits_data import digits_arrays, load_digits_split


def test_digits_arrays_equal_scikit_learns_loader() -> None:
    from sklearn.datasets import load_digits

    images, labels = digits_arrays()
    expected_images, expected_labels = load_digits(return_X_y=True)
    assert images.dtype == expected_images.dtype and labels.dtype == expected_labels.dtype
    assert np.array_equal(images, expected_images) and np.array_equal(labels, expected_labels)


def test_digits_split_is_fixed_and_disjoint() -> None:
    split = load_digits_split("cpu")
    assert [len(split[k][0]) for k in ("train", "val", "test")] == [1078, 359, 360]
    rows = {(*r.tolist(), int(t)) for k in split for r, t in zip(*split[k])}
    assert len(rows) == len({tuple(r) for r in np.c_[digits_arrays()[0] / 16.0, digits_arrays()[1]].tolist()})


def test_digits_workload_starts_without_importing_scikit_learn() -> None:
    code = "import sys, hpsearch.workloads.digits as d; d.load_digits_split('cpu'); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # scikit-learn's import (scipy and all) is ~2 s of every worker's start-up
