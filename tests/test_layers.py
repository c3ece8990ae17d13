"""The ring rules of docs/ARCHITECTURE.md, read from every module's import statements.

Imports inside functions (lazy imports) and under ``if TYPE_CHECKING:`` count too: a rule that
only holds at module level is not a rule.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gateway"

PURE_CORE = ("smpp", "text", "consent", "messages", "proxyproto")
# Standard-library modules the pure core may not touch: I/O, the clock, logging, threads.
CORE_FORBIDDEN = frozenset(
    {"asyncio", "socket", "time", "logging", "structlog", "threading", "sqlite3", "redis"}
)
# What each pure-core package may import from the gateway besides itself: smpp, text,
# consent and proxyproto stand side by side; messages (the message path) builds on all three.
CORE_ALLOWED_GATEWAY = {
    "smpp": frozenset({"gateway.errors"}),
    "text": frozenset({"gateway.errors"}),
    "consent": frozenset({"gateway.errors"}),
    "messages": frozenset({"gateway.errors", "gateway.smpp", "gateway.text", "gateway.consent"}),
    "proxyproto": frozenset({"gateway.errors"}),
}
# The only third-party import in the pure core, and where.
# What proxy and admin may use of the store: the protocol and the operations built on it only.
STORE_PROTOCOL_MODULES = frozenset(
    {"gateway.store", "gateway.store.base", "gateway.store.staff", "gateway.store.evidence"}
)
CORE_THIRD_PARTY = {"gateway.consent.numbers": frozenset({"phonenumbers"})}


@dataclass(frozen=True, slots=True, kw_only=True)
class Import:
    module: str  # the importing module, dotted ("gateway.smpp.codec")
    target: str  # the imported module, dotted and absolute ("gateway.errors", "asyncio")
    line: int

    def __str__(self) -> str:
        return f"{self.module} imports {self.target} (line {self.line})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import (``from .codec import x`` in gateway.smpp.pdu)."""
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(path: Path) -> list[Import]:
    """Every import in the module file at ``path``."""
    return imports_in(
        path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py"
    )


def _is_gateway_module(dotted: str) -> bool:
    relative = Path(*dotted.split("."))
    return (ROOT / relative).is_dir() or (ROOT / relative.with_suffix(".py")).is_file()


def imports_in(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import in ``source`` (the text of ``module``). ``from gateway import errors``
    counts as ``gateway.errors``, and ``importlib.import_module("gateway.app")`` with a literal
    name counts too."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            found += [Import(module=module, target=a.name, line=node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            base = (
                _resolve(module, is_package, node.level, node.module)
                if node.level
                else str(node.module)
            )
            found.append(Import(module=module, target=base, line=node.lineno))
            if top(base) == "gateway":
                # ``from gateway.telemetry import logs`` may name a submodule: count it as one.
                found += [
                    Import(module=module, target=f"{base}.{a.name}", line=node.lineno)
                    for a in node.names
                    if _is_gateway_module(f"{base}.{a.name}")
                ]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            )
        ):
            found.append(Import(module=module, target=node.args[0].value, line=node.lineno))
    return found


def all_imports() -> list[Import]:
    return [i for path in sorted(PACKAGE.rglob("*.py")) for i in imports_of(path)]


def top(target: str) -> str:
    return target.split(".")[0]


def within(target: str, *packages: str) -> bool:
    """``target`` is one of the dotted ``packages`` or inside one of them."""
    return any(target == p or target.startswith(p + ".") for p in packages)


def in_package(imp: Import, package: str) -> bool:
    return within(imp.module, package)


def gateway_targets(imports: list[Import]) -> list[Import]:
    return [i for i in imports if top(i.target) == "gateway"]


def violations(imports: list[Import], allowed: tuple[str, ...]) -> list[str]:
    """Imports of gateway modules outside ``allowed`` (the bare ``gateway`` package is the
    version string, which every ring may read)."""
    return [
        str(i)
        for i in gateway_targets(imports)
        if i.target != "gateway" and not within(i.target, *allowed)
    ]


IMPORTS = all_imports()


class TestScanner:
    """The scanner itself: a rule checker that sees nothing would pass everything."""

    def test_finds_imports_in_every_ring(self) -> None:
        """Every package has modules and imports that the scanner attributes to it."""
        modules = {i.module for i in IMPORTS}
        for package in (*PURE_CORE, "store", "proxy", "simulator", "telemetry"):
            assert any(m.startswith(f"gateway.{package}.") for m in modules), package

    def test_lazy_relative_and_literal_imports_count(self) -> None:
        """Imports inside functions, relative imports and import_module("...") are all seen."""
        source = (
            "from __future__ import annotations\n"
            "import importlib\n"
            "from . import codec\n"
            "from ..text import gsm7\n"
            "from gateway.telemetry import logs\n"
            "def f() -> None:\n"
            "    import asyncio\n"
            "    importlib.import_module('gateway.app')\n"
        )
        targets = {i.target for i in imports_in(source, "gateway.smpp.probe")}
        assert {
            "asyncio",
            "gateway.app",
            "gateway.smpp.codec",
            "gateway.text.gsm7",
            "gateway.telemetry.logs",
        } <= targets
        assert "__future__" not in targets


