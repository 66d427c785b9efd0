from vimodes.config import build_study
from vimodes.pipeline import classify_group

classify_group(build_study(snakemake.config), snakemake.params.members,
               list(snakemake.input.fits), list(snakemake.output), list(snakemake.log))
