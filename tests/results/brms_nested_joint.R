# The nested joint model (higher_levels: [country]) in brms, with hmlib's default priors.
#
# brms's mi() model with random intercepts for the country and the hospital within its country in
# both submodels: outcome ~ age + mi(x) + (1 | country) + (1 | country:hospital) (bernoulli) and
# x | mi() ~ age + (1 | country) + (1 | country:hospital) (gaussian); no missingness submodel (hmlib is
# fitted with missingness_model=False). As in brms_matched_priors.R the data are standardised as hmlib
# does (x by its observed values' mean and population SD, age by all rows') and brms gets hmlib's
# priors: Normal(0, 2.5) coefficients, Normal(logit(mean y), 2.5) outcome intercept, Normal(0, 2.5) for
# x's intercept, half-normal(1) on every level's SD and on x's residual SD. x's coefficient is turned
# back to the original scale (divided by x's SD).
#
# Data: three_level_registry.csv (hmlib.simulate.studies.three_level_registry(1): 4,320 patients,
# 144 hospitals in 24 countries; x missing for 40%, never recorded in two countries).
#
#   cd tests/results && Rscript brms_nested_joint.R three_level_registry.csv brms_nested_joint.json 3

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
data_file <- if (length(args) >= 1) args[1] else "three_level_registry.csv"
out_file <- if (length(args) >= 2) args[2] else "brms_nested_joint.json"
n_seeds <- if (length(args) >= 3) as.integer(args[3]) else 3L

d <- read.csv(data_file)
d$country <- factor(d$country)
d$hospital <- factor(d$hospital)
pop_sd <- function(v) sqrt(mean((v - mean(v))^2))
x_obs <- d$x[!is.na(d$x)]
x_scale <- pop_sd(x_obs)
d$age_z <- (d$age - mean(d$age)) / pop_sd(d$age)
d$x_z <- (d$x - mean(x_obs)) / x_scale
logit_rate <- qlogis(mean(d$y))

formula <- bf(y ~ age_z + mi(x_z) + (1 | country) + (1 | country:hospital), family = bernoulli()) +
  bf(x_z | mi() ~ age_z + (1 | country) + (1 | country:hospital), family = gaussian()) +
  set_rescor(FALSE)
priors <- c(
  set_prior(sprintf("normal(%.10f, 2.5)", logit_rate), class = "Intercept", resp = "y"),
  set_prior("normal(0, 2.5)", class = "b", resp = "y"),
  set_prior("normal(0, 1)", class = "sd", resp = "y"),
  set_prior("normal(0, 2.5)", class = "Intercept", resp = "xz"),
  set_prior("normal(0, 2.5)", class = "b", resp = "xz"),
  set_prior("normal(0, 1)", class = "sd", resp = "xz"),
  set_prior("normal(0, 1)", class = "sigma", resp = "xz")
)

summ <- function(m) list(mean = mean(m), sd = sd(m), ess_bulk = ess_bulk(m), rhat = rhat(m))
compiled <- brm(formula, data = d, prior = priors, chains = 0, seed = 1)
runs <- list()
for (s in seq_len(n_seeds)) {
  t0 <- proc.time()[["elapsed"]]
  fit <- update(compiled, recompile = FALSE, chains = 2, cores = 2, iter = 2000, warmup = 1000, seed = s,
                refresh = 0)
  seconds <- proc.time()[["elapsed"]] - t0
  draws <- as_draws_df(fit)
  x <- extract_variable_matrix(draws, "bsp_y_mix_z") / x_scale
  sd_country <- extract_variable_matrix(draws, "sd_country__y_Intercept")
  sd_hospital <- extract_variable_matrix(draws, "sd_country:hospital__y_Intercept")
  runs[[s]] <- list(seed = s, seconds = seconds, x = summ(x), age = summ(extract_variable_matrix(draws, "b_y_age_z") /
                                                                        pop_sd(d$age)),
                    sd_country = summ(sd_country), sd_hospital = summ(sd_hospital),
                    divergences = sum(nuts_params(fit, pars = "divergent__")$Value))
  cat("seed", s, "x", round(mean(x), 4), "sd(country)", round(mean(sd_country), 4), "sd(hospital)",
      round(mean(sd_hospital), 4), round(seconds), "s\n")
}
out <- list(what = "brms mi() nested joint model (country, hospital in country) with hmlib's default priors",
            data = basename(data_file), brms_version = as.character(packageVersion("brms")),
            x_scale = x_scale, runs = runs)
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_file)
