"""The rule codes, known without importing the rules (and libcst): settings are checked at start-up.

tests/test_docs.py keeps this list equal to the registry's.
"""

RULE_CODES: tuple[str, ...] = ("GF101", "GF102", "GF103", "GF104", "GF105", "GF106", "GF107")
