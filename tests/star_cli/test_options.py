"""Every `star <command>` parser against the config tree: each option is in the command's --help,
each setting flag is a shorthand for exactly one dotted key of StarConfig, and the precedence
defaults < --preset < --config FILE < --set < positional KEY=VALUE < explicit flags holds.
"""

from __future__ import annotations

import argparse

import pytest

from star_cli.cli import COMMANDS, build_parser, main
from star_cli.options import DEST_PREFIX, flag_values, load, setting
from star_core.config import ConfigError, describe, flatten, leaf_keys


def _parsers(parser: argparse.ArgumentParser, prog: str) -> list[tuple[str, argparse.ArgumentParser]]:
    """The parser and every sub-command parser under it (``star labels import``, ``star lake check``...)."""
    out = [(prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _parsers(sub, f"{prog} {name}")
    return out


ALL = [(prog, p) for name in COMMANDS for prog, p in _parsers(build_parser(name), f"star {name}")]


def _minimal_argv(parser: argparse.ArgumentParser) -> list[str]:
    """Values for the required arguments only (a positional or a required option gets a dummy value)."""
    argv: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings and not action.required:
            continue
        if not action.option_strings and action.nargs in ("?", "*"):
            continue
        value = action.choices[0] if action.choices else "1" if action.type in (int, float) else "x"
        argv += [*action.option_strings[:1], str(value)]
    return argv


def _other_value(action: argparse.Action) -> list[str]:
    """Arguments that give a setting flag a value different from its field's default."""
    if action.nargs == 0:  # store_const: the flag alone
        return []
    default = describe(action.dest[len(DEST_PREFIX):]).default
    if action.choices:
        return [next(str(c) for c in action.choices if c != default)]
    if action.type in (int, float):
        return [str((default or 0) + 1)]
    return ["some-other-value"]


@pytest.mark.parametrize("prog,parser", ALL, ids=[prog for prog, _ in ALL])
def test_every_option_is_in_the_help_and_every_setting_flag_is_one_config_key(prog, parser):
    text = " ".join(parser.format_help().split())  # help lines wrap anywhere between words
    keys = set(leaf_keys())
    for action in parser._actions:
        for option in action.option_strings:
            assert option in text, f"{prog}: {option} is not in --help"
        if not action.dest.startswith(DEST_PREFIX):
            continue
        key = action.dest[len(DEST_PREFIX):]
        assert key in keys, f"{prog} {action.option_strings}: {key!r} is not a key of StarConfig"
        assert f"[{key}; default:" in text, f"{prog} {action.option_strings}: --help does not name its config key"
        base = _minimal_argv(parser)
        before = flatten(load(parser.parse_args(base)))
        args = parser.parse_args([*base, action.option_strings[0], *_other_value(action)])
        assert list(flag_values(args)) == [key]
        after = flatten(load(args))
        changed = sorted(k for k in after if after[k] != before[k])
        assert changed == [key], f"{prog} {action.option_strings[0]} changed {changed}, not exactly {key!r}"


def test_the_job_commands_take_their_settings_from_the_config():
    """The commands that run jobs take --config/--set, and every setting flag of theirs is bound to a key."""
    for name in ("extract", "train", "detect", "benchmark"):
        options = {o for a in build_parser(name)._actions for o in a.option_strings}
        assert {"--config", "--set", "--preset", "--lake"} <= options, name


# The demo's options are its own (jobs.demo.DemoConfig: embedded defaults such as 60 epochs), not settings.
OWN_OPTIONS = {"star demo"}
# One concept, one key per job: the MLflow experiment of training vs detection runs; the torch device
# of I3D (extract, i3d-check) vs of the benchmark's trainings.
PER_JOB = {"--experiment": {"train_run.experiment", "detect.experiment"}, "--device": {"extract.device", "benchmark.device"}}


def test_one_vocabulary_across_commands():
    """A flag name means one thing everywhere: the same config key (or none) in every command."""
    meaning: dict[str, set[str]] = {}
    for prog, parser in ALL:
        if prog in OWN_OPTIONS:
            continue
        for action in parser._actions:
            for option in action.option_strings:
                meaning.setdefault(option, set()).add(action.dest[len(DEST_PREFIX):] if action.dest.startswith(DEST_PREFIX) else "(input)")
    assert meaning["--lake"] == {"storage.lake_uri"}
    assert meaning["--actors"] == {"resources.actors"}
    assert "--num-actors" not in meaning and "--version" not in meaning  # --actors, --dataset-version
    multiple = {option: keys for option, keys in meaning.items() if len(keys) > 1 and keys != PER_JOB.get(option)}
    assert multiple == {}, multiple


def test_json_prints_to_stdout_everywhere():
    for prog, parser in ALL:
        for action in parser._actions:
            if "--json" in action.option_strings:
                assert action.nargs == 0, f"{prog}: --json takes no file (it prints JSON to stdout; files are --json-out)"


def test_precedence_defaults_preset_file_set_positional_flag(tmp_path):
    parser = build_parser("train")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "train:\n  epochs: 7\n  lr: 0.002\n  seed: 3\nresources:\n  workers: 3\nstorage:\n  lake_uri: s3://from-file/lake\n"
    )
    args = parser.parse_args(
        [
            "--dataset",
            "d",
            "--preset",
            "paper",
            "--config",
            str(cfg_file),
            "--set",
            "train.lr=0.005",
            "--set",
            "train.seed=4",
            "train.seed=5",
            "--epochs",
            "30",  # equal to the default: still wins over the file's 7
            "--lake",
            "./star-lake",  # equal to the default: still wins over the file's lake
        ]
    )
    cfg = load(args)
    assert cfg.refine.rounds == 0  # from the preset (nothing later sets it)
    assert cfg.resources.workers == 3  # from the file (no flag)
    assert cfg.train.lr == 0.005  # --set over the file (and the preset's 1e-4)
    assert cfg.train.seed == 5  # positional KEY=VALUE over --set
    assert cfg.train.epochs == 30  # the explicit flag over all, although it equals the default
    assert cfg.storage.lake_uri == "./star-lake"
    assert load(parser.parse_args(["--dataset", "d", "--config", str(cfg_file), "--set", "train.epochs=9"])).train.epochs == 9
    assert load(parser.parse_args(["--dataset", "d", "--config", str(cfg_file)])).storage.lake_uri == "s3://from-file/lake"


def test_a_bad_setting_is_one_clear_line(tmp_path, capsys):
    assert main(["train", "--dataset", "d", "--lake", str(tmp_path), "--set", "resources.wrokers=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("star train: error: unknown config key resources.'wrokers' (did you mean 'workers'?)") and err.count("\n") == 1
    assert main(["train", "--dataset", "d", "--lake", str(tmp_path), "--set", "model.coverage_gate=diagonal"]) == 2
    assert "model.coverage_gate: Input should be 'vector' or 'scalar'" in capsys.readouterr().err
    assert main(["train", "--dataset", "d", "--lake", str(tmp_path), "--set", "detect.num_actors=2"]) == 2
    assert "moved to 'resources.actors'" in capsys.readouterr().err


def test_a_flag_bound_to_an_unknown_key_or_a_section_is_refused():
    parser = argparse.ArgumentParser()
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        setting(parser, "--ephocs", key="train.ephocs")
    with pytest.raises(ConfigError, match="is a section"):
        setting(parser, "--train", key="train")
