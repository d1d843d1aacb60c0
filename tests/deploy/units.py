"""The systemd unit files in deploy/systemd, read as systemd reads them (enough for tests)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"


@dataclass
class Unit:
    name: str
    sections: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def get(self, key: str, section: str = "Service") -> list[str]:
        return self.sections.get(section, {}).get(key, [])

    def one(self, key: str, section: str = "Service") -> str:
        values = self.get(key, section)
        assert len(values) == 1, f"{self.name}: {key}= {values}"
        return values[0]

    def environment(self, credentials: Path) -> dict[str, str]:
        """Environment= assignments, with %d (the credentials folder) expanded."""
        env: dict[str, str] = {}
        for line in self.get("Environment"):
            for item in shlex.split(line):
                key, _, value = item.partition("=")
                env[key] = value.replace("%d", str(credentials))
        return env

    def credentials(self) -> dict[str, str]:
        """LoadCredential= name -> source path."""
        return dict(v.split(":", 1) for v in self.get("LoadCredential"))

    def exec_start(self) -> list[str]:
        return shlex.split(self.one("ExecStart"))


def read_unit(path: Path) -> Unit:
    unit, section = Unit(path.name), ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.sections.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        unit.sections[section].setdefault(key.strip(), []).append(value.strip())
    return unit


def units() -> dict[str, Unit]:
    return {p.stem: read_unit(p) for p in sorted(UNITS.glob("*.service"))}
