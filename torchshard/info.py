"""``python -m torchshard.info``: what torchshard was built with and what is running."""

from __future__ import annotations

import platform
import sys


def collect() -> dict[str, object]:
    import torch

    import torchshard
    from torchshard._native import _C, build_info

    return {
        "torchshard": torchshard.__version__,
        "enabled": torchshard.is_enabled(),
        # The rules are installed when the program imports torch.distributed.tensor.
        "dtensor_imported": "torch.distributed.tensor" in sys.modules,
        "ops_with_native_rules": len(torchshard.enabled_ops()),
        "cache_capacity_per_thread": torchshard.cache_capacity(),
        "built_with": {
            "torch": build_info.TORCH_VERSION,
            "python": build_info.PYTHON_VERSION,
            "build_type": build_info.BUILD_TYPE,
            **_C.BUILD,
        },
        "running": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cuda_available": torch.cuda.is_available(),
        },
        "native_module": _C.__file__,
    }


def _print(data: dict[str, object], indent: int = 0) -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            print(" " * indent + f"{key}:")
            _print(value, indent + 2)
        else:
            print(" " * indent + f"{key}: {value}")


def main() -> int:
    # As a DTensor program would: the report then counts the rules such a program gets.
    import torch.distributed.tensor  # noqa: F401

    _print(collect())
    return 0


if __name__ == "__main__":
    sys.exit(main())
