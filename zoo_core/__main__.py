"""``python -m zoo_core`` is the ``zoo`` CLI (and what torchrun launches: ``torchrun ... -m zoo_core train NAME``)."""

from zoo_core.cli import main

if __name__ == "__main__":
    main()
