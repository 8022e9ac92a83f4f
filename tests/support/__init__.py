"""Test support: builders of tiny catalogs, synthetic data and random-weight checkpoints (not product code)."""
