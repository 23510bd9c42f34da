"""Differential parity with real values: 4 gloo processes, stock DTensor vs torchshard.

The fake process group used by ``test_parity`` makes collectives no-ops, so global
values (``full_tensor()``, Partial reductions) are only checked here. Every rank runs
a representative subset of ``test_parity.OPS`` under a few placements per mesh
(1-D of 4 and 2-D 2x2), with stock DTensor and with torchshard (the inputs of
``test_parity.parity_inputs``, one side each with ``differential.run_side``), and
compares: outputs field by field (placements, local tensors, aliasing, ...),
``full_tensor()`` of every output, gradients field by field and their ``full_tensor()``,
inputs afterwards, version counters, and exception types. Ranks collect mismatches
instead of stopping (so collectives stay in lockstep), and the test re-raises the
first failing rank's error with its traceback.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import pytest
import torch
from gloo_ranks import gloo_group, run_ranks_with_rendezvous

WORLD_SIZE = 4
OP_NAMES = (
    "mm", "addmm", "bmm", "linear", "softmax_last", "log_softmax_dim0", "layer_norm",
    "embedding", "cat_dim0", "cat_dim1", "add", "add_bcast_row", "mul_bcast_3d",
    "mul_float_scalar", "sum_dim1", "sum_all", "mean_dim_last", "amax_dim1", "gelu_tanh",
    "relu", "where", "to_float64", "transpose", "add_uneven", "mm_uneven",
)
COMBOS_PER_MESH = 3
TIMEOUT_S = 240


def _full(value: Any) -> Any:
    """``full_tensor()`` of every DTensor in ``value`` (collective: same order on all ranks)."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        try:
            return value.detach().full_tensor()
        except Exception as exc:  # noqa: BLE001
            # Stock cannot always materialise an output again (e.g. an embedding's
            # _MaskPartial releases its mask once reduced during backward); both
            # paths must then fail alike. Raised before any collective, on every rank.
            return f"full_tensor() raised {type(exc).__name__}"
    if isinstance(value, (tuple, list)):
        return type(value)(_full(v) for v in value)
    return value


def _worker(rank: int, init_method: str, tests_dir: str) -> None:
    sys.path.insert(0, tests_dir)
    from torch.distributed.device_mesh import init_device_mesh

    with gloo_group(init_method, rank, WORLD_SIZE, timeout_s=45):
        from differential import run_side
        from dtensor_compare import assert_same_result
        from test_parity import OPS, _case_id, _placement_combos, parity_inputs

        import torchshard

        torch.manual_seed(0)
        meshes = {"1d": init_device_mesh("cpu", (4,)), "2d": init_device_mesh("cpu", (2, 2))}
        ops = {op.name: op for op in OPS}
        failures: list[str] = []
        cases = compared = native = 0
        for name in OP_NAMES:
            op = ops[name]
            for mesh_name, mesh in meshes.items():
                for combo in _placement_combos(op, mesh_name)[:COMBOS_PER_MESH]:
                    case = _case_id(op, mesh_name, combo)
                    cases += 1
                    inputs = parity_inputs(op, mesh, combo)
                    stock = run_side(inputs, op.fn, enabled=False, grad=True)
                    with torchshard.disabled():
                        stock_full = (_full(stock.output), _full(stock.grads))
                    ours = run_side(inputs, op.fn, enabled=True, grad=True)
                    ours_full = (_full(ours.output), _full(ours.grads))
                    native += ours.report.native_calls
                    try:
                        if stock.error is not None or ours.error is not None:
                            assert stock.error is ours.error, (
                                f"errors differ: stock={stock.error} {stock.message} "
                                f"ours={ours.error} {ours.message}")
                            continue
                        assert ours.grad_error is stock.grad_error, (stock.grad_error, ours.grad_error)
                        assert_same_result(stock.output, ours.output, path="output",
                                           inputs=(stock.inputs, ours.inputs))
                        assert_same_result(stock.grads, ours.grads, path="grads")
                        assert_same_result(stock_full, ours_full, path="full_tensor")
                        assert_same_result(stock.inputs, ours.inputs, path="inputs_after")
                        assert stock.versions == ours.versions, (stock.versions, ours.versions)
                        compared += 1
                    except AssertionError:
                        failures.append(f"[rank {rank}] {case}:\n{traceback.format_exc()}")
        assert cases >= 2 * len(OP_NAMES), f"only {cases} cases ran"
        assert compared >= cases // 2, f"only {compared} of {cases} cases ran without error"
        assert native > 0, "torchshard served no call natively on the gloo ranks"
        if failures:
            raise AssertionError(
                f"{len(failures)} of {cases} cases differ on rank {rank}; first:\n{failures[0]}"
            )


@pytest.mark.multiprocess
@pytest.mark.slow
def test_parity_real_values_gloo_world4() -> None:
    """On 4 real gloo ranks, torchshard matches stock DTensor values, placements and grads."""
    run_ranks_with_rendezvous(_worker, WORLD_SIZE, TIMEOUT_S)
