# The joint model with random slopes (random_slopes: [month]) in brms, with hmlib's default priors.
#
# brms's mi() model with a random intercept and a random slope on time, correlated, in both submodels:
#   y ~ month + mi(x) + (1 + month | patient)        (gaussian)
#   x | mi() ~ month + (1 + month | patient)         (gaussian)
# the two (1 + month | patient) terms independent of each other (as hmlib's outcome and predictor
# submodels); no missingness submodel (hmlib is fitted with missingness_model=False): "terms" in the JSON.
# A second fit adds hmlib's missingness submodel, r = x missing, ~ month + (1 | p | patient) (bernoulli),
# its patient intercept in one covariance with the outcome's intercept and slope (y's term is then
# (1 + month | p | patient)), prior Normal(logit(mean r), 2.5) on its intercept: "terms_missingness", with
# corr(missingness, outcome) at month 0 as hmlib reports it. As in
# brms_nested_joint.R the data are standardised as hmlib does (y and month by all rows' mean and
# population SD, x by its observed values') and brms gets hmlib's priors on that scale: Normal(0, 2.5) on
# coefficients and intercepts, half-normal(1) on every SD (intercept and slope) and residual SD, LKJ(2) on
# the correlations. The draws are turned back to the user's scale draw by draw, with the same map as
# hmlib.stats.joint.slopes (written out again here, independently): beta = s_y b / s, the random
# intercept at month = 0 u0' = s_y (u0 - u1 m / s), the slope u1' = s_y u1 / s.
#
# Data: random_slopes_joint.csv (tests/test_joint_random_slopes.py, parity_frame():
# hmlib.simulate.longitudinal.longitudinal_registry(16, n_sites=1, n_patients=150, n_visits=6), rows with y
# recorded, x also missing with P = expit(-2 + 0.1 month): 553 visits of 147 patients, x missing in 25%).
#
#   cd tests/results && Rscript brms_random_slopes_joint.R random_slopes_joint.csv brms_random_slopes_joint.json
#
# With a fourth argument "sites" (the reference of JOINT-BRMS-RS-003): patients in sites, a random intercept
# per site beside the patients' correlated intercept and slope, in both submodels, no missingness submodel:
#   y ~ month + mi(x) + (1 | site) + (1 + month | patient),  x | mi() ~ month + (1 | site) + (1 + month | patient)
# (patient labels are unique across sites, so (1 + month | patient) is (1 + month | site:patient)); the
# half-normal(1) SD prior covers the site SDs too; sd(site) = s_y sd_site. Data: random_slopes_sites_joint.csv
# (tests/test_joint_random_slopes.py, sites_parity_frame(): longitudinal_registry(17, n_sites=12,
# n_patients=180, n_visits=6), rows with y recorded, x also missing with P = expit(-2 + 0.1 month)):
#
#   Rscript brms_random_slopes_joint.R random_slopes_sites_joint.csv brms_random_slopes_sites_joint.json 4000 sites

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
data_file <- if (length(args) >= 1) args[1] else "random_slopes_joint.csv"
out_file <- if (length(args) >= 2) args[2] else "brms_random_slopes_joint.json"
iter <- if (length(args) >= 3) as.integer(args[3]) else 4000L
sites <- length(args) >= 4 && args[4] == "sites"

d <- read.csv(data_file)
d$patient <- factor(d$patient)
pop_sd <- function(v) sqrt(mean((v - mean(v))^2))
x_obs <- d$x[!is.na(d$x)]
sc <- list(y_centre = mean(d$y), y_scale = pop_sd(d$y), month_centre = mean(d$month), month_scale = pop_sd(d$month),
           x_centre = mean(x_obs), x_scale = pop_sd(x_obs))
d$y_z <- (d$y - sc$y_centre) / sc$y_scale
d$month_z <- (d$month - sc$month_centre) / sc$month_scale
d$x_z <- (d$x - sc$x_centre) / sc$x_scale

