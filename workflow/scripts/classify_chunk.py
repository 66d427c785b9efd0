from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    from vimodes.config import build_study
    from vimodes.pipeline import classify_chunk

    classify_chunk(build_study(snakemake.config), snakemake.input[0], snakemake.params.seeds,
                   snakemake.output[0])
