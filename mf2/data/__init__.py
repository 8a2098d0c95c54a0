"""Data: the label vocabulary, manifests, SynthFACS, the Aff-Wild2/ABAW reader and the MFA builder."""
