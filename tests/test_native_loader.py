"""Loading _C against a torch it was not built for is a clear ImportError, never a crash."""

import shutil
import subprocess
import sys
from pathlib import Path

import torchshard


def test_torch_version_mismatch_names_both_versions(tmp_path: Path):
    package = tmp_path / "torchshard"
    shutil.copytree(Path(torchshard.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    build_info = package / "_build_info.py"
    build_info.write_text(build_info.read_text().replace("TORCH_VERSION = ", "TORCH_VERSION = '2.12.0' or "))
    result = subprocess.run(
        [sys.executable, "-c", "import torchshard"],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,  # `python -c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: torchshard was built for torch 2.12.0")
    import torch

    assert f"torch {torch.__version__} is installed" in last_line
