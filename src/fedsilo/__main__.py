"""``python -m fedsilo``: the same CLI as the ``fedsilo`` command."""

from fedsilo.cli.app import main

if __name__ == "__main__":
    main()
