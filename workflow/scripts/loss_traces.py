from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    import pandas as pd

    from vimodes.pipeline import write_table
    from vimodes.figure_tables import make_loss_traces

    fits = pd.read_parquet(snakemake.input.fits)
    write_table(make_loss_traces(fits, list(snakemake.input.fit_dirs)), snakemake.output[0])
