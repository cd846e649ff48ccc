"""Encrypted columns for SQLAlchemy models: ``EncryptedString`` and blind-index columns.

::

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(EncryptedString(255))
        email_index: Mapped[str] = blind_index_column("email", normalize=str.casefold)

    use_encryption(Base, runtime.crypto)          # once, before the first session
    session.add(User(email="Ada@example.com"))    # stored as a ciphertext bound to its row
    session.scalars(select(User).where(matches(User.email_index, "ada@example.com", crypto)))

The column type knows its table and column from the table it is attached to; the row's
primary key comes from the instance being flushed or loaded. :func:`use_encryption` installs
the mapper events that do the work: before an INSERT or UPDATE each changed encrypted
attribute is encrypted with its record's identity (and its blind indexes recomputed); after
a load the ciphertext is decrypted with the loaded row's identity, so a ciphertext copied
into another row or column raises :class:`~bastion.core.crypto.errors.DecryptionFailed`
(audited) instead of showing another user's data. Application code sees plain ``str``.

A row whose primary key the database assigns (an autoincrement integer) is inserted with an
empty placeholder and its encrypted columns are written by one UPDATE right after the INSERT,
in the same transaction: the key must exist before a value can be bound to it. Keys chosen
by the application (UUIDs, or a sequence fetched first) avoid that statement. Changing the
primary key of a row with encrypted columns is refused: the ciphertexts name the old key.

Through SQLAlchemy Core, :class:`EncryptedString` accepts only
:class:`~bastion.crypto.service.Ciphertext` values (from ``encrypt_field``), so plaintext is
never written by mistake, and comparing an encrypted column with a value is refused: search
through a blind index. :func:`rotate_table` re-encrypts a table in batches (``bastion crypto
rotate``); ``use_encryption(..., rotate_on_load=True)`` rewrites rows lazily, as they are
loaded and their session commits.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy import event, orm
from sqlalchemy.orm import Mapper, attributes, mapped_column
from sqlalchemy.types import TypeDecorator

from bastion.core.crypto.envelope import OVERHEAD_BYTES
from bastion.core.crypto.errors import EncryptionFailed
from bastion.crypto.service import Ciphertext
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Dialect
    from sqlalchemy.orm import InstanceState, MappedColumn, QueryContext
    from sqlalchemy.orm.attributes import InstrumentedAttribute

    from bastion.core.crypto.envelope import RowKey
    from bastion.crypto.service import EncryptionService

__all__ = [
    "BlindIndexSpec",
    "EncryptedString",
    "EncryptionHooks",
    "blind_index_column",
    "ciphertext_length",
    "matches",
    "use_encryption",
]

_INDEX_INFO: Final = "bastion.crypto.blind_index"
_PENDING: Final = "bastion.crypto.pending"
_HOOKS_ATTRIBUTE: Final = "__bastion_encryption__"
_STALE: Final = "bastion.crypto.stale"


def ciphertext_length(plaintext_bytes: int) -> int:
    """The length of the text ciphertext of a value of ``plaintext_bytes`` UTF-8 bytes."""
    return -(-4 * (plaintext_bytes + OVERHEAD_BYTES) // 3)


class EncryptedString(TypeDecorator[str]):
    """A string column holding ciphertexts (see the module docstring).

    ``length`` is the longest plaintext in UTF-8 bytes; the column is sized for its
    ciphertext (:func:`ciphertext_length`). ``None``: an unbounded text column.
    """

    impl = sa.String
    cache_ok = True

    def __init__(self, length: int | None = None) -> None:
        if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
            raise TypeError("EncryptedString(length) is the longest plaintext, in bytes")
        super().__init__(None if length is None else ciphertext_length(length))
        self.plaintext_length = length

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:  # noqa: ARG002
        if value is None or type(value) is Ciphertext:
            return value
        raise EncryptionFailed(
            "an EncryptedString column takes only ciphertexts (EncryptionService."
            "encrypt_field(...), or a mapped class after use_encryption()); to find rows by "
            "an encrypted value, compare a blind_index_column"
        )

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:  # noqa: ARG002
        return None if value is None else str(value)  # decrypted by the mapper events


@dataclass(frozen=True, slots=True)
class BlindIndexSpec:
    """What a blind-index column indexes: the attribute ``source`` of the same class, after
    ``normalize`` (for example ``str.casefold`` for e-mail addresses)."""

    source: str
    normalize: Callable[[str], str] | None = None


def blind_index_column(
    source: str,
    *,
    normalize: Callable[[str], str] | None = None,
    size: int = 16,
    **options: Any,
) -> MappedColumn[Any]:
    """A mapped column holding the blind index of the encrypted attribute ``source``,
    indexed by the database (``index=True`` unless ``options`` say otherwise). ``size`` is
    the policy's ``index_size`` (the column holds twice as many hex characters)."""
    options.setdefault("index", True)
    info = dict(options.pop("info", None) or {})
    info[_INDEX_INFO] = BlindIndexSpec(source, normalize)
    return mapped_column(sa.String(2 * size), info=info, **options)


