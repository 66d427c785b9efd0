from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    from vimodes.pipeline import write_table
    from vimodes.figure_tables import make_posterior_grid
    from vimodes.simulate import files_in_blocks, read_dataset

    p = snakemake.params
    data = read_dataset(files_in_blocks(snakemake.input, [p.seed])[0])
    grid, summary = make_posterior_grid(data, p.low, p.high, p.points,
                                        prior_sd=p.slope_prior_sd)
    write_table(grid, snakemake.output.grid)
    write_table(summary.assign(data_regime=p.regime), snakemake.output.summary)
