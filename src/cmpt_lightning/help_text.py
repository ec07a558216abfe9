"""Help pages that read as plain text: no reStructuredText markup, no sentence cut short.

The help of every option comes from a docstring, ours or Lightning's, written in
reStructuredText for Sphinx. :func:`use_plain_help` gives every parser of the ``cmpt`` tree a
formatter that renders ````x````, ``:class:`~a.b.C``` and ```text <url>`_`` as `x`, `C` and
``text (url)`` before the text is wrapped; :func:`complete_descriptions` replaces a
subcommand's description that Lightning cut at the end of its docstring's first line (``cmpt
test``: "... to make sure you never run on your") by the whole first paragraph.
Imports nothing heavy (the help pages are rendered without PyTorch when they are cached).
"""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["complete_descriptions", "plain_markup", "use_plain_help"]

#: ``:role:`target``` (``~`` keeps the target's last dotted name), e.g. :class:`~a.b.C`.
_ROLE = re.compile(r":[a-z]+:`(~?)([^`<]+?)(?:\s*<[^`>]*>)?`")
#: ```text <url>`_`` (a link).
_LINK = re.compile(r"`([^`<]+?)\s*<([^`>]+)>`__?")
#: ````literal````.
_LITERAL = re.compile(r"``(.+?)``", re.S)
#: A Google-style docstring section: a description ends before it (the options list the args).
_SECTION = re.compile(r"^[ \t]*(?:Args|Attributes|Raises|Returns|Yields|Examples?):[ \t]*$", re.M)


def plain_markup(text: str) -> str:
    """``text`` without reStructuredText markup: literals and roles in single backquotes.

    Examples:
        >>> plain_markup("``local``, :class:`~cmpt_lightning.TestGrid` or :func:`torch.no_grad`")
        '`local`, `TestGrid` or `torch.no_grad`'
        >>> plain_markup("see `the docs <https://example.org>`_")
        'see the docs (https://example.org)'
    """

    def role(match: re.Match[str]) -> str:
        target = match.group(2)
        return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"

    text = _ROLE.sub(role, text)
    text = _LINK.sub(r"\1 (\2)", text)
    return _LITERAL.sub(r"`\1`", text)


_PLAIN: dict[type, type] = {}


def _plain_formatter(base: type[argparse.HelpFormatter]) -> type[argparse.HelpFormatter]:
    """``base`` with :func:`plain_markup` applied to help, descriptions and section titles.

    A description (a class docstring, for ``cmpt data check <family>``) also loses its
    ``Args:`` and other Google-style sections: the options below it say the same, one by one.
    """
    if base not in _PLAIN:

        class Plain(base):  # type: ignore[valid-type,misc]
            def _split_lines(self, text: str, width: int) -> list[str]:
                return list(super()._split_lines(plain_markup(text), width))

            def _fill_text(self, text: str, width: int, indent: str) -> str:
                text = _SECTION.split(text, 1)[0].rstrip()  # a class docstring's Args: go
                return str(super()._fill_text(plain_markup(text), width, indent))

            def start_section(self, heading: str | None) -> None:
                super().start_section(None if heading is None else plain_markup(heading))

        Plain.__name__ = Plain.__qualname__ = f"Plain{base.__name__}"
        _PLAIN[base] = Plain
    return _PLAIN[base]


def _parsers(parser: Any) -> Iterator[Any]:
    """``parser`` and every subcommand parser below it."""
    yield parser
    action = getattr(parser, "_subcommands_action", None)
    for sub in dict.fromkeys(getattr(action, "choices", {}).values()):
        yield from _parsers(sub)


def use_plain_help(parser: Any) -> None:
    """Give ``parser`` and its subcommand parsers formatters that print no RST markup."""
    for each in _parsers(parser):
        if each.formatter_class not in _PLAIN.values():
            each.formatter_class = _plain_formatter(each.formatter_class)


def _first_paragraph(function: Callable[..., Any]) -> str | None:
    """The first paragraph of ``function``'s docstring, on one line."""
    doc = inspect.getdoc(function)
    return " ".join(doc.split("\n\n", 1)[0].split()) if doc else None


def complete_descriptions(parser: Any, methods: Mapping[str, Callable[..., Any]]) -> None:
    """Undo the cut of subcommand descriptions at the end of their docstring's first line.

    Lightning describes ``fit``, ``test``, ... by the first *line* of the Trainer method's
    docstring, which can end mid-sentence. Such a description becomes, on the subcommand's
    page, the docstring's first paragraph, and in its arguments' section title and its line
    in the parent's list, the paragraph's first sentence.

    Args:
        parser: the parser holding the subcommands.
        methods: subcommand name -> the method it runs (e.g. ``Trainer.test``).
    """
    action = parser._subcommands_action
    for name, method in methods.items():
        sub, full = action.choices.get(name), _first_paragraph(method)
        first_line = (inspect.getdoc(method) or "").split("\n", 1)[0].strip()
        if sub is None or not full or full == first_line:
            continue
        sub.description = full
        sentence = full.split(". ", 1)[0].rstrip(".") + "."
        for group in sub._action_groups:
            if group.title == first_line.rstrip("."):  # argparse adds the colon
                group.title = sentence.rstrip(".")
        for choice in action._choices_actions:
            if choice.dest == name:
                choice.help = sentence
