"""DVC stage entry points (`python -m stages.<name>`): read params, call tost, write outs and metrics."""
