"""Frozen features: faces -> landmarks -> vision backbone -> AU-region pooling -> text encoder
-> a resumable Zarr cache (SPEC §4)."""
