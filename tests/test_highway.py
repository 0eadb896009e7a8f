"""Highway networks (Srivastava et al., 2015): the gate equations, carry behaviour at init.

Golden counts (tests/golden/highway.json) are this implementation's counts; the paper gives
per-layer sizes rather than totals: "about 5000 parameters per layer" for MNIST highway
layers of 50 units (asserted below: 5,100).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.models.highway import HighwayConv, HighwayDense
from jaxvision.utils import param_count, param_shapes
from tests.quick_compile import jit_o0


def _apply_captured(layer, x, seed=0):
    v = layer.init(jax.random.key(seed), x)
    y, inter = layer.apply(v, x, capture_intermediates=True)
    return v, y, inter["intermediates"]


@pytest.mark.parametrize("layer,shape", [(HighwayDense(), (4, 16)),
                                         (HighwayConv(), (2, 8, 8, 6))])
def test_output_is_gated_mix_with_sigmoid_gate(layer, shape):
    """y = H(x) T(x) + x (1 - T(x)) with T = sigmoid(W_T x + b_T), H = ReLU(W_H x + b_H)."""
    x = jax.random.normal(jax.random.key(1), shape)
    v, y, inter = _apply_captured(layer, x)
    g = inter["gate"]["__call__"][0]          # W_T x + b_T
    h = inter["transform"]["__call__"][0]     # W_H x + b_H
    t = jax.nn.sigmoid(g)
    np.testing.assert_allclose(y, jax.nn.relu(h) * t + x * (1 - t), rtol=1e-5, atol=1e-6)
    # The gate bias starts at the configured negative value.
    np.testing.assert_array_equal(v["params"]["gate"]["bias"], -2.0)


@pytest.mark.parametrize("make", [lambda b: HighwayDense(gate_bias=b),
                                  lambda b: HighwayConv(gate_bias=b)])
def test_negative_gate_bias_carries_the_input(make):
    shape = (4, 32) if isinstance(make(0.0), HighwayDense) else (2, 8, 8, 8)
    x = jax.random.normal(jax.random.key(2), shape)
    dist = []
    for b in (-1.0, -2.0, -3.0, -8.0):
        _, y, _ = _apply_captured(make(b), x)
        dist.append(float(jnp.linalg.norm(y - x) / jnp.linalg.norm(x)))
    # More negative bias -> closer to the identity; at -8 the layer is a near-copy.
    assert dist == sorted(dist, reverse=True), dist
    assert dist[-1] < 0.01, dist
    # A positive bias instead opens the transform gate: far from carrying.
    _, y, _ = _apply_captured(make(8.0), x)
    assert float(jnp.linalg.norm(y - x) / jnp.linalg.norm(x)) > 0.3


def test_deep_highway_mlp_at_init_stays_close_to_its_projection():
    """50 highway layers with b_T = -3: the output is still dominated by the carried input
    (the property that lets very deep highway networks train)."""
    model = jaxvision.create_model("highway_mlp_mnist", num_layers=50, gate_bias=-3.0,
                                   num_classes=0)
    x = jax.random.uniform(jax.random.key(3), (4, 28, 28, 1))
    v = jit_o0(model.init)(jax.random.key(4), x)
    out, inter = jit_o0(lambda v, x: model.apply(
        v, x, capture_intermediates=lambda m, _: m.name == "proj"))(v, x)
    proj = jax.nn.relu(inter["intermediates"]["proj"]["__call__"][0])
    cos = jnp.sum(out * proj) / (jnp.linalg.norm(out) * jnp.linalg.norm(proj))
    assert float(cos) > 0.5


def test_paper_layer_size():
    shapes = param_shapes(jaxvision.create_model("highway_mlp_mnist"), (28, 28, 1))
    per_layer = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["highway0"]))
    assert per_layer == 5_100  # "about 5000 parameters per layer"
    assert sum(k.startswith("highway") for k in shapes) == 10
    assert param_count(jaxvision.create_model("highway_mlp_mnist"), (28, 28, 1)) == \
        784 * 50 + 50 + 10 * 5_100 + 50 * 10 + 10


def test_cnn_features_and_bad_config():
    model = jaxvision.create_model("test_highway_cnn", num_classes=0)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    out, _ = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
    assert out.shape == (2, 8)
    with pytest.raises(ValueError, match="widths"):
        jaxvision.create_model("highway_cnn_cifar", depths=(1, 2)).init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
