"""CapsNet (Sabour et al., 2017): routing, squash, margin loss, masked decoder.

Golden count: capsnet_mnist = 8,215,568, the paper's "8.2M" with the reconstruction
decoder: conv1 20,992 + primary caps 5,308,672 + W_ij (1152 x 10 x 8 x 16) 1,474,560 +
decoder 1,411,344 (checked layer by layer below).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.models.capsnet import dynamic_routing, margin_loss, squash
from jaxvision.utils import param_count, param_shapes


def _np_squash(s):
    n2 = float(np.dot(s, s))
    return (n2 / (1.0 + n2)) * s / np.sqrt(n2)


def _procedure1(u_hat, r):
    """The paper's Procedure 1, one capsule at a time, for a single example.
    u_hat: (I, J, D) predictions u_hat_{j|i}."""
    num_i, num_j, d = u_hat.shape
    b = np.zeros((num_i, num_j))
    v = np.zeros((num_j, d))
    for _ in range(r):
        c = np.zeros((num_i, num_j))
        for i in range(num_i):  # c_i <- softmax(b_i)
            e = np.exp(b[i] - b[i].max())
            c[i] = e / e.sum()
        for j in range(num_j):  # s_j <- sum_i c_ij u_hat_j|i ; v_j <- squash(s_j)
            s = np.zeros(d)
            for i in range(num_i):
                s += c[i, j] * u_hat[i, j]
            v[j] = _np_squash(s)
        for i in range(num_i):  # b_ij <- b_ij + u_hat_j|i . v_j
            for j in range(num_j):
                b[i, j] += np.dot(u_hat[i, j], v[j])
    return v


@pytest.mark.parametrize("r", [1, 3])
def test_routing_matches_procedure_1(r):
    rng = np.random.default_rng(r)
    u_hat = rng.standard_normal((2, 12, 5, 4)) * 0.7
    got = np.asarray(dynamic_routing(jnp.asarray(u_hat, jnp.float32), r))
    want = np.stack([_procedure1(u_hat[k], r) for k in range(2)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_routing_iterations_change_the_result():
    u_hat = jnp.asarray(np.random.default_rng(0).standard_normal((1, 12, 5, 4)), jnp.float32)
    assert not np.allclose(dynamic_routing(u_hat, 1), dynamic_routing(u_hat, 3))
    with pytest.raises(ValueError, match="num_iterations"):
        dynamic_routing(u_hat, 0)


def test_squash_keeps_direction_and_bounds_length():
    s = jnp.asarray(np.random.default_rng(1).standard_normal((6, 8)) * [[0.01], [0.1], [1],
                                                                           [3], [10], [100]])
    v = np.asarray(squash(s))
    n_s = np.linalg.norm(np.asarray(s), axis=-1)
    n_v = np.linalg.norm(v, axis=-1)
    # The epsilon that keeps the gradient finite at 0 shifts tiny lengths slightly.
    np.testing.assert_allclose(n_v, n_s ** 2 / (1 + n_s ** 2), rtol=1e-3)
    np.testing.assert_allclose(v / n_v[:, None], np.asarray(s) / n_s[:, None], atol=1e-5)
    assert np.all(np.isfinite(np.asarray(jax.grad(lambda x: squash(x).sum())(jnp.zeros(8)))))


def test_margin_loss_formula():
    rng = np.random.default_rng(2)
    lengths = rng.uniform(0, 1, (5, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 5)
    t = np.eye(10)[labels]
    want = (t * np.maximum(0, 0.9 - lengths) ** 2
            + 0.5 * (1 - t) * np.maximum(0, lengths - 0.1) ** 2).sum(1).mean()
    np.testing.assert_allclose(margin_loss(jnp.asarray(lengths), jnp.asarray(labels)), want,
                               rtol=1e-5)
    np.testing.assert_allclose(margin_loss(jnp.asarray(lengths), jnp.asarray(t, jnp.float32)),
                               want, rtol=1e-5)
    # Perfect predictions cost nothing.
    assert float(margin_loss(jnp.asarray(0.05 + 0.9 * t, jnp.float32), jnp.asarray(labels))) == 0
    with pytest.raises(ValueError, match="targets"):
        margin_loss(jnp.asarray(lengths), jnp.zeros((5, 3)))


def test_capsnet_mnist_param_count_layer_by_layer():
    model = jaxvision.create_model("capsnet_mnist")
    shapes = param_shapes(model, (28, 28, 1))
    count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    assert count(shapes["conv1"]) == 20_992
    assert count(shapes["primary_caps"]) == 5_308_672
    assert shapes["digit_caps"]["kernel"].shape == (1152, 10, 8, 16)
    assert sum(count(shapes[f"decoder_fc{i}"]) for i in (1, 2, 3)) == 1_411_344
    assert param_count(model, (28, 28, 1)) == 8_215_568


def _tiny():
    model = jaxvision.create_model("test_capsnet")
    x = jnp.asarray(np.random.default_rng(3).uniform(0, 1, (3, 16, 16, 1)), jnp.float32)
    return model, x, model.init(jax.random.key(0), x)


def test_lengths_are_probabilities_and_decoder_is_masked():
    model, x, variables = _tiny()
    assert set(variables) == {"params"}  # nothing sown at init
    lengths, state = model.apply(variables, x, mutable=["losses", "intermediates"])
    assert lengths.shape == (3, 4)
    assert np.all((np.asarray(lengths) >= 0) & (np.asarray(lengths) < 1))
    recon = state["intermediates"]["reconstruction"][0]
    assert recon.shape == x.shape
    sse = np.sum((np.asarray(recon) - np.asarray(x)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(state["losses"]["reconstruction"][0], 0.0005 * sse.mean(),
                               rtol=1e-5)

    # In training the true label picks the capsule: targets equal to the predicted class
    # reproduce the eval reconstruction, other targets change it.
    pred = jax.nn.one_hot(jnp.argmax(lengths, -1), 4)
    _, s_pred = model.apply(variables, x, train=True, targets=pred,
                            mutable=["losses", "intermediates"])
    np.testing.assert_allclose(s_pred["intermediates"]["reconstruction"][0], recon, atol=1e-6)
    other = jax.nn.one_hot((jnp.argmax(lengths, -1) + 1) % 4, 4)
    _, s_other = model.apply(variables, x, train=True, targets=other,
                             mutable=["losses", "intermediates"])
    assert not np.allclose(s_other["intermediates"]["reconstruction"][0], recon)
    with pytest.raises(ValueError, match="targets"):
        model.apply(variables, x, train=True, targets=jnp.zeros((3, 10)), mutable=["losses"])


def test_reconstruction_loss_trains_the_decoder_and_encoder():
    model, x, variables = _tiny()
    labels = jnp.array([0, 1, 2])

    def loss_fn(p):
        lengths, state = model.apply({"params": p}, x, train=True,
                                     targets=jax.nn.one_hot(labels, 4), mutable=["losses"])
        aux = sum(jax.tree.leaves(state["losses"]))
        return margin_loss(lengths, labels) + aux

    grads = jax.grad(loss_fn)(variables["params"])
    zero = [jax.tree_util.keystr(k) for k, g in jax.tree_util.tree_leaves_with_path(grads)
            if not np.any(np.asarray(g) != 0)]
    assert not zero, f"zero gradient for {zero}"
