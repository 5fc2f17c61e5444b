"""A local fake ftrack server for the real, unmodified ``ftrack_api.Session``.

Why: the ftrack integration of atomic-publish must be exercised with the real client
(its batching, caching, rollback and error handling are exactly what can go wrong),
without a real ftrack site. The client only ever does ``POST {server}/api`` with a JSON
list of operations, so a small server that answers those operations faithfully is
enough. On top of that the fake keeps its data on disk (so a restart is survivable,
as with a real site) and can script the faults a publish must survive: 5xx answers,
``exception`` payloads, slow answers and a connection dropped *after* the change was
applied (the ambiguous outcome that idempotent publishing is about).

Entity schemas are our own, written for the entity types a publish uses; compare them
with the real server's answers in ``/work/shared/fixtures/ftrack`` (see docs/fakes.md).

Run in-process::

    with FakeFtrackServer(state_dir, api_user="u", api_key="k") as fake:
        ids = fake.seed_context("proj", "sh010", "comp")
        session = ftrack_api.Session(server_url=fake.url, api_user="u", api_key="k",
                                     auto_connect_event_hub=False,
                                     schema_cache_path=False, plugin_paths=[])

or as a process: ``python -m atomic_publish.testing.fake_ftrack --state DIR`` prints
``FAKE_FTRACK_URL=http://127.0.0.1:PORT`` once it listens and exits on SIGTERM.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import fnmatch
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from atomic_publish.testing import FakeControl, FaultBook, LoopbackServer, atomic_write_json, read_json, serve_until_signal

__all__ = [
    "SCHEMAS",
    "UNMANAGED_LOCATION_ID",
    "FakeFtrackControl",
    "FakeFtrackServer",
    "FtrackError",
    "main",
    "parse_query",
]

#: Same ids as ``ftrack_api.symbol``: the client pre-builds these locations with these ids,
#: so a server-side Location must use them for the client's mixins (accessor,
#: structure) to apply to what a query returns.
UNMANAGED_LOCATION_ID = "cb268ecc-8809-11e3-a7e2-20c9d081909b"
ORIGIN_LOCATION_ID = "ce9b348f-8809-11e3-821c-20c9d081909b"

FAULT_KINDS = ("http_error", "exception", "drop_after_apply", "drop_before_apply", "delay")
STATE_FILE = "ftrack_state.json"

# =============================================================================== schemas
#
# Written for this project: only the entity types and attributes a publish uses, in the
# shape of the real server's ``query_schemas`` answer (id, type, properties,
# primary_key, required, immutable, default_projections, system_projections).

_ID = {"type": "string", "default": "{uid}"}


def _str(default: Any = None) -> dict:
    return {"type": "string"} if default is None else {"type": "string", "default": default}


def _fk(target: str) -> dict:
    return {"type": "string", "format": "foreign_key", "description": f"Foreign key(s): {target}.id"}


def _ref(target: str) -> dict:
    return {"$ref": target}


def _array(target: str) -> dict:
    return {"type": "array", "items": {"$ref": target}}


def _metadata() -> dict:
    return {"type": "mapped_array", "items": {"$ref": "Metadata"},
            "key_value_attributes": {"key": "key", "value": "value"}}


def _schema(type_id: str, properties: dict, required: Iterable[str], *,
            default_projections: Iterable[str] = ("id",), primary_key: Iterable[str] = ("id",),
            immutable: Iterable[str] = ("id",), system_projections: Iterable[str] = ()) -> dict:
    schema = {"id": type_id, "type": "object", "properties": properties,
              "primary_key": list(primary_key), "required": list(required),
              "immutable": list(immutable), "default_projections": list(default_projections)}
    if system_projections:
        schema["system_projections"] = list(system_projections)
    return schema


def _context_properties() -> dict:
    return {"id": _ID, "name": _str(""), "context_type": _str(), "parent_id": _fk("Context"),
            "project_id": _fk("Project"), "parent": _ref("Context"),
            "children": _array("Context"), "assets": _array("Asset")}


def _typed_context(type_id: str) -> dict:
    props = _context_properties() | {"project": _ref("Project"), "description": _str(),
                                     "metadata": _metadata()}
    return _schema(type_id, props, ["context_type", "id", "name"],
                   default_projections=["context_type", "id", "name"],
                   system_projections=["context_type"])


def _component(type_id: str) -> dict:
    # A FileComponent's id is also a foreign key to Component.id on the real server
    # (one table per subtype, joined on id); the client treats both as a string.
    id_fragment = _ID if type_id == "Component" else _ID | _fk("Component")
    props = {"id": id_fragment, "name": _str("main"), "file_type": _str(), "size": {"type": "integer", "default": 0},
             "system_type": _str(), "version_id": _fk("AssetVersion"), "version": _ref("AssetVersion"),
             "component_locations": _array("ComponentLocation"), "metadata": _metadata()}
    return _schema(type_id, props, ["system_type", "name", "id"], default_projections=["id", "system_type"],
                   system_projections=["system_type", "version_id"])


def _build_schemas() -> list[dict]:
    context = _schema("Context", _context_properties(), ["context_type", "id", "name"],
                      default_projections=["context_type", "id", "name"], system_projections=["context_type"])
    project = _schema("Project", _context_properties() | {"full_name": _str(), "status": _str("active"),
                                                          "metadata": _metadata()},
                      ["status", "context_type", "id", "name"],
                      default_projections=["context_type", "id", "name"], system_projections=["context_type"])
    user = _schema("User", {"id": _ID, "username": _str(), "first_name": _str(), "last_name": _str(),
                            "is_active": {"type": "boolean"}, "resource_type": _str("user")},
                   ["username", "is_active", "resource_type", "id"], immutable=["resource_type", "id"])
    asset_type = _schema("AssetType", {"id": _ID, "name": _str(), "short": _str(), "assets": _array("Asset")},
                         ["id", "name", "short"])
    asset = _schema("Asset", {"id": _ID, "name": _str(), "parent": _ref("Context"), "context_id": _fk("Context"),
                              "type": _ref("AssetType"), "type_id": _fk("AssetType"),
                              "versions": _array("AssetVersion"), "metadata": _metadata()},
                    ["id"], system_projections=["context_id"])
    version = _schema("AssetVersion", {
        "id": _ID, "asset": _ref("Asset"), "asset_id": _fk("Asset"), "version": {"type": "integer"},
        "comment": _str(""), "is_published": {"type": "boolean", "default": True},
        "task": _ref("Task"), "task_id": _fk("Task"), "user": _ref("User"), "user_id": _fk("User"),
        "date": {"type": "string", "format": "date-time"}, "components": _array("Component"),
        "metadata": _metadata()}, ["id", "is_published"], system_projections=["asset_id"])
    component_location = _schema("ComponentLocation", {
        "id": _ID, "component_id": _fk("Component"), "component": _ref("Component"),
        "location_id": _fk("Location"), "location": _ref("Location"), "resource_identifier": _str()},
        ["id"], system_projections=["location_id", "component_id"])
    location = _schema("Location", {"id": _ID, "name": _str(), "label": _str(), "description": _str(),
                                    "location_components": _array("ComponentLocation")}, ["name", "id"])
    metadata = _schema("Metadata", {"parent_id": _str(), "parent_type": _str(), "key": _str(), "value": _str()},
                       ["parent_id", "key", "value", "parent_type"], primary_key=["parent_id", "key"],
                       immutable=["parent_id", "key"],
                       default_projections=["parent_id", "key", "value", "parent_type"])
    return [context, _typed_context("TypedContext"), project, _typed_context("Shot"), _typed_context("Task"),
            user, asset_type, asset, version, _component("Component"), _component("FileComponent"),
            component_location, location, metadata]


SCHEMAS: list[dict] = _build_schemas()

#: Polymorphism: child type -> parent type. Records live in the table of the root type,
#: so ``Context where id is X`` finds a Shot and a ``$ref: Component`` can be a FileComponent.
_PARENT_TYPE = {"Project": "Context", "TypedContext": "Context", "Shot": "TypedContext",
                "Task": "TypedContext", "FileComponent": "Component"}
_ABSTRACT = {"Context", "TypedContext"}
#: Reference attribute -> foreign key that stores it (when not simply ``<name>_id``).
_REFERENCE_KEY_OVERRIDES = {("Asset", "parent"): "context_id"}
#: Collection attribute -> (child type, child's foreign key pointing back), and whether a
#: delete of the owner cascades to the children (as ftrack does for owned data).
_COLLECTIONS = {
    ("Context", "children"): ("Context", "parent_id", True),
    ("Context", "assets"): ("Asset", "context_id", True),
    ("AssetType", "assets"): ("Asset", "type_id", False),
    ("Asset", "versions"): ("AssetVersion", "asset_id", True),
    ("AssetVersion", "components"): ("Component", "version_id", True),
    ("Component", "component_locations"): ("ComponentLocation", "component_id", True),
    ("Location", "location_components"): ("ComponentLocation", "location_id", True),
}
_CONTEXT_TYPES = {"Project": "show", "Shot": "task", "Task": "task", "TypedContext": "task"}
_SCALAR_TYPES = {"string", "boolean", "integer", "number", "object", "variable"}


class FtrackError(Exception):
    """An error the server reports as ``{"exception": name, "content": message}``."""

    def __init__(self, name: str, content: str, status: int = 400):
        super().__init__(f"{name}: {content}")
        self.name = name
        self.content = content
        self.status = status

    def payload(self) -> dict:
        return {"exception": self.name, "content": self.content, "error_code": None}


@dataclass
class EntityModel:
    """What the server needs to know about one entity type (derived from its schema)."""

    name: str
    schema: dict
    scalars: set[str] = field(default_factory=set)
    references: dict[str, tuple[str, str]] = field(default_factory=dict)  # attr -> (fk attr, target)
    collections: dict[str, tuple[str, str, bool]] = field(default_factory=dict)  # attr -> (child, fk, cascade)

    @property
    def primary_key(self) -> list[str]:
        return self.schema["primary_key"]

    @property
    def root(self) -> str:
        name = self.name
        while name in _PARENT_TYPE:
            name = _PARENT_TYPE[name]
        return name


def _ancestry(type_name: str) -> list[str]:
    chain = [type_name]
    while chain[-1] in _PARENT_TYPE:
        chain.append(_PARENT_TYPE[chain[-1]])
    return chain


def _build_models(schemas: list[dict]) -> dict[str, EntityModel]:
    models = {}
    for schema in schemas:
        model = EntityModel(schema["id"], schema)
        for name, fragment in schema["properties"].items():
            kind = fragment.get("type")
            if kind in _SCALAR_TYPES:
                model.scalars.add(name)
            elif "$ref" in fragment:
                fk = _REFERENCE_KEY_OVERRIDES.get((schema["id"], name), f"{name}_id")
                model.references[name] = (fk, fragment["$ref"])
            elif kind == "mapped_array" and fragment["items"]["$ref"] == "Metadata":
                model.collections[name] = ("Metadata", "parent_id", True)
            elif kind == "array":
                for ancestor in _ancestry(schema["id"]):
                    if (ancestor, name) in _COLLECTIONS:
                        model.collections[name] = _COLLECTIONS[(ancestor, name)]
                        break
                else:
                    raise AssertionError(f"no relation declared for {schema['id']}.{name}")
        models[model.name] = model
    return models


MODELS: dict[str, EntityModel] = _build_models(SCHEMAS)


def _is_a(concrete: str, wanted: str) -> bool:
    return wanted in _ancestry(concrete)


def _model(entity_type: str) -> EntityModel:
    try:
        return MODELS[entity_type]
    except KeyError:
        raise FtrackError("ServerError", f'Entity type "{entity_type}" does not exist.') from None


# ========================================================================= query language
#
# The subset used by the client and a publish integration:
#   select a, b.c from X where a is "v" and (b.c in ("x", y) or not d like "%v%")
#          and metadata any (key is "k" and value is "v") order by a desc offset 0 limit 10

_TOKEN = re.compile(r"""\s*(?:(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
                    r"""|(?P<op>!=|>=|<=|=|<|>|\(|\)|,)|(?P<word>[^\s"'(),=<>!]+))""")
_CLAUSE_WORDS = {"where", "order", "offset", "limit"}


@dataclass
class Token:
    kind: str  # "string" | "op" | "word"
    text: str

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words


@dataclass
class Query:
    """A parsed ``select ... from ... where ...`` expression."""

    entity_type: str
    projections: list[str]
    where: tuple | None = None
    order_by: list[tuple[str, bool]] = field(default_factory=list)  # (path, descending)
    offset: int = 0
    limit: int | None = None


def _tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            if text[pos:].strip():
                raise FtrackError("ParseError", f"Unexpected input at {pos}: {text[pos:pos + 20]!r}")
            break
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "string":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        tokens.append(Token(kind, value))
    return tokens


class _Parser:
    """Recursive descent parser for the query subset; produces tuples evaluated by the store."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self) -> Token:
        token = self.peek()
        if token is None:
            raise FtrackError("ParseError", f"Unexpected end of expression: {self.text!r}")
        self.pos += 1
        return token

    def expect(self, text: str) -> None:
        token = self.next()
        if token.text.lower() != text:
            raise FtrackError("ParseError", f"Expected {text!r} but got {token.text!r} in {self.text!r}")

    def accept(self, *words: str) -> bool:
        token = self.peek()
        if token is not None and (token.is_word(*words) or (token.kind == "op" and token.text in words)):
            self.pos += 1
            return True
        return False

    # -- query ---------------------------------------------------------------------

    def query(self) -> Query:
        projections: list[str] = []
        if self.accept("select"):
            projections.append(self.next().text)
            while self.accept(","):
                projections.append(self.next().text)
            self.expect("from")
        query = Query(self.next().text, projections)
        while self.peek() is not None:
            if self.accept("where"):
                query.where = self.expression()
            elif self.accept("order"):
                self.expect("by")
                query.order_by = self._order_list()
            elif self.accept("offset"):
                query.offset = int(self.next().text)
            elif self.accept("limit"):
                query.limit = int(self.next().text)
            else:
                raise FtrackError("ParseError", f"Unexpected {self.peek().text!r} in {self.text!r}")
        return query

    def _order_list(self) -> list[tuple[str, bool]]:
        order = []
        while True:
            path = self.next().text
            descending = False
            if self.accept("desc", "descending"):
                descending = True
            else:
                self.accept("asc", "ascending")
            order.append((path, descending))
            if not self.accept(","):
                return order

    # -- conditions ----------------------------------------------------------------

    def expression(self) -> tuple:
        left = self._conjunction()
        while self.accept("or"):
            left = ("or", left, self._conjunction())
        return left

    def _conjunction(self) -> tuple:
        left = self._negation()
        while self.accept("and"):
            left = ("and", left, self._negation())
        return left

    def _negation(self) -> tuple:
        if self.accept("not"):
            return ("not", self._negation())
        return self._atom()

    def _atom(self) -> tuple:
        if self.accept("("):
            inner = self.expression()
            self.expect(")")
            return inner
        path = self.next()
        if path.kind != "word" or path.text.lower() in _CLAUSE_WORDS:
            raise FtrackError("ParseError", f"Expected an attribute, got {path.text!r} in {self.text!r}")
        operator = self._operator()
        if operator in ("any", "has"):
            self.expect("(")
            inner = self.expression()
            self.expect(")")
            return ("sub", path.text, operator, inner)
        if operator in ("in", "not_in"):
            return ("cmp", path.text, operator, self._value_list())
        return ("cmp", path.text, operator, self._value(self.next()))

    def _operator(self) -> str:
        token = self.next()
        text = token.text.lower()
        if token.kind == "op":
            return {"=": "is", "!=": "is_not"}.get(text, text)
        if text == "is":
            return "is_not" if self.accept("not") else "is"
        if text == "not":
            return "not_" + self.next().text.lower()  # not in / not like
        if text in ("is_not", "in", "not_in", "like", "not_like", "any", "has", "after", "before"):
            return text
        raise FtrackError("ParseError", f"Unknown operator {token.text!r} in {self.text!r}")

    def _value_list(self) -> list:
        self.expect("(")
        values = []
        if not self.accept(")"):
            values.append(self._value(self.next()))
            while self.accept(","):
                values.append(self._value(self.next()))
            self.expect(")")
        return values

    @staticmethod
    def _value(token: Token) -> Any:
        if token.kind == "string":
            return token.text
        lowered = token.text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("null", "none"):
            return None
        return token.text  # numbers stay text: "0123" must still match an id; _equal compares numerically


def parse_query(expression: str) -> Query:
    """Parse an ftrack query expression (the subset this fake supports)."""
    return _Parser(expression).query()


def _equal(stored: Any, literal: Any) -> bool:
    if literal is None or stored is None:
        return stored is literal
    if isinstance(stored, bool):
        if isinstance(literal, str):
            return stored == (literal.lower() in ("true", "1"))
        return stored == bool(literal)
    if isinstance(stored, (int, float)):
        try:
            return float(stored) == float(literal)
        except (TypeError, ValueError):
            return False
    if isinstance(stored, dict) and "value" in stored:  # an encoded datetime
        stored = stored["value"]
    return str(stored) == (str(literal).lower() if isinstance(literal, bool) else str(literal))


def _order(stored: Any, literal: Any) -> int:
    if isinstance(stored, dict):
        stored = stored.get("value")
    try:
        a, b = float(stored), float(literal)
    except (TypeError, ValueError):
        a, b = str(stored), str(literal)
    return (a > b) - (a < b)


def _compare(stored: Any, operator: str, literal: Any) -> bool:
    if operator == "is":
        return _equal(stored, literal)
    if operator == "is_not":
        return not _equal(stored, literal)
    if operator == "in":
        return any(_equal(stored, item) for item in literal)
    if operator == "not_in":
        return not any(_equal(stored, item) for item in literal)
    if operator in ("like", "not_like"):
        pattern = fnmatch.translate(str(literal).replace("%", "*"))
        found = stored is not None and re.match(pattern, str(stored), re.IGNORECASE) is not None
        return found if operator == "like" else not found
    if stored is None:
        return False
    sign = _order(stored, literal)
    return {">": sign > 0, "after": sign > 0, "<": sign < 0, "before": sign < 0,
            ">=": sign >= 0, "<=": sign <= 0}[operator]


# =================================================================================== store


def _key(values: Iterable[Any]) -> str:
    return json.dumps([str(v) for v in values])


def _now() -> dict:
    return {"__type__": "datetime", "value": _dt.datetime.now(_dt.timezone.utc).isoformat()}


class Store:
    """The entities, one table per root type, with ftrack's create/update/delete/query.

    A batch is applied to a copy of the tables and swapped in only if every operation
    succeeded: a failed batch changes nothing. (The real server's atomicity is not
    documented; all-or-nothing is the assumption our integration may make, and faults
    let tests break it on purpose with ``drop_after_apply``.)
    """

    def __init__(self, path: Path | None, api_user: str):
        self._path = path
        self._api_user = api_user
        self._lock = threading.RLock()
        self.tables: dict[str, dict[str, dict]] = {}
        self.load()

    # -- persistence ---------------------------------------------------------------

    def load(self) -> None:
        state = read_json(self._path, None) if self._path else None
        with self._lock:
            self.tables = state["tables"] if state else {}
            if not state:
                self._baseline(self.tables)

    def save(self) -> None:
        if self._path:
            atomic_write_json(self._path, {"format": 1, "tables": self.tables})

    def reset(self) -> None:
        with self._lock:
            self.tables = {}
            self._baseline(self.tables)
            self.save()

    def _baseline(self, tables: dict) -> None:
        """What every ftrack site has: the built-in locations and the API user."""
        for location_id, name in ((UNMANAGED_LOCATION_ID, "ftrack.unmanaged"), (ORIGIN_LOCATION_ID, "ftrack.origin")):
            tables.setdefault("Location", {})[_key([location_id])] = {
                "__entity_type__": "Location", "id": location_id, "name": name, "label": name}
        user_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "fake-ftrack-user:" + self._api_user))
        tables.setdefault("User", {})[_key([user_id])] = {
            "__entity_type__": "User", "id": user_id, "username": self._api_user, "is_active": True,
            "resource_type": "user"}

    # -- batches -------------------------------------------------------------------

    def apply(self, operations: list[dict], server_information: dict) -> list[dict]:
        """Apply a batch all-or-nothing and return one result per operation."""
        with self._lock:
            mutating = any(op.get("action") in ("create", "update", "delete") for op in operations)
            tables = copy.deepcopy(self.tables) if mutating else self.tables
            view = _TableView(tables, self._api_user)
            results = [view.run(op, server_information) for op in operations]
            if mutating:
                self.tables = tables
                self.save()
            return results

    def entities(self, entity_type: str) -> list[dict]:
        with self._lock:
            return _TableView(self.tables, self._api_user).all_of(entity_type)

    def dump(self) -> dict:
        with self._lock:
            return copy.deepcopy(self.tables)

    def insert(self, entity_type: str, data: dict) -> dict:
        """Create one entity directly (seeding), bypassing the wire protocol."""
        model = _model(entity_type)
        return self.apply([{"action": "create", "entity_type": entity_type,
                            "entity_key": [data[k] for k in model.primary_key], "entity_data": data}], {})[0]["data"]


class _TableView:
    """Operations over a set of tables; see :class:`Store` for the transaction."""

    def __init__(self, tables: dict, api_user: str):
        self.tables = tables
        self.api_user = api_user

    def run(self, op: dict, server_information: dict) -> Any:
        action = op.get("action")
        if action == "query_server_information":
            return server_information
        if action == "query_schemas":
            return SCHEMAS
        if action == "create":
            return {"action": "create", "data": self.create(op["entity_type"], op.get("entity_key"), op.get("entity_data", {}))}
        if action == "update":
            return {"action": "update", "data": self.update(op["entity_type"], op["entity_key"], op.get("entity_data", {}))}
        if action == "delete":
            self.delete(op["entity_type"], op["entity_key"])
            return {"action": "delete", "data": True}
        if action == "query":
            return self.query(op["expression"])
        raise FtrackError("ServerError", f'Action "{action}" is not supported by the fake ftrack server.')

    # -- lookups -------------------------------------------------------------------

    def table(self, model: EntityModel) -> dict[str, dict]:
        return self.tables.setdefault(model.root, {})

    def get(self, entity_type: str, key_values: Iterable[Any]) -> dict | None:
        model = _model(entity_type)
        record = self.table(model).get(_key(key_values))
        if record is None or not _is_a(record["__entity_type__"], entity_type):
            return None
        return record

    def all_of(self, entity_type: str) -> list[dict]:
        model = _model(entity_type)
        return [r for r in self.table(model).values() if _is_a(r["__entity_type__"], entity_type)]

    def children(self, record: dict, attribute: str) -> list[dict]:
        child_type, fk, _ = MODELS[record["__entity_type__"]].collections[attribute]
        return [r for r in self.all_of(child_type) if r.get(fk) == record.get("id")]

    def target(self, record: dict, attribute: str) -> dict | None:
        fk, target_type = MODELS[record["__entity_type__"]].references[attribute]
        value = record.get(fk)
        return None if value is None else self.get(target_type, [value])

    # -- writes --------------------------------------------------------------------

    def create(self, entity_type: str, entity_key: list | None, data: dict) -> dict:
        model = _model(entity_type)
        if entity_type in _ABSTRACT:
            raise FtrackError("ServerError", f"Cannot create abstract entity type {entity_type}.")
        record: dict = {"__entity_type__": entity_type}
        self._assign(model, record, data, creating=True)
        for name, value in zip(model.primary_key, entity_key or []):
            record.setdefault(name, value)
        missing = [name for name in model.primary_key if record.get(name) in (None, "")]
        if missing:
            raise FtrackError("ServerError", f"Missing primary key {missing} for {entity_type}.")
        key = _key(record[name] for name in model.primary_key)
        if key in self.table(model):
            raise FtrackError("IntegrityError", f"Duplicate entry {key} for {entity_type} primary key.")
        self._server_defaults(model, record)
        self._check_foreign_keys(model, record)
        self.table(model)[key] = record
        return self.serialize(record, self._answer_tree(model, data))

    def update(self, entity_type: str, entity_key: list, data: dict) -> dict:
        _model(entity_type)  # an unknown type is an error, not "does not exist"
        record = self.get(entity_type, entity_key)
        if record is None:
            raise FtrackError("ServerError", f"{entity_type} {entity_key} does not exist.")
        self._assign(MODELS[record["__entity_type__"]], record, data, creating=False)
        self._check_foreign_keys(MODELS[record["__entity_type__"]], record)
        return self.serialize(record, self._answer_tree(MODELS[record["__entity_type__"]], data))

    def delete(self, entity_type: str, entity_key: list) -> None:
        record = self.get(entity_type, entity_key)
        if record is None:
            raise FtrackError("ServerError", f"{entity_type} {entity_key} does not exist.")
        self._delete_record(record)

    def _delete_record(self, record: dict) -> None:
        model = MODELS[record["__entity_type__"]]
        for attribute, (_child, _fk, cascade) in model.collections.items():
            if cascade:
                for child in self.children(record, attribute):
                    self._delete_record(child)
        self.table(model).pop(_key(record[name] for name in model.primary_key), None)

    def _assign(self, model: EntityModel, record: dict, data: dict, creating: bool) -> None:
        """Store scalars and turn references into foreign keys; collections are derived."""
        immutable = set(model.schema["immutable"])
        for name, value in data.items():
            if name == "__entity_type__":
                continue
            if not creating and name in immutable:
                raise FtrackError("ImmutableAttributeError", f'Cannot set immutable attribute "{name}" of {model.name}.')
            if name in model.scalars:
                record[name] = value
            elif name in model.references:
                fk = model.references[name][0]
                record[fk] = value.get("id") if isinstance(value, dict) else value
            elif name in model.collections:
                continue  # membership follows the children's foreign keys
            else:
                raise FtrackError("ServerError", f'"{name}" is not a valid attribute of {model.name}.')

    def _server_defaults(self, model: EntityModel, record: dict) -> None:
        """Values a real server fills in on create."""
        for name in model.scalars:
            default = model.schema["properties"][name].get("default")
            if name not in record and default is not None and default != "{uid}":
                record[name] = default
        if model.root == "Context":
            record["context_type"] = _CONTEXT_TYPES.get(model.name, "task")
            if model.name == "Project":
                record["project_id"] = record["id"]
            elif record.get("parent_id") and not record.get("project_id"):
                parent = self.get("Context", [record["parent_id"]])
                record["project_id"] = parent and parent.get("project_id")
        elif model.root == "Component":
            record.setdefault("system_type", "file" if model.name == "FileComponent" else "component")
        elif model.name == "AssetVersion":
            if record.get("version") is None:
                siblings = [r.get("version") or 0 for r in self.all_of("AssetVersion")
                            if r.get("asset_id") == record.get("asset_id")]
                record["version"] = max(siblings, default=0) + 1
            record.setdefault("date", _now())
            if not record.get("user_id"):
                users = [u for u in self.all_of("User") if u.get("username") == self.api_user]
                record["user_id"] = users[0]["id"] if users else None

    def _check_foreign_keys(self, model: EntityModel, record: dict) -> None:
        for fk, target_type in model.references.values():
            value = record.get(fk)
            if value is not None and self.get(target_type, [value]) is None:
                raise FtrackError("IntegrityError", f"{model.name}.{fk} refers to missing {target_type} {value}.")
        if model.name == "Metadata":
            parent_type = record.get("parent_type")
            if parent_type not in MODELS or self.get(parent_type, [record.get("parent_id")]) is None:
                raise FtrackError("IntegrityError", f"Metadata parent {parent_type} {record.get('parent_id')} is missing.")

    # -- reads ---------------------------------------------------------------------

    @staticmethod
    def _answer_tree(model: EntityModel, data: dict) -> dict:
        """What a create/update answers: every scalar, plus the relations the batch touched.

        The relations matter: the client keeps the remote value of a collection it does
        not see again, so after ``version['metadata']['k'] = 'v'`` the answer must carry
        the new ``metadata`` list or the session keeps a stale (empty) one.
        """
        tree = {name: {} for name in sorted(model.scalars)}
        tree.update({name: {} for name in data if name in model.references or name in model.collections})
        return tree

    def serialize(self, record: dict, tree: dict) -> dict:
        """Encode *record* the way ftrack does: type, primary key, then the projections."""
        model = MODELS[record["__entity_type__"]]
        out = {"__entity_type__": model.name}
        for name in model.primary_key:
            out[name] = record.get(name)
        for name, subtree in tree.items():
            out[name] = self._project(model, record, name, subtree)
        return out

    def _project(self, model: EntityModel, record: dict, name: str, subtree: dict) -> Any:
        if name in model.scalars:
            return record.get(name)
        if name in model.references:
            target = self.target(record, name)
            return None if target is None else self.serialize(target, subtree or self._defaults(target))
        if name in model.collections:
            return [self.serialize(child, subtree or self._defaults(child)) for child in self.children(record, name)]
        raise FtrackError("ServerError", f'"{name}" is not a valid attribute of {model.name}.')

    @staticmethod
    def _defaults(record: dict) -> dict:
        return {name: {} for name in MODELS[record["__entity_type__"]].schema["default_projections"]}

    def query(self, expression: str) -> dict:
        query = parse_query(expression)
        model = _model(query.entity_type)
        rows = [r for r in self.all_of(query.entity_type) if query.where is None or self._match(r, query.where)]
        for path, descending in reversed(query.order_by):
            rows.sort(key=lambda r: _sort_key(self.resolve(r, path)), reverse=descending)
        end = None if query.limit is None else query.offset + query.limit
        page = rows[query.offset:end]
        next_offset = end if end is not None and end < len(rows) else None
        tree = _projection_tree(query.projections or model.schema["default_projections"])
        return {"action": "query", "data": [self.serialize(r, tree) for r in page],
                "metadata": {"next": {"offset": next_offset}}}

    def resolve(self, record: dict, path: str) -> list:
        """Values reached by *path*; collections fan out, so this is a list."""
        head, _, rest = path.partition(".")
        model = MODELS[record["__entity_type__"]]
        if head in model.scalars:
            if rest:
                raise FtrackError("ServerError", f'"{head}" of {model.name} has no attribute "{rest}".')
            return [record.get(head)]
        if head in model.references:
            target = self.target(record, head)
            if not rest:
                return [target]
            return [] if target is None else self.resolve(target, rest)
        if head in model.collections:
            children = self.children(record, head)
            return children if not rest else [v for child in children for v in self.resolve(child, rest)]
        raise FtrackError("ServerError", f'"{head}" is not a valid attribute of {model.name}.')

    def _match(self, record: dict, condition: tuple) -> bool:
        kind = condition[0]
        if kind == "and":
            return self._match(record, condition[1]) and self._match(record, condition[2])
        if kind == "or":
            return self._match(record, condition[1]) or self._match(record, condition[2])
        if kind == "not":
            return not self._match(record, condition[1])
        if kind == "sub":  # metadata any (...), asset has (...)
            _, path, _, inner = condition
            return any(isinstance(r, dict) and self._match(r, inner) for r in self.resolve(record, path))
        _, path, operator, literal = condition
        values = [v.get("id") if isinstance(v, dict) and "__entity_type__" in v else v
                  for v in self.resolve(record, path)]
        if operator in ("is_not", "not_in", "not_like"):
            return all(_compare(v, operator, literal) for v in values)
        return any(_compare(v, operator, literal) for v in values)


def _sort_key(values: list) -> tuple:
    value = values[0] if values else None
    if isinstance(value, dict):
        value = value.get("value", value.get("id"))
    return (value is not None, str(type(value).__name__), value if value is not None else 0)


def _projection_tree(projections: Iterable[str]) -> dict:
    tree: dict = {}
    for projection in projections:
        node = tree
        for part in projection.split("."):
            node = node.setdefault(part, {})
    return tree


# ================================================================================== server


def _server_information() -> dict:
    """Same shape as the real answer (fixture); ``"dev"`` passes the client's version check."""
    schema_hash = hashlib.md5(json.dumps(SCHEMAS, sort_keys=True).encode()).hexdigest()
    return {"version": "dev", "schema_hash": schema_hash, "is_timezone_support_enabled": True,
            "storage_scenario": {"scenario": "ftrack.automatic", "data": {}}}


class FakeFtrackServer(LoopbackServer):
    """The fake ftrack server, in-process. See the module docstring and docs/fakes.md.

    *faults* are fault dicts (see :meth:`set_faults`) active from the start.
    """

    def __init__(self, state_dir: str | Path | None, api_user: str = "atomic-publish",
                 api_key: str = "fake-api-key", port: int = 0, faults: Iterable[dict] | None = None):
        super().__init__(port)
        self.api_user = api_user
        self.api_key = api_key
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.store = Store(self.state_dir / STATE_FILE if self.state_dir else None, api_user)
        if self.state_dir:
            self.store.save()
        self.faults = FaultBook(faults, kinds=FAULT_KINDS)
        self.server_information = _server_information()
        self._stats_lock = threading.Lock()
        self._stats = self._empty_stats()
        self._journal: list[dict] = []

    def _make_handler(self) -> type:
        return type("FakeFtrackHandler", (_FtrackHandler,), {"fake": self})

    # -- public API ----------------------------------------------------------------

    def set_faults(self, faults: Iterable[dict] | dict, replace: bool = True) -> None:
        """Script faults. Each is a dict with ``kind`` in :data:`FAULT_KINDS` and optionally:

        ``count`` (next N matching requests, default 1, ``None`` = forever), ``action`` and
        ``entity_type`` (match only requests holding such an operation), ``status`` and
        ``retry_after`` (http_error), ``exception`` and ``content`` (exception),
        ``seconds`` and ``when`` ("before"/"after" applying; delay).
        """
        (self.faults.replace if replace else self.faults.add)(faults)

    def clear_faults(self) -> None:
        self.faults.clear()

    def stats(self) -> dict:
        """Counts for assertions: requests, operations received/applied per action, faults fired."""
        with self._stats_lock:
            out = copy.deepcopy(self._stats)
        out["faults_fired"] = dict(self.faults.fired)
        out["faults_pending"] = self.faults.pending()
        return out

    def requests(self) -> list[dict]:
        """The last batches received on ``/api`` (up to 1000): what the client really sent."""
        with self._stats_lock:
            return copy.deepcopy(self._journal)

    def entities(self, entity_type: str) -> list[dict]:
        """Raw stored records of *entity_type* (subtypes included), as the server keeps them."""
        return self.store.entities(entity_type)

    def state(self) -> dict:
        return self.store.dump()

    def reset(self) -> None:
        """Forget all entities (back to the built-in locations and user), faults and stats."""
        self.store.reset()
        self.faults.clear()
        self.faults.fired.clear()
        with self._stats_lock:
            self._stats = self._empty_stats()
            self._journal.clear()

    def seed_context(self, project: str = "proj", shot: str = "sh010", task: str = "comp",
                     asset_type: str = "Render") -> dict:
        """Create (or find) project/shot/task and an asset type; return their ids.

        Ids are uuid5 of the names, so seeding twice is harmless and ids are predictable.
        """
        ids = {"project_id": _seed_id("Project", project), "shot_id": _seed_id("Shot", project, shot),
               "task_id": _seed_id("Task", project, shot, task), "asset_type_id": _seed_id("AssetType", asset_type)}
        wanted = [
            ("Project", {"id": ids["project_id"], "name": project, "full_name": project}),
            ("Shot", {"id": ids["shot_id"], "name": shot, "parent_id": ids["project_id"]}),
            ("Task", {"id": ids["task_id"], "name": task, "parent_id": ids["shot_id"]}),
            ("AssetType", {"id": ids["asset_type_id"], "name": asset_type, "short": asset_type.lower()[:4]}),
        ]
        for entity_type, data in wanted:
            if not any(e["id"] == data["id"] for e in self.entities(entity_type)):
                self.store.insert(entity_type, data)
        ids["location_id"] = UNMANAGED_LOCATION_ID
        return ids

    # -- bookkeeping used by the handler -------------------------------------------

    @staticmethod
    def _empty_stats() -> dict:
        return {"requests": 0, "rejected_auth": 0, "received": {}, "applied": {}, "by_entity_type": {}}

    def _count(self, bucket: str, operations: list[dict]) -> None:
        with self._stats_lock:
            if bucket == "received":
                self._journal = (self._journal + [{"operations": operations}])[-1000:]
            counts = self._stats[bucket]
            for op in operations:
                action = str(op.get("action"))
                counts[action] = counts.get(action, 0) + 1
                if bucket == "applied" and op.get("entity_type"):
                    name = f"{action}:{op['entity_type']}"
                    self._stats["by_entity_type"][name] = self._stats["by_entity_type"].get(name, 0) + 1

    def _count_request(self, authorised: bool) -> None:
        with self._stats_lock:
            self._stats["requests"] += 1
            if not authorised:
                self._stats["rejected_auth"] += 1


def _seed_id(*names: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "fake-ftrack:" + "/".join(names)))


