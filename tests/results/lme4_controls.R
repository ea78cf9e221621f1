# Tight optimizer settings shared by the lme4 reference scripts of this folder (lme4's
# defaults stop glmer's optimizer early; parity to 1e-3 needs the optimum itself).
# Use: source("lme4_controls.R") after library(lme4).
tight_lmer <- lmerControl(optimizer = "nloptwrap",
                          optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-15, xtol_rel = 1e-14,
                                         ftol_rel = 1e-15, maxeval = 1e5))
tight_glmer <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-12,
                            optCtrl = list(rhoend = 1e-10, maxfun = 1e5))
