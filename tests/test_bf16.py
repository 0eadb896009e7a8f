"""bfloat16 compute (``config.dtype='bfloat16'``, ``create_model(..., dtype=jnp.bfloat16)``):
a training run that tracks the float32 run, and converted models whose bf16 logits stay
within a stated tolerance of the float32 reference, one case per family.

bf16 keeps 8 significant bits: each rounding is off by at most 2^-9 (0.2%) relative, so a
bf16 result is expected to differ from float32 by a few tenths of a percent per layer, never
by nothing (which would mean the computation stayed in float32) and never by tens of percent
(which would mean something overflowed, lost its precision in an accumulation, or kept its
statistics in bf16).
"""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxvision import train
from tests.helpers import read_metrics, tiny_config, train_losses


# ---------------------------------------------------------------------------------------------
# Training

def _dtype_recorder():
    """A flax method interceptor recording, per module class, the dtypes of what each
    ``__call__`` returned and of the variables it held, while the trainer traces its steps."""
    seen = collections.defaultdict(set)

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(out, jax.Array):
            kind = type(context.module).__name__
            seen[kind, "output"].add(jnp.dtype(out.dtype).name)
            for collection, tree in context.module.variables.items():
                for leaf in jax.tree.leaves(tree):
                    seen[kind, collection].add(jnp.dtype(leaf.dtype).name)
        return out
    return seen, interceptor


STEPS = 24


def test_bf16_training_tracks_float32(tmp_path):
    """test_cnn (convolutions, batch norm, dropout, dense) trained for 24 steps on 256 bundled
    digits, once in float32 and once with ``dtype='bfloat16'``, same seed and data order.

    Tolerances, on losses of about 2.3 falling to about 1.5:
    * step 1 (identical float32 weights; only the forward and loss differ): |diff| <= 0.02,
      about ten bf16 roundings (2^-9 each) of the loss;
    * every step: |diff| <= 0.25, and the mean over the 24 steps <= 0.06.  After the first
      update the two runs follow different trajectories (SGD at lr 0.05 amplifies the rounding
      differences); measured here: max 0.15, mean 0.04;
    * the final held-out loss (running batch-norm statistics, float32 in both runs) within
      0.1 (measured 0.03; held-out accuracy, still rising fast at 24 steps, differed by 7
      points and is not compared).
    A bf16 run identical to the float32 one (max |diff| < 1e-6) fails: it did not compute in
    bf16.  So do activations of a Conv/Dense/BatchNorm that are not bf16, and parameters or
    batch-norm statistics that are not float32."""
    runs = {}
    dtypes = {}
    for dtype in ("float32", "bfloat16"):
        seen, interceptor = _dtype_recorder()
        cfg = tiny_config(dtype=dtype, num_train_steps=STEPS, eval_every_steps=STEPS,
                          checkpoint_every_steps=STEPS, log_every_steps=1)
        with nn.intercept_methods(interceptor):
            result = train.train_and_evaluate(cfg, str(tmp_path / dtype))
        runs[dtype] = (train_losses(tmp_path / dtype), result)
        dtypes[dtype] = dict(seen)

    # what the bf16 run computed in, seen from inside the traced model
    seen = dtypes["bfloat16"]
    for kind in ("Conv", "Dense", "BatchNorm", "MnistCNN"):
        assert seen.get((kind, "output")) == {"bfloat16"}, (kind, seen.get((kind, "output")))
    assert seen[("Conv", "params")] == seen[("Dense", "params")] == {"float32"}, seen
    assert seen[("BatchNorm", "params")] == seen[("BatchNorm", "batch_stats")] == {"float32"}
    assert all(v == {"float32"} for v in dtypes["float32"].values()), dtypes["float32"]

    (f32, res32), (b16, res16) = runs["float32"], runs["bfloat16"]
    assert sorted(f32) == sorted(b16) == list(range(1, STEPS + 1))
    a = np.array([f32[s] for s in sorted(f32)])
    b = np.array([b16[s] for s in sorted(f32)])
    diff = np.abs(a - b)
    assert np.all(np.isfinite(b)), b
    assert diff.max() > 1e-6, "the bf16 run gave the float32 losses: it did not compute in bf16"
    assert diff[0] <= 0.02, f"step 1: float32 {a[0]:.4f}, bf16 {b[0]:.4f}"
    assert diff.max() <= 0.25 and diff.mean() <= 0.06, (
        f"bf16 losses left the float32 run: max |diff| {diff.max():.3f}, mean "
        f"{diff.mean():.3f}\nfloat32 {np.round(a, 3)}\nbf16    {np.round(b, 3)}")
    assert a[-1] < a[0] - 0.3 and b[-1] < b[0] - 0.3  # both runs learnt
    assert abs(res16["eval_loss"] - res32["eval_loss"]) <= 0.1, (res16, res32)
    assert not any(r.get("skipped") for r in read_metrics(tmp_path / "bfloat16"))
