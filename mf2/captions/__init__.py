"""Captions (paper §II-A, Appendix A-C): AU, emotion and key-AU descriptions per face, from an
offline template captioner or any OpenAI-compatible model."""

CAPTION_TYPES = ("au", "emotion", "key_au")
COLUMN = {"au": "caption_au", "emotion": "caption_emotion", "key_au": "caption_key_au"}
# Table VI caps (tokens): AU 169, emotion 61; the paper gives none for key-AU captions.
TOKEN_CAPS = {"au": 169, "emotion": 61, "key_au": 169}
