"""A grid's results as tables: the cells read from the grid folder (records, each file read once), and the table
model that a layout (layouts.py) fills from them: per (row, column, metric) the values over seeds, their mean ± std
(sample std), row averages, and the published numbers beside the rows with Δ = dadf − paper and where the paper's
number lies against dadf's seeds (`context`). render.py writes tables out; results.py turns records into a DataFrame.

Reads only files, so it works while the grid runs and after any crash: missing and failed cells stay visible.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from dadf.grid import published as pub
from dadf.grid import stats, store

# ---------------------------------------------------------------------------------------------------- records


@dataclass
class CellRecord:
    id: str
    cell: dict
    state: str
    reason: str | None
    result: dict | None
    dir: Path | None = None
    protocol: dict = field(default_factory=dict)
    num_classes: int | None = None

    @property
    def p(self) -> float | None:
        v = self.protocol.get("p")
        return None if v is None else float(v)

    @property
    def grid(self) -> str | None:
        """The name of the grid folder the cell is in."""
        return self.dir.parent.name if self.dir is not None else None


def load_records(grid_dir: Path, ids: list[str] | None = None, all_cells: bool = False) -> list[CellRecord]:
    """The grid's cells in table order: `ids` when given (a launch's own cells), else those of its latest expansion
    (grid.json), else every cell folder; all_cells=True: every cell folder, grid.json's order first.

    A cell listed whose folder is absent (not launched yet) is kept as "missing", never dropped; one with a damaged
    file as "unreadable", one whose process is gone as "lost". Each file of a cell is read once.
    """
    grid_dir = Path(grid_dir)
    if ids is None:
        ids = store.cell_ids(grid_dir)
        if all_cells:
            ids = list(dict.fromkeys([*ids, *store.cell_folders(grid_dir)]))
    return [_read_cell(grid_dir, cid) for cid in ids]


def _read_cell(grid_dir: Path, cid: str) -> CellRecord:
    d = grid_dir / cid
    cell = store.CellDir(d)
    try:
        full = _read_cell_yaml(cell)
    except FileNotFoundError:
        return _from_id(cid, d, "missing", "no cell folder yet")
    except store.Unreadable as e:
        return _from_id(cid, d, store.UNREADABLE, str(e))
    status, result = cell.read_status_and_metrics(verify_config=False)  # cell.yaml is read: not a second time
    state, reason = status.get("state", store.PENDING), status.get("reason")
    lost = cell.liveness(status)
    if lost:
        state, reason = store.LOST, lost
    return CellRecord(cid, full["cell"], state, reason, result, d, full.get("protocol") or {},
                      (full.get("dataset") or {}).get("num_classes"))


# ---------------------------------------------------------------------------------------------------- cell.yaml
# The tables need two blocks of a cell's cell.yaml (cell, protocol) and dataset.num_classes, and PyYAML builds every
# node of the whole file in Python (~1 ms a cell: seconds at 10,000 cells). cell.yaml is block YAML of plain
# scalars, so those blocks are read line by line here; anything beyond nested mappings of plain scalars (quotes,
# lists, anchors, comments, wrapped lines, odd indentation, a damaged file) falls back to CellDir.read_config_data,
# the full parse.

TABLE_BLOCKS = ("cell", "protocol")
# The patterns run on the text with a newline before and after, and start with that newline: a literal first
# character lets the regex engine jump from line to line instead of trying every position.
_NUM_CLASSES = re.compile(r"\ndataset:\n(?: [^\n]*\n)*?  num_classes: ([^\n]*)\n")  # dataset.num_classes
_KEY_LINE = re.compile(r"\n( *)([A-Za-z_][\w.\-]*):(?: ([^\n]*[^\s]))?(?=\n)")  # a value never ends in a space
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"[-+]?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?\Z")
_STR = "tag:yaml.org,2002:str"
_RESOLVER = yaml.resolver.Resolver()  # PyYAML's own rules for which plain scalar is a null, bool, int, ...
_IMPLICIT = yaml.resolver.Resolver.yaml_implicit_resolvers  # first character -> [(tag, regexp)]: what resolve() tries
_BOOLS = yaml.constructor.SafeConstructor.bool_values
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`\t ")
_ODD_TOP_LINE = re.compile(r"\n(?![A-Za-z_][\w.\-]*:[ \n])[^ \n][^\n]*")  # a top-level line that is not `key:`
_SEEN_KEYS: set[str] = set()  # keys known to be plain strings: the same few dozen in every cell
_SEEN_SCALARS: dict[str, object] = {}  # immutable scalars already typed: null, tabular, 0.5, ... repeat in every cell


class _NotPlain(ValueError):
    """A line the line reader leaves to PyYAML."""


def _read_cell_yaml(cell_dir: store.CellDir) -> dict:
    """The table blocks of cell.yaml (FileNotFoundError when absent, store.Unreadable when damaged), as
    CellDir.read_config_data would give them."""
    try:
        text = cell_dir.read_config_text()
    except FileNotFoundError:
        raise  # no cell folder (yet): the caller's "missing"
    except (OSError, ValueError):
        text = None  # unreadable bytes: the full reader names the error
    data = plain_blocks(text, TABLE_BLOCKS) if text is not None else None
    cell = (data or {}).get("cell")
    if not isinstance(cell, dict) or not {"method", "dataset", "protocol"} <= set(cell):
        return cell_dir.read_config_data()  # the full parse: its data, or its verdict on a damaged file
    found = _NUM_CLASSES.search(_framed(text))  # of the dataset block the tables need this one line
    try:
        data["dataset"] = {"num_classes": _scalar(found.group(1))} if found else {}
    except _NotPlain:
        return cell_dir.read_config_data()
    return data


def plain_blocks(text: str, keys) -> dict | None:
    """The top-level `keys` of a block-style YAML document of nested mappings and plain scalars, equal to what
    yaml.safe_load gives for them; None when those blocks hold anything else. Lines of other top-level keys are not
    read."""
    try:
        return _plain_blocks(text, tuple(keys))
    except _NotPlain:
        return None


@lru_cache(maxsize=8)
def _block_pattern(keys: tuple) -> re.Pattern:
    """A top-level `key:` line of `keys` and the indented lines under it."""
    names = "|".join(map(re.escape, keys))
    return re.compile(rf"\n((?:{names}):[^\n]*(?:\n [^\n]*)*)")


def _framed(text: str) -> str:
    """The text with a newline before its first line and after its last."""
    return "\n" + text if text.endswith("\n") else "\n" + text + "\n"


def _plain_blocks(text: str, keys: tuple) -> dict:
    text = _framed(text)
    if "\n\n" in text or "\n\t" in text:
        raise _NotPlain("a blank or tab-indented line: a block may go on past it")
    odd = _ODD_TOP_LINE.search(text)
    if odd:
        raise _NotPlain(odd.group())  # a document marker, comment, list or damage at the top level
    root: dict = {}
    for block in _block_pattern(keys).findall(text):
        lines = _KEY_LINE.findall(f"\n{block}\n")  # (indentation, key, value or "") of each `key:` / `key: value`
        if len(lines) != block.count("\n") + 1:
            raise _NotPlain(block)  # some line is something else: a list item, a quoted key, a wrapped scalar ...
        stack = [(0, root)]  # the open mappings, innermost last: (indentation, mapping)
        opened = None  # (indentation, mapping, key) of a `key:` line: a nested mapping may follow
        for spaces, key, value in lines:
            indent = len(spaces)
            if key not in _SEEN_KEYS:
                if _RESOLVER.resolve(yaml.ScalarNode, key, (True, False)) != _STR:
                    raise _NotPlain(key)  # `yes:`, `null:` ... are not string keys
                _SEEN_KEYS.add(key)
            if opened is not None and indent > opened[0]:
                child: dict = {}
                opened[1][opened[2]] = child
                stack.append((indent, child))
            opened = None
            while stack[-1][0] > indent:
                stack.pop()
            if stack[-1][0] != indent:
                raise _NotPlain(key)  # indented like no open mapping
            mapping = stack[-1][1]
            if value:
                mapping[key] = _scalar(value)
            else:
                mapping[key] = None  # YAML's empty value, unless a nested mapping follows
                opened = (indent, mapping, key)
    return root


def _scalar(text: str):
    """A plain scalar as PyYAML's SafeLoader types it; _NotPlain for the forms left to PyYAML."""
    if text in _SEEN_SCALARS:
        return _SEEN_SCALARS[text]
    if text in ("{}", "[]"):
        return {} if text == "{}" else []  # mutable: a new one each time
    value = _typed(text)
    if len(_SEEN_SCALARS) < 100_000:  # ids and hashes are new in every cell: bounded
        _SEEN_SCALARS[text] = value
    return value


