"""The commands of ``ecl-db``, one module per area."""
