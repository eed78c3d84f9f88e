"""The table layout and the statements of the SQL action store (:mod:`._sql`), declared once.

Statements are written with ``%s`` for a parameter, ``%b`` for a payload (bytes) parameter,
``{schema}`` before each table name and ``{greatest}`` for the two-argument maximum; each
store renders them once for its dialect.
"""

from __future__ import annotations

from typing import Mapping

__all__ = ["ADDED_IN", "STATEMENTS", "TABLES", "Column", "create_table"]

#: A column: (name, abstract type, nullable). Types: ``key`` (text compared by code point),
#: ``text``, ``int``, ``blob`` (opaque payload bytes), ``bool``.
Column = tuple[str, str, bool]

_ID: tuple[Column, ...] = (("namespace", "key", False), ("key", "key", False),
                           ("seq", "int", False), ("action", "key", False),
                           ("occurrence", "int", False))
#: The tables of the layout: name -> (columns in order, primary key).
TABLES: dict[str, tuple[tuple[Column, ...], tuple[str, ...]]] = {
    "actions": ((*_ID, ("event", "blob", False), ("outputs", "blob", False),
                 ("events", "blob", False), ("memory_updates", "blob", False),
                 ("completed", "bool", False)),
                tuple(c[0] for c in _ID)),
    "calls": ((*_ID, ("position", "int", False), ("function", "text", False),
               ("digest", "text", False), ("status", "text", False),
               ("result", "blob", True), ("error_type", "text", True),
               ("error_message", "text", True)),
              (*(c[0] for c in _ID), "position")),
    "prune_marks": ((("namespace", "key", False), ("checkpoint_id", "int", False),
                     ("key", "key", False), ("seq", "int", False)),
                    ("namespace", "checkpoint_id", "key")),
    "prune_boundary": ((("namespace", "key", False), ("checkpoint_id", "int", False)),
                       ("namespace",)),
    # The namespace's lineage; history: JSON [[job id, limit or null], ...] (schema 2).
    "lineages": ((("namespace", "key", False), ("lineage", "key", False),
                  ("history", "text", False)),
                 ("namespace",)),
}
#: Tables added by a schema version after the first: version -> tables.
ADDED_IN = {2: ("lineages",)}


def create_table(name: str, types: Mapping[str, str], if_not_exists: bool = False) -> str:
    """The ``CREATE TABLE`` statement of table ``name`` of :data:`TABLES` (a template:
    ``{schema}`` is filled in by the store), with the dialect's column ``types``."""
    columns, key = TABLES[name]
    lines = [f"{c} {types[t]}{'' if nullable else ' NOT NULL'}" for c, t, nullable in columns]
    lines.append(f"PRIMARY KEY ({', '.join(key)})")
    exists = "IF NOT EXISTS " if if_not_exists else ""
    return f"CREATE TABLE {exists}{{schema}}.{name} (\n    " + ",\n    ".join(lines) + "\n)"


def _names(table: str) -> str:
    return ", ".join(c[0] for c in TABLES[table][0])


def _upsert(table: str) -> str:
    columns, key = TABLES[table]
    params = ", ".join("%b" if t == "blob" else "%s" for _, t, _ in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c, _, _ in columns if c not in key)
    return (f"INSERT INTO {{schema}}.{table} ({_names(table)}) VALUES ({params})\n"
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


_WHERE_ID = "namespace = %s AND key = %s AND seq = %s AND action = %s AND occurrence = %s"
_CALL_COLUMNS = ", ".join(c[0] for c in TABLES["calls"][0][len(_ID):])

#: The statements of the operations, by name.
STATEMENTS = {
    "put_action": _upsert("actions"),
    "get_action": f"SELECT {_names('actions')} FROM {{schema}}.actions WHERE {_WHERE_ID}",
    "get_run": f"SELECT {_names('actions')} FROM {{schema}}.actions "
               "WHERE namespace = %s AND key = %s AND seq = %s ORDER BY action, occurrence",
    "put_call": _upsert("calls"),
    "get_calls": f"SELECT {_CALL_COLUMNS} FROM {{schema}}.calls WHERE {_WHERE_ID} "
                 "ORDER BY position",
    "truncate_calls": f"DELETE FROM {{schema}}.calls WHERE {_WHERE_ID} AND position >= %s",
    "prune_actions": "DELETE FROM {schema}.actions WHERE namespace = %s AND key = %s "
                     "AND seq <= %s",
    "prune_calls": "DELETE FROM {schema}.calls WHERE namespace = %s AND key = %s "
                   "AND seq <= %s",
    "add_mark": "INSERT INTO {schema}.prune_marks (namespace, checkpoint_id, key, seq) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (namespace, checkpoint_id, key) "
                "DO UPDATE SET seq = {greatest}(prune_marks.seq, excluded.seq)",
    "select_marks": "SELECT key, max(seq) FROM {schema}.prune_marks "
                    "WHERE namespace = %s AND checkpoint_id <= %s GROUP BY key",
    "delete_marks": "DELETE FROM {schema}.prune_marks WHERE namespace = %s "
                    "AND checkpoint_id <= %s",
    "discard_marks": "DELETE FROM {schema}.prune_marks WHERE namespace = %s "
                     "AND checkpoint_id > %s",
    "get_lineage": "SELECT lineage, history FROM {schema}.lineages WHERE namespace = %s",
    "set_lineage": _upsert("lineages"),
    "get_boundary": "SELECT checkpoint_id FROM {schema}.prune_boundary WHERE namespace = %s",
    "raise_boundary": "INSERT INTO {schema}.prune_boundary (namespace, checkpoint_id) "
                      "VALUES (%s, %s) ON CONFLICT (namespace) DO UPDATE SET checkpoint_id = "
                      "{greatest}(prune_boundary.checkpoint_id, excluded.checkpoint_id)",
    "force_boundary": "INSERT INTO {schema}.prune_boundary (namespace, checkpoint_id) "
                      "VALUES (%s, %s) ON CONFLICT (namespace) "
                      "DO UPDATE SET checkpoint_id = excluded.checkpoint_id",
    "recorded_runs": "SELECT key, seq FROM {schema}.actions WHERE namespace = %s "
                     "UNION SELECT key, seq FROM {schema}.calls WHERE namespace = %s",
    "size_namespace": "SELECT (SELECT count(*) FROM {schema}.actions WHERE namespace = %s) "
                      "+ (SELECT count(*) FROM {schema}.calls WHERE namespace = %s)",
    "size_all": "SELECT (SELECT count(*) FROM {schema}.actions) "
                "+ (SELECT count(*) FROM {schema}.calls)",
    # clear_namespace: the record tables first (their counts are returned), then the rest.
    **{f"clear_{table}": f"DELETE FROM {{schema}}.{table} WHERE namespace = %s"
       for table in TABLES},
}
