"""Captions (paper §II-A, Appendix A-C): AU, emotion and key-AU descriptions per face, from an
offline template captioner or any OpenAI-compatible model. The caption vocabulary (types,
manifest columns, token caps) lives with the labels in ``mf2.data.labels``."""
