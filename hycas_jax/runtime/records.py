"""The one resumable log both evaluations write: a record per finished unit of work.

A `RecordLog` is a `files.AppendLog` (each line whole and durable before
`append` returns; a line cut short by an interruption is dropped on opening)
holding one record per line, either as a tab-separated row under a header of
column names (`columns`: the certification log, Cohen et al.'s format) or as
one JSON object (the attack log). `key(record)` names the unit a record
finishes; reopening a log reads which units are done, and appending a unit
twice is refused, so a resumed run neither loses nor repeats work.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Hashable, Optional, Sequence

import numpy as np

from hycas_jax.runtime import files

COHEN_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")


def format_cell(value) -> str:
    """One TSV cell: ints as ints, floats at full precision (repr of float64)."""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    text = str(value)
    if "\t" in text or "\n" in text:
        raise ValueError(f"log cell {text!r} contains a tab or newline")
    return text


class RecordLog:
    """Resumable, append-only log of keyed records (module docstring).

    path: the file. key: record -> the unit it finishes. columns: a TSV log's
    columns (its header); None for JSON lines. `records` maps each finished key
    to its record (a TSV record's values are the cells' text).
    """

    def __init__(self, path, *, key: Callable[[dict], Hashable],
                 columns: Optional[Sequence[str]] = None):
        self.path, self.key = Path(path), key
        self.columns = None if columns is None else tuple(columns)
        header = None if columns is None else "\t".join(self.columns)
        try:
            self._log = files.AppendLog(self.path, header)
        except ValueError:
            raise ValueError(f"log {self.path} has other columns than "
                             f"{list(self.columns)}") from None
        self.records = {}
        for line in self._log.lines:
            record = self._parse(line)
            self.records[key(record)] = record

    def _parse(self, line: str) -> dict:
        if self.columns is None:
            return json.loads(line)
        return dict(zip(self.columns, line.split("\t")))

    def __contains__(self, unit) -> bool:
        return unit in self.records

    def append(self, record: dict) -> None:
        """Writes one finished unit's record durably."""
        unit = self.key(record)
        if unit in self.records:
            raise ValueError(f"{unit!r} is already in {self.path}")
        if self.columns is None:
            line = json.dumps(record)
        else:
            if set(record) != set(self.columns):
                raise ValueError(f"row has columns {sorted(record)}, the log has "
                                 f"{list(self.columns)}")
            line = "\t".join(format_cell(record[c]) for c in self.columns)
        self._log.append(line)
        self.records[unit] = record


def certify_log(path, extra_columns: Sequence[str] = ()) -> RecordLog:
    """A certification log: Cohen et al.'s columns, then `extra_columns`, one row per
    image, keyed by `idx`."""
    return RecordLog(path, key=lambda row: int(row["idx"]),
                     columns=COHEN_COLUMNS + tuple(extra_columns))
