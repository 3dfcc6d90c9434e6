"""Monitoring: data capture, baselines and drift, alert rules (docs/monitoring.md).

- :mod:`~mlgate.monitoring.capture` — a sampled copy of requests and answers, queued (bounded,
  drops counted) and written off the request path to the store in SageMaker Data Capture format,
  ``capture/<model>/<version>/YYYY/MM/DD/HH/<file>.jsonl`` (workflow executions kept for review:
  ``review/<workflow>/…``); per-model sample, redaction, retention. Split into
  :mod:`~mlgate.monitoring.capture_format` (record, redaction), :mod:`~mlgate.monitoring.capture_read`
  (partitions, readers) and :mod:`~mlgate.monitoring.capture_settings`; all re-exported.
- :mod:`~mlgate.monitoring.baseline`, :mod:`~mlgate.monitoring.features`,
  :mod:`~mlgate.monitoring.drift` — baseline statistics per version (SageMaker-shaped
  ``statistics.json``/``constraints.json``), the features of captured records, PSI / KS / chi²
  and output drift (numpy + scipy); :mod:`~mlgate.monitoring.monitor` runs evaluations on
  demand and on a schedule, writes reports to the store and the ``drift_latest`` figures.
- :mod:`~mlgate.monitoring.share` (every process's metric samples in the database),
  :mod:`~mlgate.monitoring.promql` (the supported PromQL subset: the evaluator; split into
  :mod:`~mlgate.monitoring.promql_ast` (the expression tree) and
  :mod:`~mlgate.monitoring.promql_parse` (tokenizer, parser, subset checks); all re-exported),
  :mod:`~mlgate.monitoring.rules` (rule files, the defaults, annotation templates, YAML export),
  :mod:`~mlgate.monitoring.alerts` (the engine: Prometheus states, one evaluator by
  :mod:`~mlgate.monitoring.lease`, stored states and events; with
  :mod:`~mlgate.monitoring.alert_instances` and :mod:`~mlgate.monitoring.sample_history`) and
  :mod:`~mlgate.monitoring.notify` (log, Alertmanager webhook v4, Alertmanager's API).
"""
