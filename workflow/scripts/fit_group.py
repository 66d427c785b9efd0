from vimodes.runtime import configure_compile_cache

configure_compile_cache()
from vimodes.config import build_study  # noqa: E402
from vimodes.pipeline import fit_group  # noqa: E402

fit_group(build_study(snakemake.config),
          [(member["cell"], member["chunk"]) for member in snakemake.params.members],
          list(snakemake.input.data), list(snakemake.output), list(snakemake.log))
