"""tools/gpu_check.sh checks its prerequisites before any step: without a working GPU it says what is missing."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(tmp_path, nvidia_smi):
    """The script with a stand-in ``nvidia-smi`` (a shell body) first on PATH and this interpreter's bin next."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text(f"#!/bin/sh\n{nvidia_smi}\n")
    (fake / "nvidia-smi").chmod(0o755)
    path = os.pathsep.join([str(fake), str(Path(sys.executable).parent), os.environ["PATH"]])
    log = tmp_path / "log"
    done = subprocess.run(["bash", str(SCRIPT), str(log)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": path}, cwd=SCRIPT.parent.parent)
    return done, log


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_without_a_gpu_it_says_so_and_runs_no_step(tmp_path):
    done, log = run(tmp_path, 'echo "NVIDIA-SMI has failed because it could not communicate with the driver"; exit 9')
    assert done.returncode == 2
    assert "gpu_check: cannot run; missing:\n  - no GPU: nvidia-smi -L fails (NVIDIA-SMI has failed" in done.stderr
    assert not log.exists() and "==" not in done.stdout


def test_a_gpu_cupy_cannot_use_is_named_with_what_is_missing(tmp_path):
    import tinygrad_rnn

    if tinygrad_rnn.cuda.available:
        pytest.skip("a working GPU is present")
    done, log = run(tmp_path, 'echo "GPU 0: a stand-in"')
    assert done.returncode == 2 and not log.exists()
    assert "gpu_check: cannot run; missing:" in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("  - ")]
    # what this machine lacks: CuPy's driver, or the packages (then the check of CuPy does not run)
    assert lines and all(("tinygrad_rnn.cuda.check: " in line or "Python packages" in line or "NCCL" in line)
                         for line in lines)
