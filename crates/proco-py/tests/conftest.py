"""Shared helpers of the Python package's tests: the golden set, the authors' numerics."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def golden_dir():
    """PROCO_GOLDEN_DIR when set (as for the Rust tests), else the repository's golden/."""
    return Path(os.environ.get("PROCO_GOLDEN_DIR") or ROOT / "golden")


@pytest.fixture(scope="session")
def golden():
    def load(name):
        path = golden_dir() / name
        with open(path) as f:
            return json.load(f)

    return load


@pytest.fixture(scope="session")
def authors():
    """bench/pytorch_reference.py: ProCo's Bessel numerics evaluated the authors' way in
    PyTorch (Miller's recurrence at integer order, ratio clipped at 1)."""
    spec = importlib.util.spec_from_file_location("pytorch_reference", ROOT / "bench" / "pytorch_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
