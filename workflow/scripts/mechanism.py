from vimodes.runtime import configure_compile_cache, script_logging

configure_compile_cache()

with script_logging(snakemake.log[0]):
    from vimodes.mechanism import mechanism_table, settings_from_config
    from vimodes.pipeline import write_table
    from vimodes.simulate import read_dataset

    p = snakemake.params
    datasets = [(p.regime, read_dataset(path)) for path in p.data_files]
    table = mechanism_table(datasets, p.seed_base, settings_from_config(p.mechanism, p.vi))
    write_table(table, snakemake.output.csv)
    write_table(table, snakemake.output.parquet)
