"""The test suite (pytest); tests/support/ holds its builders, tests/conftest.py its fixtures."""
