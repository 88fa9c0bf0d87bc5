"""Transformer graph fusion before INT8: attention blocks into one com.microsoft.Attention node, then ORT's fusions.

ORT's own ViT fuser (`onnxruntime.transformers.optimizer`, model type vit) fuses bias+GELU (its
SkipLayerNormalization is left out: slower on CPU, see ort_fusion_options), but finds no attention in
the dynamo exporter's graphs: their scaled_dot_product_attention has K transposed through
Reshape/Transpose chains, scale split over Q and K and an all-zero mask guarded by IsNaN/Where.
`fuse_attention` matches that block around each Softmax and writes the packed-QKV Attention node ORT's
CPU provider runs (and quantize_dynamic turns into QAttention). Every rewrite is checked numerically
against the unfused graph; a mismatch drops it.
The result runs on ONNX Runtime only (contrib ops), which the artifact's manifest records.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.quantize.graph import OnnxGraph
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
PASS_THROUGH = ("Reshape", "Transpose")  # the dynamo exporter's K^T is a chain of these
FUSED_ATOL = 1e-4


@dataclass
class FusionReport:
    """What the fusion did: attention blocks found/fused, ORT's fused-op counts and the fp32 check."""

    attention_blocks: int = 0
    attention_fused: int = 0
    num_heads: int | None = None
    ort_fusions: dict[str, int] = field(default_factory=dict)
    max_abs_diff: float | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return self.attention_fused > 0 or any(self.ort_fusions.values())

    def to_dict(self) -> dict[str, Any]:
        return {"attention_blocks": self.attention_blocks, "attention_fused": self.attention_fused,
                "num_heads": self.num_heads, "ort_fusions": self.ort_fusions,
                "fp32_max_abs_diff_vs_unfused": self.max_abs_diff, "skipped": self.skipped[:6],
                "runtime": "onnxruntime only (com.microsoft contrib ops)"}


@dataclass
class _Projection:
    matmul: Any
    bias: np.ndarray
    weight: np.ndarray
    heads: int | None


def _linear_projection(g: OnnxGraph, tensor: str) -> _Projection | None:
    """Walk up Transpose(0,2,1,3) <- Reshape <- [Add bias] <- MatMul(x, W): one head-split projection."""
    node = g.producer.get(tensor)
    if node is None or node.op_type != "Transpose" or _perm(node) != [0, 2, 1, 3]:
        return None
    reshape = g.producer.get(node.input[0])
    if reshape is None or reshape.op_type != "Reshape":
        return None
    heads = None
    if g.is_constant(reshape.input[1]):
        shape = g.array(reshape.input[1]).tolist()
        heads = int(shape[2]) if len(shape) == 4 and shape[2] > 0 else None
    add = g.producer.get(reshape.input[0])
    bias: np.ndarray | None = None
    matmul = add
    if add is not None and add.op_type == "Add":
        const = [i for i in add.input if g.is_constant(i)]
        if len(const) != 1:
            return None
        bias = g.array(const[0]).astype(np.float32)
        matmul = g.producer.get(next(i for i in add.input if i != const[0]))
    if matmul is None or matmul.op_type != "MatMul" or not g.is_constant(matmul.input[1]):
        return None
    weight = g.array(matmul.input[1]).astype(np.float32)
    if weight.ndim != 2 or (bias is not None and bias.shape != (weight.shape[1],)):
        return None
    return _Projection(matmul, bias if bias is not None else np.zeros(weight.shape[1], np.float32), weight, heads)


def _perm(node: Any) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _scalar(g: OnnxGraph, node: Any) -> tuple[str, float] | None:
    """(the non-constant input, the scalar) of a Mul by a constant scalar."""
    const = [i for i in node.input if g.is_constant(i)]
    if node.op_type != "Mul" or len(const) != 1 or g.array(const[0]).size != 1:
        return None
    return next(i for i in node.input if i != const[0]), float(g.array(const[0]).reshape(-1)[0])


