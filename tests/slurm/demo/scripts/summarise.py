"""Sum the numbers written by rule make_numbers (runs as a Snakemake `script:` job)."""

import os

smk = snakemake  # noqa: F821  (injected by Snakemake's script: directive)

with open(smk.input[0]) as fh:
    lines = fh.read().split()
first_job = lines[0].replace("slurm_job_id", "make_numbers_job_id")
total = sum(int(x) for x in lines[1:])
with open(smk.output[0], "w") as fh:
    fh.write(f"sum={total}\n")
    fh.write(f"{first_job}\n")
    fh.write(f"summarise_job_id={os.environ.get('SLURM_JOB_ID', 'none')}\n")
