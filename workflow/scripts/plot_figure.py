from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    from vimodes.plots import make_figure

    make_figure(snakemake.params.figure, dict(snakemake.input.items()), list(snakemake.output))
