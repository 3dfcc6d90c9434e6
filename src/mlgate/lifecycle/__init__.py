"""Model lifecycle (issue 16): train a recipe, judge the candidate against the version an alias
points at on the same held-out rows, register it, promote it only when the improvement is real.

- :mod:`mlgate.lifecycle.recipes`: the recipe interface (``TrainResult``) and the built-in recipes;
- :mod:`mlgate.lifecycle.gate`: the statistical promotion gate (paired bootstrap, McNemar,
  guardrails) and its report (``gate.json``);
- :mod:`mlgate.lifecycle.train`: the orchestration over a running server (``mlgate train``).

Nothing here is imported by the server; scikit-learn, SciPy and the recipes' libraries are
imported only when a recipe or a test runs.
"""
