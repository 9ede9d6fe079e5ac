"""``make bench``: measured costs of the study (throughput, FLOP/s against a GEMM peak, attention cost, data wait,
evaluation speed, peak memory, the MVTec study estimate), outside the library.

Modules, lowest first:

* :mod:`benchmarks.timing`: seconds per call on ``torch.utils.benchmark.Timer``; interleaved rounds (A, B, A, B)
  for paired ratios.
* :mod:`benchmarks.flops`: GEMM peak and FLOP counts (``FlopCounterMode``).
* :mod:`benchmarks.machine`: backend switches, machine record, peak memory.
* :mod:`benchmarks.harness`: one training step (through the trainer's own step function) and one evaluation batch
  (through ``avaga_lib.evaluation.evaluate.infer_batch``) on random in-memory data.
* :mod:`benchmarks.estimate`: hours of the full MVTec Tables 2/3/8 study at measured throughputs.
* :mod:`benchmarks.report`: targets, ``bench.md`` and the files under ``results/bench/``.
* :mod:`benchmarks.figures`: every figure of ``bench.md`` in one process; :mod:`benchmarks.attention_cost`: the
  standalone paired attention-cost measurement.
* :mod:`benchmarks.cli`: ``python -m benchmarks [figures|attention_cost ...]`` (``make bench``).

Nothing is imported here, so ``import benchmarks.flops`` stays light.
"""
