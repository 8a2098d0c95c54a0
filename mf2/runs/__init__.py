"""Run folders (everything ``mf2 pretrain`` and ``mf2 finetune`` write) and loading a trained model
back: ``folder`` (the layout, configs, logs, checkpoint pointers, the guard every trainer
passes), ``migrate`` (runs of earlier versions: one schema version and one ``migrate_config``),
``load`` (a model by kind, its weights checked against its config and its SHA256SUMS)."""

from mf2.runs.folder import (KINDS, REMEDY, RunError, RunFolder, dfn_config, model_config,  # noqa: F401
                             typed_section)
from mf2.runs.load import IMAGE_FIELDS, TEXT_FIELDS, check_features, fit_weights, load_model, model_kind  # noqa: F401
from mf2.runs.migrate import SCHEMA_VERSION, migrate_config, migrate_state  # noqa: F401
