# How often does variational inference land on a single posterior mode?
# Run: snakemake --cores N   (config/config.yaml is the default study)


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        "report/summary.md",
    default_target: True
