# The convergence record of a brms fit written beside a reference's results: the largest R-hat over all its
# parameters and the number of divergent transitions. Sourced by nested_random_slope_imputation.R and
# random_slope_binary_imputation.R (needs brms and posterior).
brms_checks <- function(fit) {
  nuts <- nuts_params(fit)
  list(max_rhat = max(summarise_draws(as_draws_array(fit), "rhat")$rhat, na.rm = TRUE),
       divergent = sum(nuts$Value[nuts$Parameter == "divergent__"]))
}
