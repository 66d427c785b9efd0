from vimodes.runtime import configure_compile_cache, script_logging

configure_compile_cache()
with script_logging(snakemake.log[0]):
    from vimodes.config import build_study
    from vimodes.pipeline import fit_chunk
    from vimodes.simulate import files_in_blocks

    seeds = snakemake.params.seeds
    fit_chunk(build_study(snakemake.config), snakemake.wildcards.cell,
              int(snakemake.wildcards.chunk), files_in_blocks(snakemake.input.data, seeds),
              snakemake.output[0], threads=snakemake.threads,
              source_dir=snakemake.input.get("source"))
