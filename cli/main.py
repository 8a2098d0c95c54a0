"""Entry point of the ``mf2`` command."""

import os

import click

from mf2._version import __version__

# Text lengths change tensor shapes from step to step; expandable segments keep CUDA's caching
# allocator from fragmenting over a long run. Set before anything touches CUDA; a user's own
# PYTORCH_CUDA_ALLOC_CONF wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

from ._common import stop_on_sigterm
from .build_dataset import build_dataset
from .caption import caption
from .evaluate import evaluate
from .export import export
from .extract_features import extract_features
from .finetune import finetune
from .info import info
from .predict import predict
from .pretrain import pretrain
from .quickstart import quickstart
from .synth import synth


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mf2")
def main():
    """mf2: facial Action Units and emotions with the MF² vision-language model."""
    stop_on_sigterm()


for command in (quickstart, synth, build_dataset, caption, extract_features, pretrain, finetune, evaluate, predict,
                export, info):
    main.add_command(command)

if __name__ == "__main__":
    main()
