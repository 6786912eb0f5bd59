"""Every code sample of the README and the docs runs here, so the docs cannot rot.

- The docs pages include their samples from `docs/snippets/<topic>/` (`--8<-- "topic/file.py"`).
  Each topic directory is a small project of its own: its tests run in a pytest of their own
  (through `pytester`), with the `pytest.ini` of the directory or, without one, the default below.
- A Python block written out in a page or in the README runs too: a block with a `title="x.py"`
  is written to that file and the page's files are run as a project like a snippet directory;
  a block without a title is executed on its own.
- A few samples show pytest's output; `test_report_texts_match_pytest_output` checks them against
  a real run.
- Samples fit the width of the site's code blocks (`test_samples_fit_the_site_width`).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

# Imported once, before the samples' runs: pytester puts sys.modules back after each run, and a queue
# library imported afresh by a later sample would not be the one fastapi-tasks' cached adapter knows.
# Optional: the FastAPI version check (scripts/check_fastapi_versions.sh) runs some samples without it.
with contextlib.suppress(ImportError):
    import taskiq  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])
TOPICS = sorted(path for path in SNIPPETS.iterdir() if path.is_dir() and not path.name.startswith("_"))

# What a user's pytest configuration needs for these samples: errors for warnings, except the one that
# Starlette 1.x gives when its TestClient runs on httpx rather than httpx2, and the one that an older
# Starlette's TestClient gets from a newer anyio (it names the deprecated alias anyio.abc.BlockingPortal).
DEFAULT_INI = """\
[pytest]
filterwarnings =
    error
    ignore:Using `httpx` with `starlette.testclient` is deprecated:UserWarning
    ignore:The anyio.abc.BlockingPortal alias is deprecated:DeprecationWarning
