rule fit_chunk:
    """Fit a chunk of seeds of one cell in one process (the model is compiled once); the
    chunks of a fit group (below) are not this rule's."""
    input:
        unpack(fit_inputs),
    output:
        directory("data/fits/{cell}/chunk-{chunk}"),
    log:
        "logs/fit/{cell}/chunk-{chunk}.log",
    benchmark:
        "logs/benchmarks/fit/{cell}/chunk-{chunk}.tsv"
    wildcard_constraints:
        cell=SINGLE_CELL_PATTERN,
    retries: 1
    conda:
        "../envs/vimodes.yaml"
    # under a cluster executor --cores is unset (fit_threads fails): one core per NUTS chain
    threads:
        lambda wc: (
            fit_threads(wc)
            if workflow.resource_settings.cores
            else (STUDY.cell_by_id[wc.cell].chains or 1)
        )
    resources:
        mem_mb=3000,
        # a retry (e.g. after SLURM's TIMEOUT) gets a longer time limit
        runtime=lambda wildcards, attempt: attempt * fit_runtime_minutes(wildcards),
    params:
        cell=lambda wc: STUDY.cell_by_id[wc.cell].axes(),
        seeds=lambda wc: list(STUDY.chunk_seeds(wc.cell, int(wc.chunk))),
        settings=fit_settings,
        pymc_version=PYMC_VERSION,
    script:
        "../scripts/fit_chunk.py"


# One rule per fit group (Study.fit_groups): its chunks, fitted one after another in one
# process, each with its own log; the rule's name says which group.
for group in STUDY.fit_groups():

    rule:
        name:
            group.rule
        input:
            data=group_data_blocks(group),
        output:
            [directory(path) for path in group.chunk_dirs],
        log:
            [f"logs/fit/{cell}/chunk-{chunk}.log" for cell, chunk in group.members],
        benchmark:
            f"logs/benchmarks/fit_group/{group.name}.tsv"
        retries: 1
        conda:
            "../envs/vimodes.yaml"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=lambda wildcards, attempt, group=group: attempt
            * group_runtime_minutes(group),
        params:
            members=group_params(group),
            pymc_version=PYMC_VERSION,
        script:
            "../scripts/fit_group.py"


# One classify rule per fit group: its chunks classified one after another in one process
# (the imports paid once), each with its own table and log.
for group in STUDY.fit_groups():

    rule:
        name:
            group.classify_rule
        input:
            fits=group.chunk_dirs,
            references=group_references(group),
        output:
            group.classified_paths,
        log:
            [f"logs/classify/{cell}/chunk-{chunk}.log" for cell, chunk in group.members],
        benchmark:
            f"logs/benchmarks/classify_group/{group.name}.tsv"
        localrule: True
        conda:
            "../envs/vimodes.yaml"
        resources:
            mem_mb=1000,
            runtime=5 * len(group.members),
        params:
            classifier=STUDY.config["classifier"],
            members=classify_group_params(group),
        script:
            "../scripts/classify_group.py"


rule reference_sd:
    """The reference posterior sd of the slopes of one data regime, from its reference cell
    (single-chain NUTS on the marginal model): it sets the classifier's slope tolerances.
    """
    input:
        reference_chunk_dirs,
    output:
        "data/tables/reference/{regime}.json",
    log:
        "logs/reference/{regime}.log",
    benchmark:
        "logs/benchmarks/reference/{regime}.tsv"
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        cell=lambda wc: STUDY.reference_cell(wc.regime).cell_id,
    script:
        "../scripts/reference_sd.py"


rule classify_chunk:
    """Outcome class and metrics of every fit (and chain/path) of a chunk; the chunks of a fit
    group are classified by the group's classify rule (below)."""
    input:
        unpack(classify_inputs),
    output:
        "data/classified/{cell}/chunk-{chunk}.parquet",
    log:
        "logs/classify/{cell}/chunk-{chunk}.log",
    benchmark:
        "logs/benchmarks/classify/{cell}/chunk-{chunk}.tsv"
    wildcard_constraints:
        cell=SINGLE_CELL_PATTERN,
    conda:
        "../envs/vimodes.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        classifier=STUDY.config["classifier"],
        seeds=lambda wc: list(STUDY.chunk_seeds(wc.cell, int(wc.chunk))),
    script:
        "../scripts/classify_chunk.py"
