"""Training data: a dataset view of the warehouse, read through Arrow into a `datasets.Dataset` (no JSONL).

The caller (`factory train`) passes an open DuckDB connection; this module sets the view's parameters as
DuckDB variables, selects the TRL columns plus each row's provenance (run, task, task split) and returns
the Dataset with what produced it. Tool-call `arguments` and `tools` must stay JSON text: if Arrow inferred
a struct for them it would union the keys of different tools and fill the gaps with nulls, and the model
would be trained on those (../shared/notes/stack-checks.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from train.recipes import TrainInputError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

# TRL's conversational column names per method (the views' output contract).
COLUMNS = {
    "sft": ("messages", "tools"),
    "kto": ("prompt", "completion", "label", "tools"),
    "dpo": ("prompt", "chosen", "rejected", "tools"),
}
PARAMETERS = ("min_reward", "drop_tool_errors")  # view parameters besides run_id


@dataclass
class ViewData:
    """What a view gave: the rows per run and per task split, and the settings that selected them."""

    view: str
    method: str
    rows: int
    params: dict[str, Any]
    runs: dict[str, int] = field(default_factory=dict)  # run_id -> rows
    task_splits: dict[str, int] = field(default_factory=dict)  # base split (train | val | test) -> rows
    tasks: int = 0  # distinct tasks
    test_rows: int = 0  # rows from tasks of the `test` split (the benchmark)
    test_runs: list[str] = field(default_factory=list)  # the runs they came from
    labels: dict[str, int] | None = None  # kto: desirable / undesirable rows


def _set_variables(con: DuckDBPyConnection, params: Mapping[str, Any]) -> None:
    for name, value in params.items():
        if value is not None:
            con.execute(f"SET VARIABLE {name} = $value", {"value": value})  # name: one of ours


def _select(con: DuckDBPyConnection, view: str, columns: tuple[str, ...]) -> pa.Table:
    projected = ", ".join(f'v."{c}"' for c in columns)
    view = view.replace('"', '""')  # an identifier; `_check_view` found it in the catalog
    # Provenance rides along: each row's run, task and the task's base split (for the test-task guard).
    query = (f'SELECT {projected}, v.run_id AS _run_id, o.task_id AS _task_id, t.split AS _split '
             f'FROM "{view}" AS v LEFT JOIN rollouts AS o ON o.rollout_id = v.rollout_id '
             f'LEFT JOIN tasks AS t ON t.task_id = o.task_id')
    return con.sql(query).to_arrow_table()


def _check_view(con: DuckDBPyConnection, view: str, method: str) -> None:
    found = con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main'",
                        [view]).fetchall()
    if not found:
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal "
                                           "ORDER BY view_name").fetchall()]
        raise TrainInputError(f"no view {view!r} in the warehouse (views: {', '.join(views) or 'none'})")
    have = {r[0] for r in found}
    missing = [c for c in (*COLUMNS[method], "rollout_id", "run_id") if c not in have]
    if missing:
        raise TrainInputError(f"view {view} lacks the {method} column(s) {', '.join(missing)}; a {method} view "
                              f"gives {', '.join(COLUMNS[method])} plus rollout_id and run_id")


def _json_text(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """`tools` as JSON text: DuckDB's JSON arrives as string, or as an arrow.json extension in lossless mode."""
    if isinstance(column.type, pa.BaseExtensionType):
        column = pa.chunked_array([c.storage for c in column.chunks], type=column.type.storage_type)
    if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        column = column.cast(pa.string())
    if not pa.types.is_string(column.type) and not pa.types.is_null(column.type):
        raise TrainInputError(f"column {name} is {column.type}; the view must give it as JSON text (VARCHAR)")
    return column


def _check_arguments(dtype: pa.DataType, name: str) -> None:
    """Every nested `arguments` field must be a string (JSON text), never a struct or map."""
    if pa.types.is_struct(dtype):
        for child in dtype:
            if child.name == "arguments" and not (pa.types.is_string(child.type) or pa.types.is_null(child.type)):
                raise TrainInputError(f"tool-call arguments in column {name} are {child.type}; keep them JSON text "
                                      "(arguments::VARCHAR) in the view, or Arrow fills other tools' keys with nulls")
            _check_arguments(child.type, name)
    elif pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        _check_arguments(dtype.value_type, name)


def to_dataset(table: pa.Table, method: str) -> Any:
    """The TRL columns of `table` as a `datasets.Dataset`, with JSON text and bool labels enforced."""
    import datasets

    columns = {}
    for name in COLUMNS[method]:
        column = table.column(name)
        if name == "tools":
            column = _json_text(column, name)
        elif name == "label":
            if isinstance(column.type, pa.BaseExtensionType):  # arrow.bool8 in DuckDB's lossless mode
                column = pa.chunked_array([c.storage for c in column.chunks], type=column.type.storage_type)
            column = column.cast(pa.bool_())
        else:
            _check_arguments(column.type, name)
        columns[name] = column
    return datasets.Dataset(pa.table(columns))


def load_view(con: DuckDBPyConnection, view: str, method: str, params: Mapping[str, Any] | None = None,
              runs: list[str] | None = None) -> tuple[Any, ViewData]:
    """Read `view` for `method` ("sft" | "kto" | "dpo") into a Dataset, plus where its rows came from.

    `params` are the view's DuckDB variables (min_reward, drop_tool_errors; None = the view's default).
    `runs` restricts the rows to those runs: the views take ONE `run_id` variable, so each run is read
    on its own and the tables are concatenated (without `runs` the views use every harvest run).
    Raises TrainInputError for an unknown view or one without the method's columns.
    """
    if method not in COLUMNS:
        raise TrainInputError(f"unknown method {method!r}; choose one of {', '.join(COLUMNS)}")
    params = {k: v for k, v in (params or {}).items() if v is not None}
    if unknown := set(params) - set(PARAMETERS):
        raise TrainInputError(f"unknown view parameter(s) {', '.join(sorted(unknown))}")
    _check_view(con, view, method)
    con.execute("SET arrow_lossless_conversion = false")  # plain bool / string, never bool8 / json extensions
    _set_variables(con, params)
    if runs:
        tables = []
        for run_id in runs:
            con.execute("SET VARIABLE run_id = $run_id", {"run_id": run_id})
            tables.append(_select(con, view, COLUMNS[method]))
        con.execute("RESET VARIABLE run_id")
        table = pa.concat_tables(tables)
    else:
        table = _select(con, view, COLUMNS[method])
    dataset = to_dataset(table, method)
    return dataset, _describe(table, view, method, {**params, "run_id": list(runs) if runs else None})


def _counts(values: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        key = "unknown" if v is None else str(v)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _describe(table: pa.Table, view: str, method: str, params: dict[str, Any]) -> ViewData:
    run_ids = table.column("_run_id").to_pylist()
    splits = table.column("_split").to_pylist()
    info = ViewData(view=view, method=method, rows=table.num_rows, params=params, runs=_counts(run_ids),
                    task_splits=_counts(splits), tasks=len(set(table.column("_task_id").to_pylist()) - {None}))
    info.test_rows = sum(1 for s in splits if s == "test")
    info.test_runs = sorted({r for r, s in zip(run_ids, splits) if s == "test"})
    if method == "kto":
        labels = table.column("label").to_pylist()
        info.labels = {"desirable": sum(1 for x in labels if x), "undesirable": sum(1 for x in labels if not x)}
    return info
