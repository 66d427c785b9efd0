# How often does variational inference land on a single posterior mode?
# Run: snakemake --cores N   (config/config.yaml is the default study)
# Figures and report only, from the existing tables: see `rule figures` (workflow/rules/report.smk)


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/mechanism.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "report/summary.md",
        "report/report.html",
        "report/report.md",


onsuccess:
    from vimodes.report import headline_console

    print(headline_console("data/tables/cells.csv", "report/report.html"))
