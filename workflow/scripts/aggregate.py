from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    from vimodes.pipeline import aggregate

    out = snakemake.output
    aggregate(list(snakemake.input), {"csv": out.fits_csv, "parquet": out.fits_parquet},
              {"csv": out.cells_csv, "parquet": out.cells_parquet},
              {"csv": out.by_class_csv, "parquet": out.by_class_parquet},
              {"csv": out.contrasts_csv, "parquet": out.contrasts_parquet},
              regimes=snakemake.params.regimes, inits=snakemake.params.inits,
              out_regime_contrasts={"csv": out.regime_contrasts_csv,
                                    "parquet": out.regime_contrasts_parquet})
