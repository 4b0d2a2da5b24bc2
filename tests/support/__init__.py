"""Shared test helpers: the worlds, fakes' drivers, waits and services the test modules import."""
