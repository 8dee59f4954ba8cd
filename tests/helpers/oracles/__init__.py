"""Plain, slow, obviously-correct reference implementations ("oracles") of GAS and the
baselines, written straight from the spec (../shared/spec/algorithms.md), one event at a time.
Helper modules for tests/test_oracle_*.py (not test modules themselves)."""
