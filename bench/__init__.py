"""Benchmarks: raw Celery no-op ceiling vs orderfleet end to end (never part of the tests).

`python -m bench` (or `make bench`) measures, in one run on the same servers and with the same
number of worker processes:

  (a) the drain rate of a raw no-op Celery task (bench/noop_app.py): the broker + Celery ceiling;
  (b) orderfleet draining a pre-enqueued backlog over a fixed window (30 % re-deliveries):
      b1 per-event messages unbatched (ORDERFLEET_BATCHING=false), b2 per-event batched, b3 bulk
      messages; events/s and the ratio to (a) of the same run, worker CPU and peak RSS;
  (c) publish->commit latency at half of b2's rate (bench/fleet.py);
  (d) the producer from one process: publish_many bulk and per event vs a raw send_task loop
      (bench/publishing.py);
  (e) with --orders-in-store N: b2 with 10,000 and N orders pre-filled by SQL (bench/store.py);
and (a), b2 and b3 again on RabbitMQ, in a virtual host of the run's own (bench/rabbit_server.py,
bench/brokers.py), each as a ratio to the RabbitMQ no-op of the same run (--brokers chooses).

Results are printed as tables and written to bench/results/<timestamp>.json.
"""
