"""Field-by-field comparison of stock-DTensor results against torchshard results.

``assert_same_result(stock, ours)`` walks tuples/lists/dicts recursively and fails
with a path (e.g. ``result[1].placements``) naming the first field that differs:

* DTensor: type, placements, device_mesh, shape, stride(), dtype, requires_grad,
  grad_fn type name, and the local tensor (shape, stride, dtype, bit-identical
  values -- both paths run the same local kernel, so no tolerance is allowed).
* plain tensor: the same, minus placements/mesh.
* anything else: ``==``.

Pass ``inputs=(stock_inputs, our_inputs)`` to also require the same aliasing pattern,
both for the local tensors (every output's local storage must alias the same input
positions in both runs) and at the DTensor wrapper level (``wrapper_aliasing``): per
output, whether it *is* an input (in-place and out= ops return the very object), whether
its ``_base`` is an input, ``_is_view()``, whether its wrapper ``untyped_storage()`` is an
input's (stock shares it for single-Tensor views, not for split/unbind list results),
whether its local storage is an input's, and the same identities against earlier outputs.

DTensors are also compared on their full ``_spec``: ``tensor_meta`` (shape, stride,
dtype) and ``shard_order``, not just the placements and mesh.

``version_deltas`` measures version-counter sharing: after an in-place op on each input,
by how much every output's (and its local tensor's) ``_version`` moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.placement_types import _MaskPartial

__all__ = [
    "aliasing_pattern",
    "assert_same_result",
    "bitwise_equal",
    "flat_tensors",
    "local_of",
    "version_deltas",
    "wrapper_aliasing",
]


def local_of(t: torch.Tensor) -> torch.Tensor:
    """The local tensor of a DTensor, or the tensor itself."""
    return t._local_tensor if isinstance(t, DTensor) else t


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` and ``b`` hold identical values (NaN == NaN, and -0.0 != +0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.complex32:
        # No CPU kernel compares complex32; widening to complex64 is exact.
        a, b = a.to(torch.complex64), b.to(torch.complex64)
    if a.is_floating_point() or a.is_complex():
        a_nan, b_nan = torch.isnan(a), torch.isnan(b)
        if not torch.equal(a_nan, b_nan):
            return False
        zero = torch.zeros((), dtype=a.dtype)
        a_clean, b_clean = torch.where(a_nan, zero, a), torch.where(b_nan, zero, b)
        if not torch.equal(a_clean, b_clean):
            return False
        if a.is_floating_point():
            return torch.equal(torch.signbit(a_clean), torch.signbit(b_clean))
        return True
    return torch.equal(a, b)


def _comparable_placement(p: Any) -> Any:
    """A placement as a value comparable across two runs.

    ``_MaskPartial`` (row-sharded embedding) compares its ``mask_buffer`` by identity,
    so equal placements from two separate runs never compare equal; compare the
    buffer's state (refcount and mask) instead.
    """
    if isinstance(p, _MaskPartial):
        mask = p.mask_buffer.data
        return ("_MaskPartial", p.reduce_op, p.offset_shape, p.offset_dim, p.mask_buffer.refcount,
                None if mask is None else mask.tolist())
    return p


def _grad_fn_name(t: torch.Tensor) -> str | None:
    return None if t.grad_fn is None else type(t.grad_fn).__name__


def _tensor_meta(t: DTensor) -> tuple[Any, ...] | None:
    meta = t._spec.tensor_meta
    if meta is None:
        return None
    return (tuple(meta.shape), tuple(meta.stride), meta.dtype)


def _fail(path: str, what: str, stock: Any, ours: Any) -> None:
    raise AssertionError(f"{path}.{what} differs: stock={stock!r} torchshard={ours!r}")


def _check(path: str, what: str, stock: Any, ours: Any) -> None:
    if stock != ours:
        _fail(path, what, stock, ours)


def _compare_tensor(path: str, stock: torch.Tensor, ours: torch.Tensor, values: bool) -> None:
    _check(path, "type", type(stock), type(ours))
    if isinstance(stock, DTensor):
        _check(path, "placements", tuple(map(_comparable_placement, stock.placements)),
               tuple(map(_comparable_placement, ours.placements)))
        _check(path, "device_mesh", stock.device_mesh, ours.device_mesh)
        _check(path, "spec.tensor_meta", _tensor_meta(stock), _tensor_meta(ours))
        _check(path, "spec.shard_order", getattr(stock._spec, "shard_order", None),
               getattr(ours._spec, "shard_order", None))
    _check(path, "shape", tuple(stock.shape), tuple(ours.shape))
    _check(path, "stride", tuple(stock.stride()), tuple(ours.stride()))
    _check(path, "dtype", stock.dtype, ours.dtype)
    _check(path, "device", stock.device, ours.device)
    _check(path, "requires_grad", stock.requires_grad, ours.requires_grad)
    _check(path, "grad_fn", _grad_fn_name(stock), _grad_fn_name(ours))
    _check(path, "is_leaf", stock.is_leaf, ours.is_leaf)
    s_local, o_local = local_of(stock).detach(), local_of(ours).detach()
    if isinstance(stock, DTensor):
        _check(path, "local.type", type(s_local), type(o_local))
        _check(path, "local.shape", tuple(s_local.shape), tuple(o_local.shape))
        _check(path, "local.stride", tuple(s_local.stride()), tuple(o_local.stride()))
        _check(path, "local.dtype", s_local.dtype, o_local.dtype)
        _check(path, "local.requires_grad", local_of(stock).requires_grad,
               local_of(ours).requires_grad)
    if values and not bitwise_equal(s_local, o_local):
        raise AssertionError(
            f"{path}.local values differ:\nstock={s_local!r}\ntorchshard={o_local!r}"
        )


def _compare(path: str, stock: Any, ours: Any, values: bool = True) -> None:
    if isinstance(stock, torch.Tensor) or isinstance(ours, torch.Tensor):
        if not (isinstance(stock, torch.Tensor) and isinstance(ours, torch.Tensor)):
            _fail(path, "type", type(stock), type(ours))
        _compare_tensor(path, stock, ours, values)
    elif isinstance(stock, (tuple, list)):
        _check(path, "type", type(stock), type(ours))
        _check(path, "len", len(stock), len(ours))
        for i, (s, o) in enumerate(zip(stock, ours)):
            _compare(f"{path}[{i}]", s, o, values)
    elif isinstance(stock, dict):
        _check(path, "type", type(stock), type(ours))
        _check(path, "keys", list(stock), list(ours))
        for k in stock:
            _compare(f"{path}[{k!r}]", stock[k], ours[k], values)
    else:
        _check(path, "value", stock, ours)


def flat_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in ``value`` (nested tuples, lists and dict values), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flat_tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flat_tensors(v)]
    return []


def aliasing_pattern(outputs: Any, inputs: Sequence[Any]) -> list[tuple[int, ...]]:
    """For each output tensor, the positions of the inputs whose (local) storage it shares."""
    input_ptrs = [
        {local_of(t).untyped_storage().data_ptr() for t in flat_tensors(inp)} for inp in inputs
    ]
    pattern = []
    for out in flat_tensors(outputs):
        ptr = local_of(out).untyped_storage().data_ptr()
        pattern.append(tuple(i for i, ptrs in enumerate(input_ptrs) if ptr in ptrs and ptr != 0))
    return pattern


def _storage_id(t: torch.Tensor) -> int | None:
    """The StorageImpl behind ``t`` (identity, not data pointer), or None without one."""
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _positions(inputs: Sequence[Any]) -> list[tuple[str, torch.Tensor]]:
    """Every tensor in ``inputs`` with its position: ``"2"``, or ``"2.1"`` inside a list."""
    found = []
    for i, value in enumerate(inputs):
        if isinstance(value, torch.Tensor):
            found.append((str(i), value))
        elif isinstance(value, (tuple, list)):
            for j, t in enumerate(flat_tensors(value)):
                found.append((f"{i}.{j}", t))
    return found


def wrapper_aliasing(outputs: Any, inputs: Sequence[Any]) -> list[dict[str, Any]]:
    """Per output tensor, how it aliases the inputs (and earlier outputs) at wrapper level.

    Keys: ``is`` (input positions that are this very object), ``base`` (positions its
    ``_base`` is; ``None`` when it has no base; ``"other"`` for a base that is no input),
    ``is_view``, ``storage`` (positions whose wrapper ``untyped_storage()`` is the same
    StorageImpl), ``local_storage`` (the same for the local tensors), and ``is_output`` /
    ``storage_output`` (earlier outputs it is / shares wrapper storage with).
    """
    ins = _positions(inputs)
    in_storage = [(pos, _storage_id(t)) for pos, t in ins]
    in_local_storage = [(pos, _storage_id(local_of(t))) for pos, t in ins]
    outs = flat_tensors(outputs)
    pattern = []
    for k, out in enumerate(outs):
        storage, local_storage = _storage_id(out), _storage_id(local_of(out))
        base = out._base
        if base is None:
            base_pos: Any = None
        else:
            base_pos = tuple(pos for pos, t in ins if base is t) or "other"
        pattern.append({
            "is": tuple(pos for pos, t in ins if out is t),
            "base": base_pos,
            "is_view": out._is_view(),
            "storage": tuple(pos for pos, sid in in_storage if storage is not None and sid == storage),
            "local_storage": tuple(
                pos for pos, sid in in_local_storage if local_storage is not None and sid == local_storage
            ),
            "is_output": tuple(j for j in range(k) if outs[j] is out),
            "storage_output": tuple(
                j for j in range(k) if storage is not None and _storage_id(outs[j]) == storage
            ),
        })
    return pattern


def version_deltas(outputs: Any, inputs: Sequence[Any],
                   bump: Any = None) -> list[tuple[str, list[tuple[int, int]]]]:
    """Bump each input tensor in place (``bump(t)``; default: ``increment_version``) and
    record, per input, how far every output's ``_version`` and its local tensor's moved.

    Views share their base's version counter; fresh results do not. The outputs' values
    must not depend on the bump (use a value-preserving in-place op).
    """
    outs = flat_tensors(outputs)
    result = []
    for pos, t in _positions(inputs):
        before = [(o._version, local_of(o)._version) for o in outs]
        if bump is None:
            torch.autograd.graph.increment_version(t)
            outcome = "ok"
        else:
            try:
                bump(t)
                outcome = "ok"
            except Exception as exc:  # noqa: BLE001 - the type is compared
                outcome = type(exc).__name__
        after = [(o._version, local_of(o)._version) for o in outs]
        result.append((f"{pos}:{outcome}", [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before)]))
    return result


def assert_same_result(
    stock: Any,
    ours: Any,
    *,
    inputs: tuple[Sequence[Any], Sequence[Any]] | None = None,
    path: str = "result",
    values: bool = True,
) -> None:
    """Assert that torchshard's result ``ours`` matches stock DTensor's ``stock`` exactly.

    ``inputs``: optional ``(stock_inputs, our_inputs)``; when given, the outputs must
    alias the same input positions in both runs (views alias, functional ops do not),
    for the local tensors and at the wrapper level (see ``wrapper_aliasing``).
    ``values=False`` skips only the local values (for results stock itself does not
    reproduce, such as random ops); every other field is still compared.
    """
    _compare(path, stock, ours, values)
    if inputs is not None:
        stock_alias = aliasing_pattern(stock, inputs[0])
        our_alias = aliasing_pattern(ours, inputs[1])
        if stock_alias != our_alias:
            _fail(path, "aliasing (input positions per output)", stock_alias, our_alias)
        stock_wrapper = wrapper_aliasing(stock, inputs[0])
        our_wrapper = wrapper_aliasing(ours, inputs[1])
        for k, (s_alias, o_alias) in enumerate(zip(stock_wrapper, our_wrapper)):
            for what in s_alias:
                if s_alias[what] != o_alias[what]:
                    _fail(f"{path}<output {k}>", f"wrapper aliasing[{what}]", s_alias[what], o_alias[what])


def assert_same_dtensor(stock: object, ours: object) -> None:
    """assert_same_result for a call whose stock result is a single DTensor."""
    from torch.distributed.tensor import DTensor

    assert type(stock) is DTensor, type(stock)
    assert_same_result(stock, ours)
