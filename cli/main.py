"""Entry point of the ``mf2`` command."""

import click

from mf2 import __version__

from .info import info


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mf2")
def main():
    """mf2: facial Action Units and emotions with the MF² vision-language model."""


main.add_command(info)

if __name__ == "__main__":
    main()
