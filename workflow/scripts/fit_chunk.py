from vimodes.runtime import configure_compile_cache, script_logging

configure_compile_cache()
with script_logging(snakemake.log[0]):
    from vimodes.config import build_study
    from vimodes.pipeline import fit_chunk

    fit_chunk(build_study(snakemake.config), snakemake.wildcards.cell,
              int(snakemake.wildcards.chunk), list(snakemake.params.data_files), snakemake.output[0],
              threads=snakemake.threads)
