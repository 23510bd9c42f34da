"""Run a callback right after a module is first imported, without importing it.

``import torchshard`` must not import ``torch.distributed.tensor`` itself: that import
is observable (it registers DTensor and its parts as weights_only-safe globals, so a
weights_only ``torch.load`` of a DTensor checkpoint that stock refuses would succeed;
docs/design.md). So torchshard installs its rules when the program imports it. Python
has no post-import hook; this module adds one: a ``sys.meta_path`` finder that, for
that one name, lets the other finders find the module and hands back their spec with
a loader that runs the real loader, then the callback. The module itself sees its real
loader (``__loader__``, ``__spec__.loader``), exactly as without us.
"""

from __future__ import annotations

import importlib._bootstrap
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType


class _ThenCallback(importlib.abc.Loader):
    """The real loader, then the callback (once the module has executed)."""

    def __init__(self, loader: importlib.abc.Loader, callback: Callable[[], None]) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        create_module = getattr(self._loader, "create_module", None)
        return create_module(spec) if create_module is not None else None

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._callback()


class AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``callback()`` right after ``name`` is next imported.

    Once armed, the finder is first on ``sys.meta_path`` until the module has executed:
    a lookup that does not import (``importlib.util.find_spec``) or an import that fails
    leaves it armed for the next one. Then it removes itself and calls the callback in
    the importing thread, while that import still holds the module's import lock. (A
    loader without ``exec_module``, deprecated since Python 3.4, is left unwrapped; the
    callback then never runs.)
    """

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name = name
        self._callback = callback
        self._lock = threading.Lock()

    def arm(self) -> bool:
        """Arm the finder, or return False without arming it if ``name`` is imported already.

        The decision is made holding ``name``'s own import lock, the one every import of
        it holds from its lookup to the end of its execution: so no other thread's import
        is between the two, and the module is either fully imported (False: the caller
        acts now) or its next import will find this finder (True). The lock is private
        to importlib (``importlib._bootstrap._ModuleLockManager``).
        """
        with importlib._bootstrap._ModuleLockManager(self.name):
            if self.name in sys.modules:
                return False
            with self._lock:
                if self not in sys.meta_path:
                    sys.meta_path.insert(0, self)
            return True

    def disarm(self) -> None:
        with self._lock:
            if self in sys.meta_path:
                sys.meta_path.remove(self)

    def is_armed(self) -> bool:
        return self in sys.meta_path

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        spec = self._find_with_other_finders(fullname, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ThenCallback(spec.loader, self._imported)
        return spec

    def _imported(self) -> None:
        self.disarm()
        self._callback()

    def _find_with_other_finders(self, fullname, path, target):
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None
