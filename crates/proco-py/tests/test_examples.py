"""The examples run as a user would run them, and their losses go down."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "script,args,pattern",
    [
        ("authors_swap.py", ["--epochs", "3"], r"loss ([0-9.]+)"),
        ("fixmatch_ssl.py", ["--steps", "100"], r"loss ([0-9.]+)"),
        ("detector_roi_head.py", ["--iterations", "60"], r"ProCo ([0-9.]+)"),
    ],
)
def test_example_runs_and_its_loss_decreases(script, args, pattern):
    out = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    losses = [float(v) for v in re.findall(pattern, out.stdout)]
    assert len(losses) >= 2, out.stdout
    assert losses[-1] < losses[0], out.stdout
