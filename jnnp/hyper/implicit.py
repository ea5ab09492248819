"""Implicit differentiation of an inner optimum w*(θ), and linear solvers for it (no jaxopt).

If w*(θ) solves F(w, θ) = ∇_w L_train(w, θ) = 0, the implicit function theorem gives

    dw*/dθ = −H⁻¹ ∂_θF,   H = ∂_wF (the training-loss Hessian),

so for an outer objective J(θ) = L_val(w*(θ), θ) the hypergradient is

    dJ/dθ = ∂_θL_val − (∂_θF)ᵀ v,   H v = ∇_w L_val   (H symmetric).

* `implicit_solution` wraps any inner solver in a `jax.custom_vjp` whose backward pass is this
  formula, with a pluggable linear solve. It is *exact* when the solver returns the exact optimum
  and the solve is exact (`dense_solve`): the ridge readout of `jnnp.hyper.ridge`.
* `ift_hypergradient` applies the same formula at a given w (e.g. a trained network) with an
  iterative solve (`cg_solve`, `neumann_solve`) using Hessian-vector products only. This is an
  **approximation** for networks: training never reaches an exact stationary point, the Hessian
  may be indefinite (damping helps CG), and the solves are truncated. It is exact only when w is
  the exact optimum of a convex problem and the solve has converged. A K-term Neumann series with
  step α equals the hypergradient of K unrolled gradient-descent steps (rate α) started at the
  optimum (tested in tests/hyper).

Vectors are flattened with `jax.flatten_util.ravel_pytree`; solvers act on flat 1-D arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = [
    "cg_solve",
    "dense_solve",
    "hvp",
    "ift_hypergradient",
    "implicit_solution",
    "neumann_solve",
]


def dense_solve(matvec, b):
    """Exact: materialise the matrix A (n×n, n = b.size) column by column and solve A x = b."""
    A = jax.vmap(matvec, out_axes=1)(jnp.eye(b.shape[0], dtype=b.dtype))
    return jnp.linalg.solve(A, b)


def cg_solve(matvec, b, iterations: int = 20, damping: float = 0.0):
    """Conjugate gradients for (A + damping·I) x = b, A symmetric positive definite, a fixed
    number of ``iterations`` (exact after n iterations in exact arithmetic, n = b.size)."""
    def mv(x):
        return matvec(x) + damping * x

    def body(_, state):
        x, r, p, rr = state
        Ap = mv(p)
        pAp = jnp.vdot(p, Ap)
        alpha = jnp.where(pAp > 0, rr / jnp.where(pAp > 0, pAp, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = jnp.vdot(r, r)
        beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
        return x, r, r + beta * p, rr_new

    x0 = jnp.zeros_like(b)
    state = (x0, b, b, jnp.vdot(b, b))
    return jax.lax.fori_loop(0, int(iterations), body, state)[0]


def neumann_solve(matvec, b, terms: int = 20, step: float = 1.0):
    """x ≈ A⁻¹ b by the truncated Neumann series α Σ_{k<terms} (I − αA)^k b (α = ``step``);
    converges for symmetric A with eigenvalues in (0, 2/α)."""
    def body(_, state):
        x, t = state
        t = t - step * matvec(t)
        return x + t, t

    x, _ = jax.lax.fori_loop(0, int(terms) - 1, body, (b, b))
    return step * x


def hvp(f, w, v, *args):
    """Hessian-vector product of scalar f(w, *args) in w (forward-over-reverse)."""
    return jax.jvp(lambda x: jax.grad(f)(x, *args), (w,), (v,))[1]


def _zero_cotangent(x):
    x = jnp.asarray(x) if not isinstance(x, np.ndarray) else x
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros(x.shape, x.dtype)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


def implicit_solution(solver, optimality_fn, linear_solve=dense_solve, *, data_gradient: bool = False):
    """``solution(theta, data) = solver(theta, data)``, differentiated by the implicit function
    theorem instead of through the solver.

    Args:
        solver: ``(theta, data) -> w*`` (any pytree w), the exact (or trusted) inner optimum.
        optimality_fn: ``(w, theta, data) -> F`` with F(w*, θ) = 0 and the same structure as w;
            for a minimisation ``jax.grad(L_train)``.
        linear_solve: ``(matvec, b) -> x`` on flat vectors, solving ∂_wFᵀ x = b
            (`dense_solve`: exact; `cg_solve` / `neumann_solve` via functools.partial: approximate).
        data_gradient: also return cotangents for the inexact leaves of ``data`` (otherwise
            zeros; integer leaves always get float0 zeros).
    """
    @jax.custom_vjp
    def solution(theta, data):
        return solver(theta, data)

    def fwd(theta, data):
        w = solver(theta, data)
        return w, (w, theta, data)

    def bwd(res, w_bar):
        w, theta, data = res
        w_flat, unravel = ravel_pytree(w)
        b, _ = ravel_pytree(w_bar)

        def F_flat(x):
            return ravel_pytree(optimality_fn(unravel(x), theta, data))[0]

        _, vjp_w = jax.vjp(F_flat, w_flat)
        v = linear_solve(lambda u: vjp_w(u)[0], b)
        _, vjp_td = jax.vjp(lambda t, d: ravel_pytree(optimality_fn(w, t, d))[0], theta, data)
        t_bar, d_bar = vjp_td(-v)
        if not data_gradient:
            d_bar = jax.tree.map(_zero_cotangent, data)
        return t_bar, d_bar

    solution.defvjp(fwd, bwd)
    return solution


def ift_hypergradient(train_loss, val_loss, w, theta, linear_solve):
    """Approximate-IFT hypergradient dJ/dθ at weights ``w`` (module docstring).

    Args:
        train_loss, val_loss: ``(w, theta) -> scalar``.
        w: inner weights (ideally a stationary point of train_loss; otherwise approximate).
        theta: hyperparameters (pytree).
        linear_solve: ``(matvec, b) -> x`` with matvec the training-loss Hessian-vector product
            on flat vectors (e.g. ``functools.partial(cg_solve, iterations=50, damping=1e-3)``),
            or a list of them: then a list of hypergradients is returned, sharing the gradients
            and one (vmapped) mixed-derivative product, so comparing solvers costs little more
            than one of them.

    Returns:
        pytree like theta (a list of them for a list of solvers).
    """
    w_flat, unravel = ravel_pytree(w)
    g_w, g_theta = jax.grad(val_loss, argnums=(0, 1))(w, theta)
    b, _ = ravel_pytree(g_w)

    def grad_w_flat(x, t):
        return ravel_pytree(jax.grad(train_loss)(unravel(x), t))[0]

    def matvec(u):
        return jax.jvp(lambda x: grad_w_flat(x, theta), (w_flat,), (u,))[1]

    many = isinstance(linear_solve, (list, tuple))
    solvers = list(linear_solve) if many else [linear_solve]
    V = jnp.stack([solve(matvec, b) for solve in solvers])
    _, vjp_t = jax.vjp(lambda t: grad_w_flat(w_flat, t), theta)
    mixed = jax.vmap(lambda v: vjp_t(v)[0])(V)
    out = [jax.tree.map(lambda a, m, k=k: a - m[k], g_theta, mixed) for k in range(len(solvers))]
    return out if many else out[0]
