from vimodes.runtime import script_logging

with script_logging(snakemake.log[0]):
    from pathlib import Path

    from vimodes.report import default_provenance, write_report

    i, p, out = snakemake.input, snakemake.params, snakemake.output
    figures = {Path(path).stem: path for path in i.figures}
    provenance = default_provenance(study_name=p.study_name, config_hash=p.config_hash,
                                    seed_base=p.seed_base, command=p.command,
                                    figures_command=p.figures_command)
    write_report(i.cells, i.fits, i.data_summary, figures, Path(i.html_template).parent,
                 out.html, out.md, provenance,
                 table_paths={"headline": out.headline, "question": out.question},
                 mechanism_path=i.mechanism, contrasts_path=i.contrasts)
