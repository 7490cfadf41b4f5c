"""kube-router-cni: generate, validate, update, install and show the CNI configuration."""
from __future__ import annotations

import functools
import sys

import click

from conf import defaults, fileio
from conf.build import build_conflist, render
from conf.errors import EXIT_INVALID, EXIT_UNUSABLE, ConfError
from conf.host import Host
from conf.settings import Setting, conf_options, resolve_mtu, resolve_options, \
    resolve_pod_cidrs, under_root
from conf.validate import validate_doc

PROG = "kube-router-cni"


class Cli(click.Group):
    """Turns ConfError into one line on stderr and its exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfError as exc:
            click.echo(f"{PROG}: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def origin(ctx: click.Context, name: str) -> str:
    source = ctx.get_parameter_source(name)
    param = next(p for p in ctx.command.params if p.name == name)
    if source == click.core.ParameterSource.COMMANDLINE:
        return f"flag {param.opts[-1]}"
    if source == click.core.ParameterSource.ENVIRONMENT:
        return f"env {param.envvar}"
    return "default"


def host_of(ctx: click.Context) -> Host:
    return ctx.obj if isinstance(ctx.obj, Host) else Host()


def stack(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


root_option = click.option("--root", type=click.Path(file_okay=False), default=None,
                           help="Prefix for every node path (the node's / mounted elsewhere).")
output_option = click.option(
    "--output", "-o", default=defaults.CONF_FILE, envvar=defaults.CONF_FILE_ENV,
    show_default=True, help=f"Configuration file (env {defaults.CONF_FILE_ENV}).")
pod_cidr_options = stack(
    click.option("--pod-cidr", multiple=True, metavar="CIDR",
                 help="Pod CIDR (repeat for dual-stack). Default: from the Node object."),
    click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None,
                 help="Kubeconfig to reach the API server with."),
    click.option("--master", default=None, help="API server URL (overrides the kubeconfig's)."),
    click.option("--node-name", default=None,
                 help="This node's name (default: env NODE_NAME, else the hostname)."),
)
mtu_options = stack(
    click.option("--mtu", type=click.IntRange(68, 65535), default=None,
                 help="MTU of the bridge and pod interfaces."),
    click.option("--auto-mtu/--no-auto-mtu", default=True, show_default=True,
                 help="Without --mtu, use the MTU of the default-route interface."),
)
layout_options = stack(
    click.option("--cni-version", type=click.Choice(defaults.CNI_VERSIONS),
                 default=defaults.CNI_VERSION, show_default=True),
    click.option("--network-name", default=defaults.NETWORK_NAME, show_default=True),
    click.option("--bridge-name", default=defaults.BRIDGE_NAME, show_default=True),
    click.option("--hairpin/--no-hairpin", default=True, show_default=True,
                 help="Let a pod reach itself through a service (hairpinMode)."),
    click.option("--host-port/--no-host-port", default=True, show_default=True,
                 help="hostPort support through the portmap plugin."),
    click.option("--ip-masq/--no-ip-masq", default=False, show_default=True,
                 help="Masquerade pod traffic leaving the node (bridge ipMasq)."),
    click.option("--data-dir", default=defaults.DATA_DIR, show_default=True,
                 help="host-local's IP allocation directory."),
    click.option("--plugins", type=click.Choice(sorted(defaults.PLUGIN_TYPES)), default="ours",
                 show_default=True,
                 help="ours: kube-router-bridge/...; reference: bridge/host-local/portmap."),
)
generate_options = stack(output_option, root_option, pod_cidr_options, mtu_options,
                         layout_options)


def refuse_invalid(doc: dict, what: str) -> None:
    problems = validate_doc(doc)
    if problems:
        raise ConfError(f"{what} would be invalid: " + "; ".join(map(str, problems)))


def generate_config(ctx: click.Context, params: dict, dry_run: bool = False) -> None:
    settings = resolve_options(params, functools.partial(origin, ctx), host_of(ctx))
    doc = build_conflist(conf_options(settings))
    refuse_invalid(doc, "the generated configuration")
    text = render(doc)
    if dry_run:
        click.echo(text, nl=False)
        return
    path = under_root(params["root"], params["output"])
    written = fileio.write_atomic(path, text.encode())
    click.echo(f"{'wrote' if written else 'unchanged'} {path}")


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Write, check and update kube-router's CNI configuration."""


@cli.command()
@generate_options
@click.option("--dry-run", is_flag=True, help="Print the JSON instead of writing it.")
@click.pass_context
def generate(ctx, dry_run, **params):
    """Write the CNI configuration (10-kuberouter.conflist)."""
    generate_config(ctx, params, dry_run)


@cli.command()
@click.argument("file", required=False, envvar=defaults.CONF_FILE_ENV,
                default=defaults.CONF_FILE)
