"""Neural ODEs (Chen et al., 2018): solvers, adjoint gradients, memory, models.

Golden counts: odenet_mnist = rknet_mnist = 208,266 and resnet6_mnist = 576,778, the
paper's MNIST code (its table rounds them to 0.22M and 0.60M); checked against a torch
transcription of that code in test_param_counts_match_torch_transcription.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.models.odenet import ODEBlock, odeint_dopri5, odeint_rk4
from jaxvision.utils import param_count
from tests.quick_compile import O0, jit_o0


def _linear_f(h, t, a):
    return a * h


@pytest.mark.parametrize("adjoint", [False, True])
def test_rk4_solves_linear_ode_and_its_gradient(adjoint):
    h0, a = jnp.array([1.0, -2.0, 0.5]), jnp.asarray(0.7)

    def out(h0, a):
        return jnp.sum(odeint_rk4(_linear_f, h0, a, 0.0, 1.0, num_steps=10, adjoint=adjoint))

    np.testing.assert_allclose(out(h0, a), np.exp(0.7) * -0.5, rtol=1e-5)
    g_h0, g_a = jax.grad(out, argnums=(0, 1))(h0, a)
    np.testing.assert_allclose(g_h0, np.full(3, np.exp(0.7)), rtol=1e-5)
    np.testing.assert_allclose(g_a, np.exp(0.7) * -0.5, rtol=1e-5)


def test_dopri5_adjoint_on_linear_ode():
    h0 = jnp.array([1.0, 2.0])
    f = lambda a: jnp.sum(odeint_dopri5(_linear_f, h0, a, rtol=1e-7, atol=1e-7))  # noqa: E731
    np.testing.assert_allclose(f(jnp.asarray(-0.3)), 3 * np.exp(-0.3), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(f)(jnp.asarray(-0.3)), 3 * np.exp(-0.3), rtol=1e-4)


def _block_setup():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 5, 4)), jnp.float32)
    cot = jnp.asarray(np.random.default_rng(1).standard_normal((2, 5, 5, 4)), jnp.float32)
    params = ODEBlock(norm_groups=2).init(jax.random.key(0), x)["params"]
    return x, cot, params


def _grads(block, x, cot, params):
    def loss(p, x):
        return jnp.sum(block.apply({"params": p}, x) * cot)

    return jit_o0(jax.grad(loss, argnums=(0, 1)))(params, x)


def test_adjoint_gradients_match_backprop_through_the_solver():
    x, cot, params = _block_setup()
    backprop = _grads(ODEBlock("rk4", adjoint=False, num_steps=64, norm_groups=2), x, cot, params)
    rk4_adj = _grads(ODEBlock("rk4", adjoint=True, num_steps=64, norm_groups=2), x, cot, params)
    dopri = _grads(ODEBlock("dopri5", adjoint=True, rtol=1e-6, atol=1e-6, norm_groups=2),
                   x, cot, params)
    # Every solver approximates the exact gradient, so they differ by the solver error
    # only.  f has ReLU kinks, which slows convergence: the two adaptive/fixed-step
    # solutions agree to ~0.5% of each leaf's scale, while the fixed-step adjoint and
    # backprop on the same 64-step grid agree much more tightly.
    for (g_ref, g_adj, g_dopri) in zip(*map(jax.tree.leaves, (backprop, rk4_adj, dopri))):
        scale = float(jnp.abs(g_ref).max())
        assert scale > 1e-3  # a non-trivial gradient on every leaf
        np.testing.assert_allclose(g_adj, g_ref, atol=1e-4 * scale)
        np.testing.assert_allclose(g_dopri, g_ref, atol=2e-2 * scale)


def _temp_bytes(block, x, params):
    def loss(p):
        return jnp.sum(block.apply({"params": p}, x) ** 2)

    # LLVM's optimisation level does not change XLA's buffer assignment
    compiled = jax.jit(jax.grad(loss)).lower(params).compile(compiler_options=O0)
    return compiled.memory_analysis().temp_size_in_bytes


def test_adjoint_memory_does_not_grow_with_steps():
    x = jnp.ones((4, 6, 6, 8), jnp.float32)
    params = ODEBlock(norm_groups=4).init(jax.random.key(0), x)["params"]
    mem = {(adj, n): _temp_bytes(ODEBlock("rk4", adjoint=adj, num_steps=n, norm_groups=4),
                                 x, params)
           for adj in (False, True) for n in (2, 32)}
    state_bytes = x.size * 4
    assert mem[(False, 32)] > mem[(False, 2)] + 16 * state_bytes  # backprop keeps every step
    assert mem[(True, 32)] <= mem[(True, 2)] + state_bytes  # the adjoint does not


def test_models_forward_and_errors():
    x = jnp.asarray(np.random.default_rng(2).uniform(0, 1, (2, 28, 28, 1)), jnp.float32)
    for name in ("test_odenet", "test_resnet6"):
        model = jaxvision.create_model(name)
        v = model.init(jax.random.key(0), x)
        out = model.apply(v, x)
        assert out.shape == (2, 10) and np.all(np.isfinite(np.asarray(out)))
    rk = jaxvision.create_model("test_odenet", solver="rk4", adjoint=False, num_steps=4)
    v = rk.init(jax.random.key(0), x)
    ode = jaxvision.create_model("test_odenet")
    # Same parameters, two solvers of the same ODE: nearly the same logits.
    np.testing.assert_allclose(rk.apply(v, x), ode.apply(v, x), atol=2e-2)
    with pytest.raises(ValueError, match="adjoint method only"):
        jaxvision.create_model("test_odenet", adjoint=False).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="block"):
        jaxvision.create_model("test_odenet", block="dense").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="num_steps"):
        odeint_rk4(_linear_f, jnp.ones(2), 1.0, num_steps=0)


def test_param_counts():
    assert param_count(jaxvision.create_model("odenet_mnist"), (28, 28, 1)) == 208_266
    assert param_count(jaxvision.create_model("rknet_mnist"), (28, 28, 1)) == 208_266
    assert param_count(jaxvision.create_model("resnet6_mnist"), (28, 28, 1)) == 576_778


@pytest.mark.torch
def test_param_counts_match_torch_transcription():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    def norm(d):
        return nn.GroupNorm(min(32, d), d)

    class ConcatConv(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.conv = nn.Conv2d(d + 1, d, 3, 1, 1)

    class ODEFunc(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.norm1, self.conv1 = norm(d), ConcatConv(d)
            self.norm2, self.conv2, self.norm3 = norm(d), ConcatConv(d), norm(d)

    class ResBlock(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.norm1, self.conv1 = norm(d), nn.Conv2d(d, d, 3, 1, 1, bias=False)
            self.norm2, self.conv2 = norm(d), nn.Conv2d(d, d, 3, 1, 1, bias=False)

    stem = [nn.Conv2d(1, 64, 3, 1), norm(64), nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), norm(64),
            nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1)]
    head = [norm(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    ode = nn.Sequential(*stem, ODEFunc(64), *head)
    res = nn.Sequential(*stem, *[ResBlock(64) for _ in range(6)], *head)
    assert param_count(jaxvision.create_model("odenet_mnist"), (28, 28, 1)) == count(ode)
    assert param_count(jaxvision.create_model("resnet6_mnist"), (28, 28, 1)) == count(res)
