"""GRAM meta-learning (GRAM 3.3-3.4, Algorithm 1).

* ``regulator``: R_phi (Eq. 5-6), one per prompt tensor, identity-near or random init.
* ``gram``: inner adaptation (Eq. 7) and meta-gradients (Eq. 8-10), first or second order,
  on any functional loss ``loss_fn(params, batch)``; Fig. 3b's gradient alignment.
* ``trainer``: outer optimiser, exact-resume checkpoints, dvclive curves.
* ``tasks``: K_t-way tasks from the CHC topics/domains, written to WebDataset shards.
* ``adapters``: prompt learners as ``loss_fn``; task images as features or pixels.
* ``artifacts``: theta* / phi files for the downstream "+GRAM" rows.
"""
