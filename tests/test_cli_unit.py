"""The console script leaves out drgn's command-only plugins, and only those."""

import importlib.metadata
import os
from typing import Dict

from drgn_qemu.cli import COMMAND_PLUGINS, skip_command_plugins


def test_skip_command_plugins_keeps_the_users_list() -> None:
    env: Dict[str, str] = {"DRGN_DISABLE_PLUGINS": "mine"}
    skip_command_plugins(env)
    assert env["DRGN_DISABLE_PLUGINS"].split(",") == ["mine", *COMMAND_PLUGINS]


def test_skip_command_plugins_unset_and_all() -> None:
    env: Dict[str, str] = {}
    skip_command_plugins(env)
    assert env["DRGN_DISABLE_PLUGINS"] == "builtin_commands,crash_commands,qemu"
    env = {"DRGN_DISABLE_PLUGINS": "*"}
    skip_command_plugins(env)
    assert env["DRGN_DISABLE_PLUGINS"] == "*"


def test_this_process_is_left_alone() -> None:
    # The tests run drgn with our plugin: nothing here may disable it for them.
    assert "qemu" not in os.environ.get("DRGN_DISABLE_PLUGINS", "").split(",")


def test_command_plugins_are_installed_entry_points() -> None:
    # If drgn renamed its plugins, skipping them would silently stop working.
    names = {e.name for e in importlib.metadata.entry_points(group="drgn.plugins")}
    assert set(COMMAND_PLUGINS) <= names, names
