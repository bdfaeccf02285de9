"""The command line's option parser: TRL's `TrlParser` (flags, or a YAML file given with --config), with the help in
groups and every option error as a ValueError that names the option."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
from typing import get_type_hints

import yaml
from trl import TrlParser

# The libraries whose configs rlunlearn's extend: their options are the inherited ones.
LIBRARIES = ("transformers", "trl")


def _library(cls: type) -> str | None:
    top = cls.__module__.split(".")[0]
    return top if top in LIBRARIES else None


def _own_fields(dtype: type) -> set[str]:
    """The fields that classes outside TRL and transformers in `dtype`'s hierarchy declare (add, or set a default of):
    rlunlearn's, or those of a method of your own."""
    return {name for cls in dtype.__mro__ if not _library(cls) for name in vars(cls).get("__annotations__", {})}


def _library_classes(dtype: type) -> list[str]:
    """The public TRL and transformers classes that declare fields of `dtype`, base first."""
    return [
        f"{_library(cls)}'{'' if _library(cls).endswith('s') else 's'} {cls.__name__}"
        for cls in reversed(dtype.__mro__)
        if _library(cls) and not cls.__name__.startswith("_") and vars(cls).get("__annotations__")
    ]


def read_config(path: str) -> dict:
    """The options of a --config YAML file, as a mapping."""
    try:
        with open(path) as handle:
            config = yaml.safe_load(handle)
    except OSError as error:
        raise ValueError(f"--config {path}: {error.strerror}.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "unreadable"
        raise ValueError(f"--config {path} is not valid YAML: {problem}{where}.") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(
            f"--config {path} must hold `option: value` lines (a YAML mapping), not a {type(config).__name__}."
        )
    return config


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written (paragraphs), each option with its default."""

    def _get_help_string(self, action):
        # Help is prose ("95% intervals"), which argparse would read as %-formatting: only its own "%(default)s" stays.
        return re.sub(r"%(?!\(default\))", "%%", super()._get_help_string(action))


class OptionParser(TrlParser):
    """`TrlParser` over `groups` (help title -> dataclass). The help lists the options of each dataclass under its title,
    the project's own first: of a config class that extends a TRL or transformers config, the fields its own classes
    add or set come under the title, and the ones it inherits in a last group, after every other dataclass's."""

    def __init__(self, groups: dict[str, type], prog: str, usage: str, description: str, epilog: str):
        self._titles = {dtype: title for title, dtype in groups.items()}
        self._inherited: list[tuple[str, list[dataclasses.Field]]] = []
        super().__init__(
            list(groups.values()),
            prog=prog,
            usage=usage,
            description=description,
            epilog=epilog,
            formatter_class=_HelpFormatter,
            exit_on_error=False,
        )
        for title, fields in self._inherited:
            group = self.add_argument_group(title)
            for field in fields:
                self._parse_dataclass_field(group, field)

    def _add_dataclass_arguments(self, dtype):
        # As HfArgumentParser does it, with each field put in its group.
        type_hints = get_type_hints(dtype)
        own_names = _own_fields(dtype)
        own, inherited = [], []
        for field in dataclasses.fields(dtype):
            if field.init:
                field.type = type_hints[field.name]
                (own if field.name in own_names else inherited).append(field)
        title = self._titles[dtype]
        if own:
            group = self.add_argument_group(title)
            for field in own:
                self._parse_dataclass_field(group, field)
            title = f"{title}: options inherited from {' and '.join(_library_classes(dtype))}"
        if inherited:
            self._inherited.append((title, inherited))

    def parse(self, argv: list[str]) -> tuple:
        """The dataclasses of `argv` (flags, and the --config file's options beneath them); a ValueError naming the
        option for an unknown option, a value of the wrong type, or a bad config file."""
        argv = list(argv)
        config_path = None
        if "--config" in argv:
            index = argv.index("--config")
            if index + 1 == len(argv):
                raise ValueError("--config needs a file: --config options.yaml.")
            config_path = argv[index + 1]
            read_config(config_path)
        try:
            *outputs, config_unknown, argv_unknown = self.parse_args_and_config(
                argv, return_remaining_strings=True, separate_remaining_strings=True
            )
        except argparse.ArgumentError as error:
            raise ValueError(str(error)) from None
        known = [option for action in self._actions for option in action.option_strings]
        if config_unknown:
            keys = config_unknown[::2]  # `--key value` pairs
            raise ValueError(
                f"--config {config_path}: unknown option(s) {', '.join(k.removeprefix('--') for k in keys)}"
                f"{self._suggestion(keys[0], known)}; `{self.prog} --help` lists the options."
            )
        if argv_unknown:
            options = [arg for arg in argv_unknown if arg.startswith("-")] or argv_unknown
            raise ValueError(
                f"unknown option(s) {' '.join(options)}{self._suggestion(options[0], known)}; `{self.prog} --help` "
                "lists the options."
            )
        return tuple(outputs)

    @staticmethod
    def _suggestion(option: str, known: list[str]) -> str:
        close = difflib.get_close_matches(option.split("=")[0], known, n=1)
        return f" (did you mean {close[0]}?)" if close else ""
