"""Benchmarks of gas-jax on this machine (not the paper's experiments, which live in launch/).

One entry point, run from the repository root:

    python -m benchmarks.run NAME [flags]       (--help: NAME's flags)

| NAME | what it measures | module |
|---|---|---|
| iteration | a GAS run's wall time per global iteration against its FLOPs and the matmul peak | `iteration` |
| seeds | the runs axis: S vmapped seeds against their separate runs | `seeds` |
| parts | where a GAS global iteration's time goes, device call by device call | `parts` |
| conv | XLA's convolution against im2col, per layer shape | `conv` |
| qr | the statistics' compressions: plain QR against the triangular-pentagonal QR | `qr` |
| matmul_peak | the machine's matmul rates (fp32 and default precision) | `timing` |

Each writes its result as JSON (`--out`, and on stdout); docs/benchmarks.md holds the figures.
A benchmark module has `define_flags(flag_values, argv)` (its flags, in a `FlagValues` of its
own) and `main(argv) -> dict` (runs it, writes and returns the result); adding one is a module
with those two and its name in `run.BENCHMARKS`.
`benchmarks/gpu_bench.sh` runs iteration, seeds and parts in one bounded command on a GPU lease.
Benchmarks use only the runners' public API (`calls`, `state`, `run_iteration()`, ...;
`benchmarks.common`). tests/benchmarks/test_benchmarks.py runs each one briefly.
"""
