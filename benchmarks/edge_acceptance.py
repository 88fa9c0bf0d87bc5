"""Issue 12 acceptance figures for the edge runtimes (ExecuTorch `.pte`, OpenVINO IR), re-runnable:

    python benchmarks/edge_acceptance.py --out /tmp/edge-acceptance [--simple-cnn runs/cnn] [--resnet-cnn runs/rcnn]

1. fp32 `.pte` and IR of simple-cnn, resnet-cnn (trained on digits), resnet18 (random weights: nothing
   offline), efficientnet-lite0 (real ImageNet weights) and vit-tiny, verified against eager at batch
   1, 2 and 7 (both are dynamic-batch): max abs logit diff and top-1 agreement.
2. INT8 `.pte` (quantize --engine xnnpack) of simple-cnn / resnet-cnn: top-1 on the digits validation
   split vs fp32; of efficientnet-lite0: top-1 agreement and logit SQNR vs fp32 on the 200 bundled-photo
   crops quantize judges on, beside the ONNX Runtime INT8 (quantize --engine onnxruntime) on the same crops;
   fp32 vs INT8 file sizes.
3. One `vtool bench` run per model (ratios hold on a shared machine, absolute times do not): fp32 eager,
   fp32 ONNX Runtime, fp32/INT8 `.pte`, fp32/INT8 IR (the INT8 IR converted from the ORT INT8 ONNX), and
   INT8 ONNX Runtime, at batch 1 and 32.

Writes acceptance.json and acceptance.md to --out; every figure names the CPU flags it ran on. Needs the
edge extra (pip install 'vtool[edge]'). Without --simple-cnn/--resnet-cnn checkpoints it trains them on
digits for --epochs epochs first.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

VERIFY_MODELS = ("simple-cnn", "resnet-cnn", "resnet18", "efficientnet-lite0", "vit-tiny")
log = logging.getLogger("edge_acceptance")


def cpu_flags() -> str:
    from toolchain.envinfo import parse_cpu_flags, read_cpuinfo

    flags = parse_cpu_flags(read_cpuinfo())
    return " ".join(sorted(f for f in flags if f in ("avx2", "avx512_vnni")))


def trained(name: str, given: str | None, out: Path, epochs: int) -> str:
    """A digits checkpoint for a small registry CNN: the one given, else trained now."""
    if given:
        return given
    from toolchain.train import TrainConfig, train

    result = train(name, "digits", TrainConfig(epochs=epochs, seed=0, overwrite=True), out / "runs" / name)
    return str(result.best_path)


def verify_row(source: str, fmt: str, out: Path, samples: int) -> dict[str, Any]:
    from toolchain.export import ExportConfig, ExportVerificationError, export_model
    from toolchain.sources import load_model

    loaded = load_model(source)
    name = Path(source).parent.name if source.endswith(".pt") else source
    dest = out / "fp32" / f"{name}-{fmt}"
    start = time.perf_counter()
    try:
        result = export_model(loaded, ExportConfig(format=fmt, out=dest, verify_samples=samples))
    except ExportVerificationError as exc:
        result = exc.result
    except Exception as exc:  # noqa: BLE001 - a failure is a figure too: record it by name
        return {"model": name, "format": fmt, "passed": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    export, verification = result.artifact.manifest.export, result.verification or {}
    return {"model": name, "format": fmt, "passed": result.passed, "path": str(result.path),
            "max_abs_diff": verification.get("max_abs_diff"), "agreement": verification.get("agreement"),
            "batches": sorted(verification.get("batches", {}), key=int), "n": verification.get("n"),
            "portable_ops": export.get("portable_ops"), "size_mb": round(result.artifact.size_mb, 3),
            "export_s": round(time.perf_counter() - start, 1)}


def quantize_row(source: str, engine: str, out: Path, data: str | None) -> dict[str, Any]:
    from toolchain.quantize import QuantBudgetError, QuantConfig, quantize
    from toolchain.sources import load_model

    name = Path(source).parent.name if source.endswith(".pt") else source
    dest = out / "int8" / f"{name}-{engine}"
    loaded = load_model(source)
    config = QuantConfig(engine=engine, out=dest, speed=False)
    start = time.perf_counter()
    try:
        result = quantize(loaded, data, config)
    except QuantBudgetError as exc:
        result = exc.result
    parity = result.summary.get("parity") or {}
    keys = ("n", "top1_ref", "top1_cand", "top1_delta", "agreement", "sqnr_db", "cosine_mean")
    return {"model": name, "engine": engine, "passed": result.passed,
            "path": str(result.path) if result.path else None, **{k: parity.get(k) for k in keys},
            "size": result.summary.get("size"), "float_nodes": len(result.summary.get("float_nodes") or []),
            "time_s": round(time.perf_counter() - start, 1)}


def bench_rows(reference: str, paths: dict[str, str], batch_sizes: list[int], seconds: float,
               threads: int | None) -> list[dict[str, Any]]:
    """One benchmark() run over every variant and every runner that can run it (the INT8/fp32 ONNX also on
    OpenVINO); speed ratios are against fp32 ONNX Runtime at the same batch, measured in that run."""
    from toolchain.bench import BenchConfig, benchmark
    from toolchain.sources import load_model

    models = [load_model(reference), *(load_model(p) for p in paths.values())]
    labels = {models[0].name: "fp32 eager", **{Path(p).name: label for label, p in paths.items()}}
    config = BenchConfig(backends=["torch", "onnxruntime", "executorch", "openvino"], batch_sizes=batch_sizes,
                         duration_s=seconds, threads=threads, min_iterations=5)
    entries = {(labels.get(e.model, e.model), e.runner, e.batch_size): e for e in benchmark(models, config).entries}
    rows = []
    for (label, runner, batch), entry in sorted(entries.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        base = entries.get(("fp32 onnxruntime", "onnxruntime", batch))
        p50 = entry.latency_ms["p50"]
        rows.append({"variant": label, "runner": runner, "batch": batch, "p50_ms": round(p50, 3),
                     "img_s": round(entry.throughput_ips, 1), "cv": round(entry.cv, 3),
                     "vs_fp32_ort": round(base.latency_ms["p50"] / p50, 2) if base else None,
                     "size_mb": entry.model_size_mb})
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Edge acceptance ({report['cpu']}, CPU flags: {report['flags']}, threads {report['threads']})", "",
             "## fp32 .pte / IR vs eager (batch " + ", ".join(report["verify_batches"]) + ")", "",
             "| model | format | max abs diff | agreement | passed | portable ops | size MB |",
             "|---|---|---|---|---|---|---|"]
    for r in report["verify"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['format']} | - | - | FAILED: {r['error']} | | |")
            continue
        lines.append(f"| {r['model']} | {r['format']} | {r['max_abs_diff']:.3g} | {r['agreement']:.4f} | "
                     f"{r['passed']} | {', '.join(r['portable_ops'] or []) or '-'} | {r['size_mb']} |")
    lines += ["", "## INT8", "", "| model | engine | n | top-1 fp32 | top-1 int8 | delta | agreement | SQNR dB | "
              "fp32 MB | int8 MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["int8"]:
        size = r.get("size") or {}
        fmt = lambda v, d=4: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
        lines.append(f"| {r['model']} | {r['engine']} | {r['n']} | {fmt(r['top1_ref'])} | {fmt(r['top1_cand'])} | "
                     f"{fmt(r['top1_delta'])} | {fmt(r['agreement'])} | {fmt(r['sqnr_db'], 2)} | "
                     f"{size.get('fp32_bytes', 0) / 1e6:.3f} | {size.get('quantized_bytes', 0) / 1e6:.3f} |")
    for model, rows in report["bench"].items():
        lines += ["", f"## bench: {model}", "", "| variant | runner | batch | p50 ms | img/s | cv | vs fp32 ORT |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['runner']} | {r['batch']} | {r['p50_ms']} | {r['img_s']} | {r['cv']} | "
                  f"{r['vs_fp32_ort']}x |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--simple-cnn", help="digits checkpoint of simple-cnn (else trained now)")
    parser.add_argument("--resnet-cnn", help="digits checkpoint of resnet-cnn (else trained now)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--models", default=",".join(VERIFY_MODELS), help="models for part 1")
    parser.add_argument("--samples", type=int, default=16, help="verification images per model")
    parser.add_argument("--bench", default="simple-cnn,efficientnet-lite0", help="models for part 3 ('' for none)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parts", default="verify,int8,bench")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from toolchain.envinfo import environment

    args.out.mkdir(parents=True, exist_ok=True)
    sources = {"simple-cnn": trained("simple-cnn", args.simple_cnn, args.out, args.epochs),
               "resnet-cnn": trained("resnet-cnn", args.resnet_cnn, args.out, args.epochs)}
    parts = args.parts.split(",")
    env = environment(threads=args.threads)
    report: dict[str, Any] = {"cpu": env.get("cpu", {}).get("model"), "flags": cpu_flags(), "threads": args.threads,
                              "versions": env.get("versions"), "sources": sources, "verify_batches": ["1", "2", "7"],
                              "verify": [], "int8": [], "bench": {}}
    path = args.out / "acceptance.json"

    def save() -> None:
        path.write_text(json.dumps(report, indent=2, default=str))
        (args.out / "acceptance.md").write_text(markdown(report))

    if "verify" in parts:
        for model in args.models.split(","):
            for fmt in ("executorch", "openvino"):
                log.info("verify %s %s", model, fmt)
                report["verify"].append(verify_row(sources.get(model, model), fmt, args.out, args.samples))
                save()
    if "int8" in parts:
        for model, data, engines in (("simple-cnn", "digits", ("xnnpack", "onnxruntime")),
                                     ("resnet-cnn", "digits", ("xnnpack", "onnxruntime")),
                                     ("efficientnet-lite0", None, ("xnnpack", "onnxruntime"))):
            for engine in engines:
                log.info("int8 %s %s", model, engine)
                report["int8"].append(quantize_row(sources.get(model, model), engine, args.out, data))
                save()
    if "bench" in parts:
        for model in filter(None, args.bench.split(",")):
            report["bench"][model] = bench_for(model, sources.get(model, model), args)
            save()
    save()
    print(markdown(report))


def bench_for(model: str, source: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Find (or make) the variants of `model` under --out, then bench them in one run."""
    from toolchain.export import ExportConfig, export_model
    from toolchain.sources import load_model

    name = Path(source).parent.name if source.endswith(".pt") else source
    fp32, int8 = args.out / "fp32", args.out / "int8"
    paths = {"fp32 onnxruntime": fp32 / f"{name}-onnx", "fp32 .pte": fp32 / f"{name}-executorch",
             "int8 .pte": int8 / f"{name}-xnnpack", "fp32 IR": fp32 / f"{name}-openvino",
             "int8 onnxruntime": int8 / f"{name}-onnxruntime", "int8 IR": int8 / f"{name}-onnxruntime-openvino"}
    loaded = load_model(source)
    for label, fmt in (("fp32 onnxruntime", "onnx"), ("fp32 .pte", "executorch"), ("fp32 IR", "openvino")):
        if not (paths[label] / "manifest.json").is_file():
            export_model(loaded, ExportConfig(format=fmt, out=paths[label], verify=False))
    if not (paths["int8 IR"] / "manifest.json").is_file() and (paths["int8 onnxruntime"] / "manifest.json").is_file():
        export_model(load_model(str(paths["int8 onnxruntime"])),
                     ExportConfig(format="openvino", out=paths["int8 IR"], verify_samples=16))
    present = {label: str(p) for label, p in paths.items() if (p / "manifest.json").is_file()}
    return bench_rows(source, present, [1, 32], args.seconds, args.threads)


if __name__ == "__main__":
    main()
