"""Benchmarks: raw Celery no-op ceiling vs orderfleet end to end (never part of the tests).

`python -m bench` (or `make bench`) measures, in one run on the same servers and with the same
number of worker processes:

  (a) the drain rate of a raw no-op Celery task (bench/noop_app.py): the broker + Celery ceiling;
  (b) orderfleet end to end: the drain rate of a pre-enqueued backlog over a fixed window,
      publish->commit latency, worker CPU and peak RSS, conflicts and duplicates;
  (c) publish->commit latency at a fixed offered load below the measured capacity.

Results are printed as a table and written to bench/results/<timestamp>.json.
"""
