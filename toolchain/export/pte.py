"""ExecuTorch `.pte` programs: torch.export -> to_edge_transform_and_lower(XnnpackPartitioner) -> .pte.

Shared by `vtool export --format executorch` (fp32) and `vtool quantize --engine xnnpack` (INT8).

Batch handling (recorded in the manifest under export.batch):
- dynamic (default): one method `forward` taking any batch from 1 to `max_batch`. XNNPACK reshapes
  its graph at run time; ExecuTorch plans the memory between delegates for the upper bound.
- static: one method per batch size asked for (`forward` for the first, `forward_b<N>` for the
  others) in one `.pte`; the weights are stored once and shared by every method.

Ops the XNNPACK partitioner does not take run on ExecuTorch's portable kernels: the manifest lists
them (export.delegation) and a warning names them. An op with no kernel in this runtime at all is
an ExportError naming it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from toolchain.errors import ExportError, MissingDependencyError, UserInputError
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

EDGE_EXTRA = "pip install 'vtool[edge]'"
DEFAULT_MAX_BATCH = 64
DELEGATE = "XnnpackPartitioner"
# Graph nodes that are not kernels: delegate calls, tuple indexing, reading a symbolic size.
_GLUE = {"executorch_call_delegate", "getitem", "sym_size.int", "aten.sym_size.int"}


def require(package: str, what: str) -> None:
    """One-line MissingDependencyError naming the extra when an optional edge runtime is not installed."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pins = {"executorch": "executorch==1.5.1", "openvino": "openvino==2026.4.1"}
        raise MissingDependencyError(
            f"{what} needs the Python package '{package}', which is not installed: {EDGE_EXTRA} "
            f"(or pip install {pins.get(package, package)})."
        )


@dataclass(frozen=True)
class BatchPlan:
    """Which batch sizes a `.pte` accepts: static `sizes` (one method each), or dynamic 1..`max_batch`."""

    sizes: tuple[int, ...] = ()
    max_batch: int = DEFAULT_MAX_BATCH

    def __post_init__(self) -> None:
        sizes = tuple(int(b) for b in self.sizes)
        if any(b < 1 for b in sizes) or len(set(sizes)) != len(sizes):
            raise UserInputError(f"--batch-sizes must list distinct numbers >= 1, got {list(self.sizes)}; "
                                 "e.g. --batch-sizes 1,32.")
        if self.max_batch < 2:
            raise UserInputError(f"--max-batch must be >= 2 for a dynamic batch, got {self.max_batch}; "
                                 "use --static-batch for a batch of 1.")
        object.__setattr__(self, "sizes", sizes)

    @property
    def dynamic(self) -> bool:
        return not self.sizes

    def methods(self) -> dict[str, int | None]:
        """Method name -> its static batch (None: dynamic)."""
        if self.dynamic:
            return {"forward": None}
        return {("forward" if i == 0 else f"forward_b{b}"): b for i, b in enumerate(self.sizes)}

    def describe(self) -> dict[str, Any]:
        if self.dynamic:
            return {"dynamic": True, "min": 1, "max": self.max_batch, "methods": {"forward": f"1..{self.max_batch}"}}
        return {"dynamic": False, "sizes": list(self.sizes), "methods": self.methods()}