def _typed(text: str):
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if text[0] in _INDICATORS or ": " in text or " #" in text or text.endswith(":") or "\t" in text:
        raise _NotPlain(text)
    tag = next((tag for tag, regexp in _IMPLICIT.get(text[0], ()) if regexp.match(text)), _STR)
    if tag == _STR:
        return text  # no implicit type (or none that starts with this character): a string
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return _BOOLS[text.lower()]
    raise _NotPlain(text)  # other int and float spellings, timestamps, merge keys


def _from_id(cid: str, d: Path, state: str, reason: str) -> CellRecord:
    """A cell without a readable config: parse its id (method-dataset-protocol-...-s<seed>-hash) as far as it goes;
    a part the id lacks stays None."""
    parts = cid.split("-")
    cell = {"id": cid, "method": parts[0], "dataset": parts[1] if len(parts) > 1 else "?",
            "protocol": parts[2] if len(parts) > 2 else None, "target_class": None, "secondary": None, "axes": {}}
    for part in parts[3:-2]:
        if re.fullmatch(r"c\d+", part):
            cell["target_class"] = int(part[1:])
    return CellRecord(cid, cell, state, reason, None, d, {"name": cell["protocol"]})


EXPLAINED = (store.FAILED, store.LOST, store.UNREADABLE)  # states whose reason the table and report print


