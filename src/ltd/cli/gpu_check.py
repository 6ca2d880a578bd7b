"""make gpu-check: on a machine with a CUDA GPU, the `cuda` tests, make bench-decode and a short
make eval on SmolLM2-135M and on the Qwen2.5-Coder pair in bfloat16, and one table (what each part
measures: ltd.benchmarks.gpu_check). Exits 1 when any part fails or an output is not lossless.

    python -m ltd.cli.gpu_check
    python -m ltd.cli.gpu_check --models smollm2-135m --questions 1
    python -m ltd.cli.gpu_check --device cpu            # the same checks on the CPU, in bfloat16
"""
import argparse
import sys

from ltd.benchmarks.gpu_check import CHECKS, gpu_check
from ltd.cli.app import user_errors
from ltd.config.files import DEFAULT_RESULTS
from ltd.core.errors import LtdError
from ltd.core.fingerprints import check_device
from ltd.core.results import ResultPaths


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ltd.cli.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--models", default=",".join(c.model for c in CHECKS))
    parser.add_argument("--task", default="mt_bench")
    parser.add_argument("--questions", type=int, default=2)
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="the results directory: writes <results>/gpu-check")
    args = parser.parse_args()
    known, models = {c.model for c in CHECKS}, args.models.split(",")
    with user_errors():
        check_device(args.device, "make gpu-check", instead="--device cpu")
        if not set(models) <= known:
            raise LtdError(f"--models takes {', '.join(sorted(known))}; got {args.models}")
        if args.questions < 1:
            raise LtdError(f"--questions must be at least 1, got {args.questions}")
    passed = gpu_check(args.device, args.dtype, models=models, task=args.task, questions=args.questions,
                       output=ResultPaths(args.results).report("gpu-check"))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
