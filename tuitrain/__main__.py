"""``python -m tuitrain``."""

from tuitrain.cli import main

main()
