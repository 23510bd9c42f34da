"""Keeping a reference to a collective's output until its backend lets go
(csrc/python/hit/collective_output.h), on tensors whose other owner the test controls.

A hit hands the local op what stock's ``redistribute_local_tensor`` returned. When
something else still references that tensor's TensorImpl (in a job: the backend's
work, on its own thread), the op must take a TensorImpl of its own over the same
storage, and torchshard keeps a C++ reference to the output until that other reference
is gone, so that the backend's drop never is the one that releases the output's Python
object. Here the other owner is a view, whose base reference the test drops when it
chooses. The effect on real ranks is in ``test_native_all_reduce_gloo.py`` and
``scripts/exit_after_collective_loop.py``.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import torch

from torchshard import testing


@pytest.fixture(autouse=True)
def no_kept_outputs_left() -> Iterator[None]:
    testing.release_let_go_outputs()
    before = testing.kept_collective_outputs()
    yield
    gc.collect()
    testing.release_let_go_outputs()
    assert testing.kept_collective_outputs() == before


def _redistributed() -> torch.Tensor:
    # Column-major and not a view (a view's own views reference its base, not it).
    tensor = torch.empty_strided((4, 5), (1, 4), dtype=torch.float32)
    return tensor.copy_(torch.arange(20, dtype=torch.float32).reshape(4, 5))


def test_an_output_nothing_else_references_is_passed_as_it_is() -> None:
    redistributed, input_local = _redistributed(), torch.zeros(2)
    assert redistributed._use_count() == 1
    assert testing.local_safe_to_drop(redistributed, input_local) is redistributed
    assert testing.kept_collective_outputs() == 0


def test_a_shared_output_is_kept_and_the_op_gets_an_impl_of_its_own() -> None:
    redistributed = _redistributed()
    other_owner = redistributed.t()  # holds the TensorImpl, as a backend's work does
    assert redistributed._use_count() > 1
    kept_before = testing.kept_collective_outputs()
    alive = weakref.ref(redistributed)
    version = redistributed._version

    own = testing.local_safe_to_drop(redistributed, torch.zeros(2))

    assert own is not redistributed and own._use_count() == 1
    assert testing.kept_collective_outputs() == kept_before + 1
    # The same tensor in every respect a local op sees.
    assert own.untyped_storage().data_ptr() == redistributed.untyped_storage().data_ptr()
    assert (own.shape, own.stride(), own.storage_offset(), own.dtype, own.device) == (
        redistributed.shape, redistributed.stride(), redistributed.storage_offset(),
        redistributed.dtype, redistributed.device)
    assert torch.equal(own, redistributed) and not own.requires_grad
    own.mul_(2)  # in place through the new impl: same values, same version counter
    assert torch.equal(redistributed, own) and redistributed._version == own._version == version + 1

    # Kept while the other owner still references it (torch keeps the Python object
    # alive meanwhile), released once it lets go: our drop then frees the Python object.
    del redistributed, own
    gc.collect()
    testing.release_let_go_outputs()
    assert alive() is not None and testing.kept_collective_outputs() == kept_before + 1
    del other_owner
    assert alive() is not None  # the other owner's drop did not release it: ours does
    testing.release_let_go_outputs()
    assert alive() is None and testing.kept_collective_outputs() == kept_before


def test_the_callers_own_local_is_never_replaced() -> None:
    # A redistribution that returned the DTensor's own local: the caller owns it,
    # and an in-place op must reach that very tensor.
    local = _redistributed()
    view = local.t()
    assert testing.local_safe_to_drop(local, local) is local
    assert testing.kept_collective_outputs() == 0
    del view


class _LocalSubclass(torch.Tensor):
    pass


@pytest.mark.parametrize("kind", ["subclass", "requires_grad"])
def test_outputs_a_second_impl_could_change_are_passed_as_they_are(kind: str) -> None:
    # A subclass instance would become a plain tensor; a tensor that requires grad
    # would lose its autograd history. Both keep stock's behaviour instead.
    redistributed = _redistributed()
    if kind == "subclass":
        redistributed = torch.Tensor._make_subclass(_LocalSubclass, redistributed)
    else:
        redistributed.requires_grad_()
    other_owner = redistributed.t()
    assert redistributed._use_count() > 1
    kept_before = testing.kept_collective_outputs()
    assert testing.local_safe_to_drop(redistributed, torch.zeros(2)) is redistributed
    assert testing.kept_collective_outputs() == kept_before
    del other_owner


def test_non_tensors_are_refused() -> None:
    with pytest.raises(TypeError, match="expected two tensors"):
        testing.local_safe_to_drop([1.0], torch.zeros(1))
