"""The op families whose calls may reuse a sharding decision across shapes.

A shape-generic decision (docs/design.md, "Shape-generic decisions") is keyed by
every property of a size that stock's strategy for the op reads: size 1, sizes
smaller than the mesh, divisibility by the mesh, a stride class. The families
below are those whose strategies read no more than that; docs/design.md lists,
per family, what the strategy code reads. Every other op keeps exact keys only
(counted as ``op_not_shape_generic``).

``out=`` overloads are left out: their plans are never reused (the out= tensors
take the output specs, which stock checks against their own shapes).
"""

from __future__ import annotations

from torch._ops import OpOverload

# Non-pointwise families, by aten overload name.
_SHAPE_GENERIC_OVERLOADS = frozenset(
    {
        # reductions with given dims (_math_ops.py: common_reduction_strategy)
        "sum.default", "sum.dim_IntList", "mean.default", "mean.dim", "amax.default",
        "amin.default", "prod.default", "prod.dim_int", "var.correction", "std.correction",
        "max.dim", "min.dim", "max.default", "min.default", "argmax.default", "argmin.default",
        "any.default", "any.dim", "any.dims", "all.default", "all.dim", "linalg_vector_norm.default",
        # softmax and log_softmax, forward and backward (_math_ops.py: softmax_strategy)
        "_softmax.default", "_log_softmax.default", "_softmax_backward_data.default",
        "_log_softmax_backward_data.default",
        # layer_norm and rms_norm, forward and backward (_math_ops.py)
        "native_layer_norm.default", "native_layer_norm_backward.default",
        "_fused_rms_norm.default", "_fused_rms_norm_backward.default",
        # matrix products (_matrix_ops.py); their backward ops are the same ops
        "mm.default", "bmm.default", "addmm.default", "baddbmm.default",
        # scaled_dot_product_attention's variants that DTensor has strategies for
        "_scaled_dot_product_flash_attention.default",
        "_scaled_dot_product_flash_attention_backward.default",
        "_scaled_dot_product_efficient_attention.default",
        "_scaled_dot_product_efficient_attention_backward.default",
        "_scaled_dot_product_cudnn_attention.default",
        "_scaled_dot_product_cudnn_attention_backward.default",
        # embedding (_embedding_ops.py)
        "embedding.default", "embedding_dense_backward.default",
        # cat, stack, split (_tensor_ops.py); chunk decomposes into split
        "cat.default", "stack.default", "split.Tensor", "unbind.int",
        # views (_view_ops.py: dim_maps); backward ops of views are views
        "transpose.int", "permute.default", "t.default", "unsqueeze.default", "squeeze.default",
        "squeeze.dim", "squeeze.dims", "view.default", "_unsafe_view.default", "reshape.default",
        "expand.default", "select.int", "select_backward.default",
    }
)

# Optimizer families: every _foreach_* op (pointwise over lists) and the fused steps.
_SHAPE_GENERIC_PREFIXES = ("_foreach_", "_fused_adam")


def is_shape_generic(op: OpOverload, pointwise: bool) -> bool:
    """Whether ``op``'s calls may reuse decisions across shapes.

    ``pointwise``: the op has stock's single-dim pointwise strategy, which reads
    tensor metadata only (torchshard/_hook.py decides it).
    """
    if op.namespace != "aten":
        return False
    name = f"{op._schema.name.split('::', 1)[1]}.{op._overloadname}"
    if name.endswith(".out") or "_out" in op._overloadname:
        return False
    return pointwise or name in _SHAPE_GENERIC_OVERLOADS or name.startswith(_SHAPE_GENERIC_PREFIXES)
