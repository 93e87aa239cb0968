"""
The package's shape: imports that run one way (no cycle among the modules
of drgn_qemu/, found from their source, nothing run), a drgn plugin that
costs drgn's start-up little, and the names the front end declares without
importing what they name.
"""

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parent.parent / "drgn_qemu"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(top_level_only: bool) -> Dict[str, Set[str]]:
    """Module -> the drgn_qemu modules it imports (with *top_level_only*, at import time)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        nodes = ast.walk(tree) if not top_level_only else _import_time(tree.body)
        deps: Set[str] = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def _import_time(body: List[ast.stmt]) -> List[ast.AST]:
    """The import statements run when a module is imported (not in functions, not TYPE_CHECKING)."""
    out: List[ast.AST] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If) and not ast.unparse(node.test).endswith("TYPE_CHECKING"):
            out += _import_time(node.body) + _import_time(node.orelse)
        elif isinstance(node, ast.Try):
            out += _import_time(node.body)
    return out


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    found: List[List[str]] = []
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                found.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    """
    No module needs a module that needs it, counting the imports made inside
    functions too (a package's own __init__ aside, which Python runs first).
    """
    graph = import_graph(top_level_only=False)
    assert "drgn_qemu.frontend" in graph and graph["drgn_qemu.cli"]
    assert _cycles(graph) == []


#: The file formats and what each may import: layouts and headers only, no
#: I/O, no QEMU knowledge (LZO is a codec, for reading kdump pages back).
FORMATS = {
    "drgn_qemu.elf": {"drgn_qemu.ranges"},
    "drgn_qemu.kdump": {"drgn_qemu.ranges", "drgn_qemu.elf", "drgn_qemu.lzo"},
}


def test_formats_import_no_io_and_no_qemu() -> None:
    graph = import_graph(top_level_only=False)
    assert {m: graph[m] - allowed for m, allowed in FORMATS.items()} == {m: set() for m in FORMATS}
    # ... and the inputs' readers read ELF, never write or know QEMU.
    assert graph["drgn_qemu.elffile"] == {"drgn_qemu.elf"}
    assert graph["drgn_qemu.reader"] <= {
        "drgn_qemu.elffile",
        "drgn_qemu.options",
        "drgn_qemu.ranges",
    }


def test_plugin_import_is_light() -> None:
    """Loading the drgn plugin imports no architecture, file format, writer, reader or numpy."""
    code = (
        "import sys\nimport drgn_qemu.plugin\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith(('drgn_qemu', 'numpy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert "drgn_qemu.plugin" in out
    heavy = [m for m in out if m.startswith(("drgn_qemu.arch", "numpy")) or m in (
        "drgn_qemu.elf", "drgn_qemu.elffile", "drgn_qemu.kdump", "drgn_qemu.pipeline",
        "drgn_qemu.reader", "drgn_qemu.writer", "drgn_qemu.dump", "drgn_qemu.cli")]  # fmt: skip
    assert heavy == []


def test_arch_names_are_the_modules() -> None:
    from drgn_qemu.arch import supported_arches
    from drgn_qemu.options import ARCH_NAMES

    assert list(ARCH_NAMES) == supported_arches()
    assert sorted(
        p.stem for p in (PACKAGE / "arch").glob("*.py") if p.stem not in ("__init__", "base")
    ) == list(ARCH_NAMES)


def _functions() -> List[Tuple[Path, ast.FunctionDef]]:
    """``(path, function)`` of every function of drgn_qemu/ (methods too)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                out.append((path, node))
    return out


def test_no_long_function_and_no_long_parameter_list() -> None:
    too_long = []
    for path, fn in _functions():
        a = fn.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs] + [x for x in (a.vararg, a.kwarg) if x]
        params = [p for p in params if p.arg not in ("self", "cls")]
        lines = (fn.end_lineno or fn.lineno) - fn.lineno + 1
        if lines > 80 or len(params) > 7:
            too_long.append(f"{path.name}:{fn.name} ({lines} lines, {len(params)} parameters)")
    assert too_long == []


def test_public_names_in_all_and_helpers_documented_as_drgn_does() -> None:
    """
    Every public module-level function and class is in its module's
    ``__all__``; each ``Object`` argument of a public helper (helpers/,
    arch/, registers/, paging/) is documented with ``:param x:``; a helper whose
    first argument is the program takes drgn's default program.
    """
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "contrib":
            continue
        tree = ast.parse(path.read_text())
        names = next(
            (
                {e.value for e in n.value.elts}  # type: ignore[attr-defined]
                for n in tree.body
                if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "__all__"
            ),
            set(),
        )
        subject = path.parent.name in ("helpers", "arch", "registers", "paging")
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name[0] == "_":
                continue
            if node.name not in names:
                problems.append(f"{path.name}: {node.name} not in __all__")
            if not subject or not isinstance(node, ast.FunctionDef):
                continue
            doc = ast.get_docstring(node) or ""
            for arg in node.args.args:
                if arg.annotation is not None and ast.unparse(arg.annotation) == "Object":
                    if f":param {arg.arg}:" not in doc:
                        problems.append(f"{path.name}: {node.name}({arg.arg}) undocumented")
            decorators = [ast.unparse(d) for d in node.decorator_list]
            if path.parent.name == "helpers" and node.args.args[:1]:
                if node.args.args[0].arg == "prog" and "takes_program_or_default" not in decorators:
                    problems.append(f"{path.name}: {node.name} does not take the default program")
    assert problems == []


def test_opening_a_core_imports_no_numpy() -> None:
    """
    Opening a program (which checks whether the core is a guest vmcore,
    kdump's signatures included) and loading the writers loads no numpy: it
    costs the start-up of every command some 0.1 s, and only compressing
    pages or scanning more than a few of them for zeros needs it.
    """
    code = (
        "import sys\nimport drgn_qemu.program, drgn_qemu.kdump, drgn_qemu.dump, drgn_qemu.writer\n"
        "from drgn_qemu.kdump import PAGE_DESC_SIZE\nprint('numpy' in sys.modules, PAGE_DESC_SIZE)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert out == ["False", "24"]
    from drgn_qemu.kdump import page_desc_dtype

    assert page_desc_dtype("<").itemsize == 24
