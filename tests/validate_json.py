#!/usr/bin/env python3
"""tests/validate_json.py SCHEMA FILE... - validates each JSON object in FILEs (one object per
line, or one object per file) against SCHEMA (JSON Schema 2020-12, python3-jsonschema).
Exit 0 if all are valid, 1 listing every error with its path, 77 if jsonschema is missing."""
import json
import sys

try:
    import jsonschema
except ImportError:
    print("SKIP: python3-jsonschema is not installed")
    sys.exit(77)


def strict(c):
    raise ValueError(f"{c} is not JSON (RFC 8259 has no NaN or infinity)")


def objects(path):
    text = open(path, encoding="utf-8").read()
    try:
        yield json.loads(text, parse_constant=strict)  # one object, maybe pretty-printed
        return
    except json.JSONDecodeError:
        pass
    except ValueError as e:
        sys.exit(f"{path}: {e}")
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line, parse_constant=strict)
            except ValueError as e:  # JSONDecodeError is one
                sys.exit(f"{path}:{n}: not JSON: {e}")


def main():
    schema = json.load(open(sys.argv[1], encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema)
    bad = 0
    count = 0
    for path in sys.argv[2:]:
        for obj in objects(path):
            count += 1
            for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
                where = "/".join(str(p) for p in err.absolute_path) or "(top)"
                print(f"{path}: {where}: {err.message}")
                bad += 1
    if count == 0:
        sys.exit("no JSON objects found")
    print(f"{count} object(s), {bad} error(s)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
