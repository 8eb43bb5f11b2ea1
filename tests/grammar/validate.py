#!/usr/bin/env python3
"""Validates texts against JSON schemas with the `jsonschema` package (the
reference the grammar tests compare with; Debian: python3-jsonschema).

    validate.py FILE   # JSON lines: {"schema": {...}, "text": "..."}

Prints one line per text that does not parse or does not validate, and exits
1 if there is any (2 without the package, 3 on a bad FILE).
"""
import json
import sys

try:
    import jsonschema
except ImportError:
    print("validate.py: the jsonschema package is missing (apt install python3-jsonschema)")
    sys.exit(2)


def main():
    bad = n = 0
    try:
        lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
    except (OSError, IndexError) as e:
        print(f"validate.py: {e}")
        sys.exit(3)
    for line in lines:
        if not line.strip():
            continue
        case = json.loads(line)
        n += 1
        try:
            value = json.loads(case["text"])
        except ValueError as e:
            print(f"not JSON ({e}): {case['text']!r}")
            bad += 1
            continue
        cls = jsonschema.validators.validator_for(case["schema"], default=jsonschema.Draft7Validator)
        errors = list(cls(case["schema"]).iter_errors(value))
        if errors:
            print(f"invalid ({errors[0].message}): {case['text']!r}")
            bad += 1
    print(f"validate.py: {n - bad} of {n} texts valid")
    sys.exit(1 if bad else 0)


main()
