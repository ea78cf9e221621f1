# The MNAR delta after dropout in a few lines of base R: the reference of DELTA-008
# (tests/test_locf_delta.py; hmlib.stats.dropout_delta.shift_after_dropout, both forms).
#
# A small frame with rows in random order, unequal visits per patient, intermittent gaps, a patient
# who never records y and one who records it at the last visit. Each patient's rows are sorted by
# time; the post-dropout cells are the missing values after the patient's last recorded y (none for
# a patient who never records it; gaps before a recorded value are intermittent and not shifted).
# A completed data set (the missing values filled with 100 + row number, as an imputation would) is
# shifted by delta = -1.5: the same on every post-dropout cell ("constant"), or delta times the time
# since the last recorded visit ("growing"). The input, the completed column and both answers are
# written to JSON.
#
#   cd tests/results && Rscript dropout_delta_reference.R   # writes dropout_delta_reference.json
suppressPackageStartupMessages(library(jsonlite))
set.seed(20261206)
n_visits <- c(6, 4, 5, 3, 6, 4)
d <- data.frame(id = rep(seq_along(n_visits), n_visits),
                time = unlist(lapply(n_visits, function(k) sort(sample(0:24, k)))))
d$y <- round(rnorm(nrow(d), 10, 2), 2)
d$y[runif(nrow(d)) < 0.3] <- NA
d$y[d$id == 2] <- NA                  # never recorded: not shifted
d$y[d$id == 3][5] <- 9.5              # records at the last visit: no dropout
d$y[d$id == 5][4:6] <- NA             # drops out after visit 3 ...
d$y[d$id == 5][1:3] <- c(9, NA, 11)   # ... with an intermittent gap before
d <- d[sample(nrow(d)), ]             # rows in random order
rownames(d) <- NULL

completed <- ifelse(is.na(d$y), 100 + seq_len(nrow(d)), d$y)
delta <- -1.5
post <- rep(FALSE, nrow(d))
since <- rep(NA_real_, nrow(d))
for (p in unique(d$id)) {
  rows <- which(d$id == p)
  rows <- rows[order(d$time[rows])]
  recorded <- rows[!is.na(d$y[rows])]
  if (length(recorded) == 0) next
  last <- recorded[which.max(d$time[recorded])]
  after <- rows[d$time[rows] > d$time[last]]
  post[after] <- TRUE
  since[after] <- d$time[after] - d$time[last]
}
constant <- completed + ifelse(post, delta, 0)
growing <- completed + ifelse(post, delta * since, 0)
write_json(list(input = d, completed = completed, delta = delta, post_dropout = post, constant = constant,
                growing = growing, n_post_dropout = sum(post)),
           "dropout_delta_reference.json", digits = NA, na = "null", auto_unbox = TRUE, pretty = TRUE)
