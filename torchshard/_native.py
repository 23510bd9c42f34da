"""Loads the native module torchshard._C, after checking it matches the installed torch.

A C++ extension built against one torch and loaded into another fails with an
undefined symbol or, worse, crashes; this module turns that into an ImportError
that names both versions.
"""

from __future__ import annotations

import torch


class TorchshardWarning(UserWarning):
    """Warnings issued by torchshard itself."""


def _load():
    try:
        from torchshard import _build_info
    except ImportError:
        raise ImportError(
            "torchshard's native extension has not been built. Install it with "
            "`pip install --no-build-isolation .` (see docs/building.md)."
        ) from None
    if _build_info.TORCH_VERSION != torch.__version__:
        raise ImportError(
            f"torchshard was built for torch {_build_info.TORCH_VERSION}, but torch "
            f"{torch.__version__} is installed. Rebuild it against the installed torch: "
            "`pip install --no-build-isolation --force-reinstall --no-deps .`"
        )
    if not torch.distributed.is_available():
        raise ImportError("torchshard needs a torch built with torch.distributed")
    from torchshard import _C

    return _C


_C = _load()
build_info = __import__("torchshard._build_info", fromlist=["_"])
