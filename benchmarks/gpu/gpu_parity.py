"""Parity of the same model run by the torch runner on DEVICE vs the CPU (fp32), on vtool's real inputs.

`vtool parity` runs reference and candidate on one --device, so GPU-vs-CPU parity needs this helper. It uses the
library only (load_model, evaluation_inputs, get_runner, compare) and writes the DESIGN.md parity keys per model
and per CUDA setting: default (cuDNN/cuBLAS TF32 as torch leaves it), tf32 off, channels_last.

usage: python benchmarks/gpu/gpu_parity.py OUT.json DEVICE SOURCE[@DATA] ...
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def main() -> int:
    import torch

    from toolchain.compare import Thresholds, compare
    from toolchain.inputs import evaluation_inputs
    from toolchain.report import jsonable
    from toolchain.runners import get_runner
    from toolchain.sources import load_model

    out_path, device, sources = sys.argv[1], sys.argv[2], sys.argv[3:]
    limit = int(os.environ.get("GPU_PARITY_LIMIT", "256"))
    thresholds = Thresholds(0.01, 0.99, None, "observed")
    report: dict = {"device": device, "torch": torch.__version__,
                    "tf32_defaults": {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                                      "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                                      "float32_matmul_precision": torch.get_float32_matmul_precision()},
                    "models": {}}
    rc = 0
    for item in sources:
        source, _, data = item.partition("@")
        entry: dict = {}
        report["models"][source] = entry
        try:
            torch.manual_seed(0)
            model = load_model(source, data=data or None)
            inputs = evaluation_inputs(model, data or None, limit=limit, photos=min(limit, 200))
            x, labels = inputs.x, inputs.labels
            entry["inputs"] = {**inputs.description, "shape": list(x.shape)}
            bs = 32
            t = time.perf_counter()
            with get_runner("torch", model, device="cpu") as r:
                ref = r.infer_batched(x, bs)
            entry["cpu_s"] = round(time.perf_counter() - t, 3)
            variants = {"default": {}, "channels_last": {"channels_last": True}, "tf32_off": {}}
            for name, opts in variants.items():
                saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
                if name == "tf32_off":
                    torch.backends.cudnn.allow_tf32 = False
                    torch.backends.cuda.matmul.allow_tf32 = False
                try:
                    t = time.perf_counter()
                    with get_runner("torch", model, device=device, **opts) as r:
                        cand = r.infer_batched(x, bs)
                    res = compare(ref, cand, thresholds, labels, model.spec.labels)
                    entry[name] = {**jsonable(res.metrics), "passed": res.passed, "failures": res.failures,
                                   "time_s": round(time.perf_counter() - t, 3)}
                    m = res.metrics
                    print(f"{source} {device}/{name} vs cpu: n={m['n']} agreement={m['agreement']:.4f} "
                          f"cos={m['cosine_mean']:.7f} max_abs={m['max_abs_diff']:.3g} sqnr={m['sqnr_db']:.1f}dB "
                          f"top1_ref={m.get('top1_ref')} top1_cand={m.get('top1_cand')} passed={res.passed}",
                          flush=True)
                finally:
                    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        except Exception as exc:  # one model failing must not hide the others
            rc = 1
            entry["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    with open(out_path, "w") as f:
        json.dump(report, f, indent=2, default=str)
    print("wrote", out_path)
    return rc


if __name__ == "__main__":
    sys.exit(main())
