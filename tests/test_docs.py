"""The docs name only what exists today.

Every `code span` in README.md, docs/*.md (except the dated record docs/results.md) and
protocol/README.md that names a project file, module, function, class, method, test or
command-line option must resolve against the tree; so must every relative link. Names are
resolved by parsing the project's sources (AST), never by trusting the prose, so a rename that
forgets a doc fails here. A self-test on a synthetic doc proves the checker can fail.
"""
from __future__ import annotations

import ast
import importlib
import io
import re
import sys
import tokenize
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ("shared", "protocol", "sender", "receiver", "scripts", "tests")
TOP_ENTRIES = PACKAGES + ("docs", ".ci", "Makefile", "pyproject.toml", "README.md")
CHECKED_SUFFIXES = (".py", ".md", ".sh")      # a bare `name.py` must be a project file
FILE_SUFFIXES = "py|md|png|sh|json|txt|mrs|html|key|key_secret|toml"   # not dotted names
EXTERNAL_MODULES = ("zmq", "zlib", "sys", "struct", "os", "json", "hashlib", "math")
# Names from outside the project that the docs discuss (ZeroMQ events and options, torch
# methods, CUDA intrinsics and nvcc options, oneDNN's ISA names, dask worker's options).
EXTERNAL_NAMES = {"HANDSHAKE_FAILED_NO_DETAIL", "HANDSHAKE_IVL", "sum_to_size", "index_add",
                  "DEFAULT", "__fadd_rn", "__fmul_rn", "__fdiv_rn", "__fsqrt_rn", "__expf",
                  "--fmad", "--use_fast_math", "AVX2", "SSE4_2", "--nworkers"}


def checked_docs(root: Path) -> list[Path]:
    docs = [root / "README.md", root / "protocol" / "README.md"]
    docs += sorted(p for p in (root / "docs").glob("*.md") if p.name != "results.md")
    return docs


