from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    from vimodes.pipeline import write_table
    from vimodes.figure_tables import make_posterior_grid
    from vimodes.simulate import read_dataset

    p = snakemake.params
    grid, summary = make_posterior_grid(read_dataset(p.data_file), p.low, p.high,
                                        p.points, prior_sd=p.slope_prior_sd)
    write_table(grid, snakemake.output.grid)
    write_table(summary.assign(data_regime=p.regime), snakemake.output.summary)
