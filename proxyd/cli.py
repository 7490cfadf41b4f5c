"""The ``kube-router`` command: Go pflag-style parsing into a Config, then the daemon.

pflag's rules, which differ from argparse's:
  * a bool takes its value only after "=": ``--run-router=false``; a bare
    ``--run-router`` means true and ``--run-router false`` leaves "false" as
    a stray argument;
  * other flags take ``--name=value`` or ``--name value``;
  * shorthands: ``-h``, ``-V``, ``-v 2``, ``-v=2``, ``-v2``;
  * a repeated slice flag appends, a repeated scalar flag keeps the last value.
"""
from __future__ import annotations

import sys
import textwrap
from typing import Sequence

from proxyd import config as cfg

VERSION = "0.1.0"
_SHORT = {"h": "help", "V": "version", "v": "v"}
_ACTIONS = {"help", "version"}


class Parsed:
    """The raw result of the command line: flag -> every string given, plus -h/-V."""

    def __init__(self) -> None:
        self.raw: dict[str, list[str]] = {}
        self.action: str | None = None
        self.positional: list[str] = []


def tokenize(argv: Sequence[str]) -> Parsed:
    parsed, args = Parsed(), list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            parsed.positional.extend(args)
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            _take(parsed, name, value if eq else None, args, arg)
        elif arg.startswith("-") and len(arg) > 1:
            short, rest = arg[1], arg[2:]
            if short not in _SHORT:
                raise cfg.FlagError(f"unknown shorthand flag: {short!r} in {arg}")
            value = rest[1:] if rest.startswith("=") else (rest or None)
            _take(parsed, _SHORT[short], value, args, arg)
        else:
            parsed.positional.append(arg)
    if parsed.positional and parsed.action is None:
        raise cfg.FlagError(f"unexpected argument {parsed.positional[0]!r} (a bool flag takes its value "
                            "after '=': --flag=false)")
    return parsed


def _take(parsed: Parsed, name: str, value: str | None, rest: list[str], arg: str) -> None:
    if name in _ACTIONS:
        if value is None or cfg.parse_bool(value):
            parsed.action = parsed.action or name
        return
    field = cfg.FLAGS.get(name)
    if field is None:
        raise cfg.FlagError(f"unknown flag: --{name}")
    if value is None:
        if field.metadata["kind"] == "bool":
            value = "true"
        elif rest:
            value = rest.pop(0)
        else:
            raise cfg.FlagError(f"flag needs an argument: {arg}")
    slot = parsed.raw.setdefault(name, [])
    if not field.metadata["kind"].endswith("Slice"):
        slot.clear()
    slot.append(value)


def parse_args(argv: Sequence[str]) -> tuple[cfg.Config | None, str | None]:
    """argv (without the program name) -> (Config, None) or (None, "help"|"version")."""
    parsed = tokenize(argv)
    if parsed.action:
        return None, parsed.action
    return cfg.build_config(parsed.raw), None


def usage() -> str:
    lines = ["Usage of kube-router:"]
    for name in sorted([*cfg.FLAGS, *_ACTIONS]):
        short = {v: k for k, v in _SHORT.items()}.get(name)
        head = f"-{short}, --{name}" if short else f"    --{name}"
        if name in _ACTIONS:
            text = {"help": "Print usage information.", "version": "Print version information."}[name]
            lines.append(f"  {head}\n{textwrap.indent(text, ' ' * 6)}")
            continue
        field = cfg.FLAGS[name]
        kind = "" if field.metadata["kind"] == "bool" else " " + field.metadata["kind"]
        text = f"{field.metadata['help']} (default {cfg.format_default(field)})"
        lines.append(f"  {head}{kind}\n" + textwrap.indent(textwrap.fill(text, 94), " " * 6))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config, action = parse_args(argv)
    except cfg.FlagError as e:
        print(f"kube-router: {e}\nRun 'kube-router --help' for the flags.", file=sys.stderr)
        return 2
    if action == "help":
        sys.stdout.write(usage())
        return 0
    if action == "version":
        print(f"Running kube-router version v{VERSION} (Python)")
        return 0
    problems = cfg.check_features(config)
    if problems:
        print("kube-router: cannot start:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 1
    if config.cleanup_config:
        from proxyd.cleanup import cleanup
        return cleanup(config)
    from proxyd import daemon  # the kubernetes client is slow to import: only when starting
    from proxyd.controllers import build_enabled
    from proxyd.k8s.client import resolve_node_name
    node_name = resolve_node_name(config.hostname_override)
    return daemon.run(config, controllers=build_enabled(config, node_name))
