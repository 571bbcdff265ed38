"""Many experiments at once: plan the cells of a table, run them as DVC experiments, aggregate them.

This package sits above the library (`tost/`) and the stage glue (`stages/`): it is the only code
that starts `dvc`, and it never trains anything itself. `python -m sweep` (or `make table`) is its
command line.
"""
