"""The chaos suite of issue #13: faults production brings, against real `conveyor` processes.

Run it with ``make chaos`` (``python -m chaos.run``). The building blocks, each its own
module: `proxy` (a TCP proxy that cuts or partitions the database), `pgcluster` (a private
PostgreSQL cluster the suite starts, restarts and removes), `handlers` (job types that record
every execution to a file), `fleet` (the processes, the API client and the submitter),
`verdict` (Jepsen's total-queue check on those records) and `scenarios` (each fault, one row
of the table).
"""
