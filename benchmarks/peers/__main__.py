"""`python -m benchmarks.peers`: quantize the peers models with every tool, print one table each, write JSON.

    python -m benchmarks.peers                          # EfficientNet-Lite0, the four quantizers, ORT timing
    python -m benchmarks.peers --models efficientnet-lite0,resnet18 --markdown peers.md
    python -m benchmarks.peers --tools vtool,vtool-avx2 --runtimes onnxruntime,openvino --rounds 5
    python -m benchmarks.peers --emulate-avx2           # + accuracy on an emulated AVX2 CPU (qemu-user)
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from .cases import DEFAULT_MODELS, MODELS
from .report import footnotes, markdown_table, rich_table, write_json
from .run import Options, available_runtimes, environment, run_case
from .tools import DEFAULT_TOOLS, TOOLS


def _csv(text: str) -> tuple[str, ...]:
    """Split a comma-separated option into its non-empty parts."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse and validate the command line (unknown models, tools or runtimes are usage errors)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--tools", default=",".join(DEFAULT_TOOLS),
                        help=f"comma-separated subset of {', '.join(TOOLS)}")
    parser.add_argument("--runtimes", default=",".join(Options.runtimes),
                        help=f"judge and time on these (installed: {', '.join(available_runtimes())})")
    parser.add_argument("--workdir", type=Path, default=Options.workdir, help="fp32 exports (reused) and outputs")
    parser.add_argument("--json", type=Path, default=None, help="results file (default WORKDIR/peers.json)")
    parser.add_argument("--markdown", type=Path, default=None, help="tables as Markdown (default WORKDIR/peers.md)")
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="also judge every model in ONNX Runtime on an emulated AVX2 CPU without VNNI "
                             "(needs qemu-x86_64: apt-get install qemu-user; slow, accuracy only)")
    parser.add_argument("--threads", type=int, default=Options.threads)
    parser.add_argument("--batches", default="1,32", help="batch sizes to time")
    parser.add_argument("--rounds", type=int, default=Options.rounds, help="interleaved timing rounds per batch")
    parser.add_argument("--warmup", type=int, default=Options.warmup)
    args = parser.parse_args(argv)
    for name in _csv(args.models):
        if name not in MODELS:
            parser.error(f"unknown model '{name}'; expected one of {', '.join(MODELS)}")
    for name in _csv(args.tools):
        if name not in TOOLS:
            parser.error(f"unknown tool '{name}'; expected one of {', '.join(TOOLS)}")
    if args.emulate_avx2 and shutil.which("qemu-x86_64") is None:
        parser.error("--emulate-avx2 needs qemu-x86_64 (Debian/Ubuntu: apt-get install qemu-user)")
    for name in _csv(args.runtimes):
        if name not in available_runtimes():
            parser.error(f"runtime '{name}' is not available; installed: {', '.join(available_runtimes())}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every requested model, print its table, write JSON and Markdown; 0 on success."""
    from rich.console import Console

    args = parse(sys.argv[1:] if argv is None else argv)
    # ERROR for the rest: ORT's quantizer logs hundreds of per-weight warnings on the root logger
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s: %(message)s")
    for name in ("benchmarks.peers", "peers", "toolchain.quantize.stage", "toolchain.quantize.search"):
        logging.getLogger(name).setLevel(logging.INFO)
    options = replace(Options(), workdir=args.workdir, threads=args.threads, rounds=args.rounds, warmup=args.warmup,
                      batches=tuple(int(b) for b in _csv(args.batches)), tools=_csv(args.tools),
                      runtimes=_csv(args.runtimes), emulate_avx2=args.emulate_avx2)
    console = Console(width=250)
    started = time.perf_counter()
    result = {"env": environment(options), "cases": []}
    for name in _csv(args.models):
        result["cases"].append(run_case(name, options))
        result["seconds"] = round(time.perf_counter() - started, 1)
        write_json(result, args.json or options.workdir / "peers.json")  # after each model: partial results survive
    for case in result["cases"]:
        console.print(rich_table(case, result["env"]))
        for line in footnotes(case):
            console.print(f"  {line}", highlight=False)
    markdown = args.markdown or options.workdir / "peers.md"
    console.print(f"total {result['seconds']:.0f} s; JSON: {args.json or options.workdir / 'peers.json'}; "
                  f"Markdown: {markdown}")
    if result["cases"]:
        markdown.write_text("\n\n".join(markdown_table(c, result["env"]) + "\n\n" + "\n".join(
            f"- {line}" for line in footnotes(c)) for c in result["cases"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
