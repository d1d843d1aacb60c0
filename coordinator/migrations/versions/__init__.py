"""The coordinator database's migration scripts, one per schema version."""

__all__: list[str] = []
