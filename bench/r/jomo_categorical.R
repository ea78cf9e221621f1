# jomo.glmer (substantive-model-compatible multilevel imputation) on a registry with an incomplete
# three-level band, then glmer per imputed data set pooled by Rubin's rules: the R counterpart of
# hmlib's joint model with a categorical predictor summed out (bench/bench_joint_categorical.py).
#
#   Rscript bench/r/jomo_categorical.R data.csv out.json [m] [nburn] [nbetween]
#
# Timing: proc.time() elapsed inside R, imputation and the pooled analysis (package loading excluded).

suppressPackageStartupMessages({
  library(jomo)
  library(lme4)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
data_file <- args[1]
out_file <- args[2]
m <- if (length(args) >= 3) as.integer(args[3]) else 20L
nburn <- if (length(args) >= 4) as.integer(args[4]) else 1000L
nbetween <- if (length(args) >= 5) as.integer(args[5]) else 200L
levels_band <- c("normal", "raised", "high")

d <- read.csv(data_file, na.strings = "")
# jomo reads the number of categories from numeric factor labels: normal, raised, high -> 1, 2, 3
d$band <- factor(match(d$band, levels_band), levels = 1:3)
# the cluster stays numeric: jomo.glmer 2.7-4 loses the category counts when it is a factor
set.seed(2026)
start <- proc.time()[["elapsed"]]
imp <- jomo.glmer(outcome ~ age + severity + band + (1 | site),
                  data = d[, c("site", "outcome", "age", "severity", "band")], level = c(1, 1, 1, 1, 1),
                  nburn = nburn, nbetween = nbetween, nimp = m, output = 0)
imp_seconds <- proc.time()[["elapsed"]] - start
terms <- c("age", "severity", "band2", "band3")
fits <- lapply(seq_len(m), function(i) {
  di <- imp[imp$Imputation == i, ]
  di$band <- factor(di$band, levels = 1:3)
  glmer(outcome ~ age + severity + band + (1 | clus), data = di, family = binomial)
})
est <- sapply(fits, function(f) fixef(f)[terms])
var <- sapply(fits, function(f) diag(as.matrix(vcov(f)))[terms])
qbar <- rowMeans(est)
total <- rowMeans(var) + (1 + 1 / m) * apply(est, 1, stats::var)
result <- list(
  m = m, nburn = nburn, nbetween = nbetween, seconds_imputation = imp_seconds,
  seconds_total = proc.time()[["elapsed"]] - start,
  terms = setNames(lapply(seq_along(terms), function(k) list(estimate = qbar[[k]], std_error = sqrt(total[[k]]))),
                   c("age", "severity", "band[raised]", "band[high]")),
  site_sd = mean(sapply(fits, function(f) attr(VarCorr(f)$clus, "stddev"))),
  versions = list(R = R.version.string, jomo = as.character(packageVersion("jomo")),
                  lme4 = as.character(packageVersion("lme4"))))
write_json(result, out_file, auto_unbox = TRUE, digits = NA, pretty = TRUE)