class TestPureCore:
    """smpp, text, consent, messages and proxyproto: standard library only, no I/O, no clock,
    no logging."""

    @pytest.mark.parametrize("package", PURE_CORE)
    def test_only_stdlib_errors_and_own_package(self, package: str) -> None:
        """A pure-core package imports the standard library, itself and the gateway modules
        its ring allows it only (gateway.errors; messages also smpp, text and consent)."""
        bad = []
        for imp in IMPORTS:
            if not in_package(imp, f"gateway.{package}"):
                continue
            if top(imp.target) == "gateway":
                if imp.target != "gateway" and not within(
                    imp.target, f"gateway.{package}", *CORE_ALLOWED_GATEWAY[package]
                ):
                    bad.append(str(imp))
            elif top(imp.target) not in sys.stdlib_module_names and top(
                imp.target
            ) not in CORE_THIRD_PARTY.get(imp.module, frozenset()):
                bad.append(f"{imp} (not the standard library)")
        assert not bad, "\n".join(bad)

    @pytest.mark.parametrize("package", PURE_CORE)
    def test_no_io_clock_or_logging(self, package: str) -> None:
        """A pure-core package never imports asyncio, socket, time, logging, threads or stores."""
        bad = [
            str(i)
            for i in IMPORTS
            if in_package(i, f"gateway.{package}") and top(i.target) in CORE_FORBIDDEN
        ]
        assert not bad, "\n".join(bad)

    def test_phonenumbers_only_in_numbers(self) -> None:
        """phonenumbers is imported in the pure core by consent/numbers.py alone."""
        bad = [
            str(i)
            for i in IMPORTS
            if top(i.target) == "phonenumbers"
            and any(in_package(i, f"gateway.{p}") for p in PURE_CORE)
            and i.module != "gateway.consent.numbers"
        ]
        assert not bad, "\n".join(bad)


class TestAdapters:
    """telemetry, store, proxy, admin and simulator import only what their ring allows."""

    def test_telemetry_imports_nothing_else_from_gateway(self) -> None:
        """Telemetry is a leaf: every other ring may log and count, so it may depend on none."""
        own = [i for i in IMPORTS if in_package(i, "gateway.telemetry")]
        assert not violations(own, ("gateway.telemetry",)), "\n".join(
            violations(own, ("gateway.telemetry",))
        )

    def test_store_imports_consent_errors_telemetry(self) -> None:
        """The store builds on the consent model only; it knows nothing of SMPP or the relay."""
        allowed = ("gateway.store", "gateway.consent", "gateway.errors", "gateway.telemetry")
        own = [i for i in IMPORTS if in_package(i, "gateway.store")]
        assert not violations(own, allowed), "\n".join(violations(own, allowed))

    @pytest.mark.parametrize("package", ["proxy", "admin"])
    def test_proxy_and_admin_use_store_base_only(self, package: str) -> None:
        """The relay and the admin API see the ConsentStore protocol (and the staff operations
        written against it), never a concrete store or the factory that picks one."""
        bad = [
            str(i)
            for i in IMPORTS
            if in_package(i, f"gateway.{package}")
            and within(i.target, "gateway.store")
            and i.target not in STORE_PROTOCOL_MODULES
        ]
        assert not bad, "\n".join(bad)

    @pytest.mark.parametrize(
        "package", ["proxy", "simulator", "store", "telemetry", "admin", "audit"]
    )
    def test_adapters_do_not_import_the_composition_root(self, package: str) -> None:
        """No adapter imports gateway.app or gateway.cli: the root depends on them, not back."""
        bad = [
            str(i)
            for i in IMPORTS
            if in_package(i, f"gateway.{package}")
            and within(i.target, "gateway.app", "gateway.cli")
        ]
        assert not bad, "\n".join(bad)

    def test_nothing_but_main_imports_cli(self) -> None:
        """gateway.cli is the entry point: only ``python -m gateway`` (__main__) imports it."""
        bad = [
            str(i)
            for i in IMPORTS
            if within(i.target, "gateway.cli") and i.module not in ("gateway.__main__",)
        ]
        assert not bad, "\n".join(bad)


def import_cycles(imports: list[Import], package: str) -> list[list[str]]:
    """The import cycles among the modules of ``package`` (each as the modules on it, in order)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if in_package(imp, package) and within(imp.target, package) and imp.target != package:
            graph.setdefault(imp.module, set()).add(imp.target)
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(path[path.index(module) :])
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return cycles


class TestNoCycles:
    """The relay's modules import each other one way only (hooks never see the Bridge)."""

    def test_finder_sees_a_cycle(self) -> None:
        """A cycle made of two modules importing each other is reported."""
        pair = [
            Import(module="gateway.proxy.a", target="gateway.proxy.b", line=1),
            Import(module="gateway.proxy.b", target="gateway.proxy.a", line=1),
        ]
        assert import_cycles(pair, "gateway.proxy") == [["gateway.proxy.a", "gateway.proxy.b"]]

    @pytest.mark.parametrize("package", ["gateway.proxy", "gateway.smpp", "gateway.messages"])
    def test_no_import_cycle(self, package: str) -> None:
        """No module of the package imports, even under TYPE_CHECKING, one that imports it back."""
        cycles = import_cycles(IMPORTS, package)
        assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


class TestViolationMessages:
    """A failing rule names the offending module and what it imports."""

    def test_message_names_module_and_import(self) -> None:
        """The report line for a bad import says which module imports what, and where."""
        imp = Import(module="gateway.smpp.codec", target="asyncio", line=7)
        assert str(imp) == "gateway.smpp.codec imports asyncio (line 7)"
        assert violations(
            [Import(module="gateway.store.sqlite", target="gateway.smpp.codec", line=3)],
            ("gateway.store",),
        ) == ["gateway.store.sqlite imports gateway.smpp.codec (line 3)"]
