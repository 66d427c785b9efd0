"""The repository stands on its own: no tracked file points outside it (to material that a
clone does not have)."""

import re
import subprocess

import pytest

# Spelled in pieces so that this file, itself tracked, does not match.
_SHARED = "shared"
OUTSIDE_REFERENCES = (f"../{_SHARED}", f"{_SHARED}/notes", f"{_SHARED}/seed", f"{_SHARED} notes/")


def tracked_files(repo):
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [repo / name for name in listed.stdout.split("\0") if name]


def test_no_tracked_file_refers_outside_the_repository(repo):
    offenders = []
    for path in tracked_files(repo):
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if any(ref in line for ref in OUTSIDE_REFERENCES):
                offenders.append(f"{path.relative_to(repo)}:{number}: {line.strip()}")
    assert not offenders, "references outside the repository:\n" + "\n".join(offenders)


def test_the_question_is_documented_with_its_source(repo):
    text = (repo / "docs" / "question.md").read_text()
    assert "https://discourse.pymc.io/t/mixture-of-linear-models/1549" in text
    for setting in ("128", "10000", "1e-4", "meanfield", "full-rank"):
        assert setting in text, setting
    assert "docs/question.md" in (repo / "README.md").read_text()


def test_one_version_in_pyproject_citation_and_changelog(repo):
    """The package version, the citation's version and the changelog's latest release agree."""
    import tomllib

    import yaml

    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    citation = yaml.safe_load((repo / "CITATION.cff").read_text())
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$",
                          (repo / "CHANGELOG.md").read_text(), flags=re.M)
    assert releases, "CHANGELOG.md lists no release"
    assert version == str(citation["version"]) == releases[0][0]
    assert str(citation["date-released"]) == releases[0][1]


# A test named in the documentation: `file.py::name`, or `::name` after such a reference in the
# same table cell or sentence (then of the file named last); `name*` names every test it begins
TEST_REFERENCE = re.compile(r"(?:(?<![\w.])((?:[\w.]+/)*test_\w+\.py)|(?<![\w.])(?=::))(?:::(\w+)(\*)?)?")
DOCUMENTS = ("README.md", "tests/README.md", "tests/RELIABILITY.md", "docs/running-on-slurm.md",
             "benchmarks/README.md", ".test/README.md")


def functions_by_test_file(repo) -> dict[str, set[str]]:
    import ast

    found = {}
    for path in (repo / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        found[path.name] = {node.name for node in tree.body
                            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return found


def test_every_test_the_documents_name_exists(repo):
    """The promise tables point at tests by name: a renamed, moved or deleted test must not
    leave a stale reference behind."""
    tests = functions_by_test_file(repo)
    missing, checked = [], 0
    for document in DOCUMENTS:
        current = None
        for number, line in enumerate((repo / document).read_text().splitlines(), 1):
            for match in TEST_REFERENCE.finditer(line):
                file, name, prefix = match.groups()
                if file:
                    current = file.rsplit("/", 1)[-1]
                    if current not in tests:
                        missing.append(f"{document}:{number}: no test file {file}")
                        continue
                if name and current is not None:
                    checked += 1
                    known = tests.get(current, ())
                    if not (any(t.startswith(name) for t in known) if prefix else name in known):
                        missing.append(f"{document}:{number}: no test {current}::{name}")
    assert checked > 50  # the promise table alone names more
    assert not missing, "\n".join(missing)
