"""Peer benchmarks: one module per system, each with `run(scenario, n=..., procs=..., ...) -> dict`.

Run with the bench venv: `python -m bench.peers <system> <scenario> [--n N] [--procs P]`.
"""

SYSTEMS = ("raw_sqlite", "raw_pg", "huey", "django_q2", "django_tasks_db", "procrastinate")
