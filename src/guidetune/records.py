"""One reader for data records: CSV, TSV, JSONL and JSON, as benchmark files are published.

Every task and command that reads records goes through :func:`read_table` (and text corpora through
:func:`read_lines`), so a file is read the same way everywhere:

* **Formats** by extension: ``.csv`` (comma), ``.tsv`` (tab), ``.jsonl``/``.ndjson`` (one object a
  line), ``.json`` (a list of objects, an object holding one such list, or JSON lines). CSV/TSV go
  through the :mod:`csv` module on the whole text, so a quoted field keeps its newlines; ``.tsv``
  files are read without quote processing (``quoting: none``, as GLUE and NLI suites ship them)
  unless ``quoting: minimal`` is asked for.
* **Encoding**: ``utf-8`` by default (a BOM is dropped); a byte that does not decode is one error
  naming the file, the byte offset and line, and suggesting ``encoding: cp1252``.
* **Field mapping**: a task asks for its own names (``prompt``, ``classes``, ``answer_index``); a
  ``fields:`` mapping says which field of the file holds each (``{prompt: input, answer_index: label}``).
  A mapping naming a field the file does not have is an error listing the fields there.
* **Values**: a missing, null (JSON ``null``) or empty value is an error naming the file, line and
  column (CSV/TSV: the cell number; JSON: the character where the field starts); ``label_map:``
  turns string labels (``entailment``/``not_entailment``, ``YES``/``NO``) into integers.

Line numbers are those of the first line of a record (a CSV record with quoted newlines spans several).
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import GuidetuneError, did_you_mean

PACKAGE_PREFIX = "guidetune:"
DELIMITED = {".csv": ",", ".tsv": "\t"}
JSON_LINES = (".jsonl", ".ndjson")
QUOTING = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}
_HINT = {"utf-8": "cp1252", "utf-8-sig": "cp1252", "ascii": "utf-8"}


def resolve(path: str | Path, what: str = "data") -> Path:
    """A data file's path (``guidetune:demo/x.jsonl`` points into the package); one-line error if absent.

    ``what`` names the setting in errors (``task.eval``, ``--corpus``).
    """
    s = str(path)
    if not s:
        raise GuidetuneError(f"{what}: no file given")
    if s.startswith(PACKAGE_PREFIX):
        p = Path(str(resources.files("guidetune") / "data" / s[len(PACKAGE_PREFIX):]))
    else:
        p = Path(s).expanduser()
    if not p.exists():
        raise GuidetuneError(f"{what}: file not found '{s}'")
    return p


def require_file(path: str | Path, what: str = "data") -> Path:
    """:func:`resolve`, and a one-line error when it names a directory."""
    p = resolve(path, what)
    if p.is_dir():
        inside = sorted(x.name for x in p.iterdir() if x.suffix.lower() in (*DELIMITED, *JSON_LINES, ".json"))
        hint = f" (it holds {', '.join(inside[:5])})" if inside else ""
        raise GuidetuneError(f"{what}: '{path}' is a directory; give a data file{hint}")
    return p


def _decode(data: bytes, path: Path, encoding: str) -> str:
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(enc)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        hint = _HINT.get(enc.lower(), "utf-8")
        raise GuidetuneError(f"{path}: byte {e.start} (line {line}, 0x{data[e.start]:02x}) is not valid {encoding}; "
                             f"try encoding: {hint}") from None
    except LookupError:
        raise GuidetuneError(f"encoding: unknown encoding '{encoding}' (e.g. utf-8, cp1252, latin-1)") from None


def read_text(path: str | Path, what: str = "data", encoding: str = "utf-8") -> str:
    """A whole text file, decoded with the one error message for bad bytes."""
    p = require_file(path, what)
    return _decode(p.read_bytes(), p, encoding)


def read_lines(path: str | Path, what: str = "data", encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) of a text file, streamed; decode errors name the byte."""
    p = require_file(path, what)
    offset = 0
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    with open(p, "rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                text = raw.decode(enc if i == 1 else encoding)
            except UnicodeDecodeError as e:
                hint = _HINT.get(encoding.lower(), "utf-8")
                raise GuidetuneError(f"{p}: byte {offset + e.start} (line {i}, 0x{raw[e.start]:02x}) is not valid "
                                     f"{encoding}; try encoding: {hint}") from None
            except LookupError:
                raise GuidetuneError(f"encoding: unknown encoding '{encoding}' (e.g. utf-8, cp1252, latin-1)") from None
            offset += len(raw)
            yield i, text.rstrip("\r\n")


@dataclass
class Record:
    """One record: its values by the file's field names, where it came from, and how to point into it."""

    values: dict[str, Any]
    path: Path
    line: int
    columns: dict[str, int] = field(default_factory=dict)  # field -> column reported in errors

    def where(self, key: str | None = None) -> str:
        col = self.columns.get(key) if key is not None else None
        return f"{self.path}:{self.line}" + (f":{col}" if col else "")


@dataclass
class Table:
    """The records of one file and the field names that occur in it (in first-seen order)."""

    path: Path
    fields: list[str]
    records: list[Record]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)


