"""Mutation testing of the row rules (engine/validation.py, engine/parsing.py) against tests/unit.

    uv run --with mutmut==3.8.1 python scripts/mutation_test.py [mutant names to rerun]

Not a dependency and not in CI: uv fetches mutmut for the run. mutmut 3 names a mutant after its
file's path, which must be importable from a src/ folder, so the package and the tests are
copied into .mutation/ in that layout and mutmut works there (its own copy: .mutation/mutants).
mutmut mutates code inside functions only; the module constants (the e-mail and E.164 patterns,
limits, word sets) get the hand-made mutants below, each applied alone to the copy.
Afterwards `cd .mutation && uv run --with mutmut==3.8.1 mutmut show <name>` shows a survivor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
VALIDATION = "src/importd_server/engine/validation.py"
PARSING = "src/importd_server/engine/parsing.py"
MUTMUT_CONFIG = f"""
[tool.mutmut]
source_paths = ["src/importd_server"]
only_mutate = ["{VALIDATION}", "{PARSING}"]
pytest_add_cli_args_test_selection = ["tests/unit"]
# One process per mutant already: no xdist workers inside it.
pytest_add_cli_args = ["-n", "0", "-p", "no:cacheprovider"]
"""

# (file, text, replacement): each replaces one exact, unique piece of a module constant.
CONSTANT_MUTANTS = [
    # e-mail: a@b.c. / a@b / spaces / a second @ / empty parts / trailing text
    (VALIDATION, r"\.[^@\s.]+$", r"\.[^@\s]+$"),
    (VALIDATION, r"@[^@\s]+\.[^@\s.]+$", r"@[^@\s]+$"),
    (VALIDATION, r"@[^@\s]+\.[^@\s.]", r"@[^@\s]+.[^@\s.]"),
    (VALIDATION, r"^[^@\s]+@", r"^[^@]+@"),
    (VALIDATION, r"@[^@\s]+\.", r"@[^@]+\."),
    (VALIDATION, r"\.[^@\s.]+$", r"\.[^@.]+$"),
    (VALIDATION, r"^[^@\s]+@", r"^[^\s]+@"),
    (VALIDATION, r"@[^@\s]+\.", r"@[^\s]+\."),
    (VALIDATION, r'[^@\s.]+$")', r'[^@\s.]+")'),
    (VALIDATION, r"^[^@\s]+@", r"^[^@\s]*@"),
    (VALIDATION, r"@[^@\s]+\.", r"@[^@\s]*\."),
    (VALIDATION, r"\.[^@\s.]+$", r"\.[^@\s.]*$"),
    # E.164: +0..., 16 digits, one digit, no +, trailing text, non-ASCII digits
    (VALIDATION, r"\+[1-9]", r"\+[0-9]"),
    (VALIDATION, r"[0-9]{1,14}", r"[0-9]{1,15}"),
    (VALIDATION, r"[0-9]{1,14}", r"[0-9]{0,14}"),
    (VALIDATION, r"[0-9]{1,14}", r"[0-9]{2,14}"),
    (VALIDATION, r"[0-9]{1,14}", r"[0-9]{1,13}"),
    (VALIDATION, r"^\+[1-9]", r"^\+?[1-9]"),
    (VALIDATION, r'{1,14}$")', r'{1,14}")'),
    (VALIDATION, r"[0-9]{1,14}", r"\d{1,14}"),
    # the punctuation a phone number may be written with
    (VALIDATION, r"[\s\-().]", r"[\-().]"),
    (VALIDATION, r"[\s\-().]", r"[\s().]"),
    (VALIDATION, r"[\s\-().]", r"[\s\-.]"),
    (VALIDATION, r"[\s\-().]", r"[\s\-()]"),
    (VALIDATION, r"[\s\-().]", r"[\s\-()./]"),
    # int64 and PostgreSQL numeric limits
    (VALIDATION, "-(2**63), 2**63 - 1", "-(2**63) + 1, 2**63 - 1"),
    (VALIDATION, "-(2**63), 2**63 - 1", "-(2**63) - 1, 2**63 - 1"),
    (VALIDATION, "-(2**63), 2**63 - 1", "-(2**63), 2**63"),
    (VALIDATION, "-(2**63), 2**63 - 1", "-(2**63), 2**63 - 2"),
    (VALIDATION, "DIGITS = 131072", "DIGITS = 131071"),
    (VALIDATION, "DIGITS = 131072", "DIGITS = 131073"),
    (VALIDATION, "DIGITS = 16383", "DIGITS = 16382"),
    (VALIDATION, "DIGITS = 16383", "DIGITS = 16384"),
    # the boolean words: each one dropped, one added
    (VALIDATION, '{"true", "t", "yes", "y", "1"}', '{"t", "yes", "y", "1"}'),
    (VALIDATION, '{"true", "t", "yes", "y", "1"}', '{"true", "yes", "y", "1"}'),
    (VALIDATION, '{"true", "t", "yes", "y", "1"}', '{"true", "t", "y", "1"}'),
    (VALIDATION, '{"true", "t", "yes", "y", "1"}', '{"true", "t", "yes", "1"}'),
    (VALIDATION, '{"true", "t", "yes", "y", "1"}', '{"true", "t", "yes", "y"}'),
    (VALIDATION, '{"true", "t", "yes", "y", "1"}', '{"true", "t", "yes", "y", "1", "on"}'),
    (VALIDATION, '{"false", "f", "no", "n", "0"}', '{"f", "no", "n", "0"}'),
    (VALIDATION, '{"false", "f", "no", "n", "0"}', '{"false", "no", "n", "0"}'),
    (VALIDATION, '{"false", "f", "no", "n", "0"}', '{"false", "f", "n", "0"}'),
    (VALIDATION, '{"false", "f", "no", "n", "0"}', '{"false", "f", "no", "0"}'),
    (VALIDATION, '{"false", "f", "no", "n", "0"}', '{"false", "f", "no", "n"}'),
    (VALIDATION, '{"false", "f", "no", "n", "0"}', '{"false", "f", "no", "n", "0", "off"}'),
    # parsing: gzip magic, encodings, line, field and excerpt limits
    (PARSING, r'GZIP_MAGIC = b"\x1f\x8b"', r'GZIP_MAGIC = b"\x1f"'),
    (PARSING, r'GZIP_MAGIC = b"\x1f\x8b"', r'GZIP_MAGIC = b"\x1f\x8c"'),
    (PARSING, '{"utf-8": "utf-8-sig"', '{"utf-8": "utf-8"'),
    (PARSING, '"utf8": "utf-8-sig", ', '"utf8": "utf-8", '),
    (PARSING, '"utf8": "utf-8-sig", ', ""),
    (PARSING, '"latin-1": "latin-1", ', ""),
    (PARSING, ', "latin1": "latin-1"', ""),
    (PARSING, "MAX_FIELD_CHARS = 1 << 20", "MAX_FIELD_CHARS = (1 << 20) - 1"),
    (PARSING, "MAX_FIELD_CHARS = 1 << 20", "MAX_FIELD_CHARS = (1 << 20) + 1"),
    (PARSING, "MAX_LINE_CHARS = 1 << 20", "MAX_LINE_CHARS = (1 << 20) - 1"),
    (PARSING, "MAX_LINE_CHARS = 1 << 20", "MAX_LINE_CHARS = (1 << 20) + 1"),
    (PARSING, "MAX_EXCERPT_CHARS = 1000", "MAX_EXCERPT_CHARS = 999"),
    (PARSING, "MAX_EXCERPT_CHARS = 1000", "MAX_EXCERPT_CHARS = 1001"),
]


def copy_tree() -> None:
    """The package and the tests in a src/ layout, with mutmut's settings."""
    shutil.rmtree(WORK, ignore_errors=True)
    shutil.copytree(ROOT / "server/src/importd_server", WORK / "src/importd_server")
    shutil.copytree(ROOT / "tests", WORK / "tests")
    settings = (ROOT / "pyproject.toml").read_text(encoding="utf-8") + MUTMUT_CONFIG
    (WORK / "pyproject.toml").write_text(settings, encoding="utf-8")


