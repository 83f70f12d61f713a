"""Command-line flags generated from a config's declared settings.

:func:`add_flags` adds one flag per setting of a config dataclass (name, help, metavar, choices
and default text from the setting's declaration in :mod:`jaxcurv.workflow.settings`);
:func:`given_settings` returns only the settings the user typed (flags default to
``argparse.SUPPRESS``), so a named config or a preset can supply the rest. Adding a field to a
config adds its flag. Bounds are checked by the config's ``validate``, before any compute.
:func:`add_settings` / :func:`settings_from_args` are the whole command line of a config (its flags
and ``--set KEY=VALUE``), shared by the experiments and the benchmarks. Jax-free.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any

from jaxcurv.workflow.settings import Setting, flag_name, settings_of

__all__ = ["add_flags", "given_settings", "command_line_defaults", "command_line",
           "add_settings", "settings_from_args", "HelpFormatter"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; flag help already ends with its default."""


def _base_type(hint: Any) -> Any:
    """The non-None member of ``X | None``; ``hint`` otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _json(flag: str, text: str, kind: type) -> Any:
    """Flag text as a JSON value of ``kind`` (dict or list); ConfigError (one line) otherwise."""
    from jaxcurv.errors import ConfigError

    example = "'{\"hidden\": 256}'" if kind is dict else "'[\"digits\", \"cifar10\"]'"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{flag} takes JSON such as {example}: {err}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{flag} takes JSON such as {example}, got {text!r}")
    return value


def _int_or_zero_none(text: str) -> int | None:
    value = int(text)
    return None if value == 0 else value


def _default_text(field: dataclasses.Field, spec: Setting, default: Any) -> str:
    if spec.cli_default is not None:
        default = spec.cli_default
    if spec.negate or default is False:
        return " (default: off)"
    if default is None:
        return f" (default: {spec.none})" if spec.none else ""
    if spec.parse == "on_off" and isinstance(default, bool):
        default = "on" if default else "off"
    if isinstance(default, dict):
        default = json.dumps(default)
    if isinstance(default, tuple):
        default = " ".join(map(str, default))
    return f" (default: {default})"


def add_flags(parser: argparse.ArgumentParser | Any, config: Any, *,
              skip: tuple[str, ...] = ()) -> None:
    """One flag per declared setting of ``config`` (a config class or instance, whose values are
    the defaults shown), except the fields named in ``skip``. Flags default to SUPPRESS."""
    hints = typing.get_type_hints(config if isinstance(config, type) else type(config))
    instance = config() if isinstance(config, type) else config
    for field, spec in settings_of(instance):
        flag = flag_name(field, spec)
        if flag is None or field.name in skip:
            continue
        kind = _base_type(hints[field.name])
        text = spec.help + _default_text(field, spec, getattr(instance, field.name))
        common = {"dest": field.name, "default": argparse.SUPPRESS, "help": text}
        if spec.required:
            common.update(required=True, help=spec.help + " (required)")
        if spec.negate:
            parser.add_argument(flag, action="store_false", **common)
        elif spec.parse == "on_off":
            parser.add_argument(flag, choices=("on", "off"), type=str, **common)
        elif kind is bool and getattr(instance, field.name) is False:
            parser.add_argument(flag, action="store_true", **common)
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif spec.parse == "json" or kind is dict:
            parser.add_argument(flag, type=str, metavar=spec.metavar or "JSON", **common)
        elif typing.get_origin(kind) is tuple and typing.get_args(kind)[0] in (int, float, str):
            parser.add_argument(flag, nargs="+", type=typing.get_args(kind)[0],
                                metavar=spec.metavar, **common)
        elif typing.get_origin(kind) is tuple:  # nested lists: one JSON value
            parser.add_argument(flag, type=str, metavar=spec.metavar or "JSON", **common)
        elif spec.parse == "int_or_zero_none":
            parser.add_argument(flag, type=_int_or_zero_none, metavar=spec.metavar, **common)
        else:
            parser.add_argument(flag, type=kind, metavar=spec.metavar,
                                choices=list(spec.choices) if spec.choices else None, **common)


def given_settings(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    """{field: value} of the settings of ``config`` that were given on the command line (as the
    field's type: on/off → bool, lists → tuples)."""
    out = {}
    for field, spec in settings_of(config):
        if field.name not in vars(args):
            continue
        value = getattr(args, field.name)
        kind = _base_type(typing.get_type_hints(
            config if isinstance(config, type) else type(config))[field.name])
        if isinstance(value, str) and (spec.parse == "json" or kind is dict or (
                typing.get_origin(kind) is tuple and typing.get_args(kind)[0] not in (
                    int, float, str))):
            value = _json(flag_name(field, spec), value, dict if kind is dict else list)
        if spec.parse == "on_off" and isinstance(value, str):
            value = value == "on"
        if isinstance(value, list):
            value = tuple(value)
        out[field.name] = value
    return out


def command_line_defaults(config: Any) -> dict[str, Any]:
    """{field: value} of the settings whose command-line default differs from the Python one
    (e.g. progress bars on at the command line, off when called from Python)."""
    return {f.name: s.cli_default for f, s in settings_of(config)
            if s.cli_default is not None}


def command_line(prefix: str, config: Any, *, skip: tuple[str, ...] = ("progress",)) -> str:
    """The command that builds ``config`` from the command line: ``prefix`` (e.g. "jaxcurv
    audit") and the flags of the settings whose value differs from the command line's default
    (shell-quoted), so a summary can say exactly what produced it. Settings in ``skip`` (by
    default the progress output, which changes no result) are left out."""
    import shlex

    defaults = type(config)()
    cli_defaults = command_line_defaults(type(config))
    words = []
    for field, spec in settings_of(config):
        flag = flag_name(field, spec)
        value = getattr(config, field.name)
        default = cli_defaults.get(field.name, getattr(defaults, field.name))
        if flag is None or field.name in skip or value == default:
            continue
        if spec.negate or isinstance(value, bool) and spec.parse != "on_off":
            if spec.negate or value:
                words.append(flag)
            else:
                words.append("--no-" + flag[2:])
            continue
        if spec.parse == "int_or_zero_none":
            words += [flag, str(value or 0)]
        elif value is None:
            continue  # a None that differs from the default has no flag (only the default)
        elif spec.parse == "on_off":
            words += [flag, "on" if value else "off"]
        elif isinstance(value, dict):
            words += [flag, json.dumps(value)]
        elif isinstance(value, tuple):
            words += [flag, *(json.dumps(v) if isinstance(v, (tuple, list)) else str(v)
                              for v in value)]
        else:
            words += [flag, str(value)]
    return " ".join([prefix, *(shlex.quote(w) for w in words)])


def add_settings(parser: argparse.ArgumentParser, defaults: Any) -> None:
    """One flag per declared setting of ``defaults`` (:func:`add_flags`) and the repeated
    ``--set KEY=VALUE`` override of any field."""
    add_flags(parser, defaults)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field (JSON value), e.g. --set models=8 "
                        "--set 'datasets=[\"digits\"]'; repeatable")


def settings_from_args(args: argparse.Namespace, base: Any) -> Any:
    """``base`` (a config instance) with the command-line defaults, the settings given as flags
    and then the ``--set`` overrides applied, each converted and checked against its declaration
    (:func:`jaxcurv.workflow.settings.apply_overrides`; ConfigError otherwise)."""
    from jaxcurv.workflow.settings import apply_overrides

    config_type = type(base)
    changes = {**command_line_defaults(config_type), **given_settings(args, config_type)}
    return apply_overrides(apply_overrides(base, changes), getattr(args, "set", []))