def matches(
    index: InstrumentedAttribute[Any], value: str, crypto: EncryptionService
) -> sa.ColumnElement[bool]:
    """``index == <blind index of value>``: the rows whose encrypted source equals ``value``."""
    column = index.property.columns[0]
    spec = column.info.get(_INDEX_INFO)
    if not isinstance(spec, BlindIndexSpec):
        raise TypeError(f"{index} is not a blind_index_column")
    source = index.parent.mapper.get_property(spec.source).columns[0]
    plain = spec.normalize(value) if spec.normalize is not None else value
    digest = crypto.blind_index(plain, table=source.table.name, column=source.name)
    return index == digest


@dataclass(frozen=True, slots=True)
class _Field:
    key: str  # the attribute
    column: sa.Column[Any]

    @property
    def table(self) -> sa.Table:
        """The table that stores the column: under joined-table inheritance an inherited
        column lives in the parent's table, not the mapper's own (``local_table``), and a
        value is bound to where it is stored (what ``rotate_table`` and ``matches`` name)."""
        table: sa.Table = self.column.table  # checked in _plan_of
        return table


@dataclass(frozen=True, slots=True)
class _Index:
    key: str
    source: _Field
    normalize: Callable[[str], str] | None


@dataclass(frozen=True, slots=True)
class _Plan:
    fields: tuple[_Field, ...]
    indexes: tuple[_Index, ...]


def _plan_of(mapper: Mapper[Any]) -> _Plan | None:
    fields: dict[str, _Field] = {}
    raw_indexes: list[tuple[str, BlindIndexSpec]] = []
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if isinstance(column.type, EncryptedString):
            fields[prop.key] = _Field(prop.key, column)  # type: ignore[arg-type]
        spec = column.info.get(_INDEX_INFO)
        if isinstance(spec, BlindIndexSpec):
            raw_indexes.append((prop.key, spec))
    if not fields:
        if raw_indexes:
            raise TypeError(f"{mapper.class_.__name__}: a blind index needs an EncryptedString")
        return None
    indexes = []
    for key, spec in raw_indexes:
        if spec.source not in fields:
            raise TypeError(
                f"{mapper.class_.__name__}.{key} indexes {spec.source!r}, which is not an "
                "EncryptedString attribute of the class"
            )
        indexes.append(_Index(key, fields[spec.source], spec.normalize))
    table = mapper.local_table
    if not isinstance(table, sa.Table) or not all(
        isinstance(field.column.table, sa.Table) for field in fields.values()
    ):
        raise TypeError(f"{mapper.class_.__name__}: encrypted columns need a mapped Table")
    return _Plan(tuple(fields.values()), tuple(indexes))


def _row_of(values: tuple[Any, ...]) -> RowKey | None:
    if not values or any(value is None for value in values):
        return None
    return values[0] if len(values) == 1 else tuple(values)


