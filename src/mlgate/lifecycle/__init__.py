"""Model lifecycle (issue 16): train a recipe, judge the candidate against the version an alias
points at on the same held-out rows, register it, promote it only when the improvement is real.

- :mod:`mlgate.lifecycle.recipes`: the recipe interface (``TrainResult``) and the built-in recipes;
- :mod:`mlgate.lifecycle.gate`: the statistical promotion gate (paired bootstrap, McNemar,
  guardrails) and its report (``gate.json``);
- :mod:`mlgate.lifecycle.train`: the orchestration over a running server (``mlgate train``);
- :mod:`mlgate.lifecycle.jobs`: runs as background jobs (a subprocess per run, ``POST /v1/train``;
  the request checks in :mod:`~mlgate.lifecycle.job_request`, the child in
  :mod:`~mlgate.lifecycle.job_child`);
- :mod:`mlgate.lifecycle.retrain`: retrain on drift (a model's policy, the alert subscriber);
- :mod:`mlgate.lifecycle.canary`: the rollout guard's rollback of a failing canary (the split
  itself: :mod:`mlgate.policies`, :mod:`mlgate.routing`, the dataplane);
- :mod:`mlgate.lifecycle.shadow`: shadow versions called after the answer; their comparison math
  in :mod:`~mlgate.lifecycle.shadow_compare`.

The server imports only the light modules (jobs, retrain, canary, shadow); scikit-learn, SciPy, torch and the
recipes' libraries are imported only when a recipe or a test runs (in a job, in its subprocess).
"""
