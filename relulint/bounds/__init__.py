"""Provable bounds on every unit's pre-activation over an input domain (the RL6xx proofs).

Given a box around the model's inputs (``--input-range``), ``analysis.run_bounds_analysis`` propagates sound
lower and upper bounds through the graph (``relulint.bounds.propagate``): interval arithmetic for every
op it models, intersected with linear bounds in the input variables where the input is small enough.
For each ReLU-family layer it then reduces the pre-activation bounds to one interval per unit (over
every other axis: batch, positions), and classifies the units:

- dead: the upper bound is <= 0 (for ThresholdedRelu, <= alpha), so the unit outputs its negative side
  for every input of the domain; for ReLU, ReLU6 and ThresholdedRelu that is a constant 0 and no gradient;
- saturated: a clipped ReLU (ReLU6) whose lower bound is at or above its ceiling, so it outputs a constant;
- always active: the lower bound is >= 0 (and under the ceiling), so the activation is the identity
  (a linear map) for every input of the domain.

Ops the propagation does not model give unbounded outputs; the result stays sound, it proves less.
Bounds hold for real-valued execution in float32: NaN and infinities produced inside the network are
outside the proof.
"""
