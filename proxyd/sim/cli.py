"""kube-router-sim: a simulated Kubernetes cluster in network namespaces on this machine."""
from __future__ import annotations

import os
import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """A real cluster on this machine: nodes and pods are network namespaces."""


@cli.command()
def demo() -> None:
    """Build a two-node cluster, create pods with our CNI plugins, probe it, tear it down."""
    if os.geteuid() != 0:
        raise click.ClickException("the simulation creates network namespaces: run it as root")
    from proxyd.sim.demo import demo as run_demo
    sys.exit(run_demo(click.echo))


def main() -> int:
    return cli()
