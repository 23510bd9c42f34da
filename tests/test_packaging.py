"""What a wheel ships: the ``torchshard`` package only, no benchmark or test code.

A wheel's Python part is what setuptools' ``build_py`` puts in it: the packages the
project configuration lists (pyproject.toml ``[tool.setuptools]``), their modules, and
their package data. This asks ``build_py`` for that list without building anything
(building a wheel compiles the extension: minutes). The compiled ``_C`` and ``_bench``
come from setup.py's ``ext_modules`` (CMake), not from this list.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.mark.filterwarnings("ignore::setuptools.warnings.SetuptoolsDeprecationWarning")  # pyproject style notes
def test_wheel_python_files_are_the_torchshard_package_only(monkeypatch):
    from setuptools.dist import Distribution

    monkeypatch.chdir(CHECKOUT)
    dist = Distribution({"script_name": "setup.py"})
    dist.parse_config_files()
    build_py = dist.get_command_obj("build_py")
    build_py.ensure_finalized()
    shipped = sorted(
        Path(os.path.relpath(path, build_py.build_lib)).as_posix()
        for path in build_py.get_outputs(include_bytecode=False)
    )
    assert dist.packages == ["torchshard"]
    assert all(path.startswith("torchshard/") and path.count("/") == 1 for path in shipped), shipped
    sources = {path.name for path in (CHECKOUT / "torchshard").glob("*.py")}
    assert {Path(path).name for path in shipped if path.endswith(".py")} >= sources
    assert "torchshard/testing.py" in shipped and "torchshard/py.typed" in shipped
