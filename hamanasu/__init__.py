"""The hamanasu command: mounts each package's CLI group."""
