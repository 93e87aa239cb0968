"""The console script leaves out drgn's command-only plugins, and only those."""

import importlib.metadata
import os
from pathlib import Path
from typing import Dict, List, Tuple

from drgn_qemu.cli import COMMAND_PLUGINS, installed_drgn_plugins, skip_command_plugins


def _site(tmp_path: Path, plugins: Dict[str, str]) -> List[str]:
    """A site directory of two distributions: one with drgn plugins *plugins*, one without."""
    site = tmp_path / f"site{len(list(tmp_path.iterdir()))}"
    info = site / "other_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["[console_scripts]", "tool = other:main", "", "[drgn.plugins]"]
    lines += [f"{name} = {value}" for name, value in plugins.items()]
    (info / "entry_points.txt").write_text("\n".join(lines + ["", "[x.y]", "z = w"]) + "\n")
    (site / "plain-2.0.dist-info").mkdir()
    (site / "old_distutils-0.1.egg-info").write_text("Metadata-Version: 1.0\n")  # a file
    return [str(tmp_path / "missing"), str(site)]


def test_skip_command_plugins_keeps_the_users_list(tmp_path: Path) -> None:
    env: Dict[str, str] = {"DRGN_DISABLE_PLUGINS": "mine"}
    skip_command_plugins(env, _site(tmp_path, {"mine": "mine.plugin"}))
    assert env["DRGN_DISABLE_PLUGINS"].split(",") == ["mine", *COMMAND_PLUGINS]


def test_skip_command_plugins_keeps_other_plugins(tmp_path: Path) -> None:
    env: Dict[str, str] = {}
    skip_command_plugins(env, _site(tmp_path, {"qemu": "drgn_qemu.plugin", "finder": "f.p"}))
    assert env["DRGN_DISABLE_PLUGINS"] == "builtin_commands,crash_commands,qemu"


def test_skip_command_plugins_all_when_only_command_plugins(tmp_path: Path) -> None:
    # Nothing else to load: "*", which spares drgn its entry point search.
    env: Dict[str, str] = {}
    skip_command_plugins(env, _site(tmp_path, {"qemu": "drgn_qemu.plugin"}))
    assert env["DRGN_DISABLE_PLUGINS"] == "*"
    env = {"DRGN_DISABLE_PLUGINS": "*"}
    skip_command_plugins(env, _site(tmp_path, {"finder": "f.p"}))
    assert env["DRGN_DISABLE_PLUGINS"] == "*"
    # Plugins the user names in DRGN_PLUGINS need drgn's search.
    env = {"DRGN_PLUGINS": "finder"}
    skip_command_plugins(env, _site(tmp_path, {"qemu": "drgn_qemu.plugin"}))
    assert env["DRGN_DISABLE_PLUGINS"] == "builtin_commands,crash_commands,qemu"


def test_installed_drgn_plugins_equal_importlib_metadata() -> None:
    # What drgn's own search finds on this interpreter's path, read independently.
    found = installed_drgn_plugins()
    assert found == {e.name for e in importlib.metadata.entry_points(group="drgn.plugins")}


def test_installed_drgn_plugins_unknown_on_a_zip_path(tmp_path: Path) -> None:
    archive = tmp_path / "site.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))
    assert installed_drgn_plugins([str(archive)]) is None
    env: Dict[str, str] = {}
    skip_command_plugins(env, [str(archive)])
    assert env["DRGN_DISABLE_PLUGINS"] == "builtin_commands,crash_commands,qemu"


def test_this_process_is_left_alone() -> None:
    # The tests run drgn with our plugin: nothing here may disable it for them.
    assert "qemu" not in os.environ.get("DRGN_DISABLE_PLUGINS", "").split(",")


def test_command_plugins_are_installed_entry_points() -> None:
    # If drgn renamed its plugins, skipping them would silently stop working.
    names = {e.name for e in importlib.metadata.entry_points(group="drgn.plugins")}
    assert set(COMMAND_PLUGINS) <= names, names


def test_helpers_export_every_module() -> None:
    """`from drgn_qemu.helpers import *` has every helper module's names, timer and coroutine too."""
    import importlib
    import pkgutil

    import drgn_qemu.helpers

    namespace: Dict[str, object] = {}
    exec("from drgn_qemu.helpers import *", namespace)
    modules = [m.name for m in pkgutil.iter_modules(drgn_qemu.helpers.__path__)]
    assert {"timer", "coroutine", "memory", "qom"} <= set(modules)
    source = Path(drgn_qemu.helpers.__file__).read_text()
    for name in modules:
        assert f"from drgn_qemu.helpers.{name} import *" in source, name
        module = importlib.import_module(f"drgn_qemu.helpers.{name}")
        for helper in module.__all__:
            assert namespace[helper] is getattr(module, helper), (name, helper)
    # The ones the README's table lists and the old __all__ left out.
    for helper in ("main_loop_tlg", "timerlist_for_each_timer", "coroutine_stack_trace",
                   "co_tls_current", "for_each_coroutine_caller"):  # fmt: skip
        assert helper in namespace


def test_virtio_mem_plugged_runs() -> None:
    """The plugged runs of a virtio-mem bitmap, against a block-by-block walk."""
    import random

    from drgn_qemu.helpers.virtio_mem import plugged_runs

    rng = random.Random(7)
    block = 0x200000
    for _ in range(300):
        bits = rng.randrange(1, 80)
        bitmap = rng.getrandbits(bits) if rng.random() < 0.8 else 0
        offset = rng.randrange(0, bits) * block // rng.choice((1, 2))
        size = rng.randrange(1, bits * block - offset + 1)
        expected: List[Tuple[int, int]] = []
        for i in range(bits):
            lo, hi = max(i * block, offset), min((i + 1) * block, offset + size)
            if bitmap >> i & 1 and lo < hi:
                if expected and expected[-1][0] + expected[-1][1] == lo:
                    expected[-1] = (expected[-1][0], expected[-1][1] + hi - lo)
                else:
                    expected.append((lo, hi - lo))
        assert list(plugged_runs(bitmap, block, offset, size)) == expected, (bitmap, offset, size)
