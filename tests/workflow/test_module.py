"""The workflow used as a Snakemake module: a consumer's Snakefile imports it with
`module ... snakefile: <local path>` and `use rule * from ...`, hands it a configuration and
plans the same jobs as the workflow run directly."""

import re

import yaml

from helpers import SMOKE, copy_workflow, snakemake

RULES = ("simulate", "fit_chunk", "classify_chunk", "aggregate", "plot_figure", "write_report")


def readme_snippet(repo) -> str:
    """The README's consumer Snakefile, verbatim."""
    text = (repo / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(block for block in blocks if "module vimodes:" in block)


def consumer(folder, repo, configfile):
    """The README's consumer Snakefile with its two placeholders filled in."""
    folder.mkdir(parents=True, exist_ok=True)
    snippet = readme_snippet(repo)
    assert '"/path/to/this/repository/Snakefile"' in snippet
    assert 'configfile: "config/my_study.yaml"' in snippet
    (folder / "Snakefile").write_text(
        snippet.replace("/path/to/this/repository", str(repo))
        .replace("config/my_study.yaml", str(configfile)))
    return folder


def job_stats(dry_run_output: str) -> dict[str, int]:
    stats = {}
    for line in dry_run_output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            stats[parts[0]] = int(parts[1])
    return stats


def test_module_use_plans_the_same_jobs_as_the_workflow(tmp_path, repo):
    direct = copy_workflow(tmp_path / "direct")
    planned = job_stats(snakemake("-n", "--cores", "2", "--configfile", SMOKE,
                                  cwd=direct).stdout)
    work = consumer(tmp_path / "consumer", repo, repo / SMOKE)
    result = snakemake("-n", "--cores", "2", cwd=work)
    via_module = job_stats(result.stdout)
    assert all(via_module.get(rule, 0) > 0 for rule in RULES), via_module
    assert via_module == planned
    # outputs land in the consumer's working directory, not beside the module's Snakefile
    assert "data/fits/" in result.stdout and str(repo / "data") not in result.stdout


def test_module_refuses_a_partial_configuration(tmp_path, repo):
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({"draws": 10}))
    work = consumer(tmp_path / "consumer", repo, partial)
    result = snakemake("-n", "--cores", "2", cwd=work, check=False)
    assert result.returncode != 0
    assert "missing required top-level key(s)" in result.stdout + result.stderr
    assert "module config: or configfile:" in result.stdout + result.stderr
