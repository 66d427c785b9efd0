from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    import pandas as pd

    from vimodes.pipeline import write_table
    from vimodes.figure_tables import make_representative_draws

    fits = pd.read_parquet(snakemake.input.fits)
    draws = make_representative_draws(fits, list(snakemake.input.fit_dirs),
                                      per_class=snakemake.params.per_class,
                                      n_draws=snakemake.params.n_draws)
    write_table(draws, snakemake.output[0])
