from vimodes.runtime import configure_compile_cache, script_logging

configure_compile_cache()

with script_logging(snakemake.log[0]):
    from vimodes.mechanism import mechanism_table, settings_from_config
    from vimodes.pipeline import write_table
    from vimodes.simulate import files_in_blocks, read_dataset

    p = snakemake.params
    paths = files_in_blocks(snakemake.input.data, p.mechanism["seeds"])
    datasets = [(p.regime, read_dataset(path)) for path in paths]
    table = mechanism_table(datasets, p.seed_base, settings_from_config(p.mechanism, p.vi))
    write_table(table, snakemake.output.csv)
    write_table(table, snakemake.output.parquet)
