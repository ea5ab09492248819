"""Train/validation/test splits: seeded random, per system, or from index files.

A `Split` holds sorted 0-based structure indices of each part; it round-trips through a plain
dict (`Split.to_dict`/`Split.from_dict`) for the checkpoint's data-split record.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

__all__ = ["Split", "random_split", "per_system_split", "split_from_files", "read_indices", "system_keys",
           "make_split"]


@dataclasses.dataclass(frozen=True)
class Split:
    """Indices (sorted int arrays) of the training, validation and test structures."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def __post_init__(self):
        for name in ("train", "validation", "test"):
            object.__setattr__(self, name, np.sort(np.asarray(getattr(self, name), dtype=np.int64)))
        parts = np.concatenate([self.train, self.validation, self.test])
        if len(np.unique(parts)) != len(parts):
            raise ValueError("train, validation and test indices overlap (or repeat)")

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("train", "validation", "test")}

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        return cls(np.asarray(d.get("train", []), np.int64), np.asarray(d.get("validation", []), np.int64),
                   np.asarray(d.get("test", []), np.int64))

    def apply(self, dataset):
        """(train, validation, test) subsets of ``dataset`` (a `Dataset` or a list)."""
        if hasattr(dataset, "structures"):
            return dataset[self.train], dataset[self.validation], dataset[self.test]
        return tuple([dataset[int(i)] for i in idx] for idx in (self.train, self.validation, self.test))


def _counts(n: int, validation: float, test: float) -> tuple[int, int]:
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise ValueError(f"need 0 <= validation, test and validation + test < 1, got {validation}, {test}")
    n_val = int(round(validation * n))
    n_test = int(round(test * n))
    if n_val + n_test >= n and n > 0:   # always keep at least one training structure
        excess = n_val + n_test - (n - 1)
        cut_test = min(n_test, excess)
        n_test -= cut_test
        n_val -= excess - cut_test
    return n_val, n_test


def random_split(n: int, validation: float = 0.1, test: float = 0.1, seed: int = 0) -> Split:
    """Random split of n structures: round(validation·n) validation, round(test·n) test, the
    rest training (at least one), reproducible from ``seed``."""
    n_val, n_test = _counts(n, validation, test)
    perm = np.random.default_rng(seed).permutation(n)
    return Split(perm[n_val + n_test:], perm[:n_val], perm[n_val:n_val + n_test])


def per_system_split(systems, validation: float = 0.1, test: float = 0.1, seed: int = 0) -> Split:
    """Split each system (structures with equal key in ``systems``) separately with the same
    fractions, so every system is represented in every part it is large enough for."""
    train, val, tst = [], [], []
    for k_idx, members in enumerate(_system_members(systems)):
        sub = random_split(len(members), validation, test, seed=[int(seed), k_idx])
        train.append(members[sub.train])
        val.append(members[sub.validation])
        tst.append(members[sub.test])
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)
    return Split(cat(train), cat(val), cat(tst))


def _system_members(systems) -> list[np.ndarray]:
    """Indices of the structures of each system (equal keys in ``systems``), systems in key order."""
    systems = list(systems)
    return [np.array([i for i, s in enumerate(systems) if s == key], np.int64)
            for key in sorted(set(systems), key=str)]


def read_indices(path) -> np.ndarray:
    """0-based integer indices, one per line (blank lines and ``#`` comments ignored)."""
    out = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            out.extend(int(tok) for tok in line.split())
        except ValueError:
            raise ValueError(f"{path}, line {lineno}: expected integer indices, got {line!r}") from None
    return np.asarray(out, np.int64)


def split_from_files(train=None, validation=None, test=None, n: int | None = None) -> Split:
    """A split from index files; with ``n`` given, a missing training file means "all the rest"
    and indices are checked against n (`make_split` with index sets and zero fractions)."""
    if n is None:
        if not train:
            raise ValueError("need the training index file or the number of structures n")
        empty = np.zeros(0, np.int64)
        return Split(read_indices(train), *(read_indices(f) if f else empty for f in (validation, test)))
    return make_split(range(n), validation=0.0, test=0.0, train_indices=train or None,
                      validation_indices=validation or None, test_indices=test or None)


def system_keys(dataset) -> list[str]:
    """System key of each structure: its source file (``"<memory>"`` if it has none)."""
    return [s.source or "<memory>" for s in dataset]


def _as_indices(x):
    """None, an index array/list, or a path to an index file (`read_indices`)."""
    if x is None:
        return None
    if isinstance(x, (str, Path)):
        return read_indices(x)
    return np.asarray(x, np.int64).reshape(-1)


def make_split(dataset, *, validation: float = 0.1, test: float = 0.1, seed: int = 0,
               per_system: bool = False, train_indices=None, validation_indices=None,
               test_indices=None) -> Split:
    """The split of ``dataset``: random (per system when ``per_system``, systems keyed by
    `system_keys`), or partly or wholly fixed by index sets.

    ``*_indices``: 0-based indices (array, list, or a path to an index file) fixing that part.
    With ``train_indices`` the split is exactly the given sets (missing ones empty). Without it,
    a validation or test part not given is drawn at random (``seed``) from the structures outside
    the given sets, ``validation`` / ``test`` being fractions of the whole data set, and the
    training part is all the rest — e.g. a published test set with a random validation part.
    With ``per_system`` those parts are drawn within each system (fractions of its size).
    """
    n = len(dataset)
    fixed = {"train": _as_indices(train_indices), "validation": _as_indices(validation_indices),
             "test": _as_indices(test_indices)}
    if all(v is None for v in fixed.values()):
        if per_system:
            return per_system_split(system_keys(dataset), validation, test, seed)
        return random_split(n, validation, test, seed)
    for name, idx in fixed.items():
        if idx is not None and len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{name} indices out of range for {n} structures "
                             f"(got {int(idx.min())}..{int(idx.max())})")
    if fixed["train"] is not None:
        empty = np.zeros(0, np.int64)
        return Split(fixed["train"], *(empty if fixed[k] is None else fixed[k] for k in ("validation", "test")))
    given = np.concatenate([v for v in fixed.values() if v is not None])
    if per_system:   # draw the missing parts within each system, fractions of the system's size
        groups = [(m, [int(seed), k]) for k, m in enumerate(_system_members(system_keys(dataset)))]
    else:
        groups = [(np.arange(n), seed)]
    parts = {"train": [], "validation": [], "test": []}
    for members, group_seed in groups:
        rest = np.setdiff1d(members, given)
        rest = rest[np.random.default_rng(group_seed).permutation(len(rest))]
        for name, fraction in (("validation", validation), ("test", test)):
            if fixed[name] is None:
                k = min(int(round(fraction * len(members))), max(len(rest) - 1, 0))
                parts[name].append(rest[:k])
                rest = rest[k:]
        parts["train"].append(rest)
    for name in ("validation", "test"):
        if fixed[name] is not None:
            parts[name] = [fixed[name]]
    return Split(*(np.concatenate(parts[k]) for k in ("train", "validation", "test")))