def why(rec: CellRecord) -> str:
    """The reason of an EXPLAINED cell, without the state it may start with (an unreadable cell's does)."""
    return (rec.reason or "").removeprefix(f"{rec.state}: ")


# ---------------------------------------------------------------------------------------------------- tables

@dataclass
class Entry:
    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.values) and set(self.states) == {store.DONE} and len(self.values) == self.n_cells

    @property
    def n_cells(self) -> int:
        return sum(self.states.values())


@dataclass
class PaperRow:
    """Published values beside a dadf row (`of`), or a paper-only row (an ablation dadf has not run)."""
    of: str | None
    entry: pub.Published


@dataclass
class Table:
    title: str
    metrics: list[str]
    rows: list[str]
    columns: list[str]
    labels: dict[str, str]
    entries: dict[tuple[str, str, str], Entry]
    layout: str  # the name of the layout that built it
    row_header: str = "method"
    show_avg: bool = True  # an average column (the columns are one dataset's classes)
    p_rows: bool = False  # the rows are p% values
    num_classes: int | None = None
    papers: list[PaperRow] = field(default_factory=list)
    row_info: dict[str, dict] = field(default_factory=dict)  # row -> {method, dataset, protocol, p, axes}
    pool: tuple = ()  # the published entries this table was compared against
    metric_labels: dict[str, str] = field(default_factory=dict)  # metric -> its header (tabular: P, R, F1)

    def published_by_p(self, metric: str) -> list[pub.Published]:
        """The paper's main entries at every p it reports for this table's method (also p values dadf has not run)."""
        if not self.p_rows or not self.rows:
            return []
        info = self.row_info[self.rows[0]]
        return [e for e in self.pool if e.p is not None and e.variant is None and e.metric == metric
                and (e.method, e.protocol) == (info["method"], info["protocol"])
                and e.dataset in (None, info["dataset"]) and not info["axes"]]

    def entry(self, row: str, col: str, metric: str) -> Entry:
        return self.entries.setdefault((row, col, metric), Entry())

    @property
    def avg_comparable(self) -> bool:
        """The row average covers every class of the dataset, so it compares with a paper's average."""
        return self.num_classes is None or len(self.columns) == self.num_classes


# ---------------------------------------------------------------------------------------------------- statistics

