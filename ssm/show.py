"""Show the package's own source code in a chapter: one source of truth for book and package.

``show_source(ssm.discretize)`` returns an object that a notebook renders as a highlighted Python
block (Markdown with a ``python`` fence, which Jupyter, Colab and Jupyter Book all highlight), and
that prints as plain source elsewhere.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap
from pathlib import Path
from typing import Any

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class Source:
    """Source code of one or more objects, rendered as a fenced Python block."""

    def __init__(self, code: str, origin: str) -> None:
        self.code = code
        self.origin = origin

    def _repr_markdown_(self) -> str:
        return f"{self.origin}\n\n```python\n{self.code}\n```\n"

    def __repr__(self) -> str:
        return f"# {self.origin.replace('`', '')}\n{self.code}"

    def __str__(self) -> str:
        return self.code


def _origin(obj: Any) -> tuple[str, str]:
    """``(file relative to the repository, qualified name)``; never an absolute path."""
    target = inspect.unwrap(obj)
    name = target.__name__ if inspect.ismodule(target) else target.__qualname__
    try:
        path = Path(inspect.getsourcefile(target) or "").resolve()
        rel = path.relative_to(_PACKAGE_ROOT).as_posix()
    except (TypeError, ValueError):
        rel = getattr(inspect.getmodule(target), "__name__", "?")
    return rel, name


def _describe(origins: list[tuple[str, str]]) -> str:
    """``From `ssm/a.py`: `f`, `g`; from `ssm/b.py`: `h` ``, files in order of appearance."""
    by_file: dict[str, list[str]] = {}
    for rel, name in origins:
        by_file.setdefault(rel, []).append(name)
    parts = [f"`{rel}`: " + ", ".join(f"`{n}`" for n in names) for rel, names in by_file.items()]
    return "From " + "; from ".join(parts)


def _strip_docstring(code: str) -> str:
    """Remove the docstring of the (first) function or class in ``code``."""
    import ast

    tree = ast.parse(code)
    node = tree.body[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return code
    first = node.body[0] if node.body else None
    if not (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return code
    lines = code.splitlines()
    kept = lines[: first.lineno - 1] + lines[first.end_lineno :]
    return "\n".join(kept)


def resolve(name: str) -> Any:
    """The object a dotted name refers to, e.g. ``"ssm.discretize._dense"``.

    Modules are found even where the package rebinds their name (``ssm.discretize`` is a function
    in the ``ssm`` namespace but also a module).
    """
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError as err:
            raise ValueError(f"cannot find {name!r}: {err}") from err
        return obj
    raise ValueError(f"cannot import any module of {name!r}")


def show_source(*objs: Any, docstring: bool = True) -> Source:
    """The source of ``objs`` (functions, classes or modules of ``ssm``) for display.

    Args:
        objs: one or more objects, or dotted names of them (``"ssm.discretize._dense"``); their
            sources are shown one after the other.
        docstring: keep the docstrings (``False`` shows just the code).

    Returns:
        a :class:`Source`, rendered highlighted in notebooks and the built book.
    """
    if not objs:
        raise ValueError("show_source needs at least one function, class or module")
    blocks, origins = [], []
    for obj in objs:
        if isinstance(obj, str):
            obj = resolve(obj)
        try:
            code = textwrap.dedent(inspect.getsource(inspect.unwrap(obj)))
        except (TypeError, OSError) as err:
            raise ValueError(
                f"cannot show the source of {obj!r}: pass a Python function, class or module"
            ) from err
        if not docstring:
            code = _strip_docstring(code)
        blocks.append(code.rstrip())
        origins.append(_origin(obj))
    return Source("\n\n\n".join(blocks), _describe(origins))
