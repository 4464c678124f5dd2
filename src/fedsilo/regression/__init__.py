"""Regression mathematics shared by the glm and linear_inference packages.

* :mod:`fedsilo.regression.families` -- GLM families and links: deviance, variance and the
  per-row terms of Newton / IRLS;
* :mod:`fedsilo.regression.newton` -- the federated Newton statistics each silo sums, and
  the server's (batched, proximal) Newton step on their totals.

Packages import these modules, never each other: glm's exact fit and linear_inference's
bundle of fits are two workflows over the same mathematics (as scikit-learn's ``_loss``
serves both its GLMs and its gradient boosting).
"""
