"""Orthonormal 2-D DCT-II, its inverse, and low-pass masks in the DCT domain.

Coefficient (0, 0) is the DC term, so a low-pass mask keeps the corner near
(0, 0) (the authors' notebook centred it at (H/2, W/2), which is not low-pass).
Masks here are rectangular, so the low-pass projection factors into one
H x H and one W x W matrix, each an orthogonal projection (norm exactly 1).
`lowpass` applies it in one of several forms: the same linear map, laid out
differently for XLA (the benchmark's `lowpass` section times them per device).
"""
import jax
import jax.numpy as jnp
import numpy as np


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix D (n, n): dct(x) = D @ x, D @ D.T = I."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


def dct2(x: jax.Array) -> jax.Array:
    """2-D DCT-II over the spatial axes of NHWC `x`, per channel."""
    dh = jnp.asarray(dct_matrix(x.shape[1]), x.dtype)
    dw = jnp.asarray(dct_matrix(x.shape[2]), x.dtype)
    return jnp.einsum("uh,bhwc,vw->buvc", dh, x, dw)


def idct2(c: jax.Array) -> jax.Array:
    """Inverse of `dct2` (its transpose, since the transform is orthonormal)."""
    dh = jnp.asarray(dct_matrix(c.shape[1]), c.dtype)
    dw = jnp.asarray(dct_matrix(c.shape[2]), c.dtype)
    return jnp.einsum("uh,buvc,vw->bhwc", dh, c, dw)


def lowpass_mask_1d(n: int, keep: float) -> np.ndarray:
    """{0,1} vector keeping the lowest ceil(keep * n) frequencies (at least 1)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"dct keep fraction must be in (0, 1], got {keep}")
    m = np.zeros(n)
    m[: max(1, int(np.ceil(keep * n)))] = 1.0
    return m


def lowpass_projection(n: int, keep: float) -> np.ndarray:
    """D^T diag(mask) D: the spatial-domain low-pass projection along one axis."""
    d = dct_matrix(n)
    return d.T @ (lowpass_mask_1d(n, keep)[:, None] * d)


LOWPASS_FORMS = ("einsum", "matmul", "kron")


def check_lowpass_form(form: str) -> str:
    """`form` if it is one of `LOWPASS_FORMS`, else ValueError naming the known ones."""
    if form not in LOWPASS_FORMS:
        raise ValueError(f"unknown low-pass form {form!r}; known: {LOWPASS_FORMS}")
    return form


def lowpass(x: jax.Array, ph: np.ndarray, pw: np.ndarray, form: str = "einsum") -> jax.Array:
    """y[b, g, v, c] = sum_{h, w} ph[g, h] x[b, h, w, c] pw[v, w] for NHWC `x`.

    ph (H, H), pw (W, W): numpy projections (`lowpass_projection`). The forms
    compute the same map up to float32 rounding:
      einsum: one einsum; XLA picks the contraction order and the transposes.
      matmul: two batched matmuls along the memory layout, no transposes:
        ph @ x_b with x_b (H, W*C), then pw @ y_bg with y_bg (W, C).
      kron: one matmul by kron(ph, pw) (HW x HW) over the flattened spatial
        axis: HW/(H+W) times the FLOPs, in one large GEMM.
    """
    check_lowpass_form(form)
    b, h, w, c = x.shape
    if form == "einsum":
        return jnp.einsum("gh,bhwc,vw->bgvc", jnp.asarray(ph, x.dtype), x, jnp.asarray(pw, x.dtype))
    if form == "matmul":
        y = jnp.matmul(jnp.asarray(ph, x.dtype), x.reshape(b, h, w * c))
        return jnp.matmul(jnp.asarray(pw, x.dtype), y.reshape(b * h, w, c)).reshape(b, h, w, c)
    k = jnp.asarray(np.kron(ph, pw), x.dtype)  # kron: k[g * W + v, h * W + w] = ph[g, h] pw[v, w]
    return jnp.einsum("pq,bqc->bpc", k, x.reshape(b, h * w, c)).reshape(b, h, w, c)
