"""Tuning every arm of a comparison with the same budget, on validation (launch/tune.py).

`tuned` is what a sweep reads (light: no Ray); `space` the search space and budgets; `search` runs
Ray Tune (Optuna and ASHA) row by row; `report` writes what was tuned and how the search converged.
"""
