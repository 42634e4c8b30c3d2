"""What `factory sql` may do: the DuckDB switches of its connection, the statements a read-only session runs, and
the files `-o` may write.

The statement rule of the read-only default (`--write` lifts it). A session reads; it runs:
- SELECT in every spelling DuckDB has (WITH, VALUES, FROM-first, TABLE, DESCRIBE, SHOW, SUMMARIZE), EXPLAIN [ANALYZE]
  of one, and CALL of a table function (the same as SELECT * FROM it);
- the PRAGMAs that report (`READING_PRAGMAS`: table_info, show_tables, database_size, storage_info, version, ...);
- SET VARIABLE / RESET VARIABLE: session variables, what `-p NAME VALUE` sets and `getvariable` reads;
- with `--allow-files` also COPY ... TO and EXPORT DATABASE, which read the warehouse into files (the flag's use).
Everything else is refused before DuckDB runs it, with one reason: writes and DDL (temporary objects too),
maintenance (CHECKPOINT, FORCE CHECKPOINT and the checkpoint table functions, VACUUM, ANALYZE), extensions (LOAD,
INSTALL, UPDATE EXTENSIONS; even a LOAD of an installed one: json, parquet and icu are built in and loaded already,
anything else is native code that the sandbox does not vet), ATTACH / DETACH / USE, IMPORT, SET / RESET of a
setting, transactions and PREPARE / EXECUTE. DuckDB opens the file read-only and the configuration is locked, so
none of them could change the warehouse; the rule makes each a clear refusal instead of a silent no-op.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import duckdb

from factory.errors import UserError

# DuckDB's own switches: no file or network access (read_csv, glob, COPY TO, EXPORT, ATTACH, http:// URLs), no
# extension installed or loaded behind the user's back, and a configuration that the query cannot change back.
SANDBOX = {"enable_external_access": False, "autoinstall_known_extensions": False,
           "autoload_known_extensions": False, "lock_configuration": True}

READING_PRAGMAS = frozenset({
    "table_info", "show", "show_tables", "show_tables_expanded", "show_databases", "database_list", "database_size",
    "storage_info", "metadata_info", "version", "platform", "user_agent", "functions", "collations",
    "extension_versions",
})
MAINTENANCE_FUNCTIONS = frozenset({"checkpoint", "force_checkpoint"})  # table functions that checkpoint the file
_READS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.CALL}
_FILE_WRITES = {duckdb.StatementType.COPY, duckdb.StatementType.EXPORT}


def sandbox_config(allow_files: bool) -> dict[str, Any]:
    """The DuckDB config of a `factory sql` connection (`--allow-files` keeps file access on)."""
    return {k: v for k, v in SANDBOX.items() if not (allow_files and k == "enable_external_access")}


def _words(text: str) -> list[tuple[str, str, int]]:
    """(token text, token type, start) of `text` by DuckDB's tokenizer, comments dropped; quoted names unquoted,
    keywords and names lower-cased."""
    tokens = duckdb.tokenize(text)
    ends = [start for start, _ in tokens[1:]] + [len(text)]
    words = []
    for (start, kind), end in zip(tokens, ends):
        if kind.name == "comment":
            continue
        word = text[start:end].strip()
        if kind.name in ("identifier", "keyword"):
            word = word.strip('"').lower()
        words.append((word, kind.name, start))
    return words


def _calls_maintenance(words: list[tuple[str, str, int]]) -> bool:
    """Does the statement call checkpoint() / force_checkpoint() anywhere (a name followed by `(`)?"""
    return any(kind in ("identifier", "keyword") and word in MAINTENANCE_FUNCTIONS and following[0] == "("
               for (word, kind, _), following in zip(words, words[1:]))


def _explained(text: str, words: list[tuple[str, str, int]]) -> str:
    """The statement an EXPLAIN [ANALYZE] [(options)] statement explains (and, with ANALYZE, runs)."""
    i, depth = 1, 0
    while i < len(words) and (depth or words[i][0] in ("analyze", "analyse", "(")):
        depth += {"(": 1, ")": -1}.get(words[i][0], 0)
        i += 1
    return text[words[i][2]:] if i < len(words) else ""


def refusal(con: duckdb.DuckDBPyConnection, text: str, statement_type: duckdb.StatementType | None,
            allow_files: bool) -> str | None:
    """Why a read-only session refuses this one statement (None: it reads)."""
    words = _words(text)
    first = [w for w, _, _ in words[:2]]
    if statement_type == duckdb.StatementType.EXPLAIN:
        inner = _statement_types(con, _explained(text, words))
        return next((why for s, t in inner if (why := refusal(con, s, t, allow_files))), None) if inner \
            else "EXPLAIN of nothing"
    if statement_type in _READS:
        if statement_type == duckdb.StatementType.CALL and first[:1] in (["checkpoint"], ["force"]):
            return "CHECKPOINT is maintenance"
        if _calls_maintenance(words):
            return "checkpoint() is maintenance"
        return None
    if statement_type == duckdb.StatementType.PRAGMA or first[:1] == ["pragma"]:  # `PRAGMA threads=2` is a SET
        name = first[1] if len(first) > 1 else ""
        return None if name in READING_PRAGMAS else f"PRAGMA {name} does not report"
    if statement_type == duckdb.StatementType.SET and first[:1] in (["set"], ["reset"]) and first[1:] == ["variable"]:
        return None
    if statement_type in _FILE_WRITES and allow_files:
        return None
    if statement_type == duckdb.StatementType.LOAD:
        return f"{first[0].upper()} {first[1] if len(first) > 1 else ''}: no extension is installed or loaded"
    if statement_type is None:
        return f"{' '.join(text.split())[:40]!r} holds a statement of a kind this duckdb cannot name, not a read"
    return f"{first[0].upper() if first else 'this statement'} is not a reading statement"


def _statement_types(con: duckdb.DuckDBPyConnection, query: str) -> list[tuple[str, duckdb.StatementType | None]]:
    """(text, type) of each statement of `query`; type None for one this duckdb module has no name for (e.g.
    UPDATE EXTENSIONS); [] when DuckDB cannot parse it (running it reports the syntax error)."""
    try:
        return [(s.query, s.type) for s in con.extract_statements(query)]
    except duckdb.Error:
        return []
    except ValueError:
        return [(query, None)]


def check_statements(con: duckdb.DuckDBPyConnection, query: str, allow_files: bool) -> None:
    """UserError naming the first statement of `query` that a read-only session refuses (the module's rule)."""
    for text, statement_type in _statement_types(con, query):
        if why := refusal(con, text, statement_type, allow_files):
            raise UserError(f"{why}; a read-only factory sql runs reading statements only (SELECT, DESCRIBE, SHOW, "
                            "EXPLAIN, reporting PRAGMAs, SET VARIABLE); --write opens the warehouse read-write")


# -- -o FILE -------------------------------------------------------------------------------------------------

def _spellings(path: str | os.PathLike) -> set[Path]:
    """The absolute path as given (DuckDB and the writer lock name companions after it) and the resolved one."""
    return {Path(os.path.abspath(path)), Path(os.path.realpath(path))}


def warehouse_files(warehouse_path: str | os.PathLike) -> list[Path]:
    """The warehouse file and its companions that exist now (`.wal`, `.lock`, `.tmp`, ...), by every spelling."""
    found = []
    for w in _spellings(warehouse_path):
        found += [w, *(Path(p) for p in glob.glob(glob.escape(str(w)) + ".*"))]
    return [p for p in found if p.exists()]


def check_output(output: Path, warehouse_path: str | os.PathLike, force: bool) -> None:
    """UserError unless `-o output` may be written: never the warehouse or a companion file of it (`<file>.wal`,
    `<file>.lock`, ...: any sibling named `<file>.*`) by any spelling (relative, `..`, a symbolic or hard link),
    and an existing file only with `force`."""
    refused = UserError(f"-o {output} is the warehouse {warehouse_path} or one of its files (.wal, .lock, ...); "
                        "write the result to another file")
    for o in _spellings(output):
        for w in _spellings(warehouse_path):
            if o == w or (o.parent == w.parent and o.name.startswith(f"{w.name}.")):
                raise refused
    if not os.path.lexists(output):
        if not output.parent.is_dir():
            raise UserError(f"-o {output}: folder {output.parent} does not exist")
        return
    if output.exists() and any(os.path.samefile(output, f) for f in warehouse_files(warehouse_path)):
        raise refused  # a hard link to the warehouse
    if not force:
        raise UserError(f"-o {output} exists; pass --force to replace it")
