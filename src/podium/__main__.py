"""``python -m podium``: the same command as the ``podium`` script."""

from podium.cli import main

if __name__ == "__main__":
    main()
