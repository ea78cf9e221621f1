# Last observation carried forward in a few lines of base R: the reference of LOCF-008
# (tests/test_locf_delta.py; hmlib.stats.imputation.carried_forward).
#
# A small frame with rows in random order, unequal visits per patient, a patient whose first visits
# are missing and one who never records y. Each patient's rows are sorted by time, y is carried
# forward with a running index of the last recorded row (nothing carried backward), and the result is
# put back in the input's row order. The input and the answer are written to JSON.
#
#   cd tests/results && Rscript locf_reference.R   # writes locf_reference.json
suppressPackageStartupMessages(library(jsonlite))
set.seed(20261204)
n_visits <- c(5, 3, 6, 4, 2, 5)
d <- data.frame(id = rep(seq_along(n_visits), n_visits),
                time = unlist(lapply(n_visits, function(k) sort(sample(0:20, k)))))
d$y <- round(rnorm(nrow(d), 10, 2), 2)
d$y[runif(nrow(d)) < 0.35] <- NA
d$y[d$id == 3][1:2] <- NA            # first visits missing: left missing
d$y[d$id == 5] <- NA                  # never recorded
d <- d[sample(nrow(d)), ]             # rows in random order
rownames(d) <- NULL

locf <- rep(NA_real_, nrow(d))
for (p in unique(d$id)) {
  rows <- which(d$id == p)
  rows <- rows[order(d$time[rows])]
  last <- NA_real_
  for (r in rows) {
    if (!is.na(d$y[r])) last <- d$y[r]
    locf[r] <- last
  }
}
write_json(list(input = d, locf = locf, n_left_missing = sum(is.na(locf))),
           "locf_reference.json", digits = NA, na = "null", auto_unbox = TRUE, pretty = TRUE)
