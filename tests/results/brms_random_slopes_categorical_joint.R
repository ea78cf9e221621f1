# The joint model's categorical predictor submodels with random slopes (random_slopes: [t]) in brms, with
# hmlib's default priors (JOINT-BRMS-RS-005 in tests/test_joint_random_slopes.py).
#
# With x recorded in every row its submodel's posterior does not depend on the outcome's, so the submodel alone
# is compared, nominal or ordinal:
#   nominal: x ~ t_z + treat_z + (1 + t_z |p| patient)   (categorical, reference "low"; each of mumid and muhigh
#            has its own intercept and coefficients; their patient intercepts and slopes form one correlated
#            block, as hmlib's since 2026-12-07; before, (1 + t_z | patient): a block per level)
#   ordinal: x ~ t_z + treat_z + (1 + t_z | patient)   (cumulative("logit"), low < mid < high: brms's
#            logit P(x <= k) = theta_k - eta is hmlib's logit P(rank > k) = eta - theta_k)
# with t and treat standardised as hmlib does (mean and population SD of the rows used) and hmlib's priors on
# that scale: Normal(m_k, 2.5) on each intercept (nominal: m_k the observed log odds of level k against "low",
# counts + 0.5; the predictors are centred, so brms's centred intercept is the intercept) or cut point
# (ordinal: m_k the logit of the observed share below rank k, the cut points ordered), Normal(0, 2.5) on the
# coefficients, half-normal(1) on every SD, LKJ(2) on each correlation.
#
# Data: random_slopes_categorical_joint.csv (categorical_parity_frame() in the test module: 996 visits of 150
# patients of bench/random_slope_imputation_truth.py's simulate_longitudinal(22, n_patients=150, full=True), x
# cut at -0.3 and 0.8 into low / mid / high).
#
#   cd tests/results && Rscript brms_random_slopes_categorical_joint.R nominal
#   cd tests/results && Rscript brms_random_slopes_categorical_joint.R ordinal
#   (R 4.2.2, brms 2.18.0 from Debian's packages on these machines)

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
kind <- if (length(args) >= 1) args[1] else "nominal"
stopifnot(kind %in% c("nominal", "ordinal"))
data_file <- if (length(args) >= 2) args[2] else "random_slopes_categorical_joint.csv"
out_file <- if (length(args) >= 3) args[3] else sprintf("brms_random_slopes_%s_joint.json", kind)
iter <- if (length(args) >= 4) as.integer(args[4]) else 3000L

d <- read.csv(data_file)
d$patient <- factor(d$patient)
levels_x <- c("low", "mid", "high")
pop_sd <- function(v) sqrt(mean((v - mean(v))^2))
d$t_z <- (d$t - mean(d$t)) / pop_sd(d$t)
d$treat_z <- (d$treat - mean(d$treat)) / pop_sd(d$treat)
counts <- as.numeric(table(factor(d$x, levels = levels_x))) + 0.5

if (kind == "nominal") {
  d$x <- factor(d$x, levels = levels_x)
  priors <- c(set_prior("lkj(2)", class = "cor"))
  for (k in 2:3) {
    mu <- paste0("mu", levels_x[k])
    priors <- c(priors,
                set_prior(sprintf("normal(%.10f, 2.5)", log(counts[k] / counts[1])), class = "Intercept", dpar = mu),
                set_prior("normal(0, 2.5)", class = "b", dpar = mu),
                set_prior("normal(0, 1)", class = "sd", dpar = mu))
  }
  family <- categorical()
  names_kept <- unlist(lapply(paste0("mu", levels_x[2:3]), function(mu)
    c(sprintf("b_%s_Intercept", mu), sprintf("b_%s_t_z", mu), sprintf("b_%s_treat_z", mu),
      sprintf("sd_patient__%s_Intercept", mu), sprintf("sd_patient__%s_t_z", mu),
      sprintf("cor_patient__%s_Intercept__%s_t_z", mu, mu))))
  names_kept <- c(names_kept, "cor_patient__mumid_Intercept__muhigh_Intercept", "cor_patient__mumid_t_z__muhigh_t_z")
  formula <- x ~ t_z + treat_z + (1 + t_z |p| patient)
} else {
  d$x <- factor(d$x, levels = levels_x, ordered = TRUE)
  below <- cumsum(counts)[1:2] / sum(counts)
  priors <- c(set_prior(sprintf("normal(%.10f, 2.5)", qlogis(below[1])), class = "Intercept", coef = "1"),
              set_prior(sprintf("normal(%.10f, 2.5)", qlogis(below[2])), class = "Intercept", coef = "2"),
              set_prior("normal(0, 2.5)", class = "b"),
              set_prior("normal(0, 1)", class = "sd"),
              set_prior("lkj(2)", class = "cor"))
  family <- cumulative("logit")
  names_kept <- c("b_Intercept[1]", "b_Intercept[2]", "b_t_z", "b_treat_z", "sd_patient__Intercept",
                  "sd_patient__t_z", "cor_patient__Intercept__t_z")
  formula <- x ~ t_z + treat_z + (1 + t_z | patient)
}
t0 <- proc.time()[["elapsed"]]
fit <- brm(bf(formula, family = family), data = d, prior = priors,
           chains = 2, cores = 2, iter = iter, warmup = 1000, seed = 1, refresh = 0)
seconds <- proc.time()[["elapsed"]] - t0
# chains ran side by side (cores = 2): sampling wall time is the slower chain's warm-up + sampling
sampling_seconds <- max(rowSums(rstan::get_elapsed_time(fit$fit)))
draws <- as_draws_df(fit)
summ <- function(x) list(mean = mean(x), sd = sd(x), mcse_mean = mcse_mean(x), ess_bulk = ess_bulk(x),
                         ess_tail = ess_tail(x), rhat = rhat(x))
params <- lapply(names_kept, function(n) summ(extract_variable_matrix(draws, n)))
names(params) <- names_kept
out <- list(what = sprintf("brms %s %s, hmlib's default priors (standardised scale)",
                           if (kind == "nominal") "categorical" else "cumulative(logit)",
                           paste(deparse(formula), collapse = "")),
            data = basename(data_file), brms_version = as.character(packageVersion("brms")), chains = 2,
            iter = iter, warmup = 1000, seed = 1, seconds = seconds, sampling_seconds = sampling_seconds,
            divergences = sum(nuts_params(fit, pars = "divergent__")$Value), parameters = params)
for (n in names_kept) cat(sprintf("%-40s %10.4f (sd %.4f, mcse %.4f)\n", n, params[[n]]$mean, params[[n]]$sd,
                                  params[[n]]$mcse_mean))
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_file)
