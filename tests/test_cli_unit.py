"""The console script leaves out drgn's command-only plugins, and only those."""

import os

import pytest

from drgn_qemu.cli import COMMAND_PLUGINS, skip_command_plugins


def test_skip_command_plugins_keeps_the_users_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRGN_DISABLE_PLUGINS", "mine")
    skip_command_plugins()

    assert os.environ["DRGN_DISABLE_PLUGINS"].split(",") == ["mine", *COMMAND_PLUGINS]


def test_skip_command_plugins_unset_and_all(monkeypatch: pytest.MonkeyPatch) -> None:

    monkeypatch.delenv("DRGN_DISABLE_PLUGINS", raising=False)
    skip_command_plugins()
    assert os.environ["DRGN_DISABLE_PLUGINS"] == "builtin_commands,crash_commands,qemu"
    monkeypatch.setenv("DRGN_DISABLE_PLUGINS", "*")
    skip_command_plugins()
    assert os.environ["DRGN_DISABLE_PLUGINS"] == "*"


def test_command_plugins_are_installed_entry_points() -> None:
    # If drgn renamed its plugins, skipping them would silently stop working.
    import importlib.metadata

    names = {e.name for e in importlib.metadata.entry_points(group="drgn.plugins")}
    assert set(COMMAND_PLUGINS) <= names, names