def read_table(path: str | Path, what: str = "data", encoding: str = "utf-8", delimiter: str | None = None,
               quoting: str | None = None, header: bool = True) -> Table:
    """Every record of a CSV/TSV/JSONL/JSON file. An empty file is an error.

    ``delimiter`` overrides the one the extension implies (a ``.txt`` of tab-separated cells);
    ``header: false`` names CSV columns ``0``, ``1``, ... (CoLA ships without a header).
    """
    p = require_file(path, what)
    suffix = p.suffix.lower()
    text = _decode(p.read_bytes(), p, encoding)
    if not text.strip():
        raise GuidetuneError(f"{p}: the file is empty")
    if delimiter is None and suffix in (*JSON_LINES, ".json"):
        table = _read_json(p, text, suffix)
    else:
        if delimiter is None:
            if suffix not in DELIMITED:
                raise GuidetuneError(f"{what}: cannot tell the format of '{path}' from its extension; use .csv, .tsv, "
                                     ".jsonl or .json (or give a delimiter)")
            delimiter = DELIMITED[suffix]
        if quoting is None:
            quoting = "none" if delimiter == "\t" else "minimal"
        if quoting not in QUOTING:
            raise GuidetuneError(f"quoting: '{quoting}' is not allowed; allowed: {', '.join(QUOTING)}")
        table = _read_delimited(p, text, delimiter, QUOTING[quoting], header)
    if not table.records:
        raise GuidetuneError(f"{p}: the file holds no records" + (" (only a header)" if table.fields else ""))
    return table


def _read_delimited(p: Path, text: str, delimiter: str, quoting: int, header: bool) -> Table:
    csv.field_size_limit(2**31 - 1)  # papers for summarization exceed the 128 KiB default
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting,
                        strict=quoting != csv.QUOTE_NONE)
    names: list[str] | None = None
    records: list[Record] = []
    end = 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if "end of data" in str(e) or "field larger" in str(e):
                raise GuidetuneError(f"{p}:{start}: a quoted field opened in this record never closes") from None
            span = f"; the record began on line {start}, is a quote left open there?" if reader.line_num > start else ""
            raise GuidetuneError(f"{p}:{reader.line_num}: bad CSV quoting ({e}){span}") from None
        end = reader.line_num
        if not cells or cells == [""]:
            continue
        if names is None:
            if header:
                names = [c.strip() for c in cells]
                dup = sorted({c for c in names if names.count(c) > 1})
                if dup:
                    raise GuidetuneError(f"{p}:{start}: the header names '{dup[0]}' twice")
                continue
            names = [str(i) for i in range(len(cells))]
        if len(cells) != len(names):
            raise GuidetuneError(f"{p}:{start}: {len(cells)} columns, the header has {len(names)}")
        records.append(Record(dict(zip(names, cells)), p, start, {n: i + 1 for i, n in enumerate(names)}))
    return Table(p, names or [], records)


