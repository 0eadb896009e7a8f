"""The shared building blocks every family uses: classifier head, ConvBN, drop path."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.layers import ConvBN, DropPath, classifier_head
from jaxvision.layers.drop import module_drop_path


class _Head(nn.Module):
    num_classes: int
    drop_rate: float | None = None
    pool: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        return classifier_head(x, self.num_classes, name="fc", train=train,
                               drop_rate=self.drop_rate, pool=self.pool)


def test_classifier_head_names_its_dense_in_the_callers_scope():
    x = jnp.ones((2, 3, 3, 5))
    params = _Head(7).init(jax.random.key(0), x)["params"]
    assert jax.tree.map(jnp.shape, params) == {"fc": {"kernel": (5, 7), "bias": (7,)}}


def test_classifier_head_num_classes_zero_returns_pooled_features():
    x = jnp.arange(2 * 3 * 3 * 5, dtype=jnp.float32).reshape(2, 3, 3, 5)
    variables = _Head(0).init(jax.random.key(0), x)
    assert variables == {}
    np.testing.assert_array_equal(_Head(0).apply(variables, x), x.mean(axis=(1, 2)))
    flat = jnp.ones((2, 4))
    assert _Head(0, pool=False).apply({}, flat) is flat


def test_classifier_head_refuses_negative_num_classes():
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        _Head(-1).init(jax.random.key(0), jnp.ones((1, 2, 2, 3)))


def test_classifier_head_dropout_only_in_training():
    x = jnp.ones((64, 1, 1, 16))
    head = _Head(3, drop_rate=0.5)
    v = head.init(jax.random.key(0), x)
    a = head.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
    b = head.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(head.apply(v, x), head.apply(v, x, train=False))


def test_conv_bn_with_and_without_norm():
    x = jnp.ones((1, 5, 5, 3))
    with_bn = ConvBN(4, 3, padding=1).init(jax.random.key(0), x)
    assert set(with_bn["params"]) == {"conv", "bn"} and "bias" not in with_bn["params"]["conv"]
    no_bn = ConvBN(4, (1, 3), padding=(0, 1), norm=False).init(jax.random.key(0), x)
    assert set(no_bn["params"]) == {"conv"} and no_bn["params"]["conv"]["bias"].shape == (4,)
    assert no_bn["params"]["conv"]["kernel"].shape == (1, 3, 3, 4)
    y = ConvBN(4, 3, padding=1, act=False).apply(with_bn, -x)
    assert y.shape == (1, 5, 5, 4) and float(y.min()) < 0  # no ReLU


class _Block(nn.Module):
    rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        return module_drop_path(self, x, self.rate, deterministic=not train)


def test_module_drop_path_matches_drop_path_layer_semantics():
    x = jnp.ones((512, 2, 2, 3))
    y = _Block(0.25).apply({}, x, True, rngs={"dropout": jax.random.key(0)})
    per_sample = np.asarray(y).reshape(512, -1)
    dropped = (per_sample == 0).all(1)
    assert np.all(dropped | np.isclose(per_sample, 1 / 0.75).all(1))
    assert 0.15 < dropped.mean() < 0.35
    assert _Block(0.25).apply({}, x, False) is x  # eval: identity, no rng needed
    # The layer form draws from its own scope: same law, its own stream.
    z = DropPath(0.25).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    assert set(np.unique(np.asarray(z))) <= {0.0, np.float32(1 / 0.75)}
