"""Small random ReLU MLPs and a numpy reference for their sign patterns (shared test helpers)."""

import jax
import jax.numpy as jnp
import numpy as np


def random_relu_net(seed, sizes, bias_scale, dtype=np.float64):
    """A float32 JAX MLP ``f(x)`` with random weights, and those weights as numpy ``dtype`` lists.

    Returns:
      ``(f, ws, bs)``: ``f`` maps ``[batch, sizes[0]]`` to ``[batch, sizes[-1]]``; ``ws[i]`` is
      ``[sizes[i], sizes[i+1]]`` and ``bs[i]`` is ``[sizes[i+1]]``.
    """
    rng = np.random.default_rng(seed)
    ws32 = [jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    bs32 = [jnp.asarray(bias_scale * rng.normal(size=b), jnp.float32) for b in sizes[1:]]

    def f(x):  # float32, or float64 for float64 inputs (exact walks), cast explicitly
        h = jnp.asarray(x)
        h = h if h.dtype == jnp.float64 else h.astype(jnp.float32)
        for w, b in zip(ws32[:-1], bs32[:-1]):
            h = jax.nn.relu(dense(h, w, b))
        return dense(h, ws32[-1], bs32[-1])

    return f, [np.asarray(w, dtype) for w in ws32], [np.asarray(b, dtype) for b in bs32]


def dense(h, w, b):
    """``h @ w + b`` in ``h``'s dtype, the bias broadcast explicitly over the leading axes of ``h [..., a]``."""
    h = jnp.asarray(h)
    y = h @ jnp.asarray(w, h.dtype)
    return y + jnp.asarray(b, h.dtype).reshape((1,) * (y.ndim - 1) + (-1,))


def numpy_signs(ws, bs, x):
    """``[batch, hidden units]`` booleans: which hidden units are active, by a numpy forward pass."""
    out, h = [], x
    for w, b in zip(ws[:-1], bs[:-1]):
        z = h @ w + b
        out.append(z > 0)
        h = np.maximum(z, 0)
    return np.concatenate(out, axis=-1)