"""
# Plugins of this virtualenv that the samples do not expect (pytest-randomly reorders tests).
RUN_ARGS = ("-p", "no:randomly", "-p", "no:cacheprovider")

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)```\s*$", re.M | re.S)
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
INCLUDE = re.compile(r'^\s*--8<--\s+"(?P<path>[^"]+)"\s*$', re.M)
# The site shows about 80 columns of code; a longer line would scroll sideways. ruff holds the Python
# samples to it (docs/ruff.toml), the test below every other sample. Console output is the exception:
# it is shown as printed, in a block with the `wrap` class (``` { .text .wrap }), whose long lines
# wrap (docs/stylesheets/extra.css) as a terminal of that width would wrap them.
SITE_COLUMNS = 80
WRAP = re.compile(r"\{[^}]*\.wrap\b[^}]*\}")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    lang: str
    title: str | None
    body: str
    info: str = ""

    @property
    def includes(self) -> list[str]:
        return INCLUDE.findall(self.body)

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of `page`, with their indentation removed."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        indent = len(match["indent"])
        body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        title = TITLE.search(match["info"])
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(page, line, match["lang"], title and title["title"], body, match["info"]))
    return found


def literal_python(page: Path) -> list[Block]:
    return [block for block in blocks(page) if block.lang in ("python", "py") and not block.includes]


def run_project(pytester: pytest.Pytester, files: dict[str, str]) -> pytest.RunResult:
    """Write `files` into a fresh directory and run pytest there; assert that it passed and ran tests."""
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if not any(name in files for name in ("pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")):
        (pytester.path / "pytest.ini").write_text(DEFAULT_INI, encoding="utf-8")
    result = pytester.runpytest(*RUN_ARGS)
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert outcomes.get("passed", 0) > 0, result.stdout.str()
    return result


def source_files(directory: Path) -> list[Path]:
    """The files of `directory`, without caches (`__pycache__`, `.mypy_cache`, ...)."""
    return [
        path
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not any(part.startswith((".", "__")) for part in path.relative_to(directory).parts)
    ]


def topic_files(topic: Path) -> dict[str, str]:
    return {str(path.relative_to(topic)): path.read_text(encoding="utf-8") for path in source_files(topic)}


@pytest.mark.parametrize("topic", TOPICS, ids=lambda path: path.name)
def test_snippet_project_passes(pytester: pytest.Pytester, topic: Path) -> None:
    modules = {path.stem for path in topic.glob("*.py")} - {"conftest"}
    tests = {name for name in modules if name.startswith("test_")}
    assert tests, f"docs/snippets/{topic.name} has no test_*.py: every sample must be run by a test"
    sources = "\n".join(path.read_text(encoding="utf-8") for path in topic.glob("*.py"))
    for module in sorted(modules - tests):
        assert re.search(rf"^\s*(from|import) {module}\b", sources, re.M), (
            f"docs/snippets/{topic.name}/{module}.py is not imported by a test of its directory"
        )
    run_project(pytester, topic_files(topic))


@pytest.mark.parametrize(
    "page",
    [page for page in PAGES if any(block.title for block in literal_python(page))],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_titled_python_blocks_pass_as_a_project(pytester: pytest.Pytester, page: Path) -> None:
    files: dict[str, str] = {}
    for block in blocks(page):
        if block.title and not block.includes and block.lang in ("python", "py", "ini", "toml"):
            assert block.title not in files, f"{block}: a second block titled {block.title!r}"
            files[block.title] = block.body
    assert any(Path(name).name.startswith("test_") for name in files), f"{page}: titled blocks but no test_*.py"
    run_project(pytester, files)


def test_untitled_python_blocks_run() -> None:
    for page in PAGES:
        for block in literal_python(page):
            if not block.title:
                exec(compile(block.body, str(block), "exec"), {"__name__": "__docs_sample__"})


def test_readme_quickstart_is_the_docs_quickstart() -> None:
    # One source of truth: the README shows the quickstart files of the docs, literally.
    readme = {block.title: block.body for block in literal_python(ROOT / "README.md")}
    assert readme == {
        "main.py": (SNIPPETS / "quickstart" / "main.py").read_text(encoding="utf-8"),
        "test_main.py": (SNIPPETS / "quickstart" / "test_main.py").read_text(encoding="utf-8"),
    }


def test_every_include_exists_and_every_snippet_is_shown() -> None:
    included = set()
    for page in PAGES:
        for block in blocks(page):
            for include in block.includes:
                path, _, section = include.partition(":")
                target = SNIPPETS / path
                assert target.is_file(), f"{block}: includes {include!r}, which does not exist"
                if section:
                    assert f"--8<-- [start:{section}]" in target.read_text(encoding="utf-8"), (
                        f"{block}: {path} has no section {section!r}"
                    )
                included.add(path)
    shown = {str(path.relative_to(SNIPPETS)) for path in source_files(SNIPPETS)}
    assert shown - included == set(), "snippet files that no page shows"


def test_every_python_block_is_run() -> None:
    for page in PAGES:
        for block in blocks(page):
            if block.lang in ("python", "py"):
                assert block.includes or block.body.strip(), f"{block}: empty block"
                mixed = block.includes and INCLUDE.sub("", block.body).strip()
                assert not mixed, f"{block}: mixes an include with code of its own, which would not be run"


def test_report_texts_match_pytest_output(pytester: pytest.Pytester) -> None:
    topic = SNIPPETS / "_reports"
    files = {"test_reports.py": (topic / "reports.py").read_text(encoding="utf-8"), "pytest.ini": DEFAULT_INI}
    for name, text in files.items():
        (pytester.path / name).write_text(text, encoding="utf-8")
    result = pytester.runpytest(*RUN_ARGS)
    result.assert_outcomes(passed=2, failed=2, errors=2)
    output = result.stdout.str()
    for name in ("assertion.txt", "teardown.txt", "unfinished.txt", "wait.txt"):
        expected = (topic / name).read_text(encoding="utf-8").strip()
        for line in expected.splitlines():
            assert line.rstrip() in output, f"docs/snippets/_reports/{name}: {line!r} is not in pytest's output"


def test_samples_fit_the_site_width() -> None:
    too_wide = []
    wrapped = set()
    for page in sorted(DOCS.rglob("*.md")):
        for block in blocks(page):
            targets = {include.partition(":")[0] for include in block.includes}
            if WRAP.search(block.info):
                wrapped |= targets
                continue
            too_wide += [
                f"{block} +{number}: {len(line)} columns"
                for number, line in enumerate(block.body.splitlines(), start=1)
                if len(line) > SITE_COLUMNS and not INCLUDE.match(line)
            ]
    for path in source_files(SNIPPETS):
        if str(path.relative_to(SNIPPETS)) in wrapped:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        too_wide += [
            f"{path.relative_to(ROOT)}:{number}: {len(line)} columns"
            for number, line in enumerate(lines, start=1)
            if len(line) > SITE_COLUMNS
        ]
    assert not too_wide, f"wider than the site's {SITE_COLUMNS} columns:\n" + "\n".join(too_wide)
