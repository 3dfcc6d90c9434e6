"""Models, their immutable versions and movable aliases, kept in the registry database.

Every write runs in one :func:`mlgate.db.write_tx` whose first statement bumps
``registry_state.generation``. That row lock (PostgreSQL) or ``BEGIN IMMEDIATE``
(SQLite) serializes registry writers, so version numbers are handed out 1, 2, 3, …
without gaps or duplicates across threads and processes, and readers elsewhere can
poll :meth:`Repository.generation` to notice any change.

Example::

    repo = Repository.open("sqlite:///var/mlgate.db")
    repo.ensure_model("iris")
    v = repo.add_version("iris", manifest)
    repo.set_alias("iris", "production", v.version)
    repo.resolve("iris")  # -> the production version
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update
from sqlalchemy import exc as sa_exc

from mlgate.db.engine import create_engine_for, write_tx
from mlgate.db.migrate import upgrade
from mlgate.db.tables import (
    alias_policies,
    aliases,
    canary_assignments,
    model_versions,
    models,
    registry_state,
    utcnow,
)
from mlgate.errors import Conflict, InvalidInput, ModelNotFound, NotFound, VersionNotFound
from mlgate.types import NAME_PATTERN, Manifest, ModelInfo, VersionInfo

__all__ = ["DEFAULT_ALIAS", "Repository"]

#: The alias :meth:`Repository.resolve` follows when no version or alias is asked for.
DEFAULT_ALIAS = "production"


class Repository:
    """Models, immutable versions and aliases in the registry database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._owns_engine = False

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Repository:
        """A repository on ``url`` (``sqlite:///…`` or ``postgresql://…``), migrated to head."""
        engine = create_engine_for(url)
        try:
            if migrate:
                upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        repo = cls(engine)
        repo._owns_engine = True
        return repo

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Release pooled connections (only of an engine this repository created)."""
        if self._owns_engine:
            self._engine.dispose()

    # -- models ---------------------------------------------------------------------------

    def create_model(self, name: str, *, description: str = "") -> ModelInfo:
        """Register a new model; :class:`Conflict` if it exists."""
        _check_name(name, "model name")
        with write_tx(self._engine) as conn:
            _bump(conn)
            if _model_row(conn, name) is not None:
                raise Conflict(f"model {name!r} already exists", details={"model": name})
            now = utcnow()
            try:
                conn.execute(insert(models).values(name=name, description=description, created_at=now))
            except sa_exc.IntegrityError as exc:
                raise Conflict(f"model {name!r} already exists", details={"model": name}) from exc
        return ModelInfo(name=name, description=description, created_at=now)

    def ensure_model(self, name: str, *, description: str = "") -> ModelInfo:
        """The model ``name``, created first if missing (an existing description is kept)."""
        try:
            return self.get_model(name)
        except ModelNotFound:
            pass
        try:
            return self.create_model(name, description=description)
        except Conflict:
            return self.get_model(name)

    def get_model(self, name: str) -> ModelInfo:
        """One model with its aliases and latest version; :class:`ModelNotFound`."""
        with self._engine.connect() as conn:
            row = _require_model(conn, name)
            return self._model_infos(conn, [row])[0]

    def list_models(self) -> list[ModelInfo]:
        """Every model, sorted by name."""
        with self._engine.connect() as conn:
            rows = list(conn.execute(select(models).order_by(models.c.name)))
            return self._model_infos(conn, rows)

    def _model_infos(self, conn: Connection, rows: list[Row[Any]]) -> list[ModelInfo]:
        names = [row.name for row in rows]
        found_aliases: dict[str, dict[str, int]] = {name: {} for name in names}
        alias_rows = conn.execute(
            select(aliases.c.model, aliases.c.alias, aliases.c.version)
            .where(aliases.c.model.in_(names))
            .order_by(aliases.c.model, aliases.c.alias)
        )
        for model, alias, version in alias_rows:
            found_aliases[model][alias] = version
        latest: Mapping[str, int] = {
            model: version
            for model, version in conn.execute(
                select(model_versions.c.model, func.max(model_versions.c.version))
                .where(model_versions.c.model.in_(names))
                .group_by(model_versions.c.model)
            )
        }
        return [
            ModelInfo(
                name=row.name,
                description=row.description,
                created_at=row.created_at,
                aliases=found_aliases[row.name],
                latest_version=latest.get(row.name),
            )
            for row in rows
        ]

    # -- versions -------------------------------------------------------------------------

    def add_version(self, name: str, manifest: Manifest, *, location: str = "") -> VersionInfo:
        """Register the next version (1, 2, …) of an existing model; versions never change."""
        with write_tx(self._engine) as conn:
            _bump(conn)  # serializes writers first, so max(version) below cannot race
            _require_model(conn, name)
            latest = _latest_version(conn, name)
            info = VersionInfo(
                model=name,
                version=(latest or 0) + 1,
                manifest=manifest,
                created_at=utcnow(),
                location=location,
            )
            conn.execute(
                insert(model_versions).values(
                    model=name,
                    version=info.version,
                    manifest=manifest.model_dump_json(),
                    location=location,
                    created_at=info.created_at,
                )
            )
        return info

    def get_version(self, name: str, version: int) -> VersionInfo:
        """One version; :class:`ModelNotFound` or :class:`VersionNotFound`."""
        with self._engine.connect() as conn:
            return _require_version(conn, name, version)

    def list_versions(self, name: str) -> list[VersionInfo]:
        """Every version of a model, oldest first; :class:`ModelNotFound`."""
        with self._engine.connect() as conn:
            _require_model(conn, name)
            rows = conn.execute(
                select(model_versions)
                .where(model_versions.c.model == name)
                .order_by(model_versions.c.version)
            )
            return [_version_info(row) for row in rows]

    def find_version(self, name: str, files: dict[str, str], *, location: str = "") -> VersionInfo | None:
        """The newest version with exactly these file hashes and location, else ``None``.

        Lets bundled models be registered idempotently; ``None`` also when the model is missing.
        """
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(model_versions)
                .where(model_versions.c.model == name, model_versions.c.location == location)
                .order_by(model_versions.c.version.desc())
            )
            for row in rows:
                info = _version_info(row)
                if info.manifest.files == files:
                    return info
        return None

    def delete_version(
        self, name: str, version: int, *, release: Callable[[set[str]], None] | None = None
    ) -> VersionInfo:
        """Delete one version; :class:`Conflict` while an alias points at it.

        ``release`` is called, inside the write transaction, with the sha256 of the version's
        content-addressed files that no remaining version references: the caller deletes those
        blobs then, before any other registry writer (a push of the same bytes) can run.
        """
        with write_tx(self._engine) as conn:
            _bump(conn)
            info = _require_version(conn, name, version)
            pointing = sorted(
                conn.scalars(
                    select(aliases.c.alias).where(aliases.c.model == name, aliases.c.version == version)
                )
            )
            pointing += _policy_users(conn, name, version)
            if not pointing:
                _drop_from_splits(conn, name, version)  # at weight 0 in a split: forgotten there
            if pointing:
                raise Conflict(
                    f"model {name!r} version {version} is aliased ({', '.join(pointing)}): "
                    "move or delete the alias first",
                    details={"model": name, "version": version, "aliases": pointing},
                )
            conn.execute(
                model_versions.delete().where(
                    model_versions.c.model == name, model_versions.c.version == version
                )
            )
            if release is not None:
                unreferenced = _unreferenced(conn, [info])
                if unreferenced:
                    release(unreferenced)
        return info

    def delete_model(
        self, name: str, *, release: Callable[[set[str]], None] | None = None
    ) -> list[VersionInfo]:
        """Delete a model with its aliases and every version; ``release`` as :meth:`delete_version`."""
        with write_tx(self._engine) as conn:
            _bump(conn)
            _require_model(conn, name)
            rows = conn.execute(select(model_versions).where(model_versions.c.model == name))
            versions = [_version_info(row) for row in rows]
            conn.execute(aliases.delete().where(aliases.c.model == name))
            conn.execute(alias_policies.delete().where(alias_policies.c.model == name))
            conn.execute(canary_assignments.delete().where(canary_assignments.c.model == name))
            conn.execute(model_versions.delete().where(model_versions.c.model == name))
            conn.execute(models.delete().where(models.c.name == name))
            if release is not None:
                unreferenced = _unreferenced(conn, versions)
                if unreferenced:
                    release(unreferenced)
        return versions

    # -- aliases --------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version`` (creating or moving it)."""
        _check_name(alias, "alias")
        with write_tx(self._engine) as conn:
            _bump(conn)
            _require_version(conn, name, version)
            now = utcnow()
            moved = conn.execute(
                update(aliases)
                .where(aliases.c.model == name, aliases.c.alias == alias)
                .values(version=version, updated_at=now)
            )
            if moved.rowcount == 0:
                conn.execute(insert(aliases).values(model=name, alias=alias, version=version, updated_at=now))
            # A move ends the alias's canary split (the new version takes 100 %) and a shadow of
            # the version it now points at (mlgate.policies).
            where = (alias_policies.c.model == name, alias_policies.c.alias == alias)
            conn.execute(
                update(alias_policies).where(*where).values(split=None, guard=None, split_since=None)
            )
            conn.execute(
                update(alias_policies)
                .where(*where, alias_policies.c.shadow_version == version)
                .values(shadow_version=None, shadow_sample=None, shadow_options=None, shadow_since=None)
            )
            conn.execute(
                canary_assignments.delete().where(
                    canary_assignments.c.model == name, canary_assignments.c.alias == alias
                )
            )

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias``; :class:`NotFound` if it does not exist."""
        with write_tx(self._engine) as conn:
            _bump(conn)
            deleted = conn.execute(aliases.delete().where(aliases.c.model == name, aliases.c.alias == alias))
            conn.execute(
                alias_policies.delete().where(alias_policies.c.model == name, alias_policies.c.alias == alias)
            )
            conn.execute(
                canary_assignments.delete().where(
                    canary_assignments.c.model == name, canary_assignments.c.alias == alias
                )
            )
            if deleted.rowcount == 0:
                _require_model(conn, name)
                raise NotFound(
                    f"model {name!r} has no alias {alias!r}", details={"model": name, "alias": alias}
                )

    def resolve(self, name: str, ref: str | int | None = None) -> VersionInfo:
        """The version ``ref`` designates.

        An int or digit string is a version number, another string an alias; ``None``
        means the ``production`` alias if set, else the latest version.
        """
        with self._engine.connect() as conn:
            _require_model(conn, name)
            if isinstance(ref, int) or (ref is not None and ref.isascii() and ref.isdigit()):
                return _require_version(conn, name, int(ref))
            if ref is not None:
                version = _alias_version(conn, name, ref)
                if version is None:
                    raise VersionNotFound(
                        f"model {name!r} has no alias {ref!r}", details={"model": name, "alias": ref}
                    )
                return _require_version(conn, name, version)
            version = _alias_version(conn, name, DEFAULT_ALIAS)
            if version is None:
                version = _latest_version(conn, name)
            if version is None:
                raise VersionNotFound(f"model {name!r} has no versions", details={"model": name})
            return _require_version(conn, name, version)

    def generation(self) -> int:
        """A counter bumped by every registry write, for cheap change detection."""
        with self._engine.connect() as conn:
            return int(conn.scalar(select(registry_state.c.generation).where(registry_state.c.id == 1)) or 0)


def _check_name(value: str, what: str) -> None:
    if value.isdigit() or not NAME_PATTERN.match(value):
        raise InvalidInput(
            f"invalid {what} {value!r}: 1-64 lowercase letters, digits, '-' or '_', starting with a letter",
            details={"value": value},
        )


def _policy_users(conn: Connection, name: str, version: int) -> list[str]:
    """The aliases whose canary split (weight > 0) or shadow uses ``version``: a delete is refused."""
    users: list[str] = []
    for row in conn.execute(select(alias_policies).where(alias_policies.c.model == name)):
        weights = json.loads(row.split) if row.split else {}
        if weights.get(str(version), 0) > 0:
            users.append(f"{row.alias} (canary)")
        if row.shadow_version == version:
            users.append(f"{row.alias} (shadow)")
    return users


def _drop_from_splits(conn: Connection, name: str, version: int) -> None:
    for row in conn.execute(select(alias_policies).where(alias_policies.c.model == name)).all():
        weights = json.loads(row.split) if row.split else {}
        if str(version) in weights:
            del weights[str(version)]
            conn.execute(
                update(alias_policies)
                .where(alias_policies.c.model == name, alias_policies.c.alias == row.alias)
                .values(split=json.dumps(weights))
                if len(weights) > 1
                else update(alias_policies)
                .where(alias_policies.c.model == name, alias_policies.c.alias == row.alias)
                .values(split=None, guard=None, split_since=None)
            )


def _bump(conn: Connection) -> None:
    conn.execute(
        update(registry_state)
        .where(registry_state.c.id == 1)
        .values(generation=registry_state.c.generation + 1)
    )


def _model_row(conn: Connection, name: str) -> Row[Any] | None:
    return conn.execute(select(models).where(models.c.name == name)).first()


def _require_model(conn: Connection, name: str) -> Row[Any]:
    row = _model_row(conn, name)
    if row is None:
        raise ModelNotFound(f"model {name!r} not found", details={"model": name})
    return row


def _require_version(conn: Connection, name: str, version: int) -> VersionInfo:
    row = conn.execute(
        select(model_versions).where(model_versions.c.model == name, model_versions.c.version == version)
    ).first()
    if row is None:
        _require_model(conn, name)
        raise VersionNotFound(
            f"model {name!r} has no version {version}", details={"model": name, "version": version}
        )
    return _version_info(row)


def _alias_version(conn: Connection, name: str, alias: str) -> int | None:
    version = conn.scalar(select(aliases.c.version).where(aliases.c.model == name, aliases.c.alias == alias))
    return None if version is None else int(version)


def _latest_version(conn: Connection, name: str) -> int | None:
    version = conn.scalar(select(func.max(model_versions.c.version)).where(model_versions.c.model == name))
    return None if version is None else int(version)


def _unreferenced(conn: Connection, deleted: list[VersionInfo]) -> set[str]:
    """The content-addressed files of ``deleted`` that no remaining version lists (any model).

    A manifest names each file's sha256 (64 hex digits), so a text match is exact enough; a
    false match (the digest quoted in a description) only keeps a blob.
    """
    digests = {sha for info in deleted if not info.location for sha in info.manifest.files.values()}
    unreferenced: set[str] = set()
    for sha in sorted(digests):
        used = conn.scalar(
            select(func.count())
            .select_from(model_versions)
            .where(model_versions.c.location == "", model_versions.c.manifest.contains(sha, autoescape=True))
        )
        if not used:
            unreferenced.add(sha)
    return unreferenced


def _version_info(row: Row[Any]) -> VersionInfo:
    return VersionInfo(
        model=row.model,
        version=row.version,
        manifest=Manifest.model_validate_json(row.manifest),
        created_at=row.created_at,
        location=row.location,
    )