def _batch_of(example: Any, batch: int) -> Any:
    """`example` repeated/cut to `batch` rows (real images stay real)."""
    import torch

    reps = -(-batch // example.shape[0])
    return torch.cat([example] * reps)[:batch].contiguous()


def export_programs(module: Any, example: Any, plan: BatchPlan, strict: bool = False) -> dict[str, Any]:
    """torch.export one program per method of `plan` (a dynamic one traces with a batch of 2)."""
    import torch

    programs = {}
    for method, batch in plan.methods().items():
        if batch is None:
            dim = torch.export.Dim("batch", min=1, max=plan.max_batch)
            programs[method] = torch.export.export(module, (_batch_of(example, 2),), dynamic_shapes=({0: dim},),
                                                   strict=strict)
        else:
            programs[method] = torch.export.export(module, (_batch_of(example, batch),), strict=strict)
    return programs


def _restore_batch_range(program: Any) -> None:
    """Put the exported batch range back on the lowered graph's input symbols.

    Lowering to XNNPACK runs the fake convolution kernel on channels-last tensors, whose backend choice adds
    the guard `batch < 16` (torch 2.14 + executorch 1.5.1, seen with TORCH_LOGS=+dynamic). That narrows the
    shared shape environment to 2..15 and memory planning would then cap the input buffer at 15 images. The
    program's range_constraints keep the range asked for; the XNNPACK graph itself is shape-agnostic.
    """
    import torch

    ranges = program.range_constraints
    for node in program.graph.nodes:
        if node.op != "placeholder":
            continue
        for dim in getattr(node.meta.get("val"), "shape", ()):
            if isinstance(dim, torch.SymInt) and dim.node.expr in ranges:
                dim.node.shape_env.var_to_range[dim.node.expr] = ranges[dim.node.expr]


def infer_batch_in_reshapes(graph_module: Any) -> Any:
    """Edge pass: a reshape whose target shape has exactly one symbolic size (the batch) gets -1 there instead.

    XNNPACK's partitioner refuses symbolic reshapes ("Symbolic reshape is not supported") but takes one
    inferred dimension, so a dynamic-batch flatten stays inside the delegate instead of a portable copy.
    """
    from executorch.exir.dialects._ops import ops as exir_ops
    from torch.fx.passes.infra.pass_base import PassResult

    changed = False
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target == exir_ops.edge.aten.view_copy.default:
            shape = list(node.args[1])
            symbolic = [i for i, size in enumerate(shape) if not isinstance(size, int)]
            if len(symbolic) == 1 and -1 not in shape:
                shape[symbolic[0]] = -1
                node.args = (node.args[0], shape, *node.args[2:])
                changed = True
    if changed:
        graph_module.graph.eliminate_dead_code()
        graph_module.recompile()
    return PassResult(graph_module, changed)


def _op_name(target: Any) -> str:
    return str(getattr(target, "__name__", target))


def delegation_summary(graph_module: Any) -> dict[str, Any]:
    """Ops inside XNNPACK subgraphs vs ops left to ExecuTorch's portable kernels, counted by op."""
    delegated: Counter[str] = Counter()
    portable: Counter[str] = Counter()
    subgraphs = 0
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and str(node.target).startswith("lowered_module"):
            subgraphs += 1
            lowered = getattr(graph_module, str(node.target))
            delegated.update(_op_name(n.target) for n in lowered.original_module.graph.nodes
                             if n.op == "call_function")
        elif node.op == "call_function" and _op_name(node.target) not in _GLUE:
            portable[_op_name(node.target)] += 1
    return {"delegate": "XNNPACK", "subgraphs": subgraphs, "delegated_ops": sum(delegated.values()),
            "portable_ops": sum(portable.values()), "delegated": dict(sorted(delegated.items())),
            "portable": dict(sorted(portable.items()))}


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 (ExecuTorch logs there) instead of showing it.

    Yields a list that holds the captured lines after the block, so an error message can quote them.
    """
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreters): leave stderr alone
        yield lines
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(ln.strip() for ln in sink.read().decode(errors="replace").splitlines() if ln.strip())


def native_reason(lines: list[str]) -> str:
    """The most telling line ExecuTorch logged (an error line, without its [file.cpp:N] prefix)."""
    import re

    wanted = [ln for ln in lines if not re.search(r"cpuinfo|Reading file|midr", ln)]
    if not wanted:
        return ""
    return re.sub(r"^\[[\w./]+:\d+\]\s*", "", wanted[-1])[:200]


def runtime_operator_names() -> set[str]:
    """Kernels registered in this process's ExecuTorch runtime, as 'aten::op.out'."""
    from executorch.runtime import Runtime

    with native_stderr():
        return set(Runtime.get().operator_registry.operator_names)


def _missing_kernels(executorch_program: Any) -> list[str]:
    available = runtime_operator_names()
    used = {f"{op.name}.{op.overload}" if op.overload else op.name
            for plan in executorch_program.execution_plan for op in plan.operators}
    return sorted(op for op in used if op not in available)


def read_batch_info(path: Any) -> dict[str, Any]:
    """A `.pte`'s batch handling read from the file (for bare files without a manifest): its first input is
    dynamic up to a bound, or static per method. Empty when the file cannot be parsed here."""
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary

        with open(path, "rb") as handle:
            program = deserialize_pte_binary(handle.read()).program
        inputs = [plan.values[plan.inputs[0]].val for plan in program.execution_plan if plan.inputs]
    except Exception as exc:  # noqa: BLE001 - a private API of executorch; the runtime still checks shapes
        log.debug("cannot read the batch sizes of %s: %s", path, exc)
        return {}
    if any(int(getattr(v, "shape_dynamism", 0)) for v in inputs):
        return {"dynamic": True, "min": 1, "max": max(int(v.sizes[0]) for v in inputs)}
    return {"dynamic": False, "sizes": sorted({int(v.sizes[0]) for v in inputs if v.sizes})}


def lower(programs: dict[str, Any], name: str) -> tuple[bytes, dict[str, Any]]:
    """Lower exported programs (method name -> ExportedProgram) to one XNNPACK-delegated `.pte` buffer.

    Returns the buffer and what the manifest records: delegated and portable ops per method.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(programs, transform_passes=[infer_batch_in_reshapes],
                                       partitioner=[XnnpackPartitioner()])
    delegation = {}
    for method in programs:
        lowered = edge.exported_program(method)
        _restore_batch_range(lowered)
        delegation[method] = delegation_summary(lowered.graph_module)
    manager = edge.to_executorch()
    missing = _missing_kernels(manager.executorch_program)
    if missing:
        raise ExportError(
            f"Cannot export {name} to executorch: operator '{missing[0]}' is neither delegated to XNNPACK nor has a "
            "kernel in this ExecuTorch runtime. Replace that op in the model, or export to another format."
        )
    portable = sorted({op for info in delegation.values() for op in info["portable"]})
    if portable:
        counts = Counter()
        for info in delegation.values():
            counts.update(info["portable"])
        log.warning("%s: %d op(s) not delegated to XNNPACK run on ExecuTorch's portable kernels: %s", name,
                    sum(counts.values()), ", ".join(f"{op} x{n}" for op, n in sorted(counts.items())))
    first = next(iter(delegation.values()))
    return manager.buffer, {
        "partitioner": DELEGATE,
        "methods": list(programs),
        "delegation": first if len(delegation) == 1 else delegation,
        "portable_ops": portable,
        "fully_delegated": not portable,
    }


def write_pte(module: Any, example: Any, path: Any, spec: ModelSpec, plan: BatchPlan, name: str) -> dict[str, Any]:
    """Export `module` for `plan`, lower it to XNNPACK and write the `.pte` to `path`."""
    require("executorch", "--format executorch")
    programs = export_programs(module, example, plan)
    buffer, details = lower(programs, name)
    with open(path, "wb") as handle:
        handle.write(buffer)
    return {"exporter": "torch.export + executorch.exir.to_edge_transform_and_lower", "runtime": "executorch",
            "batch": plan.describe(), **details}
