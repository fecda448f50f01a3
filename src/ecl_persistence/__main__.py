"""``python -m ecl_persistence`` runs the ``ecl-db`` command."""

from ecl_persistence.cli import main

if __name__ == "__main__":
    main()
