"""Deployment with `--sdm conda`: the rules' conda environment carries the exact pins of
requirements.lock (so a pin change changes the environment's hash) and nothing that resolves
only by accident (no relative -r/-e lines)."""

import re

import pytest
import yaml

from vimodes.workflow_plan import conda_environment


def test_conda_environment_is_generated_from_the_lock(repo):
    lock = (repo / "requirements.lock").read_text()
    env_file = (repo / "workflow" / "envs" / "vimodes.yaml").read_text()
    assert env_file == conda_environment(lock), "run `make conda-env`"
    env = yaml.safe_load(env_file)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(line for line in lock.splitlines() if line.strip())
    assert not any(line.startswith("-") for line in pip)
    assert "python=3.11" in env["dependencies"]


def test_a_loose_requirement_is_refused():
    with pytest.raises(ValueError, match="not an exact pin: numpy>=2"):
        conda_environment("pymc==5.28.5\nnumpy>=2\n")
    with pytest.raises(ValueError, match="-e ."):
        conda_environment("-e .\n")


def test_every_rule_declares_the_environment(repo):
    """Every rule that runs a script names the one environment file (a new rule cannot silently
    run outside it under --sdm conda)."""
    for path in sorted((repo / "workflow" / "rules").glob("*.smk")):
        for rule in re.split(r"\nrule ", path.read_text())[1:]:
            name = rule.split(":", 1)[0]
            if "script:" in rule:
                assert 'conda:\n        "../envs/vimodes.yaml"' in rule, f"{path.name}: {name}"