class Tree:
    """What the project's sources define: modules, their top-level names, class members, every
    identifier used anywhere, every string constant that looks like a command-line option."""

    def __init__(self, root: Path):
        self.root = root
        self.modules: dict[str, ast.Module] = {}
        self.words: set[str] = set()
        self.options: set[str] = set()
        self.members: dict[str, set[str]] = {}     # class name -> members (any class of that name)
        for pkg in PACKAGES:
            for path in sorted((root / pkg).rglob("*.py")):
                if path.name == Path(__file__).name:     # its self-test names bogus things on purpose
                    continue
                rel = path.relative_to(root).with_suffix("")
                parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
                source = path.read_text(encoding="utf-8")
                tree = ast.parse(source)
                self.modules[".".join(parts)] = tree
                self._scan(source, tree)

    def _scan(self, source: str, tree: ast.Module) -> None:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NAME:
                self.words.add(tok.string)
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docstrings:
                self.options.update(re.findall(r"--[a-z][\w-]*", node.value))
                self.words.update(re.findall(r"\w+", node.value))      # JSON keys, env variables
            if isinstance(node, ast.ClassDef):
                self.members.setdefault(node.name, set()).update(self._class_members(node))

    @staticmethod
    def _class_members(node: ast.ClassDef) -> set[str]:
        names: set[str] = set()
        for item in ast.walk(node):
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(item.name)
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                names.add(item.target.id)
            elif isinstance(item, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                for t in targets:
                    for sub in ast.walk(t):
                        if isinstance(sub, ast.Name):
                            names.add(sub.id)
                        elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) \
                                and sub.value.id == "self":
                            names.add(sub.attr)
        return names

    def top_level(self, module: str) -> dict[str, ast.AST]:
        """Names a module defines (and, for a package, re-exports)."""
        tree = self.modules[module]
        names: dict[str, ast.AST] = {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for sub in ast.walk(t):
                        if isinstance(sub, ast.Name):
                            names[sub.id] = node
            elif isinstance(node, ast.ImportFrom) and module.count(".") < 2 \
                    and self.is_package(module):
                for alias in node.names:
                    names[alias.asname or alias.name] = node
        for sub in self.modules:
            if sub.startswith(module + ".") and sub.count(".") == module.count(".") + 1:
                names[sub.rsplit(".", 1)[1]] = ast.Module(body=[], type_ignores=[])
        return names

    def is_package(self, module: str) -> bool:
        return any(m.startswith(module + ".") for m in self.modules)

    # -- resolving one name -------------------------------------------------------------------

    def resolve_in_module(self, module: str, rest: list[str]) -> bool:
        if not rest:
            return True
        names = self.top_level(module)
        if rest[0] not in names:
            return False
        if f"{module}.{rest[0]}" in self.modules:
            return self.resolve_in_module(f"{module}.{rest[0]}", rest[1:])
        node = names[rest[0]]
        if len(rest) == 1:
            return True
        if isinstance(node, ast.ClassDef):
            return len(rest) == 2 and rest[1] in self._class_members(node)
        return all(part in self.words for part in rest[1:])

    def dotted(self, name: str) -> bool:
        parts = name.split(".")
        if parts[0] in PACKAGES:
            for cut in range(len(parts), 0, -1):
                if ".".join(parts[:cut]) in self.modules:
                    return self.resolve_in_module(".".join(parts[:cut]), parts[cut:])
            return False
        short = [m for m in self.modules if m.rsplit(".", 1)[-1] == parts[0]]
        if short:                                   # `ngram.trust_index`, `exact.matmul`
            return any(self.resolve_in_module(m, parts[1:]) for m in short)
        if parts[0] in self.members:                # `Twin.advance`, `GPT.prime`
            return len(parts) == 2 and parts[1] in self.members[parts[0]]
        if parts[0] in EXTERNAL_MODULES:            # `zmq.auth.create_certificates`, `zlib.crc32`
            try:
                obj = importlib.import_module(parts[0])
                for part in parts[1:]:
                    obj = getattr(obj, part, None) or importlib.import_module(f"{obj.__name__}.{part}")
                return True
            except (ImportError, AttributeError):
                return False
        return all(part in self.words for part in parts)   # `stats.strangers`, `twin.watcher`

    def bare(self, name: str) -> bool:
        return name in EXTERNAL_NAMES or name in self.words or name in self.members or any(
            m.rsplit(".", 1)[-1] == name for m in self.modules)

    def path(self, text: str, here: Path) -> bool:
        text = text.rstrip("/")
        for base in (self.root, here):
            if (base / text).exists():
                return True
        if "/" not in text:                          # `coder.py`, `test_kill.py`: a file of that name
            return any(p.name == text for p in self.root.rglob(text) if ".venv" not in p.parts)
        return False

    def test(self, file: str, name: str) -> bool:
        """`test_kill.py::test_x` (a trailing … means any test starting so)."""
        path = self.root / "tests" / Path(file).name
        if not path.exists():
            return False
        prefix = name.endswith("…")
        name = name.rstrip("…")
        tests = [n.name for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        return any(t.startswith(name) for t in tests) if prefix else name in tests


SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
TEST_REF = re.compile(r"(?:(test_\w+\.py))?::(test_\w+…?)")
OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")
PATHLIKE = re.compile(rf"(?<![\w.~/<>-])((?:\.?[\w-]+/)+[\w.*-]*|[\w-]+\.(?:{FILE_SUFFIXES}))(?!\w)(?::\d+)?")
DOTTED = re.compile(r"(?<![\w./-])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?![\w/-])")
IDENT = re.compile(r"^[A-Za-z_]\w*(?:\(\))?$")


def problems(doc: Path, tree: Tree, here: Path | None = None) -> list[str]:
    """Every name in `doc` that does not resolve, as 'doc:line: name'; relative links and paths
    are read from `here` (the doc's folder unless given)."""
    here = here or doc.parent
    text = doc.read_text(encoding="utf-8")
    found: list[str] = []
    fenced = {m.start(): m.end() for m in FENCE.finditer(text)}

    def in_fence(pos: int) -> bool:
        return any(a <= pos < b for a, b in fenced.items())

    for number, line in enumerate(text.splitlines(), 1):
        pos = sum(len(x) + 1 for x in text.splitlines()[:number - 1])
        bad = lambda name: found.append(f"{doc.name}:{number}: {name}")  # noqa: E731
        for link in LINK.findall(line):
            target = link.split("#")[0]
            if target and "://" not in target and not (here / target).exists():
                bad(link)
        spans = [line] if in_fence(pos) else SPAN.findall(line)
        last_test_file = None
        for span in spans:
            for option in OPTION.findall(span):
                if option not in tree.options and option not in EXTERNAL_NAMES:
                    bad(option)
            if in_fence(pos):
                for m in PATHLIKE.finditer(span):
                    if m.group(1).split("/")[0] in TOP_ENTRIES and not tree.path(m.group(1), here):
                        bad(m.group(1))
                continue
            for file, name in TEST_REF.findall(span):
                last_test_file = file or last_test_file
                if not last_test_file or not tree.test(last_test_file, name):
                    bad(f"{last_test_file}::{name}")
            rest = TEST_REF.sub(" ", span)
            paths = [m.group(1) for m in PATHLIKE.finditer(rest)]
            for p in paths:
                checked = p.split("/")[0] in TOP_ENTRIES or ("/" not in p and p.endswith(CHECKED_SUFFIXES))
                if checked and not tree.path(p, here):
                    bad(p)
            rest = PATHLIKE.sub(" ", rest)
            for name in DOTTED.findall(rest):
                if not tree.dotted(name):
                    bad(name)
            word = span.strip()
            if IDENT.match(word):
                word = word.removesuffix("()")
                looks_like_code = "_" in word or word[:1].isupper() and word[1:] != word[1:].lower()
                if looks_like_code and not tree.bare(word):
                    bad(word)
    return found


_TREE: list[Tree] = []


def project() -> Tree:
    if not _TREE:
        _TREE.append(Tree(ROOT))
    return _TREE[0]


def test_every_name_the_docs_give_exists_today():
    tree = project()
    stale = [p for doc in checked_docs(ROOT) for p in problems(doc, tree)]
    assert stale == [], "the docs name what does not exist:\n" + "\n".join(stale)


def test_the_checker_catches_stale_names(tmp_path):
    """A synthetic doc with one bogus name of each kind beside real ones: exactly the bogus ones."""
    doc = tmp_path / "selftest.md"
    doc.write_text(
        "Real: `shared.core.engine.Twin.advance`, `Twin.advance`, `ngram.trust_index`,\n"
        "`shared/core/engine.py`, `coder.py`, `--preset`, `test_kill.py::test_kill_bob_at_a_step_then_restart_him_once`,\n"
        "`zlib.crc32`, `PROTOCOL_VERSION`, [arch](architecture.md).\n"
        "Stale: `shared.core.layout.Layout.rows`\n"
        "`_say_done`\n"
        "`Twin.no_such_method`\n"
        "`shared/core/gone.py`\n"
        "`--no-such-option`\n"
        "`test_stream.py::test_no_such_test`\n"
        "[gone](gone.md)\n"
        "```sh\n.venv/bin/python scripts/no_such_script.py --input x\n```\n",
        encoding="utf-8")
    found = problems(doc, project(), here=ROOT / "docs")
    names = [p.split(": ", 1)[1] for p in found]
    assert names == ["shared.core.layout.Layout.rows", "_say_done", "Twin.no_such_method",
                     "shared/core/gone.py", "--no-such-option", "test_stream.py::test_no_such_test",
                     "gone.md", "scripts/no_such_script.py"]


def test_the_protocol_version_the_docs_give_is_todays():
    from protocol.frames import PROTOCOL_VERSION
    text = (ROOT / "protocol" / "README.md").read_text(encoding="utf-8")
    claimed = {int(n) for n in re.findall(r"protocol version (\d+)\)", text)}
    claimed |= {int(n) for n in re.findall(r"`PROTOCOL_VERSION`, (\d+)", text)}
    claimed |= {int(n) for n in re.findall(r"this build speaks (\d+)", text)}
    assert claimed == {PROTOCOL_VERSION}


if __name__ == "__main__":   # print the stale names of today's docs
    for d in checked_docs(ROOT):
        print("\n".join(problems(d, project())) or f"{d}: ok", file=sys.stdout)
