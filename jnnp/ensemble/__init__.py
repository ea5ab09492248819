"""Vectorised sweeps and committees: M networks trained and evaluated in one compiled program.

* `jnnp.ensemble.members`: member hyperparameters (seed, learning rate, loss weights, data subset)
  and their stacked, normalised initial parameters;
* `jnnp.ensemble.train`: `jax.vmap`-ed training of all members over one batch stream;
* `jnnp.ensemble.sweep`: ``jnnp sweep CONFIG.yaml`` (table and plot of validation errors);
* `jnnp.ensemble.committee`: `Committee` mean/std of energy, forces and atomic energies, the mean
  as one potential, MD disagreement observables, save/load;
* `jnnp.ensemble.select`: query by committee (the K most uncertain frames, written for DFT);
* `jnnp.ensemble.workflow`: ``jnnp committee CONFIG.yaml``.
"""

from jnnp.ensemble.committee import (Committee, committee_compute, committee_observables, committee_predict,
                                     is_committee_dir, load_committee, mean_potential, save_committee)
from jnnp.ensemble.members import Member, init_members, member_arrays, member_grid, subset_masks
from jnnp.ensemble.select import Selection, query_by_committee, select_top_k, write_selection
from jnnp.ensemble.train import MemberHistory, make_vmapped_train_step, train_members

__all__ = ["Committee", "committee_compute", "committee_observables", "committee_predict", "is_committee_dir",
           "load_committee", "mean_potential", "save_committee", "Member", "init_members", "member_arrays",
           "member_grid", "subset_masks", "Selection", "query_by_committee", "select_top_k", "write_selection",
           "MemberHistory", "make_vmapped_train_step", "train_members"]
