# The joint model with random slopes and a level above the patient (random_slopes: [month],
# higher_levels: [site]) in brms, with hmlib's default priors: the reference of JOINT-BRMS-RS-003.
#
# brms's mi() model, patients in sites: a random intercept per site and a correlated random intercept and
# slope on time per patient, in both submodels:
#   y ~ month + mi(x) + (1 | site) + (1 + month | patient)        (gaussian)
#   x | mi() ~ month + (1 | site) + (1 + month | patient)         (gaussian)
# (patient labels are unique across sites, so (1 + month | patient) is (1 + month | site:patient)); the
# submodels' terms independent of each other, as hmlib's; no missingness submodel (hmlib is fitted with
# missingness_model=False). As in brms_random_slopes_joint.R the data are standardised as hmlib does (y and
# month by all rows' mean and population SD, x by its observed values') and brms gets hmlib's priors on
# that scale: Normal(0, 2.5) on coefficients and intercepts, half-normal(1) on every SD (site, patient
# intercept and slope) and residual SD, LKJ(2) on the correlation. Draws are turned back to the user's
# scale draw by draw as in brms_random_slopes_joint.R; sd(site) = s_y sd_site.
#
# Data: random_slopes_sites_joint.csv (tests/test_joint_random_slopes.py, sites_parity_frame():
# hmlib.simulate.longitudinal.longitudinal_registry(17, n_sites=12, n_patients=180, n_visits=6), rows with
# y recorded, x also missing with P = expit(-2 + 0.1 month)).
#
#   cd tests/results && Rscript brms_random_slopes_sites_joint.R   # writes brms_random_slopes_sites_joint.json

suppressPackageStartupMessages({
  library(brms)
  library(posterior)
  library(jsonlite)
})
local({
  file_arg <- grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE)
  here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else getwd()
  source(file.path(here, "..", "..", "bench", "r", "stan_boost.R"))
})
use_system_boost()

args <- commandArgs(trailingOnly = TRUE)
data_file <- if (length(args) >= 1) args[1] else "random_slopes_sites_joint.csv"
out_file <- if (length(args) >= 2) args[2] else "brms_random_slopes_sites_joint.json"
iter <- if (length(args) >= 3) as.integer(args[3]) else 4000L

d <- read.csv(data_file)
d$patient <- factor(d$patient)
d$site <- factor(d$site)
pop_sd <- function(v) sqrt(mean((v - mean(v))^2))
x_obs <- d$x[!is.na(d$x)]
sc <- list(y_centre = mean(d$y), y_scale = pop_sd(d$y), month_centre = mean(d$month), month_scale = pop_sd(d$month),
           x_centre = mean(x_obs), x_scale = pop_sd(x_obs))
d$y_z <- (d$y - sc$y_centre) / sc$y_scale
d$month_z <- (d$month - sc$month_centre) / sc$month_scale
d$x_z <- (d$x - sc$x_centre) / sc$x_scale

priors <- c(
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
formula <- bf(y_z ~ month_z + mi(x_z) + (1 | site) + (1 + month_z | patient), family = gaussian()) +
  bf(x_z | mi() ~ month_z + (1 | site) + (1 + month_z | patient), family = gaussian()) + set_rescor(FALSE)

summ <- function(x) list(mean = mean(x), sd = sd(x), mcse_mean = mcse_mean(x), ess_bulk = ess_bulk(x),
                         ess_tail = ess_tail(x), rhat = rhat(x))
t0 <- proc.time()[["elapsed"]]
fit <- brm(formula, data = d, prior = priors, chains = 2, cores = 2, iter = iter, warmup = 1000, seed = 1,
           refresh = 0)
seconds <- proc.time()[["elapsed"]] - t0
draws <- as_draws_df(fit)
v <- function(name) extract_variable_matrix(draws, name)
b_month <- v("b_yz_month_z")
b_x <- v("bsp_yz_mix_z")
sd0 <- v("sd_patient__yz_Intercept")
sd1 <- v("sd_patient__yz_month_z")
r01 <- v("cor_patient__yz_Intercept__yz_month_z")
m <- sc$month_centre / sc$month_scale
var0 <- sc$y_scale^2 * (sd0^2 - 2 * m * r01 * sd0 * sd1 + m^2 * sd1^2)
cov01 <- sc$y_scale^2 / sc$month_scale * (r01 * sd0 * sd1 - m * sd1^2)
sd_slope <- sc$y_scale * sd1 / sc$month_scale
terms <- list(
  Intercept = sc$y_centre + sc$y_scale * (v("b_yz_Intercept") - b_month * m - b_x * sc$x_centre / sc$x_scale),
  month = sc$y_scale * b_month / sc$month_scale,
  x = sc$y_scale * b_x / sc$x_scale,
  `sd(site)` = sc$y_scale * v("sd_site__yz_Intercept"),
  `sd(patient)` = sqrt(var0),
  `sd(month|patient)` = sd_slope,
  `cor(month|patient)` = cov01 / (sqrt(var0) * sd_slope),
  sigma = sc$y_scale * v("sigma_yz")
)
out <- list(what = paste("brms mi() joint model, (1 | site) + (1 + month | patient) in both submodels, hmlib's",
                         "default priors, user's scale"),
            data = basename(data_file), brms_version = as.character(packageVersion("brms")),
            chains = 2, iter = iter, warmup = 1000, seed = 1, scales = sc,
            terms = lapply(terms, summ),
            run = list(seconds = seconds, divergences = sum(nuts_params(fit, pars = "divergent__")$Value)))
for (name in names(terms)) cat(sprintf("%-28s %10.4f (sd %.4f, mcse %.4f)\n", name, mean(terms[[name]]),
                                       sd(terms[[name]]), mcse_mean(terms[[name]])))
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_file)
