"""Measured speed and memory of ULSAD (run the scripts from the repository root, see docs/speed.md)."""
