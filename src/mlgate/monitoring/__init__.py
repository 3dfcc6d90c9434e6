"""Monitoring: data capture, baselines and drift, alert rules (docs/monitoring.md).

- :mod:`~mlgate.monitoring.capture` — a sampled copy of requests and answers, queued (bounded,
  drops counted) and written off the request path to the store in SageMaker Data Capture format,
  ``capture/<model>/<version>/YYYY/MM/DD/HH/<file>.jsonl``; per-model sample, redaction, retention.
- :mod:`~mlgate.monitoring.baseline`, :mod:`~mlgate.monitoring.features`,
  :mod:`~mlgate.monitoring.drift` — baseline statistics per version (SageMaker-shaped
  ``statistics.json``/``constraints.json``), the features of captured records, PSI / KS / chi²
  and output drift (numpy + scipy); :mod:`~mlgate.monitoring.monitor` runs evaluations on
  demand and on a schedule, writes reports to the store and the ``drift_latest`` figures.
- :mod:`~mlgate.monitoring.share` (every process's metric samples in the database),
  :mod:`~mlgate.monitoring.promql` (the supported PromQL subset), :mod:`~mlgate.monitoring.alerts`
  (rules, Prometheus states, one evaluator by :mod:`~mlgate.monitoring.lease`) and
  :mod:`~mlgate.monitoring.notify` (log, Alertmanager webhook v4, Alertmanager's API).
"""
