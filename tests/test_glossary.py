"""The glossary and its links (issue #13: jargon without a glossary).

GLOSS-001  the first use of a term in text is linked to its definition; later uses, headings, links, code and
           table headers are left alone; overlapping terms link the longer one
GLOSS-002  every term the issue names has a definition, and the glossary lists each with its anchor
"""

from __future__ import annotations

from hmlib.report.glossary import GLOSSARY, glossary_html, how_to_read_html, link_first_uses, term_anchor


def test_gloss_001_first_uses_are_linked():
    """GLOSS-001: linking first uses, and only where a reader reads prose."""
    page = ("<h2>MAR and the latent ICC</h2><p>Values are MAR here; MAR again.</p>"
            "<table><tr><th>latent ICC</th></tr><tr><td>the latent ICC is 0.4</td></tr></table>"
            "<code>FMI</code><p>The FMI is 0.3; the ICC of x.</p>")
    out, linked = link_first_uses(page)
    assert out.count('href="#glossary-mar"') == 1 and "<h2>MAR and the latent ICC</h2>" in out
    assert '<td>the <a class="hm-term" href="#glossary-latent-icc">latent ICC</a> is 0.4</td>' in out
    assert "<th>latent ICC</th>" in out and "<code>FMI</code>" in out
    assert 'The <a class="hm-term" href="#glossary-fmi">FMI</a> is 0.3' in out
    assert 'the <a class="hm-term" href="#glossary-icc">ICC</a> of x' in out
    assert linked == ["MAR", "latent ICC", "FMI", "ICC"]


def test_gloss_002_terms_defined():
    """GLOSS-002: the terms reviewers did not know have definitions; the glossary lists them with anchors."""
    for term in ("latent ICC", "empirical Bayes", "estimand", "FMI", "R-hat", "ESS", "LKJ", "Pareto k", "2l.pan",
                 "transport check", "MAR", "MNAR", "clinically relevant difference"):
        assert term in GLOSSARY
    listing = glossary_html()
    assert all(f'id="{term_anchor(t)}"' in listing for t in GLOSSARY)
    assert "key messages" in how_to_read_html()
