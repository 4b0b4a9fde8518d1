"""Consumers of the Step stream that face people: live view, trace files, pictures (Rich only)."""
