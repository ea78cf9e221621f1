# Reference fits with lme4 for the MAR-on-history screens of hmlib.stats.longitudinal.history
# (issue #16): tests/test_longitudinal_diagnose.py (LONG-DIAG-030) checks
# missingness_history_screen against them. The rows are built here independently, in base R.
# Run from this folder:  Rscript longitudinal_history.R   (needs R with lme4 and jsonlite)
#
# Data: the real ../../data/real/cdystonia.csv (twstrs over 6 scheduled weeks, site > patient)
# and pbcseq.csv (chol at irregular days, patients only).
#
# Per patient, visits sorted by time: missing = is.na(value); last = the last observed value
# before the visit; the trailing run = missing from the visit to the patient's last visit;
# dropout event = first visit of the trailing run (not the patient's first visit).
#   dropout:      rows with `last` known and (not in the trailing run, or its first visit)
#   intermittent: rows with `last` known and not in the trailing run; event = missing
# Covariates: time since the patient's first visit and `last`, each standardised over the
# model's rows (population SD); glmer(event ~ z_time + z_last + (1 | cluster), Laplace).
# Writes longitudinal_history.json: per case the coefficients, SEs, SDs and cluster SD.
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })
source("lme4_controls.R")  # tight_glmer

history_rows <- function(d, patient, time, variable, kind) {
  d <- d[order(d[[patient]], d[[time]]), ]
  out <- lapply(split(d, d[[patient]]), function(p) {
    v <- p[[variable]]
    m <- is.na(v)
    n <- length(v)
    last <- rep(NA_real_, n)
    for (i in seq_len(n)[-1]) last[i] <- if (!m[i - 1]) v[i - 1] else last[i - 1]
    trailing <- rev(cumsum(rev(!m)) == 0)
    run_start <- trailing & c(TRUE, !trailing[-n]) & seq_len(n) > 1
    keep <- !is.na(last) & (if (kind == "dropout") (!trailing | run_start) else !trailing)
    data.frame(event = as.integer(if (kind == "dropout") run_start else m),
               time = p[[time]] - p[[time]][1], last = last,
               patient = p[[patient]], site = if ("site" %in% names(p)) p$site else p[[patient]])[keep, ]
  })
  do.call(rbind, out)
}

zpop <- function(x) (x - mean(x)) / sqrt(mean((x - mean(x))^2))

screen <- function(name, d, patient, time, variable, kind, cluster) {
  r <- history_rows(d, patient, time, variable, kind)
  r$z_time <- zpop(r$time)
  r$z_last <- zpop(r$last)
  f <- as.formula(paste("event ~ z_time + z_last + (1 |", cluster, ")"))
  m <- glmer(f, data = r, family = binomial(), control = tight_glmer)
  co <- summary(m)$coefficients
  list(name = name, kind = kind, variable = variable, cluster = cluster,
       estimate = unname(co[, 1]), std_error = unname(co[, 2]),
       sd = c(sqrt(mean((r$time - mean(r$time))^2)), sqrt(mean((r$last - mean(r$last))^2))),
       cluster_sd = as.data.frame(VarCorr(m))$sdcor, n_rows = nrow(r), n_events = sum(r$event),
       logLik = as.numeric(logLik(m)))
}

dystonia <- read.csv(file.path("..", "..", "data", "real", "cdystonia.csv"))
pbc <- read.csv(file.path("..", "..", "data", "real", "pbcseq.csv"))
cases <- list(
  screen("cdystonia_dropout", dystonia, "patient_id", "week", "twstrs", "dropout", "site"),
  screen("cdystonia_intermittent", dystonia, "patient_id", "week", "twstrs", "intermittent", "patient"),
  screen("pbcseq_intermittent", pbc, "id", "day", "chol", "intermittent", "patient")
)
# Not a case: pbcseq's dropout with a patient intercept (no site) is degenerate, SD ~18.9 in lme4
# and in hmlib alike (one event per patient at most), with SEs that mean nothing.
writeLines(toJSON(cases, auto_unbox = TRUE, digits = NA, pretty = TRUE), "longitudinal_history.json")
