"""The user guides say what the workflow does: the job counts and time limits quoted in
docs/running-on-slurm.md are those of a dry run, and every YAML snippet of README.md and docs/
is a configuration the loader accepts."""

import copy
import re

import pytest
import yaml

from helpers import REPO, is_fit_rule
from vimodes.config import build_study, load_yaml

SLURM_GUIDE = "docs/running-on-slurm.md"
STUDIES = {"config/config.yaml": "default study", "config/full.yaml": "full study"}


def dry_run_summary(output: str) -> dict:
    """Counts of the main rules and the time limits of the fit jobs in a (non-quiet) dry run."""
    jobs = []
    for line in output.splitlines():
        match = re.match(r"^(?:localrule|rule) (\w+):$", line)
        if match:
            jobs.append({"rule": match.group(1), "threads": 1, "runtime": 0, "cell": ""})
        elif jobs and line.startswith("    threads: "):
            jobs[-1]["threads"] = int(line.split(": ")[1])
        elif jobs and line.startswith("    resources: "):
            jobs[-1]["runtime"] = int(re.search(r"\bruntime=(\d+)", line).group(1))
        elif jobs and line.startswith("    wildcards: cell="):
            jobs[-1]["cell"] = line.split("cell=")[1].split(",")[0]
    fits = [j for j in jobs if is_fit_rule(j["rule"])]
    longest = max(fits, key=lambda j: j["runtime"])
    return {
        "simulate": sum(j["rule"] == "simulate" for j in jobs),
        "fit_jobs": len(fits),
        "classify_jobs": sum(j["rule"] == "classify_chunk" or j["rule"].startswith("classify_group_")
                             for j in jobs),
        "cpu_hours": round(sum(j["runtime"] * j["threads"] for j in fits) / 60),
        "longest_minutes": longest["runtime"],
        "longest_cells": {j["cell"] for j in fits if j["runtime"] == longest["runtime"]},
    }


@pytest.fixture(scope="module")
def dry_runs(cluster_dry_runs):
    """Both studies through the SLURM profile, as the guide runs them (conftest)."""
    return {config: dry_run_summary(cluster_dry_runs[config]) for config in STUDIES}


ROWS = {  # row label in the guide's table -> key of dry_run_summary
    "`simulate` jobs": "simulate",
    "fit jobs (SLURM: `fit_chunk`, `fit_group_*`)": "fit_jobs",
    "classify jobs (`classify_chunk`, `classify_group_*`)": "classify_jobs",
    "CPU-hours of fit time limits": "cpu_hours",
    "longest fit time limit, minutes": "longest_minutes",
}


def guide_table(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] in ROWS:
            rows[cells[0]] = cells[1:]
    return rows


def test_slurm_guide_quotes_the_dry_run(repo, dry_runs):
    """When the configs or the chunking change, this fails with the numbers to write."""
    table = guide_table((repo / SLURM_GUIDE).read_text())
    assert set(table) == set(ROWS), f"table rows in {SLURM_GUIDE}: {sorted(table)}"
    expected = {label: [str(dry_runs[c][key]) for c in STUDIES] for label, key in ROWS.items()}
    assert table == expected, f"update the table in {SLURM_GUIDE} to {expected}"


def test_slurm_guide_names_the_longest_jobs(repo, dry_runs):
    text = (repo / SLURM_GUIDE).read_text()
    full = dry_runs["config/full.yaml"]
    assert any(f"`{cell}`" in text for cell in full["longest_cells"]), (
        f"name one of the longest fit jobs' cells in {SLURM_GUIDE}: {sorted(full['longest_cells'])}")


# ---------------------------------------------------------------------------------------------
# YAML snippets of the documentation

DOCS = ["README.md", "config/README.md", ".test/README.md",
        *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]
# A snippet preceded by this comment is an excerpt of a larger file (e.g. of a profile), not a
# study configuration; by `<!-- overlay -->` it is merged onto config/config.yaml, as documented
# next to it (copy the default and add these keys).
FRAGMENT, OVERLAY = "<!-- fragment -->", "<!-- overlay -->"


def yaml_snippets(text: str) -> list[tuple[int, str, str]]:
    """(line, marker, body) of every ```yaml block; marker is the HTML comment just before it."""
    snippets = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != "```yaml":
            continue
        indent = line[: len(line) - len(line.lstrip())]
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        body = "\n".join(row.removeprefix(indent) for row in lines[index + 1:end])
        previous = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()),
                        "")
        snippets.append((index + 1, previous if previous in (FRAGMENT, OVERLAY) else "", body))
    return snippets


def all_snippets(repo):
    return [(doc, line, marker, body) for doc in DOCS
            for line, marker, body in yaml_snippets((repo / doc).read_text())]


def test_documentation_has_yaml_snippets(repo):
    assert any(marker == OVERLAY for _, _, marker, _ in all_snippets(repo))


@pytest.mark.parametrize("doc", DOCS)
def test_every_yaml_snippet_is_a_valid_configuration(repo, doc):
    default = load_yaml(repo / "config" / "config.yaml")
    for line, marker, body in yaml_snippets((repo / doc).read_text()):
        where = f"{doc}:{line}"
        snippet = yaml.safe_load(body)  # every snippet, fragments too, must be valid YAML
        assert isinstance(snippet, dict), where
        if marker == FRAGMENT:
            continue
        if marker == OVERLAY:
            config = copy.deepcopy(default)
            for key, value in snippet.items():
                if key == "grids":
                    config["grids"] = config["grids"] + value
                elif isinstance(value, dict) and isinstance(config.get(key), dict):
                    config[key] = {**config[key], **value}
                else:
                    config[key] = value
        else:
            config = snippet
        assert build_study(config, source=where).cells, where
