"""mypy gates the suite: the project is strict-clean, and typed specs fail exactly as marked.

One mypy run (``mypy.ini``, strict, imports followed normally) checks ``megaspec``,
``examples``, ``bench`` and every file under ``tests/typing``:

* ``megaspec/``, ``examples/`` and ``bench/`` must have no errors at all;
* a ``tests/typing/bad_*.py`` file builds specs the wrong way and marks each line where mypy
  must report an error with a trailing ``# expect: code[, code...]`` comment; the set of
  ``(line, code)`` errors must equal the set of markers, nothing missing, nothing extra;
* a ``tests/typing/good_*.py`` file builds the same constructs the right way: no errors.

The files under ``tests/typing`` are not named ``test_*.py``, so pytest does not collect them,
and ``mypy.ini``'s ``files`` leaves them out, so a plain ``mypy`` run stays clean.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest
from mypy import api as mypy_api
from mypy.errorcodes import error_codes

REPOSITORY = Path(__file__).resolve().parent.parent
CONFIG_FILE = REPOSITORY / "mypy.ini"
CASES = REPOSITORY / "tests" / "typing"
PROJECT_PACKAGES = ("megaspec", "examples", "bench")
WRONG_FILES = sorted(CASES.glob("bad_*.py"))
CORRECT_FILES = sorted(CASES.glob("good_*.py"))

# ``path:line[:column[:end_line:end_column]]: severity: message  [code]``; the column parts
# appear only if mypy.ini asks for them.
_MYPY_LINE = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+)(?::\d+)?(?::\d+:\d+)?: "
    r"(?P<severity>error|note|warning): (?P<message>.*?)(?:  \[(?P<code>[a-z0-9-]+)\])?$"
)
_CODE = r"[a-z][a-z0-9-]*"
_MARKER = re.compile(rf"^# expect: (?P<codes>{_CODE}(?:, {_CODE})*)$")
_MENTIONS_MARKER = re.compile(r"\bexpect\b", re.IGNORECASE)


@dataclass(frozen=True)
class MypyError:
    """One ``error:`` line of mypy's output (``code`` is ``None`` if mypy printed none)."""

    path: Path
    line: int
    code: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}: {self.message}  [{self.code}]"


@dataclass(frozen=True)
class MypyRun:
    """The result of the single mypy run: its errors, exit status and stderr."""

    errors: tuple[MypyError, ...]
    exit_status: int
    stdout: str
    stderr: str

    def errors_in(self, path: Path) -> list[MypyError]:
        """Errors reported in ``path`` (a file) or anywhere under it (a directory)."""
        return [error for error in self.errors if error.path == path or path in error.path.parents]


def parse_mypy_output(stdout: str) -> tuple[MypyError, ...]:
    """The ``error:`` lines of mypy's output; notes, summaries and other lines are skipped."""
    errors = []
    for text in stdout.splitlines():
        match = _MYPY_LINE.match(text)
        if match is None or match["severity"] != "error":
            continue
        path = Path(match["path"])
        errors.append(
            MypyError(
                path=(path if path.is_absolute() else REPOSITORY / path).resolve(),
                line=int(match["line"]),
                code=match["code"],
                message=match["message"],
            )
        )
    return tuple(errors)