def _zero_mask(g: OnnxGraph, tensor: str) -> bool:
    """True when `tensor` is provably all zeros: a constant, or Where(all-true, zeros, _) (the SDPA no-mask path)."""
    if g.is_constant(tensor):
        return not np.any(g.array(tensor))
    node = g.producer.get(tensor)
    if node is None or node.op_type != "Where" or not g.is_constant(node.input[1]):
        return False
    cond = node.input[0]
    while g.producer.get(cond) is not None and g.producer[cond].op_type == "Expand":
        cond = g.producer[cond].input[0]
    return g.is_constant(cond) and bool(np.all(g.array(cond))) and not np.any(g.array(node.input[1]))


def _unscale(g: OnnxGraph, tensor: str) -> tuple[str, float]:
    node = g.producer.get(tensor)
    found = _scalar(g, node) if node is not None else None
    return found if found is not None else (tensor, 1.0)


def _match(g: OnnxGraph, softmax: Any) -> tuple[dict[str, Any] | None, str]:
    """The attention block around one Softmax, or (None, why not)."""
    scores = g.producer.get(softmax.input[0])
    if scores is not None and scores.op_type == "Add":
        masks = [i for i in scores.input if _zero_mask(g, i)]
        if len(masks) != 1:
            return None, "attention mask is not provably zero"
        scores = g.producer.get(next(i for i in scores.input if i != masks[0]))
    if scores is None or scores.op_type != "MatMul":
        return None, "Softmax input is not a Q.K^T MatMul"
    q_tensor, q_scale = _unscale(g, scores.input[0])
    k_tensor, k_scale = _unscale(g, scores.input[1])
    node = g.producer.get(k_tensor)
    while node is not None and node.op_type in PASS_THROUGH and not (node.op_type == "Transpose"
                                                                     and _perm(node) == [0, 2, 1, 3]):
        node = g.producer.get(node.input[0])
    q = _linear_projection(g, q_tensor)
    k = _linear_projection(g, node.output[0]) if node is not None else None
    probs = softmax.output[0]
    users = g.consumers.get(probs, [])
    guard = next((u for u in users if u.op_type == "IsNaN"), None)
    if guard is not None:  # Where(IsNaN(p), 0, p): an identity once the mask is zero
        where = next((u for u in g.consumers.get(guard.output[0], []) if u.op_type == "Where"), None)
        if where is None:
            return None, "IsNaN guard without its Where"
        probs, users = where.output[0], g.consumers.get(where.output[0], [])
    context = users[0] if len(users) == 1 and users[0].op_type == "MatMul" and users[0].input[0] == probs else None
    v = _linear_projection(g, context.input[1]) if context is not None else None
    if q is None or k is None or v is None:
        return None, "Q, K or V is not a head-split MatMul(+bias) projection"
    if not (q.matmul.input[0] == k.matmul.input[0] == v.matmul.input[0]):
        return None, "Q, K and V read different inputs"
    merge = _single_user(g, context.output[0], "Transpose")
    out = _single_user(g, merge.output[0], "Reshape") if merge is not None and _perm(merge) == [0, 2, 1, 3] else None
    if out is None:
        return None, "context is not merged back by Transpose(0,2,1,3) + Reshape"
    heads = q.heads or k.heads or v.heads
    if not heads or q.weight.shape[1] % heads:
        return None, "head count not readable from the Q reshape"
    return {"q": q, "k": k, "v": v, "scale": q_scale * k_scale, "heads": heads, "input": q.matmul.input[0],
            "output": out.output[0], "name": softmax.name}, ""


def _single_user(g: OnnxGraph, tensor: str, op: str) -> Any | None:
    node = g.next_op(tensor)
    return node if node is not None and node.op_type == op else None