def _read_json(p: Path, text: str, suffix: str) -> Table:
    objects: list[tuple[int, dict, str]] = []  # (line, object, text of its first line)
    lines = text.splitlines()
    stripped = text.lstrip()
    if suffix == ".json" and stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if stripped.startswith("{") and e.msg == "Extra data":  # JSON lines under a .json name
                return _read_json(p, text, ".jsonl")
            raise GuidetuneError(f"{p}:{e.lineno}:{e.colno}: malformed JSON ({e.msg})") from None
        if isinstance(data, dict):
            lists = [k for k, v in data.items() if isinstance(v, list)]
            if len(lists) != 1:
                raise GuidetuneError(f"{p}: expected a list of records (or an object holding one list), "
                                     f"got an object with keys {', '.join(list(data)[:8])}")
            key, data = lists[0], data[lists[0]]
        else:
            key = None
        if not isinstance(data, list):
            raise GuidetuneError(f"{p}: expected a list of records, got {type(data).__name__}")
        for i, rec, line in zip(range(len(data)), data, _element_lines(text, len(data), key)):
            if not isinstance(rec, dict):
                raise GuidetuneError(f"{p}:{line}: record {i} is a {type(rec).__name__}, expected an object")
            objects.append((line, rec, lines[line - 1] if line <= len(lines) else ""))
    else:
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise GuidetuneError(f"{p}:{i}:{e.colno}: malformed JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise GuidetuneError(f"{p}:{i}: expected a JSON object per line, got {type(rec).__name__}")
            objects.append((i, rec, line))
    names: dict[str, None] = {}
    records = []
    for line, rec, raw in objects:
        cols = {}
        for k in rec:
            names.setdefault(k, None)
            pos = raw.find(json.dumps(k))
            if pos >= 0:
                cols[k] = pos + 1
        records.append(Record(rec, p, line, cols))
    return Table(p, list(names), records)


def _element_lines(text: str, n: int, key: str | None = None) -> list[int]:
    """Line of each element of the record list (a top-level array, or the list under ``key``)."""
    dec = json.JSONDecoder()
    try:
        if key is None:
            pos = text.index("[") + 1
        else:  # {"data": [...]}: the list after the key (found by decoding the key's value position)
            pos = text.index(":", text.index(json.dumps(key)) + len(json.dumps(key)))
            pos = text.index("[", pos) + 1
        out = []
        for _ in range(n):
            while text[pos] in " \t\r\n,":
                pos += 1
            out.append(text.count("\n", 0, pos) + 1)
            _, pos = dec.raw_decode(text, pos)
        return out
    except (ValueError, IndexError):  # e.g. the key written with escapes: records still read, lines unknown
        return [1] * n


class FieldMap:
    """A task's field names resolved against a file, and typed access to record values.

    ``wanted`` maps the task's names to the file's default names (``{"prompt": "prompt"}``);
    ``fields`` (the user's ``fields:``) overrides some; ``optional`` names may be absent from the file;
    ``hint`` replaces "map one with fields: {...}" in the error for a field the file lacks.
    """

    def __init__(self, table: Table, wanted: Mapping[str, str], fields: Mapping[str, str] | None = None,
                 optional: tuple[str, ...] = (), label_map: Mapping[Any, Any] | None = None, hint: str | None = None):
        fields = dict(fields or {})
        self.table = table
        self.names: dict[str, str] = {}
        self.label_map = {str(k): v for k, v in (label_map or {}).items()}
        present = set(table.fields)
        there = ", ".join(table.fields) or "none"
        for name, default in wanted.items():
            col = str(fields.get(name, default))
            if col not in present:
                if name in optional and name not in fields:
                    continue
                if name in fields:
                    raise GuidetuneError(f"{table.path}: fields.{name} names '{col}', which is not a field of this "
                                         f"file.{did_you_mean(col, table.fields).replace('Available', 'Fields there')}")
                raise GuidetuneError(f"{table.path}: no field '{col}' for {name} (fields there: {there}); "
                                     + (hint or f"map one with fields: {{{name}: FIELD}}"))
            self.names[name] = col

    def has(self, name: str) -> bool:
        return name in self.names

    def value(self, rec: Record, name: str, allow_empty: bool = False) -> Any:
        """The raw value of ``name`` in ``rec``; missing/null/empty are one-line errors at file:line:column."""
        col = self.names[name]
        if col not in rec.values:
            here = ", ".join(rec.values) or "none"
            raise GuidetuneError(f"{rec.where()}: missing field '{col}' (fields here: {here})")
        v = rec.values[col]
        if v is None:
            raise GuidetuneError(f"{rec.where(col)}: field '{col}' is null")
        if not allow_empty and isinstance(v, str) and not v.strip():
            raise GuidetuneError(f"{rec.where(col)}: field '{col}' is empty")
        return v

    def text(self, rec: Record, name: str, allow_empty: bool = False) -> str:
        v = self.value(rec, name, allow_empty)
        if isinstance(v, (dict, list)):
            raise GuidetuneError(f"{rec.where(self.names[name])}: field '{self.names[name]}' must be text, "
                                 f"got a {type(v).__name__}")
        return str(v)

    def missing(self, rec: Record, name: str) -> str | None:
        """'null' / 'empty' / 'missing' when ``name`` has no usable value in ``rec``, else None."""
        col = self.names.get(name)
        if col is None or col not in rec.values:
            return "missing"
        v = rec.values[col]
        if v is None:
            return "null"
        if isinstance(v, str) and not v.strip():
            return "empty"
        return None

    def label(self, rec: Record, name: str) -> Any:
        """The value of ``name`` through ``label_map`` (when one is given); an unmapped label is an error."""
        v = self.value(rec, name)
        if not self.label_map:
            return v
        key = str(v).strip()
        if key not in self.label_map:
            raise GuidetuneError(f"{rec.where(self.names[name])}: label '{key}' is not in label_map; "
                                 f"label_map has: {', '.join(self.label_map)}")
        return self.label_map[key]


def check_mapping(fields: Mapping | None, allowed: tuple[str, ...], errors: list[str]) -> None:
    """Config check: every key of a ``fields:`` mapping is one of the task's names."""
    if fields is None:
        return
    if not isinstance(fields, Mapping):
        errors.append(f"fields: expected a mapping such as {{{allowed[0]}: FIELD}}, got {fields!r}")
        return
    for k in fields:
        if k not in allowed:
            errors.append(f"fields: '{k}' is not a field of this task.{did_you_mean(str(k), allowed)}")


def parse_pairs(text: str, what: str = "--fields") -> dict[str, str]:
    """``prompt=input,classes=options`` -> ``{"prompt": "input", "classes": "options"}``."""
    out = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in part:
            raise GuidetuneError(f"{what}: expected name=field pairs separated by commas, got '{part}'")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out
