# The brms mi() joint model of bench/brms_joint.R with hmlib's default priors.
#
# hmlib states its priors on standardised variables (mean 0, SD 1 with the
# population SD, observed values only for lactate): Normal(0, 2.5) on
# coefficients, Normal(logit(mean outcome), 2.5) on the outcome intercept and
# Normal(0, 2.5) on the lactate submodel's, half-normal(1) on cluster SDs and
# on the residual SD. Here the same data are standardised the same way and
# brms gets those priors, so that a difference between hmlib and brms that
# remains is not a difference of priors. The lactate coefficient is turned
# back to the original scale (divided by lactate's SD).
#
#   Rscript tests/results/brms_matched_priors.R tests/results/sim_registry.csv out.json [seeds]

suppressPackageStartupMessages({
  library(brms)
  library(posterior)
  library(jsonlite)
})
# Boost for rstan (Debian's BH ships no headers): see bench/r/stan_boost.R
local({
  file_arg <- grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE)
  here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else getwd()
  source(file.path(here, "..", "..", "bench", "r", "stan_boost.R"))
})
use_system_boost()

args <- commandArgs(trailingOnly = TRUE)
data_file <- if (length(args) >= 1) args[1] else "tests/results/sim_registry.csv"
out_file <- if (length(args) >= 2) args[2] else "brms_matched_priors.json"
n_seeds <- if (length(args) >= 3) as.integer(args[3]) else 2L

d <- read.csv(data_file)
d$site <- factor(d$site)
pop_sd <- function(x) sqrt(mean((x - mean(x))^2))
lac_obs <- d$lactate[!is.na(d$lactate)]
lac_centre <- mean(lac_obs)
lac_scale <- pop_sd(lac_obs)
d$age_z <- (d$age - mean(d$age)) / pop_sd(d$age)
d$sev_z <- (d$severity - mean(d$severity)) / pop_sd(d$severity)
d$lac_z <- (d$lactate - lac_centre) / lac_scale
logit_rate <- qlogis(mean(d$outcome))

formula <- bf(outcome ~ age_z + sev_z + mi(lac_z) + (1 | site), family = bernoulli()) +
  bf(lac_z | mi() ~ age_z + sev_z + (1 | site), family = gaussian()) +
  set_rescor(FALSE)
priors <- c(
  set_prior(sprintf("normal(%.10f, 2.5)", logit_rate), class = "Intercept", resp = "outcome"),
  set_prior("normal(0, 2.5)", class = "b", resp = "outcome"),
  set_prior("normal(0, 1)", class = "sd", resp = "outcome"),
  set_prior("normal(0, 2.5)", class = "Intercept", resp = "lacz"),
  set_prior("normal(0, 2.5)", class = "b", resp = "lacz"),
  set_prior("normal(0, 1)", class = "sd", resp = "lacz"),
  set_prior("normal(0, 1)", class = "sigma", resp = "lacz")
)

compiled <- brm(formula, data = d, prior = priors, chains = 0, seed = 1)
runs <- list()
for (s in seq_len(n_seeds)) {
  fit <- update(compiled, recompile = FALSE, chains = 2, cores = 2, iter = 2000, warmup = 1000, seed = s,
                refresh = 0)
  draws <- as_draws_df(fit)
  lac <- extract_variable_matrix(draws, "bsp_outcome_milac_z") / lac_scale
  sdv <- extract_variable_matrix(draws, "sd_site__outcome_Intercept")
  runs[[s]] <- list(seed = s,
                    lactate = list(mean = mean(lac), sd = sd(lac), ess_bulk = ess_bulk(lac), rhat = rhat(lac)),
                    site_sd = list(mean = mean(sdv), sd = sd(sdv), ess_bulk = ess_bulk(sdv), rhat = rhat(sdv)))
  cat("seed", s, "lactate", round(mean(lac), 4), "site SD", round(mean(sdv), 4), "\n")
}
out <- list(what = "brms mi() joint model with hmlib's default priors on standardised variables",
            data = basename(data_file), brms_version = as.character(packageVersion("brms")),
            lactate_scale = lac_scale, runs = runs)
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_file)
