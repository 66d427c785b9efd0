from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    from vimodes.pipeline import write_reference

    write_reference(snakemake.wildcards.regime, snakemake.params.cell, list(snakemake.input),
                    snakemake.output[0])
