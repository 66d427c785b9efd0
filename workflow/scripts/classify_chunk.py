from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    from vimodes.config import build_study
    from vimodes.pipeline import classify_chunk

    classify_chunk(build_study(snakemake.config), snakemake.input.fits, snakemake.params.seeds,
                   snakemake.output[0], reference_path=snakemake.input.get("reference"))