class _Hooks:
    """The mapper events of one :func:`use_encryption` call."""

    def __init__(self, crypto: EncryptionService, *, rotate_on_load: bool) -> None:
        self.crypto = crypto
        self.rotate_on_load = rotate_on_load
        self._plans: dict[Mapper[Any], _Plan | None] = {}

    def plan(self, mapper: Mapper[Any]) -> _Plan | None:
        if mapper not in self._plans:  # one entry per mapped class
            self._plans[mapper] = _plan_of(mapper)
        return self._plans[mapper]

    # -- reading ------------------------------------------------------------------------------

    def on_load(self, target: object, context: QueryContext) -> None:
        self._decrypt(target, context, None)

    def on_refresh(self, target: object, context: QueryContext, attrs: Any) -> None:
        self._decrypt(target, context, None if attrs is None else frozenset(attrs))

    def _decrypt(self, target: object, context: QueryContext, only: frozenset[str] | None) -> None:
        state: InstanceState[Any] = sa.inspect(target)
        plan = self.plan(state.mapper)
        if plan is None:
            return
        row = _row_of(state.identity or ())
        values = state.dict
        for field in plan.fields:
            if only is not None and field.key not in only:
                continue
            token = values.get(field.key)
            if not isinstance(token, str) or row is None:
                continue
            plain = self.crypto.decrypt_field(
                token, table=field.table.name, row=row, column=field.column.name
            )
            attributes.set_committed_value(target, field.key, plain)
            if self.rotate_on_load and self.crypto.needs_rotation(token):
                # Noted now (with the ciphertext read), rewritten at commit.
                state.info.setdefault(_STALE, {})[field.key] = token
                context.session.info.setdefault(_STALE, weakref.WeakSet()).add(state)

    def before_commit(self, session: orm.Session) -> None:
        """Rewrite the stale ciphertexts the session loaded, each with a compare-and-set
        (``WHERE column = <the ciphertext read>``), as ``rotate_table`` does: a plain UPDATE
        of the loaded value would revert what another writer committed since the load."""
        stale = session.info.pop(_STALE, None)
        for state in stale or ():
            tokens: dict[str, str] = state.info.pop(_STALE, {})
            target = state.obj()
            plan = self.plan(state.mapper)
            row = _row_of(state.identity or ())
            if target is None or plan is None or row is None:
                continue
            if state.session_id != session.hash_key:
                continue
            fields = {field.key: field for field in plan.fields}
            for key, token in tokens.items():
                plain = state.dict.get(key)
                if not isinstance(plain, str) or key in state.committed_state:
                    continue  # expired since, or changed by the app (its flush re-encrypts)
                field = fields[key]
                where = [field.column == Ciphertext(token)]
                for column in field.table.primary_key.columns:
                    value = state.dict.get(state.mapper.get_property_by_column(column).key)
                    where.append(column == value)
                fresh = self.crypto.encrypt_field(
                    plain, table=field.table.name, row=row, column=field.column.name
                )
                session.execute(
                    field.table.update().where(*where).values({field.column.name: fresh})
                )

    # -- writing ------------------------------------------------------------------------------

    def before_insert(self, mapper: Mapper[Any], _connection: Connection, target: object) -> None:
        self._seal(mapper, target, inserting=True)

    def before_update(self, mapper: Mapper[Any], _connection: Connection, target: object) -> None:
        self._seal(mapper, target, inserting=False)

    def _seal(self, mapper: Mapper[Any], target: object, *, inserting: bool) -> None:
        plan = self.plan(mapper)
        if plan is None:
            return
        state: InstanceState[Any] = sa.inspect(target)
        row = _row_of(tuple(mapper.primary_key_from_instance(target)))
        if not inserting and row != _row_of(state.identity or ()):
            raise EncryptionFailed(
                f"{mapper.class_.__name__}: the primary key of a row with encrypted columns "
                "cannot change (its ciphertexts are bound to the old key); copy the row instead"
            )
        changed = self._changed(plan, state, row, inserting=inserting)
        if not changed:
            return
        pending: dict[str, tuple[str | None, object]] = {}
        for field, plain in changed:
            if plain is None:
                placed: object = None
            elif row is None:  # the database assigns the key: written after the INSERT
                placed = Ciphertext("")  # a new object each time: recognised by identity
            else:
                placed = self.crypto.encrypt_field(
                    plain, table=field.table.name, row=row, column=field.column.name
                )
            state.dict[field.key] = placed
            pending[field.key] = (plain, placed)
        for index in plan.indexes:
            if index.source.key in pending:
                plain = pending[index.source.key][0]
                digest = None
                if plain is not None:
                    normalized = plain if index.normalize is None else index.normalize(plain)
                    digest = self.crypto.blind_index(
                        normalized, table=index.source.table.name, column=index.source.column.name
                    )
                setattr(target, index.key, digest)
        # Kept until after the write: if the flush fails, the next attempt finds the values
        # placed here and encrypts the plaintext again (the key may differ then).
        state.info[_PENDING] = (pending, row is None)

    def _changed(
        self, plan: _Plan, state: InstanceState[Any], row: RowKey | None, *, inserting: bool
    ) -> list[tuple[_Field, str | None]]:
        earlier = state.info.get(_PENDING)
        placed_before: dict[str, tuple[str | None, object]] = {} if earlier is None else earlier[0]
        changed: list[tuple[_Field, str | None]] = []
        for field in plan.fields:
            value = state.dict.get(field.key)
            before = placed_before.get(field.key)
            if before is not None and value is before[1]:
                changed.append((field, before[0]))  # a failed flush placed it: redo
                continue
            if not inserting and field.key not in state.committed_state:
                continue  # unchanged
            if value is None:
                if not inserting:
                    changed.append((field, None))  # cleared: its blind index too
                continue
            if type(value) is Ciphertext:  # a ciphertext the application made itself
                if row is None:
                    continue  # no key yet: nothing to check it against
                # Opened here: it must belong to this very field (one copied from another row
                # is refused), and its blind indexes must follow its value, not keep the old.
                value = self.crypto.decrypt_field(
                    value, table=field.table.name, row=row, column=field.column.name
                )
                changed.append((field, value))
                continue
            if not isinstance(value, str):
                raise EncryptionFailed(
                    f"{field.key} is an encrypted text column; got {type(value).__name__}"
                )
            changed.append((field, value))
        return changed

    def after_write(self, mapper: Mapper[Any], connection: Connection, target: object) -> None:
        state: InstanceState[Any] = sa.inspect(target)
        pending = state.info.pop(_PENDING, None)
        if pending is None:
            return
        plain_values, deferred = pending
        plan = self.plan(mapper)
        if plan is None:  # pragma: no cover (pending is set only with a plan)
            return
        if deferred:
            row = _row_of(tuple(mapper.primary_key_from_instance(target)))
            if row is None:
                raise EncryptionFailed(f"{mapper.class_.__name__}: no primary key after INSERT")
            by_key = {field.key: field for field in plan.fields}
            # One UPDATE per table that stores a value (two under joined-table inheritance),
            # each keyed by that table's own primary-key columns.
            sealed: dict[sa.Table, dict[str, Any]] = {}
            for key, (plain, _) in plain_values.items():
                if plain is None:
                    continue
                field = by_key[key]
                sealed.setdefault(field.table, {})[field.column.name] = self.crypto.encrypt_field(
                    plain, table=field.table.name, row=row, column=field.column.name
                )
            for table, values in sealed.items():
                where = [
                    column == getattr(target, mapper.get_property_by_column(column).key)
                    for column in table.primary_key.columns
                ]
                connection.execute(table.update().where(*where).values(values))
        for key, (plain, _) in plain_values.items():
            attributes.set_committed_value(target, key, plain)


