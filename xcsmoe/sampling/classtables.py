"""Class tables of categorical products: code → name, water codes, nodata codes.

A product's water and nodata codes come from its table, never from constants in code.
Tables ship in ``xcsmoe/sampling/data/classes/<name>.json`` (``modis-igbp``,
``esa-worldcover``); any other product is one JSON/YAML file or mapping away::

    {"name": "my-map", "title": "My land cover 2024",
     "classes": {"1": "Forest", "2": "Water"}, "water": [2], "nodata": [0]}

A CSV with ``code,name`` columns (and optional ``water`` / ``nodata`` flag columns) works
too.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from xcsmoe.errors import ConfigError, expected

__all__ = ["ClassTable", "class_table", "data_path", "shipped_tables"]

DATA_DIR = Path(__file__).resolve().parent / "data"


def data_path(name: str) -> Path:
    """Path of a file shipped in ``xcsmoe/sampling/data``."""
    path = DATA_DIR / name
    if not path.exists():
        raise ConfigError(
            expected("data file", f"a file shipped in {DATA_DIR}", name, "Reinstall xcsmoe.")
        )
    return path


@dataclass(frozen=True)
class ClassTable:
    """Codes and names of a categorical product, and which codes are water / no data."""

    name: str
    classes: Mapping[int, str] = field(repr=False)
    water: frozenset[int] = frozenset()
    nodata: frozenset[int] = frozenset()
    title: str = ""
    source: str = field(default="", repr=False)

    def with_codes(
        self, *, water: Any = None, nodata: Any = None, title: str | None = None
    ) -> ClassTable:
        """A copy with ``water`` / ``nodata`` codes (None keeps them) and ``title`` replaced."""
        return replace(
            self,
            water=self.water if water is None else _codes(water, "water"),
            nodata=self.nodata if nodata is None else _codes(nodata, "nodata"),
            title=self.title if title is None else title,
        )


def shipped_tables() -> list[str]:
    """Names of the class tables shipped with the package."""
    return sorted(p.stem for p in (DATA_DIR / "classes").glob("*.json"))


def _codes(values: Any, argument: str) -> frozenset[int]:
    if values is None:
        return frozenset()
    items = [values] if isinstance(values, (int, str)) else list(values)
    try:
        return frozenset(int(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(expected(argument, "integer class codes", values)) from None


def _from_mapping(raw: Mapping[str, Any], *, name: str) -> ClassTable:
    classes = raw.get("classes", raw)
    if not isinstance(classes, Mapping) or not classes:
        raise ConfigError(expected(f"class table {name!r}", "a non-empty 'classes' mapping", raw))
    try:
        table = {int(code): str(label) for code, label in classes.items()}
    except (TypeError, ValueError):
        raise ConfigError(
            expected(f"class table {name!r}", "integer codes", sorted(map(str, classes)))
        ) from None
    return ClassTable(
        name=str(raw.get("name", name)),
        classes=MappingProxyType(table),
        water=_codes(raw.get("water"), "water"),
        nodata=_codes(raw.get("nodata"), "nodata"),
        title=str(raw.get("title", raw.get("name", name))),
        source=str(raw.get("source", "")),
    )


def _from_csv(path: Path) -> ClassTable:
    import pandas as pd

    frame = pd.read_csv(path)
    if not {"code", "name"} <= set(frame.columns):
        raise ConfigError(expected(str(path), "CSV columns code, name", list(frame.columns)))
    flags = {
        column: frame.loc[frame[column].astype(bool), "code"].tolist()
        for column in ("water", "nodata")
        if column in frame.columns
    }
    body = {"classes": dict(zip(frame["code"], frame["name"], strict=True)), **flags}
    return _from_mapping(body, name=path.stem)


@functools.lru_cache(maxsize=32)
def _read(path: Path) -> ClassTable:
    if path.suffix.lower() == ".csv":
        return _from_csv(path)
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except ValueError as error:  # JSONDecodeError and yaml's errors are ValueErrors
        raise ConfigError(expected(str(path), "a JSON/YAML class table", str(error))) from error
    if not isinstance(raw, Mapping):
        raise ConfigError(expected(str(path), "a mapping", type(raw).__name__))
    return _from_mapping(raw, name=path.stem)


def class_table(source: Any) -> ClassTable:
    """A :class:`ClassTable` from a shipped name, a JSON/YAML/CSV path or a mapping.

    A plain ``{code: name}`` mapping gives a table without water or nodata codes.
    """
    if isinstance(source, ClassTable):
        return source
    if isinstance(source, Mapping):
        return _from_mapping(source, name=str(source.get("name", "classes")))
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        shipped = DATA_DIR / "classes" / f"{text.replace('_', '-')}.json"
        if "/" not in text and "\\" not in text and shipped.is_file():
            return _read(shipped)
        path = Path(text)
        if path.is_file():
            return _read(path.resolve())
        raise ConfigError(
            expected(
                "classes",
                f"one of {shipped_tables()} or a JSON/YAML/CSV class table file",
                text,
            )
        )
    raise ConfigError(
        expected("classes", "a table name, a file path or a mapping", type(source).__name__)
    )