mean_std = stats.mean_std  # (mean, sample std; 0 for one value)


def seed_counts(table: Table) -> list[int]:
    """The distinct seed counts of the table's complete entries (render.py asks once per table: it reads them all)."""
    return sorted({len(e.values) for e in table.entries.values() if e.complete})


def row_average(table: Table, row: str, metric: str) -> tuple[float | None, bool]:
    """(mean of the per-column means, complete?) -- incomplete when any column lacks a finished value."""
    means, complete = [], True
    for c in table.columns:
        e = table.entries.get((row, c, metric))
        if e is None or not e.values:
            complete = False
            continue
        complete &= e.complete
        means.append(mean_std(e.values)[0])
    return (float(np.mean(means)) if means else None), complete


def row_seed_values(table: Table, row: str, metric: str) -> list[float] | None:
    """The per-seed row averages (over the columns), when every column is complete with the same seeds; else None."""
    per_col = []
    for c in table.columns:
        e = table.entries.get((row, c, metric))
        if e is None or not e.complete:
            return None
        per_col.append(dict(zip(e.seeds, e.values)))
    seeds = set(per_col[0]) if per_col else set()
    if not seeds or any(set(d) != seeds for d in per_col):
        return None
    return [float(np.mean([d[s] for d in per_col])) for s in sorted(seeds)]


def row_average_std(table: Table, row: str, metric: str) -> float | None:
    """Std over seeds of the per-seed row average, when every column has the same seeds (else None)."""
    avgs = row_seed_values(table, row, metric)
    return None if avgs is None or len(avgs) < 2 else float(np.std(avgs, ddof=1))


def seed_values(table: Table, row: str, col: str, metric: str) -> list[float]:
    """The finished seeds' values of a cell (the per-seed row averages for 'avg', when they exist)."""
    if col == "avg":
        return row_seed_values(table, row, metric) or []
    e = table.entries.get((row, col, metric))
    return list(e.values) if e is not None else []


def _dadf_mean(table: Table, row: str, col: str, metric: str) -> tuple[float | None, bool]:
    if col == "avg":
        avg, complete = row_average(table, row, metric)
        return avg, complete
    e = table.entries.get((row, col, metric))
    if e is None or not e.values:
        return None, False
    return mean_std(e.values)[0], e.complete


def paper_value(pr: PaperRow, col: str) -> float | None:
    return pr.entry.values.get(col)


def delta(table: Table, pr: PaperRow, col: str, metric: str) -> tuple[float | None, str]:
    """(dadf mean − paper, flag) with flag '' | '*' (dadf value incomplete) | 'n/c' (averages not comparable)."""
    paper = paper_value(pr, col)
    if paper is None or pr.of is None or pr.entry.metric != metric:
        return None, ""
    if col == "avg" and not table.avg_comparable:
        return None, "n/c"
    mine, complete = _dadf_mean(table, pr.of, col, metric)
    if mine is None:
        return None, ""
    return mine - paper, "" if complete else "*"


def context(table: Table, pr: PaperRow, col: str, metric: str) -> str | None:
    """Where the paper's value lies against dadf's seeds: a single-run number (or one whose run count the paper does
    not give) against the seeds' spread, with the fraction of seeds at or above it; a mean over n runs against the
    confidence interval of dadf's mean. None when there is no spread to compare with (one seed, or no paper value).
    'within'/'inside' mean the difference is not one; 'above'/'below' say where the paper's value lies."""
    paper = paper_value(pr, col)
    if paper is None or pr.of is None or pr.entry.metric != metric or (col == "avg" and not table.avg_comparable):
        return None
    values = seed_values(table, pr.of, col, metric)
    if len(values) < 2:
        return None
    if pr.entry.is_mean:
        iv = stats.interval(values)
        where = "inside" if iv.contains(paper) else ("above" if paper > iv.high else "below")
        return f"{where} the {stats.CONFIDENCE:.0%} CI"
    at_or_above = sum(v >= paper for v in values)
    where = "within" if min(values) <= paper <= max(values) else ("above" if paper > max(values) else "below")
    return f"{where} seed spread ({at_or_above}/{len(values)} ≥)"
