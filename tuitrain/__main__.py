"""``python -m tuitrain``."""

from tuitrain.cli import main

if __name__ == "__main__":  # the guard matters: spawned training workers import this module again
    main()
