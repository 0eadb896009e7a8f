"""Convolution formulations on NHWC input and HWIO kernels, as XLA matrix products.

``Geometry`` describes one convolution statically; the functions below compute it as
``im2col`` (one GEMM over the patch matrix), ``shift`` (one GEMM per kernel tap; broadcast
multiplies for depthwise convs) or Winograd's F(m x m, 3 x 3) (``winograd2``/``winograd4``:
(m+2)^2 GEMMs between transformed tiles and kernels), with the backward computations the
plan's custom derivative uses.  Which one runs for which pass is decided by
:mod:`jaxvision.layers.conv_impl`; the measurements behind it are in
docs/design/cpu_convolutions.md.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class Geometry(NamedTuple):
    """Static description of one NHWC/HWIO convolution (all ints / tuples of ints)."""

    n: int
    h: int
    w: int
    c: int
    kh: int
    kw: int
    o: int
    ho: int
    wo: int
    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int


def tap_views(x, g: Geometry):
    """The KH*KW shifted views of the padded input, each (N, Ho, Wo, C), tap-major (i, j)."""
    (pt, pb), (pl, pr) = g.pads
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
    sh, sw = g.strides
    dh, dw = g.dilation
    out = []
    for i in range(g.kh):
        for j in range(g.kw):
            start = (0, i * dh, j * dw, 0)
            limit = (g.n, i * dh + sh * (g.ho - 1) + 1, j * dw + sw * (g.wo - 1) + 1, g.c)
            out.append(lax.slice(x, start, limit, (1, sh, sw, 1)))
    return out


def patches(x, g: Geometry):
    """im2col patch matrix (N*Ho*Wo, KH*KW, C)."""
    taps = tap_views(x, g)
    p = taps[0][..., None, :] if len(taps) == 1 else jnp.stack(taps, axis=3)
    return p.reshape(g.n * g.ho * g.wo, g.kh * g.kw, g.c)


def mm(a, b, contract, batch=((), ()), precision=None, preferred=None):
    return lax.dot_general(a, b, (contract, batch), precision=precision,
                           preferred_element_type=preferred)


def fwd_matmul(x, w, g: Geometry, form: str, precision, preferred):
    """Forward conv as im2col (one GEMM) or shift (one GEMM per tap). Returns NHWC."""
    m = g.n * g.ho * g.wo
    gr, cg, og = g.groups, g.c // g.groups, g.o // g.groups
    taps = g.kh * g.kw
    wk = w.reshape(taps, cg, gr, og)
    if form == "im2col":
        p = patches(x, g).reshape(m, taps, gr, cg)
        if gr == 1:
            y = mm(p.reshape(m, taps * cg), wk.reshape(taps * cg, og), ((1,), (0,)),
                    precision=precision, preferred=preferred)
        else:
            # (G, M, Og): batch over groups, contract taps and group channels.
            y = mm(p, wk, ((1, 3), (0, 1)), ((2,), (2,)), precision, preferred)
            y = jnp.transpose(y, (1, 0, 2)).reshape(m, g.o)
    else:
        # Depthwise (one input channel per group): each tap is a broadcast multiply, and
        # XLA fuses all of them into one loop over the output.
        acc = acc_dtype(x.dtype, preferred) if depthwise(g) else None
        y = None
        for t, xt in enumerate(tap_views(x, g)):
            xt = xt.reshape(m, gr, cg)
            if acc is not None:
                yt = (xt.astype(acc) * wk[t, 0].astype(acc)).reshape(m, g.o)
            elif gr == 1:
                yt = mm(xt.reshape(m, cg), wk[t, :, 0], ((1,), (0,)),
                         precision=precision, preferred=preferred)
            else:
                yt = mm(xt, wk[t], ((2,), (0,)), ((1,), (1,)), precision, preferred)
                yt = jnp.transpose(yt, (1, 0, 2)).reshape(m, g.o)
            y = yt if y is None else y + yt
        y = y.astype(preferred or x.dtype)  # a no-op but for the depthwise accumulation
    return y.reshape(g.n, g.ho, g.wo, g.o)


def acc_dtype(dtype, preferred):
    """Accumulation type of the elementwise depthwise forms: at least float32."""
    return jnp.promote_types(preferred or dtype, jnp.float32)


def depthwise(g: Geometry) -> bool:
    """A grouped conv with one input channel per group (depthwise, any channel multiplier)."""
    return g.groups > 1 and g.c == g.groups


def depthwise_by_image(x, w, g: Geometry, preferred):
    """A depthwise conv computed one image at a time by ``lax.scan``, each image by the
    tap-wise broadcast multiplies of ``fwd_matmul``, the body rematerialised.

    Used for the kernel-gradient term: reverse mode transposes this scan into one that
    accumulates ``dw[t, g, k] += sum_pixels x_t[g] ct[g, k]`` image by image, so that the
    per-tap reductions re-read one image's input and output gradient from cache instead of
    the whole batch from memory (ConvNeXt-T's 7x7 96-channel conv on 56x56 maps, batch 16,
    AMD EPYC: 88-177 ms over runs, against 313-374 ms for the same reductions over the
    whole batch); the rematerialisation keeps the images themselves as the only residuals,
    not their KH*KW shifted views.
    """
    g1 = g._replace(n=1)

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def body(xi):
        return fwd_matmul(xi[None], w, g1, "shift", None, preferred)[0]

    return lax.map(body, x)


# ----------------------------------------------------------------------------------------
# Winograd minimal filtering, F(m x m, 3 x 3), for 3x3 stride-1 convolutions.
# ----------------------------------------------------------------------------------------

class WinogradTransforms(NamedTuple):
    """Transform matrices of F(m, 3) (Lavin & Gray, 2016, "Fast Algorithms for Convolutional
    Neural Networks"): ``y = A^T [(G w) * (B^T d)]`` for a tile ``d`` of ``m + 2`` inputs."""

    m: int
    bt: tuple  # (m+2, m+2) input transform
    g: tuple   # (m+2, 3) kernel transform
    at: tuple  # (m, m+2) output transform


WINOGRAD = {
    "winograd2": WinogradTransforms(
        2,
        ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (.5, .5, .5), (.5, -.5, .5), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
    "winograd4": WinogradTransforms(
        4,
        ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
         (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
         (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))),
}


WINOGRAD_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))


