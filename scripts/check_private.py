"""
Check that no module of a package reaches into another module's private names.

    python scripts/check_private.py [PACKAGE_DIR]     (default: scserver)

A name that starts with one underscore (C{_engine}, C{_emit}) is private to
the module that defines it.  Inside that module any object may use it
("friends inside one module are fine"); from any other module it is a
violation, whether read as an attribute (C{server._emit(...)},
C{socket._engine.receive(...)}) or imported (C{from ._engine import
_MISSING}).  Private I{modules} (C{scserver._engine}) may be imported: the
rule is about names inside a module, not the module files of the package.

What a module defines: its functions, classes, methods and module-level
names, every C{x._name = ...} assignment, C{__slots__} entries and keyword
parameters.  Attribute reads on C{self} and C{cls} are always allowed (a
subclass may use what its base class keeps), and so are reads on a module
from outside the package imported by name (C{os._exit}, C{sys._getframe}:
the rule is about this package's modules).

Exits 1 and prints C{path:line: name} for every violation; exits 0 when
there is none.
"""

import ast
import os
import sys


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_names(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if not isinstance(node, ast.ClassDef):
                args = node.args
                for arg in args.args + args.kwonlyargs + args.posonlyargs:
                    names.add(arg.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.attr)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "__slots__":
                    for element in ast.walk(node.value):
                        if isinstance(element, ast.Constant) and isinstance(element.value, str):
                            names.add(element.value)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.asname:
                    names.add(alias.asname)
    return names


def _is_module(path, node, name):
    """Whether C{from X import name} in C{path} imports a module of the package."""
    if not node.level:
        return False
    directory = os.path.dirname(path)
    for _ in range(node.level - 1):
        directory = os.path.dirname(directory)
    if node.module:
        directory = os.path.join(directory, *node.module.split("."))
    return (os.path.exists(os.path.join(directory, name + ".py"))
            or os.path.isdir(os.path.join(directory, name)))


def _external_modules(tree):
    """The names that C{import x} / C{import x as y} bind to outside modules."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
    return names


def check_file(path):
    """Return the violations of one file as C{(line, name)} pairs."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    defined = _defined_names(tree)
    external = _external_modules(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and (
                    owner.id in ("self", "cls") or owner.id in external):
                continue
            if node.attr not in defined:
                found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _is_private(alias.name) and not _is_module(path, node, alias.name):
                    found.append((node.lineno, alias.name))
    return sorted(found)


def main(argv):
    root = argv[1] if len(argv) > 1 else "scserver"
    violations = 0
    for directory, _dirs, files in sorted(os.walk(root)):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            for line, attr in check_file(path):
                print("{}:{}: {}".format(path, line, attr))
                violations += 1
    if violations:
        print("{} read(s) of another module's private names".format(violations))
        return 1
    print("no module reads another module's private names")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