def _fault_matches(operations: list[dict]):
    """Predicate: a fault matches a batch holding an operation of its action/entity type."""
    def matches(fault: dict) -> bool:
        for op in operations:
            if fault.get("action") not in (None, op.get("action")):
                continue
            if fault.get("entity_type") not in (None, op.get("entity_type")):
                continue
            return True
        return False
    return matches


class _FtrackHandler(BaseHTTPRequestHandler):
    """``POST /api`` for the client, ``/_fake/*`` for tests to steer the fake."""

    fake: FakeFtrackServer
    server_version = "FakeFtrack/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ------------------------------------------------------------------

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send_json(self, status: int, payload: Any, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(body)

    def _send_error_payload(self, error: FtrackError) -> None:
        """ftrack answers errors with HTTP 200 unless the client asked for the strict API."""
        strict = self.headers.get("ftrack-strict-api", "false").lower() == "true"
        self._send_json(error.status if strict else 200, error.payload())

    def _drop(self) -> None:
        """Close the socket without a byte of answer: the client cannot know what happened."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(2)
        except OSError:
            pass

    # -- verbs ---------------------------------------------------------------------

    def do_POST(self) -> None:
        if self.path.rstrip("/") == "/api":
            self._api(self._body())
        elif self.path.startswith("/_fake/"):
            self._control("POST", self._body())
        else:
            self._send_json(404, {"exception": "NotFound", "content": self.path})

    def do_GET(self) -> None:
        self._control("GET", b"")

    def do_DELETE(self) -> None:
        self._control("DELETE", b"")

    # -- the ftrack API ------------------------------------------------------------

    def _api(self, body: bytes) -> None:
        fake = self.fake
        authorised = (self.headers.get("ftrack-api-key") == fake.api_key
                      and self.headers.get("ftrack-user") == fake.api_user)
        fake._count_request(authorised)
        try:
            operations = json.loads(body or b"null")
            if not isinstance(operations, list):
                raise ValueError("the body must be a JSON list of operations")
        except ValueError as exc:
            self._send_error_payload(FtrackError("ServerError", f"Malformed request: {exc}"))
            return
        fake._count("received", operations)
        if not authorised:
            self._send_error_payload(FtrackError("ServerError", "The supplied API key is not valid.", 401))
            return

        matches = _fault_matches(operations)
        delay = fake.faults.take("delay", matches)
        if delay and delay.get("when", "after") == "before":
            time.sleep(float(delay.get("seconds", 1.0)))
        if self._scripted_refusal(matches):
            return

        try:
            results = fake.store.apply(operations, fake.server_information)
        except FtrackError as error:
            self._send_error_payload(error)
            return
        except (KeyError, TypeError, AttributeError) as exc:  # a malformed operation
            self._send_error_payload(FtrackError("ServerError", f"Malformed operation: {exc!r}"))
            return
        fake._count("applied", operations)

        if fake.faults.take("drop_after_apply", matches):
            self._drop()
            return
        if delay and delay.get("when", "after") == "after":
            time.sleep(float(delay.get("seconds", 1.0)))
        self._send_json(200, results)

    def _scripted_refusal(self, matches) -> bool:
        """Answer with a scripted failure that leaves the data untouched; True if one fired."""
        faults = self.fake.faults
        fault = faults.take("http_error", matches)
        if fault:
            status = int(fault.get("status", 503))
            headers = {"Retry-After": fault["retry_after"]} if fault.get("retry_after") is not None else {}
            self._send_json(status, {"exception": "ServerError", "content": f"fake ftrack: HTTP {status}"}, headers)
            return True
        fault = faults.take("exception", matches)
        if fault:
            self._send_error_payload(FtrackError(fault.get("exception", "ServerError"),
                                                 fault.get("content", "fake ftrack: scripted exception"),
                                                 int(fault.get("status", 500))))
            return True
        if faults.take("drop_before_apply", matches):
            self._drop()
            return True
        return False

    # -- control endpoints ---------------------------------------------------------

    def _control(self, method: str, body: bytes) -> None:
        fake = self.fake
        path, _, query = self.path.partition("?")
        try:
            data = json.loads(body) if body else None
        except ValueError:
            self._send_json(400, {"error": "body is not JSON"})
            return
        try:
            if path == "/_fake/faults" and method == "POST":
                replace = True if data is None or isinstance(data, list) else data.get("replace", True)
                faults = data if isinstance(data, list) else (data or {}).get("faults", data)
                fake.set_faults(faults or [], replace=replace)
                self._send_json(200, {"pending": fake.faults.pending()})
            elif path == "/_fake/faults" and method == "GET":
                self._send_json(200, {"pending": fake.faults.pending()})
            elif path == "/_fake/faults" and method == "DELETE":
                fake.clear_faults()
                self._send_json(200, {"pending": []})
            elif path == "/_fake/stats" and method == "GET":
                self._send_json(200, fake.stats())
            elif path == "/_fake/requests" and method == "GET":
                self._send_json(200, fake.requests())
            elif path == "/_fake/state" and method == "GET":
                entity_type = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("type")
                self._send_json(200, fake.entities(entity_type) if entity_type else fake.state())
            elif path == "/_fake/reset" and method == "POST":
                fake.reset()
                self._send_json(200, {"ok": True})
            elif path == "/_fake/seed" and method == "POST":
                self._send_json(200, fake.seed_context(**(data or {})))
            else:
                self._send_json(404, {"error": f"no control endpoint {method} {path}"})
        except (ValueError, TypeError, FtrackError) as exc:
            self._send_json(400, {"error": str(exc)})


class FakeFtrackControl(FakeControl):
    """Steer a fake running in another process, through its ``/_fake/*`` endpoints.

    Same methods as :class:`FakeFtrackServer` for what tests need.
    """

    def set_faults(self, faults: Iterable[dict] | dict, replace: bool = True) -> list[dict]:
        faults = [faults] if isinstance(faults, dict) else list(faults)
        return self._call("POST", "/_fake/faults", {"faults": faults, "replace": replace})["pending"]

    def clear_faults(self) -> None:
        self._call("DELETE", "/_fake/faults")

    def stats(self) -> dict:
        return self._call("GET", "/_fake/stats")

    def requests(self) -> list[dict]:
        return self._call("GET", "/_fake/requests")

    def entities(self, entity_type: str) -> list[dict]:
        return self._call("GET", f"/_fake/state?type={entity_type}")

    def state(self) -> dict:
        return self._call("GET", "/_fake/state")

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})

    def seed_context(self, project: str = "proj", shot: str = "sh010", task: str = "comp",
                     asset_type: str = "Render") -> dict:
        return self._call("POST", "/_fake/seed", {"project": project, "shot": shot, "task": task,
                                                  "asset_type": asset_type})


# ===================================================================================== CLI


def _parse_fault(text: str) -> dict:
    """``--fault`` takes JSON, e.g. '{"kind": "http_error", "status": 503, "count": 2}'."""
    fault = json.loads(text)
    if not isinstance(fault, dict):
        raise argparse.ArgumentTypeError("a fault is a JSON object")
    return fault


def main(argv: list[str] | None = None) -> int:
    """Run the fake as a process until SIGTERM; print ``FAKE_FTRACK_URL=...`` when ready."""
    parser = argparse.ArgumentParser(prog="python -m atomic_publish.testing.fake_ftrack", description=__doc__.split("\n")[0])
    parser.add_argument("--state", required=True, help="folder holding the persisted entities")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-user", default="atomic-publish")
    parser.add_argument("--api-key", default="fake-api-key")
    parser.add_argument("--fault", action="append", type=_parse_fault, default=[],
                        help="a fault as JSON (repeatable); see docs/fakes.md")
    parser.add_argument("--seed", nargs=3, metavar=("PROJECT", "SHOT", "TASK"),
                        help="seed a project/shot/task hierarchy at start")
    args = parser.parse_args(argv)
    server = FakeFtrackServer(args.state, api_user=args.api_user, api_key=args.api_key,
                              port=args.port, faults=args.fault)
    if args.seed:
        server.seed_context(*args.seed)
    return serve_until_signal(server, "FAKE_FTRACK_URL")


if __name__ == "__main__":
    raise SystemExit(main())
