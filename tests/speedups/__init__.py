"""Tests of the compiled accelerators against the pure-Python code they mirror."""