@root_option
@click.option("--cni-bin-dir", default=defaults.CNI_BIN_DIR, show_default=True)
@click.option("--no-check-binaries", is_flag=True, help="Skip checking plugin executables.")
@click.pass_context
def validate(ctx, file, root, cni_bin_dir, no_check_binaries):
    """Check FILE against the schema, its CIDRs and the plugin executables."""
    path = under_root(root, file)
    doc = fileio.read_json(path)
    problems = validate_doc(doc, None if no_check_binaries else under_root(root, cni_bin_dir))
    for problem in problems:
        click.echo(f"{path}: {problem}", err=True)
    if problems:
        ctx.exit(EXIT_INVALID)
    click.echo(f"{path}: valid")


@cli.command()
@click.argument("file", required=False, envvar=defaults.CONF_FILE_ENV,
                default=defaults.CONF_FILE)
@root_option
@pod_cidr_options
@mtu_options
@click.option("--to-conflist", is_flag=True,
              help="Write a single-plugin .conf as a .conflist (next to it, or --output).")
@click.option("--output", "-o", default=None, help="Where --to-conflist writes.")
@click.option("--remove-old", is_flag=True, help="With --to-conflist: delete the old .conf.")
@click.pass_context
def update(ctx, file, root, to_conflist, output, remove_old, **params):
    """Add missing pod CIDRs and the MTU to an existing configuration, keeping the rest."""
    from conf.update import update_file

    host = host_of(ctx)
    path = under_root(root, file)
    fileio.read_json(path)  # an unusable file is reported before the API server is asked
    where = functools.partial(origin, ctx)
    cidrs = resolve_pod_cidrs(params, where, host).value
    mtu = resolve_mtu(params, where, host).value
    result = update_file(path, cidrs, mtu, to_list=to_conflist,
                         output=under_root(root, output) if output else None,
                         remove_old=remove_old,
                         check=lambda doc: refuse_invalid(doc, "the updated configuration"))
    click.echo(f"{'wrote' if result.written else 'unchanged'} {result.path}")
    if result.removed:
        click.echo(f"removed {result.removed}")
    elif result.path != path:
        click.echo(f"warning: {path} is still there and sorts before {result.path}: runtimes "
                   "load the first file by name; pass --remove-old once the new one is "
                   "checked", err=True)


@cli.command()
@generate_options
@click.option("--cni-bin-dir", default=defaults.CNI_BIN_DIR, show_default=True)
@click.option("--reference-dir", default=defaults.REFERENCE_DIR, show_default=True,
              help="The containernetworking reference plugins (for loopback).")
@click.option("--lib-dir", default=None, metavar="DIR",
              help="Host mode: copy the plugins' Python package into DIR (a path on the "
                   "node, written under --root) and point the launchers at it, for an "
                   "installer that is not on the node itself (a DaemonSet's init container).")
@click.option("--python", "python", default=None, metavar="PATH",
              help="With --lib-dir: the node's Python (>= 3.11) the launchers run "
                   "[default: /usr/bin/python3].")
@click.option("--no-config", is_flag=True, help="Install the executables only.")
@click.pass_context
def install(ctx, cni_bin_dir, reference_dir, lib_dir, python, no_config, **params):
    """Put the plugin executables into the CNI bin dir, then write the configuration."""
    from conf.install import HOST_PYTHON, ensure_host_plugins, ensure_plugins

    root = params["root"]
    if lib_dir:
        report = ensure_host_plugins(root, cni_bin_dir, reference_dir, params["plugins"],
                                     python or HOST_PYTHON, lib_dir)
    elif python:
        raise ConfError("--python needs --lib-dir: that interpreter can only import the "
                        "plugins from a copy made for it")
    else:
        report = ensure_plugins(under_root(root, cni_bin_dir),
                                under_root(root, reference_dir), params["plugins"])
    for item in report.installed:
        click.echo(f"{'installed' if item.written else 'unchanged'} {item.path} ({item.note})")
    for path in report.removed:
        click.echo(f"removed {path} (an older copy of the plugins)")
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not no_config:
        generate_config(ctx, params)


@cli.command()
@generate_options
@click.pass_context
def show(ctx, **params):
    """Print the effective settings and where each one came from."""
    settings = resolve_options(params, functools.partial(origin, ctx), host_of(ctx))
    rows = {"output": Setting(under_root(params["root"], params["output"]),
                              origin(ctx, "output"))}
    rows.update(settings)
    width = max(map(len, rows))
    for name, setting in rows.items():
        value = setting.value
        if isinstance(value, tuple):
            value = ",".join(value)
        click.echo(f"{name:<{width}}  {'-' if value is None else value}  [{setting.source}]")


def main(argv: list[str] | None = None) -> int:
    try:
        # Without standalone mode click hands back ctx.exit()'s code instead of exiting.
        rc = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_UNUSABLE
    except click.exceptions.Abort:
        return EXIT_UNUSABLE
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