def run_mutmut(names: list[str]) -> None:
    """mutmut's run, then its survivors and the share caught per file."""
    subprocess.run(["mutmut", "run", *names], cwd=WORK, check=True)
    results = subprocess.run(
        ["mutmut", "results", "--all", "true"], cwd=WORK, check=True, capture_output=True, text=True
    ).stdout
    total: Counter[str] = Counter()
    caught: Counter[str] = Counter()
    print("--- surviving mutants")
    for line in results.splitlines():
        name, _, status = line.strip().rpartition(": ")
        module = name.split(".x", 1)[0]
        total[module] += 1
        # A timeout is a mutant that made the tests hang: noticed too.
        if status in ("killed", "timeout"):
            caught[module] += 1
        else:
            print(f"{name}: {status}")
    print("--- mutmut: caught per file")
    for module in sorted(total):
        share = 100 * caught[module] / total[module]
        print(f"{module}: {caught[module]} of {total[module]} ({share:.1f}%)")


def run_constant_mutants() -> None:
    """Each hand-made mutant alone; the unit tests must fail on it."""
    pytest = [sys.executable, "-m", "pytest", "tests/unit", "-x", "-q", "-n", "0"]
    print("--- hand-made mutants of the module constants")
    survivors = 0
    for path, text, replacement in CONSTANT_MUTANTS:
        source = WORK / path
        original = source.read_text(encoding="utf-8")
        if original.count(text) != 1:
            sys.exit(f"{path}: {text!r} is not found exactly once; update CONSTANT_MUTANTS")
        source.write_text(original.replace(text, replacement), encoding="utf-8")
        try:
            tests = subprocess.run(
                [*pytest, "-p", "no:cacheprovider"],
                cwd=WORK,
                env={**os.environ, "PYTHONPATH": "src"},
                capture_output=True,
            )
        finally:
            source.write_text(original, encoding="utf-8")
        if tests.returncode == 0:
            survivors += 1
            print(f"SURVIVED {path}: {text!r} -> {replacement!r}")
    caught = len(CONSTANT_MUTANTS) - survivors
    print(f"constants: {caught} of {len(CONSTANT_MUTANTS)} caught")


def main() -> None:
    copy_tree()
    run_mutmut(sys.argv[1:])
    run_constant_mutants()


if __name__ == "__main__":
    main()