base_priors <- c(
  set_prior("normal(0, 2.5)", class = "Intercept", resp = "yz"),
  set_prior("normal(0, 2.5)", class = "b", resp = "yz"),
  set_prior("normal(0, 1)", class = "sd", resp = "yz"),
  set_prior("normal(0, 1)", class = "sigma", resp = "yz"),
  set_prior("normal(0, 2.5)", class = "Intercept", resp = "xz"),
  set_prior("normal(0, 2.5)", class = "b", resp = "xz"),
  set_prior("normal(0, 1)", class = "sd", resp = "xz"),
  set_prior("normal(0, 1)", class = "sigma", resp = "xz"),
  set_prior("lkj(2)", class = "cor")
)
d$r <- as.integer(is.na(d$x))
x_part <- bf(x_z | mi() ~ month_z + (1 + month_z | patient), family = gaussian())
if (sites) {
  d$site <- factor(d$site)
  models <- list(terms = list(
    formula = bf(y_z ~ month_z + mi(x_z) + (1 | site) + (1 + month_z | patient), family = gaussian()) +
      bf(x_z | mi() ~ month_z + (1 | site) + (1 + month_z | patient), family = gaussian()) + set_rescor(FALSE),
    priors = base_priors))
} else models <- list(
  terms = list(formula = bf(y_z ~ month_z + mi(x_z) + (1 + month_z | patient), family = gaussian()) + x_part +
                 set_rescor(FALSE), priors = base_priors),
  terms_missingness = list(
    formula = bf(y_z ~ month_z + mi(x_z) + (1 + month_z | p | patient), family = gaussian()) + x_part +
      bf(r ~ month_z + (1 | p | patient), family = bernoulli()) + set_rescor(FALSE),
    priors = c(base_priors,
               set_prior(sprintf("normal(%.10f, 2.5)", qlogis(mean(d$r))), class = "Intercept", resp = "r"),
               set_prior("normal(0, 2.5)", class = "b", resp = "r"),
               set_prior("normal(0, 1)", class = "sd", resp = "r")))
)

summ <- function(x) list(mean = mean(x), sd = sd(x), mcse_mean = mcse_mean(x), ess_bulk = ess_bulk(x),
                         ess_tail = ess_tail(x), rhat = rhat(x))
user_scale <- function(draws, with_missingness) {
  v <- function(name) extract_variable_matrix(draws, name)
  b0 <- v("b_yz_Intercept")
  b_month <- v("b_yz_month_z")
  b_x <- v("bsp_yz_mix_z")
  sd0 <- v("sd_patient__yz_Intercept")
  sd1 <- v("sd_patient__yz_month_z")
  r01 <- v("cor_patient__yz_Intercept__yz_month_z")
  m <- sc$month_centre / sc$month_scale
  # user scale: u0' = s_y (u0 - m u1), u1' = s_y u1 / s_month
  var0 <- sc$y_scale^2 * (sd0^2 - 2 * m * r01 * sd0 * sd1 + m^2 * sd1^2)
  cov01 <- sc$y_scale^2 / sc$month_scale * (r01 * sd0 * sd1 - m * sd1^2)
  sd_slope <- sc$y_scale * sd1 / sc$month_scale
  terms <- list(
    Intercept = sc$y_centre + sc$y_scale * (b0 - b_month * m - b_x * sc$x_centre / sc$x_scale),
    month = sc$y_scale * b_month / sc$month_scale,
    x = sc$y_scale * b_x / sc$x_scale,
    `sd(patient)` = sqrt(var0),
    `sd(month|patient)` = sd_slope,
    `cor(month|patient)` = cov01 / (sqrt(var0) * sd_slope),
    sigma = sc$y_scale * v("sigma_yz")
  )
  if (sites) terms <- append(terms, list(`sd(site)` = sc$y_scale * v("sd_site__yz_Intercept")), after = 3)
  if (with_missingness) {
    sdw <- v("sd_patient__r_Intercept")
    cov0w <- sc$y_scale * (v("cor_patient__yz_Intercept__r_Intercept") * sd0 * sdw -
                             m * v("cor_patient__yz_month_z__r_Intercept") * sd1 * sdw)
    terms[["corr(missingness, outcome)"]] <- cov0w / (sqrt(var0) * sdw)
  }
  terms
}

out <- list(what = if (sites) paste("brms mi() joint model, (1 | site) + (1 + month | patient) in both submodels,",
                                    "hmlib's default priors, user's scale") else
              paste("brms mi() joint model with random slopes on month in both submodels, hmlib's default",
                    "priors, user's scale; terms_missingness: with the missingness submodel"),
            data = basename(data_file), brms_version = as.character(packageVersion("brms")),
            chains = 2, iter = iter, warmup = 1000, seed = 1, scales = sc)
for (key in names(models)) {
  t0 <- proc.time()[["elapsed"]]
  fit <- brm(models[[key]]$formula, data = d, prior = models[[key]]$priors, chains = 2, cores = 2, iter = iter,
             warmup = 1000, seed = 1, refresh = 0)
  seconds <- proc.time()[["elapsed"]] - t0
  terms <- user_scale(as_draws_df(fit), key == "terms_missingness")
  out[[key]] <- lapply(terms, summ)
  out[[paste0(key, "_run")]] <- list(seconds = seconds, divergences = sum(nuts_params(fit, pars = "divergent__")$Value))
  cat(key, "\n")
  for (name in names(terms)) cat(sprintf("%-28s %10.4f (sd %.4f, mcse %.4f)\n", name, mean(terms[[name]]),
                                         sd(terms[[name]]), mcse_mean(terms[[name]])))
}
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_file)