def winograd_applies(g: Geometry) -> bool:
    """F(m, 3) computes 3x3, stride-1, undilated, ungrouped convolutions whose padding on
    each side is at most 2 (so that the input gradient is one too)."""
    return (g.kh == g.kw == 3 and g.strides == (1, 1) and g.dilation == (1, 1)
            and g.groups == 1 and all(0 <= p <= 2 for pair in g.pads for p in pair))


def combine(coefs, arrays):
    """``sum_i coefs[i] * arrays[i]``, skipping zero coefficients and unit multiplies."""
    out = None
    for c, a in zip(coefs, arrays):
        if c == 0:
            continue
        t = a if c == 1 else (-a if c == -1 else a * jnp.asarray(c, a.dtype))
        out = t if out is None else out + t
    return out


def tiles(g: Geometry, m: int) -> tuple[int, int]:
    return -(-g.ho // m), -(-g.wo // m)


def wino_input(x, g: Geometry, t: WinogradTransforms):
    """``B^T d B`` for every (m+2)x(m+2) input tile (stride m): a list of (m+2)^2 arrays
    (tiles, C), kept separate because XLA:CPU emits a stacked version much more slowly."""
    m, a = t.m, t.m + 2
    th, tw = tiles(g, m)
    (pt, _), (pl, _) = g.pads
    x = jnp.pad(x, ((0, 0), (pt, th * m + 2 - g.h - pt), (pl, tw * m + 2 - g.w - pl), (0, 0)))
    rows = [x[:, r:r + m * (th - 1) + 1:m] for r in range(a)]
    out = []
    for i in range(a):
        ri = combine(t.bt[i], rows)
        cols = [ri[:, :, s:s + m * (tw - 1) + 1:m] for s in range(a)]
        out += [combine(t.bt[j], cols).reshape(g.n * th * tw, g.c) for j in range(a)]
    return out


def wino_kernel(w, t: WinogradTransforms):
    """``G w G^T``: a list of (m+2)^2 kernels (C, O), as weighted sums of the 9 taps (a few
    elementwise kernels rather than small dots and slices)."""
    a = t.m + 2
    taps = [[w[k, l] for l in range(3)] for k in range(3)]
    rows = [[combine([t.g[i][k] for k in range(3)], [taps[k][l] for k in range(3)])
             for l in range(3)] for i in range(a)]
    return [combine(t.g[j], rows[i]) for i in range(a) for j in range(a)]


def wino_output(mats, g: Geometry, t: WinogradTransforms):
    """``A^T M A`` per tile, the m x m outputs interleaved back into (N, Ho, Wo, O)."""
    m, a = t.m, t.m + 2
    th, tw = tiles(g, m)
    o = mats[0].shape[-1]
    mats = [v.reshape(g.n, th, tw, o) for v in mats]
    rows = [[combine(t.at[p], [mats[i * a + j] for i in range(a)]) for j in range(a)]
            for p in range(m)]
    y = jnp.stack([jnp.stack([combine(t.at[q], rows[p]) for q in range(m)], axis=3)
                   for p in range(m)], axis=2)  # (N, th, m, tw, m, O)
    return y.reshape(g.n, th * m, tw * m, o)[:, :g.ho, :g.wo]


def wino_output_adjoint(ct, g: Geometry, t: WinogradTransforms):
    """Adjoint of :func:`wino_output`: ``A ct A^T`` per m x m tile of the output gradient."""
    m, a = t.m, t.m + 2
    th, tw = tiles(g, m)
    ct = jnp.pad(ct, ((0, 0), (0, th * m - g.ho), (0, tw * m - g.wo), (0, 0)))
    blocks = [[ct[:, p::m, q::m] for q in range(m)] for p in range(m)]
    rows = [[combine([t.at[q][j] for q in range(m)], blocks[p]) for j in range(a)]
            for p in range(m)]
    return [combine([t.at[p][i] for p in range(m)], [rows[p][j] for p in range(m)])
            .reshape(g.n * th * tw, g.o) for i in range(a) for j in range(a)]


def wino_fwd(x, w, g: Geometry, form: str, precision, preferred):
    """Forward conv as (m+2)^2 GEMMs (tiles, C) @ (C, O) in the Winograd domain."""
    t = WINOGRAD[form]
    mats = [mm(v, u, ((1,), (0,)), precision=precision, preferred=preferred)
            for v, u in zip(wino_input(x, g, t), wino_kernel(w, t))]
    return wino_output(mats, g, t)


def dgrad_geometry(g: Geometry) -> Geometry:
    """The input gradient of a stride-1 3x3 conv is a 3x3 conv of the output gradient with
    the flipped, in/out-swapped kernel and padding ``2 - p``."""
    (pt, pb), (pl, pr) = g.pads
    return g._replace(h=g.ho, w=g.wo, c=g.o, o=g.c, ho=g.h, wo=g.w,
                      pads=((2 - pt, 2 - pb), (2 - pl, 2 - pr)))


def wino_dgrad(ct, w, g: Geometry, form: str, precision, preferred):
    w_t = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
    return wino_fwd(ct, w_t, dgrad_geometry(g), form, precision, preferred)


def wino_wgrad(ct, x, g: Geometry, form: str, precision, preferred):
    """Kernel gradient ``G^T [sum_tiles (B^T d B) (A ct A^T)] G``: (m+2)^2 GEMMs contracting
    over the tiles, (C, tiles) @ (tiles, O)."""
    t = WINOGRAD[form]
    a = t.m + 2
    du = [mm(v, c, ((0,), (0,)), precision=precision, preferred=preferred)
          for v, c in zip(wino_input(x, g, t), wino_output_adjoint(ct, g, t))]
    # G^T dU G, as weighted sums like wino_kernel's.
    rows = [[combine([t.g[i][k] for i in range(a)], [du[i * a + j] for i in range(a)])
             for j in range(a)] for k in range(3)]
    return jnp.stack([jnp.stack([combine([t.g[j][l] for j in range(a)], rows[k])
                                 for l in range(3)]) for k in range(3)])
