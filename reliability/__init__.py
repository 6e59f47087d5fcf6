"""The reliability and security suite (issue 6): faults, duplicate guard, concurrency, fuzzing, security.

``./dev reliability`` runs every section and prints one table; see docs/reliability.md.
"""
