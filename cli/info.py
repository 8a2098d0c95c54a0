"""``mf2 info``: versions, the native extension build, threads and CUDA devices."""

import json

import click


def _lines(d: dict, indent: int = 0):
    for key, value in d.items():
        if isinstance(value, dict):
            yield " " * indent + f"{key}:"
            yield from _lines(value, indent + 2)
        else:
            if isinstance(value, list):
                value = ", ".join(value) or "-"
            yield " " * indent + f"{key}: {value}"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(as_json):
    """Show versions, the native extension build (CPU / CUDA architectures) and devices."""
    from mf2.info import environment

    env = environment()
    click.echo(json.dumps(env, indent=2) if as_json else "\n".join(_lines(env)))
