"""Prediction on new images and videos: sources -> faces -> features in memory -> MF² (SPEC §9)."""
