"""Vectorised sweeps and committees: M networks trained and evaluated in one compiled program.

* `jnnp.ensemble.members`: member hyperparameters (seed, learning rate, loss weights, data subset)
  and their stacked, normalised initial parameters;
* `jnnp.ensemble.train`: `jax.vmap`-ed training of all members over one batch stream.
"""

from jnnp.ensemble.members import Member, init_members, member_arrays, member_grid, subset_masks
from jnnp.ensemble.train import MemberHistory, make_vmapped_train_step, train_members

__all__ = ["Member", "init_members", "member_arrays", "member_grid", "subset_masks", "MemberHistory",
           "make_vmapped_train_step", "train_members"]
