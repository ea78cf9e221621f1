# The joint model's binary predictor submodel with random slopes (random_slopes: [t]) in brms, with hmlib's
# default priors (JOINT-BRMS-RS-004 in tests/test_joint_random_slopes.py).
#
# Where the binary x is recorded its submodel's posterior does not depend on the outcome's, so the submodel
# alone is compared:
#   x ~ t_z + treat_z + (1 + t_z | patient)          (bernoulli, logit)
# with t and treat standardised as hmlib does (mean and population SD of the rows used) and hmlib's priors on
# that scale: Normal(logit(mean x), 2.5) on the intercept (the predictors are centred, so brms's centred
# intercept is the intercept), Normal(0, 2.5) on the coefficients, half-normal(1) on both SDs, LKJ(2) on the
# correlation. How the summed-out likelihood uses the submodel is checked by enumeration (JOINT-MARG-001).
#
# Data: random_slopes_binary_joint.csv (binary_parity_frame() in the test module: the visits with x recorded of
# bench/random_slope_imputation_truth.py's simulate_longitudinal(21, n_patients=150, binary=True); 667 visits
# of 147 patients, x = 1 in 38%; x has its own patient level and trend).
#
#   cd tests/results && Rscript brms_random_slopes_binary_joint.R
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
data_file <- if (length(args) >= 1) args[1] else "random_slopes_binary_joint.csv"
out_file <- if (length(args) >= 2) args[2] else "brms_random_slopes_binary_joint.json"
iter <- if (length(args) >= 3) as.integer(args[3]) else 4000L

d <- read.csv(data_file)
d$patient <- factor(d$patient)
pop_sd <- function(v) sqrt(mean((v - mean(v))^2))
d$t_z <- (d$t - mean(d$t)) / pop_sd(d$t)
d$treat_z <- (d$treat - mean(d$treat)) / pop_sd(d$treat)
priors <- c(
  set_prior(sprintf("normal(%.10f, 2.5)", qlogis(mean(d$x))), class = "Intercept"),
  set_prior("normal(0, 2.5)", class = "b"),
  set_prior("normal(0, 1)", class = "sd"),
  set_prior("lkj(2)", class = "cor")
)
t0 <- proc.time()[["elapsed"]]
fit <- brm(bf(x ~ t_z + treat_z + (1 + t_z | patient), family = bernoulli()), data = d, prior = priors,
           chains = 2, cores = 2, iter = iter, warmup = 1000, seed = 1, refresh = 0)
seconds <- proc.time()[["elapsed"]] - t0
draws <- as_draws_df(fit)
names_kept <- c("b_Intercept", "b_t_z", "b_treat_z", "sd_patient__Intercept", "sd_patient__t_z",
                "cor_patient__Intercept__t_z")
summ <- function(x) list(mean = mean(x), sd = sd(x), mcse_mean = mcse_mean(x), ess_bulk = ess_bulk(x),
                         ess_tail = ess_tail(x), rhat = rhat(x))
params <- lapply(names_kept, function(n) summ(extract_variable_matrix(draws, n)))
names(params) <- names_kept
out <- list(what = "brms bernoulli x ~ t_z + treat_z + (1 + t_z | patient), hmlib's default priors (standardised scale)",
            data = basename(data_file), brms_version = as.character(packageVersion("brms")), chains = 2,
            iter = iter, warmup = 1000, seed = 1, seconds = seconds,
            divergences = sum(nuts_params(fit, pars = "divergent__")$Value), parameters = params)
for (n in names_kept) cat(sprintf("%-28s %10.4f (sd %.4f, mcse %.4f)\n", n, params[[n]]$mean, params[[n]]$sd,
                                  params[[n]]$mcse_mean))
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_file)
