"""Benchmarks of ecl-persistence side by side with the raw drivers and peer layers.

Run ``python -m benchmarks --help`` (or ``nox -s bench``). Every workload runs
through every contender in one process, interleaved, for several rounds, on
one scratch database per backend; the report gives median operations per
second and each contender's ratio to the raw driver.
"""
