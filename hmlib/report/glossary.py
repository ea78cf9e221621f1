"""Plain language: the report's glossary, its "How to read this report", and links from first uses.

:data:`GLOSSARY` defines every technical term the report uses, in words a
clinical reviewer knows. :func:`link_first_uses` turns the first use of each
term in the report's text into a link to its definition (text inside links,
headings, code, tables' headers, scripts and styles is left alone), and
:func:`glossary_html` / :func:`how_to_read_html` write the two sections.
"""

from __future__ import annotations

import html
import re

__all__ = ["GLOSSARY", "glossary_html", "how_to_read_html", "link_first_uses", "term_anchor"]

#: Term -> definition (plain words; the first use of each term in the report links here).
GLOSSARY: dict[str, str] = {
    "MCAR": "Missing completely at random: whether a value is missing has nothing to do with the patient or the "
            "site. Complete-case analysis is then unbiased but wastes patients (or visits).",
    "MAR": "Missing at random: whether a value is missing can be explained by what is recorded (the other "
           "variables, the outcome, the site), but not by the missing value itself. Multiple imputation and the "
           "joint model assume MAR.",
    "MNAR": "Missing not at random: whether a value is missing depends on the value itself even after accounting "
            "for what is recorded (for example lactate not measured when it was expected to be normal). No method "
            "can test this from the data; the sensitivity analysis asks how much it would matter.",
    "complete-case analysis": "The analysis of only the patients (or, with repeated measures, the visits) "
                              "with every model variable recorded.",
    "estimand": "The quantity the analysis is meant to estimate, including the population it refers to. When "
                "complete cases differ from all patients, complete-case analysis answers a question about another "
                "population.",
    "missing-indicator model": "An analysis that fills a missing value with the mean and adds an indicator of "
                               "missingness. It keeps every patient (or visit) but is biased even under MCAR whenever "
                               "the variable is related to the other predictors; a diagnostic, not an answer.",
    "multiple imputation": "Each missing value is replaced by several plausible values drawn from a model, giving m "
                           "completed data sets; each is analysed and the results are combined by Rubin's rules, so "
                           "the uncertainty about the missing values is kept.",
    "Rubin's rules": "The rules that combine the m analyses of multiply imputed data: the average estimate, and a "
                     "variance that adds the between-imputation variance to the average within-imputation variance.",
    "multilevel imputation": "Imputation whose model has a random intercept per site (the mice 2l.pan method), so "
                             "imputed values keep the differences between sites; flat imputation ignores the sites.",
    "2l.pan": "The mice name of multilevel imputation of a continuous variable with a common residual variance "
              "across sites (2l.norm: a variance per site).",
    "random intercept": "A site's own baseline level, treated as drawn from a normal distribution of sites.",
    "random slope": "A cluster's own rate of change over a predictor such as the visit time (each patient's own "
                    "trajectory), treated as drawn from a normal distribution, correlated with the cluster's "
                    "random intercept; the report gives its SD per unit of the predictor, sd(week|patient), and the "
                    "correlation, cor(week|patient).",
    "partial pooling": "Each site's estimate is pulled towards the average of all sites, the more so the less the "
                       "site observed (shrinkage); sites with little data borrow strength from the others.",
    "empirical Bayes": "Site effects estimated with partial pooling from the fitted distribution of sites (the "
                       "shrunken conditional modes of a mixed model).",
    "latent ICC": "The share of the variation of a binary variable (on the underlying logistic scale) that lies "
                  "between sites: 0 means sites do not differ, 1 that they differ entirely.",
    "ICC": "Intraclass correlation: the share of a variable's variation that lies between sites.",
    "structural gap": "A site where a variable is never (or almost never) recorded; its values there can only be "
                      "borrowed from other sites.",
    "funnel plot": "Each site's share missing against its size, with limits that chance alone would respect; a site "
                   "outside misses more (or fewer) values than chance allows.",
    "standardised difference": "A difference in means (or shares) divided by the standard deviation; 0.1 is the "
                               "usual threshold for a material difference between two groups.",
    "FMI": "Fraction of missing information: the share of an estimate's variance due to the missing values.",
    "R-hat": "A convergence diagnostic of sampling chains: close to 1 when the chains agree; above 1.01 (joint "
             "model) or 1.1 (imputation chains) they may not have converged.",
    "ESS": "Effective sample size: how many independent draws the correlated draws of a sampler are worth; at "
           "least 400 are required here.",
    "credible interval": "The Bayesian counterpart of a confidence interval: the range holding the parameter with "
                         "95% posterior probability.",
    "LKJ": "A prior for correlation matrices (Lewandowski-Kurowicka-Joe); LKJ(2) mildly favours small correlations.",
    "Pareto k": "A diagnostic of importance reweighting: above about 0.7 the reweighted results are unreliable and "
                "the model is refitted instead.",
    "transport check": "Each site's observed values are hidden in turn and imputed from the other sites; a site "
                       "whose values are not reproduced is one the pooled imputation model does not describe.",
    "tipping point": "The smallest departure from MAR (a shift delta of the unrecorded values) that would change the "
                     "conclusion.",
    "delta adjustment": "The MNAR sensitivity analysis: imputed values are shifted by delta (in SDs of the recorded "
                        "values, or on the log-odds scale for a categorical variable) before the analysis.",
    "clinically relevant difference": "The smallest change in an effect that would matter to patients or to a "
                                      "clinical decision, stated per reported unit of the predictor (by default an "
                                      "odds ratio 1.25 times larger or smaller, or 0.1 SD of a continuous "
                                      "outcome; set by sensitivity.relevant_difference). The sensitivity analysis "
                                      "counts a scenario as changing the conclusion only when its estimate moves "
                                      "by at least this much, or moves by half of it and its 95% interval's "
                                      "answer to 'is there an effect?' changes, or the effect reverses direction "
                                      "with both intervals excluding no effect.",
    "odds ratio": "How many times the odds of the outcome are multiplied per stated unit of a predictor; 1 means no "
                  "effect.",
    "separation": "A category or combination of predictors that always or never has the outcome; its coefficient "
                  "cannot be estimated (it diverges).",
}

