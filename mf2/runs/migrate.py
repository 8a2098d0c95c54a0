"""Runs, exports and checkpoints written by earlier versions of mf2, read as this version reads
them: the one place that knows what each version lacked and what its runs were trained with.

A config.json carries ``schema`` (``SCHEMA_VERSION`` when written by this version; runs written
before it was recorded are version 1). ``migrate_config`` brings any earlier config to this
version's shape; ``migrate_state`` does the same for a checkpoint's tensor names. Every step says
which runs it is for. A config from a newer mf2 is refused (its fields cannot be known here).
"""

from __future__ import annotations

import copy

SCHEMA_VERSION = 2


class SchemaError(ValueError):
    """A run written by a newer mf2, as one line."""


def migrate_config(config: dict, path="config.json") -> dict:
    """A copy of ``config`` (a run's or an exported folder's) as this version reads it."""
    c = copy.deepcopy(config)
    version = c.get("schema", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SchemaError(f"{path}: schema: expected a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise SchemaError(f"{path}: written by a newer mf2 (run schema {version}; this mf2 reads up to "
                          f"{SCHEMA_VERSION}): upgrade mf2 to use it")
    # runs from before the kind was recorded are MF² runs
    c.setdefault("kind", "mf2")
    model = c.get("model")
    # runs from before MF2Config.emotion_reads: the emotion head read Emo-VL alone
    if isinstance(model, dict) and "emotion_reads" not in model:
        model["emotion_reads"] = "global"
    train = c.get("train")
    # runs from before AU weighting trained with plain BCE (and resume so)
    if isinstance(train, dict) and "au_weighting" not in train:
        train["au_weighting"] = "none"
    # runs from before TrainConfig.average_epochs kept the weights as trained (and resume so)
    if isinstance(train, dict) and "average_epochs" not in train:
        train["average_epochs"] = 0.0
    # DFN runs from before best-epoch checkpoints were trained on their base run's latest
    if c["kind"] == "dfn" and "base_checkpoint" not in c:
        c["base_checkpoint"] = "latest"
    c["schema"] = SCHEMA_VERSION
    c["written_schema"] = c.get("written_schema", version)  # what it was written as (checkpoint records since 2)
    return c


def migrate_state(state: dict) -> dict:
    """A checkpoint's tensors under this version's names. Checkpoints written before the attention
    projections were fused held ``q``/``k``/``v`` (cross-attention ``k``/``v``) as separate
    Linears: they are concatenated into ``qkv`` (``kv``), in that order. Works on meta tensors
    too (the shapes of a file's header, checked before anything is loaded)."""
    import torch

    out = dict(state)
    for key in list(out):
        for attention, parts, fused in ((".self_attn.", ("q", "k", "v"), "qkv"), (".cross_attn.", ("k", "v"), "kv")):
            for kind in ("weight", "bias"):
                first = f"{attention}{parts[0]}.{kind}"
                if not key.endswith(first) or key not in out:
                    continue
                prefix = key[: -len(first)] + attention
                keys = [f"{prefix}{p}.{kind}" for p in parts]
                if all(k in out for k in keys):
                    out[f"{prefix}{fused}.{kind}"] = torch.cat([out.pop(k) for k in keys], 0)
    return out
