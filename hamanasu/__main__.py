"""``python -m hamanasu``."""

from hamanasu.cli import main

main()
