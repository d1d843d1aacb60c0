"""Alembic migrations of the coordinator's database (run by ``coordinator init``)."""

__all__: list[str] = []
