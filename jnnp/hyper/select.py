"""Unsupervised selection of symmetry functions from a large pool: CUR and farthest points.

After Imbalzano, Anelli, Giofré, Klees, Behler & Ceriotti, J. Chem. Phys. 148, 241730 (2018):
per central element c, the feature matrix X_c (rows: the atoms of element c in a data set,
columns: the candidate functions) is standardised column-wise, and n_c columns are chosen:

* **CUR** (deterministic, with orthogonalisation, as scikit-matter's ``FeatureCUR``): repeatedly
  take the column with the largest leverage score on the leading right singular vector of the
  *residual* matrix, then project that column out of every column. Each pick explains the most
  of what the previous picks left unexplained.
* **FPS** (farthest-point sampling on the columns): start from the column farthest from the
  centroid of all columns, then repeatedly add the column whose smallest distance to the chosen
  ones is largest. For standardised columns d² = 2 n (1 − corr), so FPS prefers the least
  correlated functions.

Columns that are constant on the data (e.g. an O–O function in a molecule with one O) carry no
information; they are chosen only after every non-constant column.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors.compute import make_descriptor_fn
from jnnp.descriptors.params import init_descriptor_params
from jnnp.descriptors.spec import DescriptorSpec
from jnnp.train.batch import Batcher

__all__ = ["SELECTORS", "cur_select", "feature_matrix", "fps_select", "select_functions", "standardize"]


@functools.lru_cache(maxsize=8)
def _descriptor_batch_fn(spec: DescriptorSpec):
    dfn = make_descriptor_fn(spec)

    @jax.jit
    def fn(params, batch):
        pos = jnp.asarray(batch.positions)
        g = batch.graph.replace(pair_shift=jnp.asarray(batch.graph.pair_shift, pos.dtype))
        return dfn(params, pos, jnp.eye(3, dtype=pos.dtype), g)

    return fn


def feature_matrix(spec: DescriptorSpec, structures, batch_size: int = 16) -> tuple[np.ndarray, ...]:
    """Per element c, the (n_atoms_c, n_c) unscaled symmetry functions of every atom of element
    c in ``structures`` (float64, rows in structure order)."""
    structures = list(structures)
    batcher = Batcher(spec, structures, batch_size)
    fn = _descriptor_batch_fn(spec)
    params = init_descriptor_params(spec)
    rows = [[] for _ in spec.elements]
    for batch in batcher.batches():
        G = fn(params, batch)
        for c, Gc in enumerate(G):
            rows[c].append(np.asarray(Gc, np.float64)[np.asarray(batch.graph.element_mask[c])])
    return tuple(np.concatenate(r) if r else np.zeros((0, n)) for r, n in zip(rows, spec.n_features))


def standardize(X: np.ndarray, rtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """(columns centred and scaled to unit variance, mask of non-constant columns); a column
    whose standard deviation is ≤ rtol · (largest) is constant and set to zero."""
    X = np.asarray(X, np.float64)
    Xc = X - X.mean(0)
    sd = Xc.std(0)
    ok = sd > rtol * max(float(sd.max(initial=0.0)), 1e-300)
    return np.where(ok, Xc / np.where(ok, sd, 1.0), 0.0), ok


def _fill(selected: list[int], k: int, order) -> list[int]:
    for j in order:
        if len(selected) >= k:
            break
        if j not in selected:
            selected.append(int(j))
    return selected


def cur_select(X: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` columns of X chosen by CUR with orthogonalisation (module docstring),
    in the order chosen."""
    Z, ok = standardize(X)
    k = min(int(k), X.shape[1])
    selected: list[int] = []
    scale = np.linalg.norm(Z)
    while len(selected) < min(k, int(ok.sum())):
        if np.linalg.norm(Z) <= 1e-10 * scale:   # the chosen columns span all the others
            break
        _, _, vt = np.linalg.svd(Z, full_matrices=False)
        score = vt[0] ** 2
        score[selected] = -1.0
        score[~ok] = -1.0
        j = int(np.argmax(score))
        selected.append(j)
        v = Z[:, j] / np.linalg.norm(Z[:, j])
        Z = Z - np.outer(v, v @ Z)
    # the rest (span exhausted, or constant columns): by decreasing original spread
    return _fill(selected, k, np.argsort(-np.asarray(X, np.float64).std(0), kind="stable"))


def fps_select(X: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` columns of X chosen by farthest-point sampling (module docstring)."""
    Z, ok = standardize(X)
    k = min(int(k), X.shape[1])
    cand = np.flatnonzero(ok)
    if not cand.size:
        return _fill([], k, range(X.shape[1]))
    P = Z[:, cand].T                                  # one point per candidate column
    first = int(np.argmax(np.linalg.norm(P - P.mean(0), axis=1)))
    chosen = [first]
    dmin = np.linalg.norm(P - P[first], axis=1)
    while len(chosen) < min(k, len(cand)):
        dmin[chosen] = -1.0
        j = int(np.argmax(dmin))
        chosen.append(j)
        dmin = np.minimum(dmin, np.linalg.norm(P - P[j], axis=1))
    return _fill([int(cand[j]) for j in chosen], k, range(X.shape[1]))


SELECTORS = {"cur": cur_select, "fps": fps_select}


def select_functions(spec: DescriptorSpec, features, n_per_element, method: str = "cur"
                     ) -> tuple[DescriptorSpec, tuple[list[int], ...]]:
    """A smaller `DescriptorSpec` with ``n_per_element`` functions per element chosen from
    ``spec`` (the pool) by ``method`` ("cur" or "fps").

    Args:
        spec: the pool.
        features: per element, the (n_atoms_c, n_c) matrix of `feature_matrix`.
        n_per_element: int (same for every element) or one int per element.

    Returns:
        (new spec in n2p2 order, per element the chosen pool column indices in selection order).
    """
    if method not in SELECTORS:
        raise ValueError(f"unknown selection method {method!r}; expected one of {sorted(SELECTORS)}")
    n = ([int(n_per_element)] * len(spec.elements) if np.isscalar(n_per_element)
         else [int(x) for x in n_per_element])
    if len(n) != len(spec.elements) or len(features) != len(spec.elements):
        raise ValueError(f"need one count and one feature matrix per element {spec.elements}")
    picks, funcs = [], []
    for c, (X, k) in enumerate(zip(features, n)):
        if X.shape[1] != spec.n_features[c]:
            raise ValueError(f"element Z={spec.elements[c]}: feature matrix has {X.shape[1]} columns, the pool "
                             f"{spec.n_features[c]} functions")
        if k > X.shape[1]:
            raise ValueError(f"element Z={spec.elements[c]}: cannot select {k} of {X.shape[1]} pool functions")
        if X.shape[0] == 0:
            raise ValueError(f"element Z={spec.elements[c]}: no atoms of this element in the data")
        idx = SELECTORS[method](X, k)
        picks.append(idx)
        funcs += [spec.functions[c][j] for j in idx]
    new = DescriptorSpec.from_functions(spec.elements, funcs, cutoff_type=spec.cutoff_type,
                                        cutoff_alpha=spec.cutoff_alpha)
    return new, tuple(picks)
