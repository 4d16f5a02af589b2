"""The layers stay visible: core < coding < protocol < app < show < programs, imports point down,
no import cycle anywhere, and the lockstep core loads no presentation or network library."""
import ast
import subprocess
import sys

from tests.helpers import ROOT, child_env

PACKAGES = ("shared", "protocol", "sender", "receiver", "scripts")
# what each layer may import from the project (its own layer included)
ALLOWED = {
    "shared.core": {"shared.core"},
    "shared.coding": {"shared.core", "shared.coding"},
    "protocol": {"protocol"},
    "shared.app": {"shared.core", "shared.coding", "protocol", "shared.app"},
    "shared.show": {"shared.core", "shared.coding", "protocol", "shared.app", "shared.show", "shared.texts"},
}
CORE_FORBIDDEN = ("rich", "matplotlib", "zmq")


def module_name(path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def project_modules() -> dict[str, ast.Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = (path, ast.parse(path.read_text(), str(path)))
    return found


def imports_of(name: str, path, tree: ast.Module) -> set[str]:
    """Every module this one imports, at any depth (function-level imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: {m for m in imports_of(name, *modules[name]) if m in modules and m != name} for name in modules}


def layer_of(name: str) -> str | None:
    return next((layer for layer in ALLOWED if name == layer or name.startswith(layer + ".")), None)


def test_no_import_cycles():
    edges = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):                                      # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert cycles == []


def test_every_layer_imports_only_downward():
    wrong = []
    for name, targets in graph().items():
        layer = layer_of(name)
        if layer is None:
            continue
        for target in targets:
            target_layer = layer_of(target) or target.split(".")[0]
            if target_layer not in ALLOWED[layer] and target not in ("shared",):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_the_core_names_no_presentation_or_network_library():
    modules = project_modules()
    wrong = [f"{name} -> {m}" for name, (path, tree) in modules.items() if layer_of(name) == "shared.core"
             for m in imports_of(name, path, tree) if m.split(".")[0] in CORE_FORBIDDEN]
    assert wrong == []


def test_running_the_core_loads_no_presentation_or_network_library():
    """What the twins execute, imported and run in a fresh process: rich, matplotlib and zmq stay out."""
    code = ("import sys\nfrom shared.coding.codec import compress, decompress\nfrom shared.coding.container import parse\n"
            "from shared.core.config import preset\nfrom shared.core.fingerprint import fingerprint\n"
            "fingerprint()\nblob, _ = compress(b'hello mars' * 50, preset('tiny'))\ndecompress(parse(blob))\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({CORE_FORBIDDEN!r})))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: a core module importing the show layer is both."""
    fake = {"shared.core.a": {"shared.show.b"}, "shared.show.b": {"shared.core.a"}}
    monkeypatch.setattr(sys.modules[__name__], "graph", lambda: fake)
    try:
        test_no_import_cycles()
    except AssertionError:
        pass
    else:
        raise AssertionError("a two-module cycle went unnoticed")
    try:
        test_every_layer_imports_only_downward()
    except AssertionError:
        pass
    else:
        raise AssertionError("core -> show went unnoticed")
