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
