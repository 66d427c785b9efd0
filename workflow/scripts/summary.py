from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    from vimodes.summary import write_summary

    write_summary(snakemake.input.cells, snakemake.output[0], study_name=snakemake.params.study_name,
                  config_hash=snakemake.params.config_hash)
