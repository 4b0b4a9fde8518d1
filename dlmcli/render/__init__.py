"""Consumers of the Step stream that face people: live view, trace files, pictures (Rich only)."""

MAX_DELAY = 3600.0  # seconds between two steps (--delay, replay --speed); past it time.sleep overflows
