"""Author-year citations whose text is the bibliography's label, with a/b for same-year papers.

sphinxcontrib-bibtex's ``author_year`` style prints the year as it is in the .bib file, so two
papers of the same first author and year (S4 and S4D, Gu et al. 2022) both print
"Gu et al., 2022", and the bibliography lists them under labels of another style ("GGR22").
This extension registers

- a pybtex label style ``author_year``: "Gu", "Gu and Dao" or "Gu et al.", a comma and the
  year, with "a", "b", ... appended when two entries of one bibliography would share a label;
- a pybtex formatting style ``author_year`` (pybtex's ``unsrt`` sorted by author, year and
  title, with those labels, and one link per entry where unsrt links an arXiv paper twice,
  by its URL and its eprint), set as ``bibtex_default_style`` in _config.yml;
- a referencing style ``author_year_label`` (``bibtex_reference_style``): ``{cite:p}`` prints
  the label, so "[Gu et al., 2022a]" in the text is "[Gu et al., 2022a]" in the bibliography,
  ``{cite:t}`` prints "Gu et al. [2022a]" and ``{cite:year}`` "2022a".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pybtex.plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.template import first_of, node, optional, sentence
from sphinxcontrib.bibtex.plugin import register_plugin
from sphinxcontrib.bibtex.style.referencing import (
    BracketStyle,
    GroupReferenceStyle,
    PersonStyle,
)
from sphinxcontrib.bibtex.style.referencing.basic_label import (
    BasicLabelParentheticalReferenceStyle,
    BasicLabelTextualReferenceStyle,
)
from sphinxcontrib.bibtex.style.referencing.extra_author import ExtraAuthorReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_empty import ExtraEmptyReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_label import ExtraLabelReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_year import ExtraYearReferenceStyle
from sphinxcontrib.bibtex.style.template import join, join2, post_text, pre_text, reference

NAME = "author_year"
LABEL_SEP = ", "


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels "Van Loan, 1978", "Gu and Dao, 2023", "Gu et al., 2022a" / "Gu et al., 2022b"."""

    def format_labels(self, sorted_entries):
        labels = [self.format_label(entry) for entry in sorted_entries]
        count, seen = Counter(labels), Counter()
        for label in labels:
            if count[label] == 1:
                yield label
            else:
                yield label + chr(ord("a") + seen[label])
                seen[label] += 1

    def format_label(self, entry) -> str:
        persons = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [
            " ".join(part.render_as("text") for part in p.rich_prelast_names + p.rich_last_names)
            for p in persons
        ]
        if not names:
            who = Text.from_latex(entry.fields.get("title", entry.key)).render_as("text")
        elif len(names) == 1:
            who = names[0]
        elif len(names) == 2:
            who = f"{names[0]} and {names[1]}"
        else:
            who = f"{names[0]} et al."
        return f"{who}{LABEL_SEP}{entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(UnsrtStyle):
    """pybtex's unsrt entries, sorted by author, year and title, labelled by author and year."""

    default_sorting_style = "author_year_title"
    default_label_style = AuthorYearLabelStyle

    def format_web_refs(self, e):
        """One link per entry: the arXiv page, else the DOI, else the URL (unsrt prints all)."""
        return sentence[
            first_of[
                optional[self.format_eprint(e)],
                optional[self.format_doi(e)],
                optional[self.format_url(e)],
            ]
        ]


@node
def label_year(children, data):
    """The year part of the entry's label, with its letter: ``2022a``."""
    assert not children
    return Text(data["formatted_entry"].label.rpartition(LABEL_SEP)[2])


@dataclass
class _TextualStyle(BasicLabelTextualReferenceStyle):
    """``{cite:t}``: "Gu et al. [2022a]"."""

    def inner(self, role_name: str):
        return join(sep=self.text_reference_sep)[
            self.person.author_or_editor_or_title(full="s" in role_name),
            join[
                self.bracket.left,
                join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[
                    pre_text, reference[label_year], post_text
                ],
                self.bracket.right,
            ],
        ]


@dataclass
class _YearStyle(ExtraYearReferenceStyle):
    """``{cite:year}``: "2022a"."""

    def inner(self, role_name: str):
        return reference[label_year]


@dataclass
class AuthorYearLabelReferenceStyle(GroupReferenceStyle):
    """``{cite:p}`` prints the label: "[Gu et al., 2022a; Gupta et al., 2022]"."""

    bracket: BracketStyle = field(default_factory=lambda: BracketStyle(sep="; "))
    person: PersonStyle = field(default_factory=PersonStyle)

    def __post_init__(self):
        self.styles.extend(
            [
                BasicLabelParentheticalReferenceStyle(bracket=self.bracket),
                _TextualStyle(bracket=BracketStyle(), person=self.person),
                ExtraAuthorReferenceStyle(bracket=BracketStyle(), person=self.person),
                ExtraLabelReferenceStyle(bracket=self.bracket),
                _YearStyle(bracket=BracketStyle()),
                ExtraEmptyReferenceStyle(),
            ]
        )
        super().__post_init__()


def setup(app):
    pybtex.plugin.register_plugin("pybtex.style.formatting", NAME, AuthorYearStyle)
    register_plugin(
        "sphinxcontrib.bibtex.style.referencing", "author_year_label", AuthorYearLabelReferenceStyle
    )
    return {"parallel_read_safe": True, "parallel_write_safe": True}
