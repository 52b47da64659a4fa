"""CLI options bound to config keys: every flag that is a setting is a shorthand for ONE dotted key.

    setting(parser, "--epochs", key="train.epochs")          # type, default and help from the field
    setting(parser, "--no-alias", key="train_run.alias", const=None)
    add_config_options(parser)                               # --preset, --config FILE, --set KEY=VALUE
    cfg = load(args)                                         # the StarConfig of this invocation

Precedence, the same for every command: defaults < ``--preset`` < ``--config FILE`` < ``--set k=v``
(and positional ``k=v`` where a command takes them) < explicit flags. A flag that is not given
leaves no trace in the namespace (``default=argparse.SUPPRESS``), so an explicit flag wins even
when it equals the default.
"""

from __future__ import annotations

import argparse
import typing
from typing import Any

from star_core.config import StarConfig, describe, load_config, presets

DEST_PREFIX = "setting:"  # namespace attribute of a setting flag: "setting:<dotted key>"
_NO_CONST = object()


def setting(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *flags: str, key: str, help: str | None = None,
            const: Any = _NO_CONST, **kwargs: Any) -> argparse.Action:
    """Add an option that sets config ``key``; its type, choices and help default to the field's.

    ``const``: the option takes no value and sets ``key`` to ``const`` (``--gpu``, ``--no-baseline``);
    a bool field without ``const`` is a switch that sets it true.
    """
    info = describe(key)
    spec: dict[str, Any] = {"dest": DEST_PREFIX + key, "default": argparse.SUPPRESS}
    if const is not _NO_CONST:
        spec.update(action="store_const", const=const)
    elif info.type is bool:
        spec.update(action="store_const", const=True)
    elif typing.get_origin(info.type) is typing.Literal:
        spec.update(choices=typing.get_args(info.type))
    elif info.type in (int, float, str):
        spec.update(type=info.type, metavar=flags[-1].lstrip("-").replace("-", "_").upper())
    else:
        raise TypeError(f"{key}: a {info.type} setting has no flag form; use --set {key}=...")
    text = (help or info.comment).replace("%", "%%")
    spec["help"] = f"{text} [{key}; default: {info.default}]"
    spec.update(kwargs)
    return parser.add_argument(*flags, **spec)


def add_config_options(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    """``--preset NAME``, ``--config FILE`` and ``--set KEY=VALUE``; ``positional``: also trailing ``KEY=VALUE`` arguments."""
    group = parser.add_argument_group("configuration (defaults < --preset < --config < --set < flags)")
    group.add_argument("--preset", choices=presets(), help="named settings applied before --config (paper: the paper's literal STAR)")
    group.add_argument("--config", metavar="FILE", help="YAML/JSON config file (the StarConfig tree, docs/architecture.md)")
    group.add_argument("--set", dest="set_overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="config override, e.g. --set train.lr=3e-4 (repeatable)")
    if positional:
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=3e-4 model.hidden_dim=256")


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted keys set by explicit flags of ``args``."""
    return {name[len(DEST_PREFIX):]: value for name, value in vars(args).items() if name.startswith(DEST_PREFIX)}


def load(args: argparse.Namespace) -> StarConfig:
    """The StarConfig of a parsed command line (see the module docstring for the precedence)."""
    overrides = [*getattr(args, "set_overrides", []), *getattr(args, "overrides", [])]
    return load_config(getattr(args, "config", None), overrides, preset=getattr(args, "preset", None), values=flag_values(args))


def setting_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of ``parser`` bound to a config key (for tests and docs)."""
    return [a for a in parser._actions if a.dest.startswith(DEST_PREFIX)]
