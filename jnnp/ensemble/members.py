"""The members of a vectorised training run: their hyperparameters, data masks and start points.

A *member* is one network trained inside a `jax.vmap` over models (`jnnp.ensemble.train`). All
members share the potential spec (so the parameter pytrees can be stacked), the batch stream and
the optimiser *kind* and schedule shape; they differ in

* ``seed``: initial network weights (``init_potential(spec, PRNGKey(seed))``);
* ``learning_rate``: peak learning rate of the common schedule;
* ``force_weight``, ``energy_weight``: loss weights (`jnnp.train.loss.LossConfig` units);
* ``train_fraction``: a random subset of the training structures (seeded by ``subset_seed``,
  default ``seed``) that the member learns from. Structures outside it are masked out of the
  member's loss (0/1 masks, so every member sees the same padded batches; weighted bootstrap
  resampling is not offered).

Normalisation (`init_members`): symmetry-function scaling statistics and the energy unit come
from the whole training set and are shared by all members (the descriptor *ranges* of unlabelled
structures are no label leak, and a common scaling makes extrapolation checks of a committee
consistent); the per-element reference energies are fitted per member on its own subset, to the
energies minus those of its initial network (as `jnnp.train.normalize.normalize_potential` with
``center_network=True`` does for one model).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.model.potential import init_potential
from jnnp.train.normalize import normalize_potential
from jnnp.train.reference import composition_matrix

__all__ = ["HYPERPARAMETERS", "Member", "member_grid", "subset_masks", "member_arrays", "stack_trees",
           "unstack_tree", "init_members", "member_energies"]

HYPERPARAMETERS = ("seed", "learning_rate", "force_weight", "energy_weight", "train_fraction")


@dataclasses.dataclass(frozen=True)
class Member:
    """Hyperparameters of one member (module docstring); weights as in `LossConfig`."""

    seed: int = 0
    learning_rate: float = 1e-3
    force_weight: float = 10.0
    energy_weight: float = 1.0
    train_fraction: float = 1.0
    subset_seed: int | None = None

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.force_weight < 0 or self.energy_weight < 0:
            raise ValueError("loss weights must be >= 0")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def member_grid(base: Member, parameters: dict, mode: str = "grid") -> list[Member]:
    """Members varying ``parameters`` (name → list of values) around ``base``.

    ``mode="grid"``: the Cartesian product (first name varies slowest); ``"zip"``: the i-th value
    of every list together (all lists must have the same length).
    """
    bad = set(parameters) - set(HYPERPARAMETERS)
    if bad:
        raise ValueError(f"unknown sweep parameter(s) {sorted(bad)}; expected some of {HYPERPARAMETERS}")
    names = list(parameters)
    values = [list(parameters[n]) for n in names]
    if any(len(v) == 0 for v in values):
        raise ValueError("every swept parameter needs at least one value")
    if mode == "grid":
        combos = list(itertools.product(*values))
    elif mode == "zip":
        if len({len(v) for v in values}) > 1:
            raise ValueError("mode 'zip' needs equally long value lists, got "
                             + ", ".join(f"{n}: {len(v)}" for n, v in zip(names, values)))
        combos = list(zip(*values))
    else:
        raise ValueError(f"unknown sweep mode {mode!r}; expected 'grid' or 'zip'")
    cast = {"seed": int}
    return [dataclasses.replace(base, **{n: cast.get(n, float)(v) for n, v in zip(names, c)}) for c in combos]


def subset_masks(members, n_structures: int) -> np.ndarray:
    """(M, n) bool: which training structures each member learns from.

    Member k keeps ``round(train_fraction · n)`` (at least 1) structures, the first ones of a
    permutation seeded by its ``subset_seed`` (default: ``seed``); fraction 1 keeps all.
    """
    masks = np.ones((len(members), n_structures), bool)
    for k, m in enumerate(members):
        if m.train_fraction < 1.0:
            keep = max(1, round(m.train_fraction * n_structures))
            seed = m.seed if m.subset_seed is None else m.subset_seed
            perm = np.random.default_rng([int(seed), n_structures]).permutation(n_structures)
            masks[k] = False
            masks[k, perm[:keep]] = True
    return masks


def member_arrays(members, reference_lr: float, stress_weight: float = 0.0, dtype=np.float64) -> dict:
    """Per-member loss weights and learning-rate factors as (M,) arrays, the vmapped inputs of
    the train step: ``energy_weight``, ``force_weight``, ``stress_weight`` and ``lr_scale`` =
    learning_rate / ``reference_lr`` (the optimiser is built with ``reference_lr``; an optax
    update is linear in the learning rate, so scaling it gives the member's update)."""
    return {"energy_weight": np.array([m.energy_weight for m in members], dtype),
            "force_weight": np.array([m.force_weight for m in members], dtype),
            "stress_weight": np.full(len(members), stress_weight, dtype),
            "lr_scale": np.array([m.learning_rate / reference_lr for m in members], dtype)}


def stack_trees(trees):
    """Stack equal-structure pytrees along a new leading (member) axis."""
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def unstack_tree(tree, n: int | None = None) -> list:
    """The list of member pytrees of a stacked pytree (host numpy leaves)."""
    leaves = jax.tree.leaves(tree)
    n = leaves[0].shape[0] if n is None else n
    return [jax.tree.map(lambda x: np.asarray(x[k]), tree) for k in range(n)]


def init_members(spec, members, structures, *, masks=None, batcher=None, dtype=jnp.float64,
                 normalize: bool = True, energy_scale="auto", center_network: bool = True):
    """Stacked initial parameters (leading axis M) of ``members`` (module docstring).

    Args:
        spec: `PotentialSpec` shared by all members.
        members: sequence of `Member` (their ``seed`` gives the initial weights).
        structures: the training structures.
        masks: (M, n) bool subsets (default `subset_masks`).
        batcher: `jnnp.train.batch.Batcher` over ``structures`` (reused for the descriptor and
            energy passes); built if None.
        dtype: parameter dtype.
        normalize: fit scaling statistics, energy unit and reference energies (else keep the
            identity scaling, unit scale and zero shifts of `init_potential`).
        energy_scale: as ``scale`` of `normalize_potential`.
        center_network: fit each member's reference energies to E − its initial network energies.
    """
    from jnnp.train.batch import Batcher

    members = list(members)
    structures = list(structures)
    masks = subset_masks(members, len(structures)) if masks is None else np.asarray(masks, bool)
    pots = [init_potential(spec, jax.random.PRNGKey(int(m.seed)), dtype) for m in members]
    if not normalize:
        return stack_trees([p.params for p in pots])
    if batcher is None:
        batcher = Batcher(spec, structures, 32)
    base = normalize_potential(pots[0], structures, batcher=batcher, scale=energy_scale, center_network=False)
    params = []
    for p in pots:
        q = dict(p.params)
        q["scaling"], q["energy"] = base.params["scaling"], dict(base.params["energy"])
        params.append(q)
    stacked = stack_trees(params)
    labelled = np.array([s.energy is not None for s in structures])
    if not labelled.any():
        return stacked
    X = composition_matrix(structures, spec.elements)
    E = np.array([s.energy if s.energy is not None else np.nan for s in structures])
    if center_network:
        zero = dict(stacked)
        zero["energy"] = {"scale": stacked["energy"]["scale"], "shift": jnp.zeros_like(stacked["energy"]["shift"])}
        e_net = member_energies(spec, zero, batcher, len(structures))
    else:
        e_net = np.zeros((len(members), len(structures)))
    shifts = []
    for k in range(len(members)):
        rows = masks[k] & labelled
        if not rows.any():
            raise ValueError(f"member {k} has no labelled structure in its training subset")
        shifts.append(np.linalg.lstsq(X[rows], E[rows] - e_net[k, rows], rcond=None)[0])
    stacked = dict(stacked)
    stacked["energy"] = {"scale": stacked["energy"]["scale"],
                         "shift": jnp.asarray(np.stack(shifts), stacked["energy"]["shift"].dtype)}
    return stacked


@functools.lru_cache(maxsize=8)
def _vmapped_energy_fn(spec):
    from jnnp.train.batch import make_batch_energy_fn

    return jax.jit(jax.vmap(make_batch_energy_fn(spec), in_axes=(0, None)))


def member_energies(spec, stacked, batcher, n: int) -> np.ndarray:
    """(M, n) energies [eV] of every member (stacked parameters) on the n structures of ``batcher``."""
    fn = _vmapped_energy_fn(spec)
    M = jax.tree.leaves(stacked)[0].shape[0]
    out = np.zeros((M, n))
    for batch in batcher.batches():
        e = np.asarray(fn(stacked, batch), np.float64)
        ok = batch.structure_mask
        out[:, batch.index[ok]] = e[:, ok]
    return out