def fuse_attention(g: OnnxGraph) -> tuple[int, int, int | None, list[str]]:
    """Rewrite every matched attention block in place: (blocks seen, fused, heads, reasons for the rest)."""
    import onnx
    from onnx import helper, numpy_helper

    softmaxes = [n for n in g.model.graph.node if n.op_type == "Softmax"]
    fused, heads, skipped = 0, None, []
    for index, softmax in enumerate(softmaxes):
        block, why = _match(g, softmax)
        if block is None:
            skipped.append(f"{softmax.name}: {why}")
            continue
        q, k, v = block["q"], block["k"], block["v"]
        head_dim = q.weight.shape[1] // block["heads"]
        # Attention scales Q.K^T by 1/sqrt(head_dim); any other scale is folded into the Q projection.
        factor = np.float32(block["scale"] * math.sqrt(head_dim))
        weight = np.concatenate([q.weight * factor, k.weight, v.weight], axis=1).astype(np.float32)
        bias = np.concatenate([q.bias * factor, k.bias, v.bias]).astype(np.float32)
        prefix = f"vtool_attention_{index}"
        g.model.graph.initializer.extend([numpy_helper.from_array(weight, f"{prefix}_qkv_weight"),
                                          numpy_helper.from_array(bias, f"{prefix}_qkv_bias")])
        node = helper.make_node("Attention", [block["input"], f"{prefix}_qkv_weight", f"{prefix}_qkv_bias"],
                                [block["output"]], name=prefix, domain=MS_DOMAIN, num_heads=block["heads"])
        old = g.producer[block["output"]]
        position = list(g.model.graph.node).index(old)
        g.model.graph.node.remove(old)
        g.model.graph.node.insert(position, node)
        g.refresh()
        fused, heads = fused + 1, block["heads"]
    if fused:
        _prune(g)
        if not any(o.domain == MS_DOMAIN for o in g.model.opset_import):
            g.model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    return len(softmaxes), fused, heads, skipped


def _prune(g: OnnxGraph) -> None:
    """Drop nodes whose outputs nothing reads (the unfused attention), then unused initializers."""
    graph = g.model.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    unused = [i for i in graph.initializer if i.name not in needed]
    for init in unused:
        graph.initializer.remove(init)
    del graph.value_info[:]
    g.refresh()


def fuse_transformer(src: Path, dst: Path, probe: np.ndarray, spec: ModelSpec,
                     threads: int | None = None) -> FusionReport:
    """Attention fusion + ORT's ViT fusions on `src`, checked on `probe` images; dst is written when anything fused."""
    import onnx

    report = FusionReport()
    g = OnnxGraph(onnx.load(str(src)))
    report.attention_blocks, report.attention_fused, report.num_heads, report.skipped = fuse_attention(g)
    hidden = _hidden_size(g)
    staged = g.save(dst.with_name(f"{dst.stem}-attention.onnx"))
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(str(staged), model_type="vit", num_heads=report.num_heads or 0,
                                   hidden_size=hidden or 0, opt_level=0, optimization_options=ort_fusion_options())
        report.ort_fusions = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
        optimized.save_model_to_file(str(dst))
    except Exception as exc:  # noqa: BLE001 - ORT's fuser is optional polish; the attention rewrite stands alone
        log.info("onnxruntime.transformers fusion skipped: %s", str(exc)[:160])
        onnx.save(g.model, str(dst))
    if report.applied:
        report.max_abs_diff = _max_diff(src, dst, probe, spec, threads)
    return report


def ort_fusion_options() -> Any:
    """ORT's ViT fusions without SkipLayerNormalization: residual Add + LayerNormalization stay two ops.

    ORT's CPU SkipLayerNormalization kernel is a scalar loop with a division per element
    (contrib_ops/cpu/skip_layer_norm.cc), while LayerNormalization and Add are vectorised: on vit-tiny
    (digits, 65 tokens x 192) the dynamic INT8 graph ran 1.86 -> 1.58 ms at batch 1 and 33.7 -> 26.4 ms
    at batch 32 without it (Xeon, 2 threads).
    """
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("vit")
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    return options


def _hidden_size(g: OnnxGraph) -> int | None:
    weights = [g.array(n.input[1]) for n in g.model.graph.node if n.op_type == "Attention"]
    return int(weights[0].shape[0]) if weights else None


def _max_diff(src: Path, dst: Path, probe: np.ndarray, spec: ModelSpec, threads: int | None) -> float:
    from toolchain.runners import run_model

    x = np.ascontiguousarray(probe, np.float32)
    before = run_model(src, x, "onnxruntime", spec=spec, threads=threads)
    after = run_model(dst, x, "onnxruntime", spec=spec, threads=threads)
    return float(np.max(np.abs(before - after)))