def use_encryption(
    base: type[Any], crypto: EncryptionService, *, rotate_on_load: bool = False
) -> EncryptionHooks:
    """Encrypt and decrypt the ``EncryptedString`` attributes of ``base`` and its subclasses
    (a declarative base, or one mapped class) with ``crypto``; the hooks, whose
    :meth:`~EncryptionHooks.remove` takes them out again. Call it once per base: a second
    call before ``remove()`` is refused (two sets of hooks would encrypt twice).

    ``rotate_on_load``: a loaded row whose ciphertext uses an older key is rewritten under the
    current key when the session that loaded it commits, if it still holds the instance and
    the stored ciphertext is still the one it read (lazy rotation, a compare-and-set: a value
    another writer changed since is left as written; a session that only reads and rolls
    back, or closes without committing, writes nothing).
    """
    if base.__dict__.get(_HOOKS_ATTRIBUTE) is not None:
        raise ConfigurationError(
            f"use_encryption() was already called for {base.__name__}; call remove() on the "
            "hooks it returned first",
            setting="crypto",
        )
    hooks = EncryptionHooks(base, _Hooks(crypto, rotate_on_load=rotate_on_load))
    for name, handler in hooks.handlers():
        event.listen(base, name, handler, propagate=True)
    if rotate_on_load:
        event.listen(orm.Session, "before_commit", hooks.hooks.before_commit)
    setattr(base, _HOOKS_ATTRIBUTE, hooks)
    return hooks


class EncryptionHooks:
    """The mapper events :func:`use_encryption` installed on one base."""

    __slots__ = ("_base", "_hooks")

    def __init__(self, base: type[Any], hooks: _Hooks) -> None:
        self._base = base
        self._hooks = hooks

    @property
    def crypto(self) -> EncryptionService:
        return self._hooks.crypto

    @property
    def hooks(self) -> _Hooks:
        return self._hooks

    def handlers(self) -> tuple[tuple[str, Callable[..., None]], ...]:
        hooks = self._hooks
        return (
            ("load", hooks.on_load),
            ("refresh", hooks.on_refresh),
            ("before_insert", hooks.before_insert),
            ("before_update", hooks.before_update),
            ("after_insert", hooks.after_write),
            ("after_update", hooks.after_write),
        )

    def remove(self) -> None:
        """Take the events out (the base's columns then hold ciphertexts again)."""
        for name, handler in self.handlers():
            if event.contains(self._base, name, handler):
                event.remove(self._base, name, handler)
        if event.contains(orm.Session, "before_commit", self._hooks.before_commit):
            event.remove(orm.Session, "before_commit", self._hooks.before_commit)
        if self._base.__dict__.get(_HOOKS_ATTRIBUTE) is self:
            delattr(self._base, _HOOKS_ATTRIBUTE)

    def __repr__(self) -> str:
        return f"EncryptionHooks({self._base.__name__})"