_SKIP_TAGS = {"a", "h1", "h2", "h3", "h4", "h5", "h6", "code", "pre", "th", "script", "style", "title", "summary",
              "figcaption", "button", "label", "option"}
_TAG = re.compile(r"(<[^>]+>)")


def term_anchor(term: str) -> str:
    """The HTML id of a term's definition (``glossary-latent-icc``)."""
    return "glossary-" + re.sub(r"[^a-z0-9]+", "-", term.lower()).strip("-")


def glossary_html(terms=None) -> str:
    """The glossary section's definition list (every term, or those given)."""
    items = "".join(f'<dt id="{term_anchor(t)}">{html.escape(t)}</dt><dd>{html.escape(GLOSSARY[t])}</dd>'
                    for t in sorted(terms or GLOSSARY, key=str.lower))
    return f'<dl class="hm-glossary">{items}</dl>'


def how_to_read_html() -> str:
    """The short "How to read this report" section."""
    paragraphs = [
        "Start with the key messages: the recommended analysis, the effect on the clinical scale, how much the "
        "methods disagree, who is left out and how robust the conclusion is, with one word for the strength of "
        "the evidence.",
        "Sections 1 and 2 describe the problem: where values are missing, whether that depends on the site, and "
        "what analysing only complete cases would do to the population studied. Sections 3 and 4 compare the ways "
        "of handling the missing values; section 5 asks how far the conclusion depends on their assumptions.",
        "Every number is computed from this report's data and written by the software; counts below the "
        "small-cell threshold are never shown. Terms in blue link to the glossary at the end; methods flagged "
        "NOT CONVERGED or NOT ESTIMABLE must not be reported.",
    ]
    return "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


def _pattern(term: str) -> re.Pattern:
    flags = 0 if term.isupper() or term in {"MAR", "MNAR", "MCAR", "ICC", "FMI", "ESS", "LKJ"} else re.IGNORECASE
    return re.compile(rf"(?<![\w-]){re.escape(term)}(?![\w-])", flags)


def link_first_uses(page: str, start_marker: str = "", stop_marker: str = "") -> tuple[str, list]:
    """Link the first use of each glossary term in ``page``'s text to its definition.

    Parameters
    ----------
    page : str
        HTML.
    start_marker, stop_marker : str
        Only text between these substrings is linked (e.g. after the contents and before the glossary); the
        whole page when empty.

    Returns
    -------
    (str, list)
        The page, and the terms linked (in order of first use).
    """
    begin = page.find(start_marker) if start_marker else 0
    end = page.find(stop_marker, begin) if stop_marker else -1
    begin = max(begin, 0)
    end = len(page) if end < 0 else end
    head, body, tail = page[:begin], page[begin:end], page[end:]
    remaining = {t: _pattern(t) for t in sorted(GLOSSARY, key=len, reverse=True)}
    linked: list = []
    stack: list = []
    out = []
    for part in _TAG.split(body):
        if part.startswith("<") and part.endswith(">"):
            name = re.match(r"</?\s*([a-zA-Z0-9]+)", part)
            if name:
                tag = name.group(1).lower()
                if part.startswith("</"):
                    if tag in stack:
                        del stack[len(stack) - 1 - stack[::-1].index(tag):]
                elif not part.endswith("/>") and tag in _SKIP_TAGS:
                    stack.append(tag)
            out.append(part)
            continue
        if stack or not part.strip():
            out.append(part)
            continue
        pos, pieces = 0, []
        while remaining:
            best = None
            for term, pattern in remaining.items():
                match = pattern.search(part, pos)
                if match and (best is None or match.start() < best[1].start()):
                    best = (term, match)
            if best is None:
                break
            term, match = best
            pieces += [part[pos:match.start()], f'<a class="hm-term" href="#{term_anchor(term)}">{match.group(0)}</a>']
            pos = match.end()
            linked.append(term)
            del remaining[term]
        out.append("".join(pieces) + part[pos:])
    return head + "".join(out) + tail, linked
