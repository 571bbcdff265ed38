"""tost: train sparse networks better with any mask (a re-implementation of ToST, ICML 2022).

Importing the package has no side effects; the pipeline's entry points live in `stages/`.
"""

__version__ = "0.1.0"