def expected_errors(path: Path) -> set[tuple[int, str]]:
    """The ``(line, code)`` pairs marked by ``# expect: code[, code...]`` comments in ``path``.

    Only comments are read (a string containing ``# expect:`` is no marker). Any comment with
    the word ``expect`` must be exactly such a marker, trailing a line of code and naming known
    mypy error codes without repeats; anything else fails the test.
    """
    source = path.read_text()
    lines = source.splitlines()
    expected: set[tuple[int, str]] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT or not _MENTIONS_MARKER.search(token.string):
            continue
        where = f"{path.name}:{token.start[0]}"
        match = _MARKER.match(token.string)
        if match is None:
            pytest.fail(f"{where}: malformed marker {token.string!r}; write '# expect: code, code'")
        if lines[token.start[0] - 1].lstrip().startswith("#"):
            pytest.fail(f"{where}: a marker must trail the line where mypy reports the error")
        codes = match["codes"].split(", ")
        unknown = [code for code in codes if code not in error_codes]
        if unknown:
            pytest.fail(f"{where}: unknown mypy error code(s) {unknown} in {token.string!r}")
        if len(set(codes)) != len(codes):
            pytest.fail(f"{where}: repeated error code in {token.string!r}")
        expected.update((token.start[0], code) for code in codes)
    return expected


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory: pytest.TempPathFactory) -> MypyRun:
    """Run mypy once over the project and every typing case, with a fresh cache."""
    cache_dir = tmp_path_factory.mktemp("mypy_cache")
    arguments = [
        "--config-file", str(CONFIG_FILE),
        "--cache-dir", str(cache_dir),
        "--show-absolute-path",
        "--show-error-codes",
        "--no-pretty",
        "--no-color-output",
        *PROJECT_PACKAGES,
        *(str(path.relative_to(REPOSITORY)) for path in WRONG_FILES + CORRECT_FILES),
    ]
    # Relative targets and imports of ``megaspec``/``examples`` resolve from the repository.
    with contextlib.chdir(REPOSITORY):
        stdout, stderr, exit_status = mypy_api.run(arguments)
    if exit_status not in (0, 1):
        pytest.fail(f"mypy failed to run (exit status {exit_status}):\n{stderr}\n{stdout}")
    return MypyRun(parse_mypy_output(stdout), exit_status, stdout, stderr)


def test_mypy_ran_without_complaints(mypy_run: MypyRun) -> None:
    assert mypy_run.stderr == "", mypy_run.stderr


@pytest.mark.parametrize("package", PROJECT_PACKAGES)
def test_project_is_strict_clean(mypy_run: MypyRun, package: str) -> None:
    errors = mypy_run.errors_in(REPOSITORY / package)
    assert not errors, f"mypy errors in {package}/:\n" + "\n".join(map(str, errors))


def test_no_errors_outside_checked_files(mypy_run: MypyRun) -> None:
    known = [REPOSITORY / package for package in PROJECT_PACKAGES] + WRONG_FILES + CORRECT_FILES
    stray = [
        error
        for error in mypy_run.errors
        if not any(error.path == place or place in error.path.parents for place in known)
    ]
    assert not stray, "mypy errors in other files:\n" + "\n".join(map(str, stray))


@pytest.mark.parametrize("path", WRONG_FILES, ids=lambda path: path.name)
def test_wrong_spec_fails_exactly_as_marked(mypy_run: MypyRun, path: Path) -> None:
    expected = expected_errors(path)
    assert expected, f"{path.name} marks no expected error"
    errors = mypy_run.errors_in(path)
    reported = {(error.line, error.code or "<no code>") for error in errors}
    missing = sorted(expected - reported)
    extra = [error for error in errors if (error.line, error.code) not in expected]
    report = [f"{path.name}: mypy's errors differ from the '# expect:' markers"]
    if missing:
        report.append(f"marked but not reported (line, code): {missing}")
    if extra:
        report += ["reported but not marked:", *map(str, extra)]
    assert not missing and not extra, "\n".join(report)


@pytest.mark.parametrize("path", CORRECT_FILES, ids=lambda path: path.name)
def test_correct_spec_has_no_errors(mypy_run: MypyRun, path: Path) -> None:
    assert not expected_errors(path), f"{path.name} is a correct case but has '# expect:' markers"
    errors = mypy_run.errors_in(path)
    assert not errors, f"mypy errors in {path.name}:\n" + "\n".join(map(str, errors))


def test_typing_cases_are_named_for_their_role() -> None:
    """Every case is ``bad_*`` or ``good_*``: a ``test_*`` file would be collected by pytest,
    and any other name would be silently left out of the mypy run."""
    others = [
        path.name
        for path in CASES.glob("*.py")
        if not path.name.startswith(("bad_", "good_"))
    ]
    assert not others, f"tests/typing files that are neither bad_*.py nor good_*.py: {others}"
    assert len(WRONG_FILES) >= 12, WRONG_FILES
    assert CORRECT_FILES


def test_plain_mypy_run_leaves_out_typing_cases() -> None:
    """``mypy`` with mypy.ini's ``files`` must not check the deliberately wrong specs."""
    parser = configparser.ConfigParser()
    parser.read(CONFIG_FILE)
    files = [entry.strip() for entry in parser.get("mypy", "files").split(",") if entry.strip()]
    cases = CASES.relative_to(REPOSITORY)
    covering = [entry for entry in files if Path(entry) == cases or Path(entry) in cases.parents]
    assert not covering, f"mypy.ini's files {covering} would check tests/typing"
