"""The model variants by name, and what each fixes (no PyMC import: config validation uses it)."""

from __future__ import annotations

from dataclasses import dataclass

# the parameters every model and fit file has, in this order
VARIABLES = ("slopes", "weights", "sigma")


@dataclass(frozen=True)
class ModelSpec:
    """How a model variant builds its likelihood and priors."""

    name: str
    description: str
    question_likelihood: bool  # hand-written likelihood of the question (else pm.NormalMixture)
    per_observation: bool  # fixes E1
    correct_normaliser: bool  # fixes E2
    scale_to_total: bool  # fixes E3
    sigma_prior: str  # "uniform01" (E4) or "halfnormal"
    ordered: bool = False

    @property
    def mixture_form(self) -> bool:
        """The full-data log-likelihood is the normal mixture's, up to a term in sigma
        (``models.mixture_form_offset``): the NormalMixture models and the question's
        per-observation variants; the batch-level mixture (E1) is not."""
        return not self.question_likelihood or self.per_observation

    @property
    def correctly_specified(self) -> bool:
        """All four of the question's errors fixed: the model's density is the posterior the
        data imply, so importance diagnostics (PSIS k-hat) measure approximation quality. For
        the as-asked family they would measure the distance to a wrong target."""
        return (self.per_observation and self.correct_normaliser and self.scale_to_total
                and self.sigma_prior == "halfnormal")


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("as_asked", "the question's model, ported faithfully (errors E1-E4)",
                  True, False, False, False, "uniform01"),
        ModelSpec("as_asked_fix_mixture", "as asked, but the mixture per observation (fixes E1)",
                  True, True, False, False, "uniform01"),
        ModelSpec("as_asked_fix_normaliser", "as asked, but log sigma^2 in the normaliser (fixes E2)",
                  True, False, True, False, "uniform01"),
        ModelSpec("as_asked_fix_total_size", "as asked, but rescaled to the data size (fixes E3)",
                  True, False, False, True, "uniform01"),
        ModelSpec("as_asked_fix_sigma_prior", "as asked, but sigma ~ HalfNormal(1) (fixes E4)",
                  True, False, False, False, "halfnormal"),
        ModelSpec("as_asked_fix_all", "the question's code path with E1-E4 fixed",
                  True, True, True, True, "halfnormal"),
        # leave one out: every error fixed but one, which alone is kept (its own effect, measured
        # against as_asked_fix_all on the same seeds)
        ModelSpec("as_asked_keep_mixture", "E2-E4 fixed, the mixture over whole batches (E1) kept",
                  True, False, True, True, "halfnormal"),
        ModelSpec("as_asked_keep_normaliser", "E1, E3, E4 fixed, the wrong normaliser (E2) kept",
                  True, True, False, True, "halfnormal"),
        ModelSpec("as_asked_keep_total_size", "E1, E2, E4 fixed, no rescaling (E3) kept",
                  True, True, True, False, "halfnormal"),
        ModelSpec("as_asked_keep_sigma_prior", "E1-E3 fixed, sigma ~ Uniform(0, 1) (E4) kept",
                  True, True, True, True, "uniform01"),
        ModelSpec("marginal", "corrected: per-observation pm.NormalMixture, total_size",
                  False, True, True, True, "halfnormal"),
        ModelSpec("ordered", "corrected, slopes under the ordered transform (one mode)",
                  False, True, True, True, "halfnormal", ordered=True),
    )
}
MODEL_NAMES = tuple(MODEL_SPECS)
SLOPE_PRIOR_SD = 2.0  # sd of the slopes' Normal(0, sd) prior (vimodes.models; the report's grid)
