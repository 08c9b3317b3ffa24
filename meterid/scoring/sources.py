"""Reading a scoring list: CSV, Excel workbook or a text file of URLs / local paths.

Every row of the list becomes one input row (numbered ``row`` from 0 in file order); a row
with an empty URL is kept and later reported as an error, never dropped. Other columns are
carried through to the output, renamed ``input_<name>`` where they would clash with ours.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SOURCE = "url"
ROW = "row"
TEXT_SUFFIXES = frozenset({".txt", ".lst", ".list", ".urls"})
EXCEL_SUFFIXES = frozenset({".xlsx", ".xlsm"})


class InputError(ValueError):
    """The scoring list cannot be read; the message names the file and the cause."""


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        return pd.read_excel(path, engine="openpyxl")
    if suffix in TEXT_SUFFIXES:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
        return pd.DataFrame({SOURCE: [line for line in lines if line and not line.startswith("#")]})
    if suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str,
                           keep_default_na=False, encoding="utf-8-sig")
    raise InputError(f"{path}: unsupported list format {suffix!r}: use .csv, .tsv, .xlsx or .txt")


def _source_column(frame: pd.DataFrame, column: str | None) -> str:
    """The column holding the URLs: ``column`` by name or 0-based index, else ``url``."""
    names = [str(name) for name in frame.columns]
    if column is not None:
        if column in names:
            return frame.columns[names.index(column)]
        if column.isdigit() and int(column) < len(names):
            return frame.columns[int(column)]
        raise InputError(f"no column {column!r}; the columns are {names}")
    for name in frame.columns:
        if str(name).strip().lower() == SOURCE:
            return name
    if len(names) == 1:
        return frame.columns[0]
    raise InputError(f"no 'url' column; pass --column NAME or INDEX (the columns are {names})")


def _plain(values: pd.Series) -> pd.Series:
    """Mixed-type spreadsheet columns as text, so every column has one Parquet type."""
    if values.dtype == object:
        return values.map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v))
                          else str(v))
    return values


def read_sources(path: Path, column: str | None, reserved: frozenset[str]) -> pd.DataFrame:
    """``row``, ``url`` (stripped text, empty when missing) and the carried input columns."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such input file")
    try:
        frame = _read_table(path)
    except InputError:
        raise
    except Exception as error:  # pandas/openpyxl raise many types for malformed files
        raise InputError(f"{path}: cannot read the list: {error}") from error
    source = _source_column(frame, column)
    urls = frame[source].map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v))
                             else str(v).strip())
    carried = frame.drop(columns=[source])
    carried.columns = [f"input_{name}" if str(name) in reserved else str(name)
                       for name in carried.columns]
    carried = carried.apply(_plain)
    out = pd.concat([pd.DataFrame({ROW: range(len(frame)), SOURCE: urls.to_numpy()}),
                     carried.reset_index(drop=True)], axis=1)
    return out

