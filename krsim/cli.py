"""kube-router-sim: a simulated Kubernetes cluster in network namespaces on this machine."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import sys

import click

SCENARIOS = pathlib.Path(__file__).resolve().parent / "scenarios"
EXIT_FAILED, EXIT_INVALID = 1, 2


class Stopped(BaseException):
    """SIGINT or SIGTERM: unwind so every namespace and process is removed."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum, _frame):
    # The first signal unwinds; teardown itself must not be interrupted again.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Stopped(signum)


def stoppable(body) -> int:
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _raise_stopped)
    try:
        return body()
    except Stopped as stop:
        click.echo(f"stopped by {stop}; everything created was removed", err=True)
        return 128 + stop.signum


def _require_root() -> None:
    if os.geteuid() != 0:
        raise click.ClickException("the simulation creates network namespaces: run it as root")


def find_scenario(name: str) -> pathlib.Path:
    """A path, or the name of a built-in scenario (``two-nodes``)."""
    path = pathlib.Path(name)
    if path.is_file():
        return path
    builtin = SCENARIOS / f"{name.removesuffix('.yaml')}.yaml"
    if builtin.is_file():
        return builtin
    known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.yaml")))
    raise click.ClickException(f"no scenario file {name} (built-in scenarios: {known})")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """A real cluster on this machine: nodes and pods are network namespaces."""


@cli.command()
def demo() -> None:
    """Build a two-node cluster, create pods with our CNI plugins, probe it, tear it down."""
    _require_root()
    from krsim.demo import demo as run_demo
    sys.exit(stoppable(lambda: run_demo(click.echo)))


@cli.command()
@click.argument("scenario")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write the results as JSON to this file.")
@click.option("--vm", is_flag=True,
              help="Run in a Debian-kernel VM (tests/vm/run): IPVS for the service proxy.")
def run(scenario: str, json_path: str | None, vm: bool) -> None:
    """Play SCENARIO (a YAML file or a built-in name); exit 0 when every expectation holds."""
    from krsim import vm as vmrun
    from krsim.scenario import ScenarioError, load_scenario

    path = find_scenario(scenario)
    try:
        parsed = load_scenario(path.read_text(), path.stem)
    except ScenarioError as exc:
        click.echo(f"kube-router-sim: scenario {path}: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    if vm:
        args = ["run", str(path.resolve())]
        if json_path:
            if vmrun.outside_cwd(json_path):
                raise click.ClickException("--json with --vm must be under the current "
                                           "directory (the only one the VM writes back)")
            args += ["--json", os.path.abspath(json_path)]
        sys.exit(vmrun.rerun_in_vm(args))
    _require_root()
    if parsed.services_probed and not vmrun.ipvs_available():
        click.echo(vmrun.IPVS_NOTE)
    sys.exit(stoppable(lambda: _play(parsed, json_path)))


def _play(parsed, json_path: str | None) -> int:
    from krsim.harness import SettleError, play

    try:
        ok, _, report = play(parsed, click.echo, color=sys.stdout.isatty())
    except SettleError as exc:
        click.echo(f"kube-router-sim: {exc}", err=True)
        ok, report = False, {"ok": False, "error": str(exc), "steps": []}
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    click.echo("== " + ("every expectation held" if ok else "FAILED: not every expectation held"))
    return 0 if ok else EXIT_FAILED


def main() -> int:
    return cli()


if __name__ == "__main__":
    sys.exit(main())
