"""The step's limit after the convolutions (RESULTS.md, 2026-12-02): a conv block's BatchNorm
(batch statistics) -> ReLU -> 2x2 max-pool as sejax's fused C++ op
(`sejax.model.onednn.bn_relu_pool`, ``model.block_impl='fused'``) against the model's XLA
formulation (`block_rest_levers.current`), forward + backward per block shape.

    python benchmarks/block_rest_fused.py [BATCH]

The op (``sejax/model/onednn/csrc/bn_relu_pool.cc``, built into the package's C++ library):
the statistics stay in XLA; one pass normalises, applies ReLU, pools and keeps each window's
argmax; the backward takes one pooled-size pass (the input at the argmax) and one full-size
pass (dx = u + v*x, plus scale*dy at the argmax), the per-channel sums in XLA between them.
Prints each block's times, the speed-up and the largest relative differences of the output
and the three gradients. The whole step with it: ``step_throughput.py --ops sejax-onednn
sejax-fused``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from block_rest_levers import EPS, compare, current, forward_backward

from sejax.model.onednn import bn_relu_pool


def fused(c, gamma, beta):
    return bn_relu_pool.training(c, gamma, beta, epsilon=EPS, axis_name=None)[0]


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    compare(forward_backward(current), forward_backward(fused), batch)


if __name__ == "__main__":
    main()
