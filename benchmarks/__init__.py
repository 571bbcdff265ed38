"""Speed measurements (plain scripts, never tests): python -m benchmarks.<name>."""
