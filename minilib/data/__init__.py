"""Data: GLUE, calibration data in every form a user has it, synthetic toy data."""
