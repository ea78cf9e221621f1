# Boost's headers for rstan, without linking anything by hand.
#
# rstan compiles a Stan model with -I"<rstan_options('boost_lib')>" and refuses
# to start ("Boost not found; call install.packages('BH')") when that folder
# does not exist. Its default is the include folder of the R package BH, which
# Debian's r-cran-bh (a virtual package) does not ship: the headers come with
# libboost-dev in /usr/include. use_system_boost() leaves a working boost_lib
# alone; otherwise it points boost_lib at a private folder (in the R session's
# temporary directory) holding one link, boost -> <system include>/boost, so
# /usr/include itself is never put on the -I path (that breaks the C++ library's
# #include_next). Source this file and call use_system_boost() before brm() or
# stan_model().

use_system_boost <- function(roots = c("/usr/include", "/usr/local/include", "/opt/homebrew/include")) {
  has_boost <- function(dir) nzchar(dir) && file.exists(file.path(dir, "boost", "version.hpp"))
  current <- rstan::rstan_options("boost_lib")
  if (has_boost(current)) return(invisible(current))
  for (root in roots) {
    if (has_boost(root)) {
      folder <- file.path(tempdir(), "boost_include")
      dir.create(folder, showWarnings = FALSE)
      if (!file.exists(file.path(folder, "boost"))) file.symlink(file.path(root, "boost"), file.path(folder, "boost"))
      rstan::rstan_options(boost_lib = folder)
      message("rstan: Boost headers from ", root, " (BH ships none here)")
      return(invisible(folder))
    }
  }
  stop("Boost headers not found: install.packages('BH'), or the system's Boost headers ",
       "(Debian: apt-get install libboost-dev)")
}
