# The brms mi() joint model that hmlib.stats.joint is compared with.
#
# The stored reference numbers
# used by tests/test_joint_model.py (JOINT-BRMS-001) and bench/bench_joint.py
# are the "brms_joint" entry of tests/results/r_methods_sim_registry.json,
# made by the R methods script of tests/results (brms 2.18.0, rstan 2.21.7,
# posterior 1.4.0, R 4.2.2; 2 chains x 2000 iterations, 1000 warm-up, default
# priors, seed 1). This script is that brms call on its own, writing the same
# fields, so the reference can be regenerated (or a newer brms checked) with
#
#   Rscript bench/brms_joint.R tests/results/sim_registry.csv brms_joint.json
#
# An optional third argument, a number of seeds K (default 1), refits the
# compiled model with seeds 1..K and adds their posterior summaries ("seeds")
# so that brms's own Monte Carlo error can be averaged down (the first seed is
# the reference run above). On Debian, whose r-cran-bh ships no headers, Boost's
# headers are found in /usr/include (libboost-dev) by bench/r/stan_boost.R, with
# nothing linked by hand.
#
# Packages: brms, posterior, jsonlite (and a C++ toolchain for Stan).

suppressPackageStartupMessages({
  library(brms)
  library(posterior)
  library(jsonlite)
})
# Boost for rstan (Debian's BH ships no headers): see bench/r/stan_boost.R
local({
  file_arg <- grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE)
  here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else getwd()
  source(file.path(here, "r", "stan_boost.R"))
})
use_system_boost()

args <- commandArgs(trailingOnly = TRUE)
data_file <- if (length(args) >= 1) args[1] else "tests/results/sim_registry.csv"
out_file <- if (length(args) >= 2) args[2] else "brms_joint.json"
n_seeds <- if (length(args) >= 3) as.integer(args[3]) else 1L

d <- read.csv(data_file)
d$site <- factor(d$site)

# outcome ~ age + severity + mi(lactate) + (1 | site), binomial;
# lactate | mi() ~ age + severity + (1 | site), gaussian (brms's default).
# No residual correlation between the submodels (set_rescor(FALSE)); the two
# (1 | site) terms are independent, as in hmlib's model without the
# missingness submodel.
formula <- bf(outcome ~ age + severity + mi(lactate) + (1 | site), family = bernoulli()) +
  bf(lactate | mi() ~ age + severity + (1 | site), family = gaussian()) +
  set_rescor(FALSE)

t0 <- Sys.time()
compiled <- brm(formula, data = d, chains = 0, seed = 1)     # compile only
t1 <- Sys.time()
fit <- update(compiled, recompile = FALSE, chains = 2, cores = 2, iter = 2000, warmup = 1000, seed = 1,
              refresh = 0)
t2 <- Sys.time()

draws <- as_draws_df(fit)
summarise_var <- function(name) {
  x <- extract_variable_matrix(draws, name)
  list(
    mean = mean(x), median = median(x), sd = sd(x),
    ci_lower = unname(quantile(x, 0.025)), ci_upper = unname(quantile(x, 0.975)),
    rhat = rhat(x), ess_bulk = ess_bulk(x), ess_tail = ess_tail(x)
  )
}
lactate <- summarise_var("bsp_outcome_milactate")
site_sd <- summarise_var("sd_site__outcome_Intercept")
all_rhat <- summarise_draws(draws, "rhat")$rhat
np <- nuts_params(fit)

out <- list(
  what = "brms mi() joint model, 2 chains x 2000 iter (1000 warmup), default priors",
  data = basename(data_file),
  brms_version = as.character(packageVersion("brms")),
  lactate = list(estimate = lactate$mean, se = lactate$sd, ci_lower = lactate$ci_lower,
                 ci_upper = lactate$ci_upper, rhat = lactate$rhat, ess_bulk = lactate$ess_bulk,
                 ess_tail = lactate$ess_tail),
  site_sd = site_sd$mean,
  site_sd_posterior = site_sd,
  compile_s = as.numeric(difftime(t1, t0, units = "secs")),
  sampling_s = as.numeric(difftime(t2, t1, units = "secs")),
  divergences = sum(subset(np, Parameter == "divergent__")$Value),
  max_rhat_all_parameters = max(all_rhat, na.rm = TRUE)
)
per_seed <- list(list(seed = 1, lactate = lactate, site_sd = site_sd, sampling_s = out$sampling_s))
if (n_seeds > 1) {
  for (s in 2:n_seeds) {
    ts <- Sys.time()
    refit <- update(compiled, recompile = FALSE, chains = 2, cores = 2, iter = 2000, warmup = 1000, seed = s,
                    refresh = 0)
    te <- Sys.time()
    draws <- as_draws_df(refit)
    per_seed[[s]] <- list(seed = s, lactate = summarise_var("bsp_outcome_milactate"),
                          site_sd = summarise_var("sd_site__outcome_Intercept"),
                          sampling_s = as.numeric(difftime(te, ts, units = "secs")))
  }
}
out$seeds <- per_seed

write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_file)
cat("lactate", round(lactate$mean, 4), "site SD", round(site_sd$mean, 4), "written to", out_file, "\n")
