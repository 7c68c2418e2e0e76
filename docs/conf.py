"""
Sphinx configuration of the scserver documentation.

Build with warnings as errors (as ``scripts/test.sh`` does)::

    sphinx-build -W -b html docs docs/_build/html

scserver's docstrings are written in epytext, Twisted's docstring markup
(``@param x:``, ``L{name}``, ``C{code}``), which Sphinx does not read.  The
``autodoc-process-docstring`` hook below, :func:`epytext_to_rest`, converts
them to reStructuredText before autodoc renders them: fields become reST
info fields (``:param x:``), ``L{x}`` a cross-reference, ``C{x}`` a
literal, ``I{x}`` emphasis, ``B{x}`` strong.  Docstrings already in reST
pass through unchanged.

zope ``Interface`` objects are not classes, so autodoc would not list their
methods: :class:`InterfaceDocumenter` adds the ``.. autointerface::``
directive for them.  Name each interface with it; ``automodule`` (Sphinx 9)
skips them.

The option table of the server page, ``.. scserver-options::``, is made from
``scserver.options.OPTIONS`` at build time.
"""

import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "scserver"
author = "the scserver authors"
copyright = "the scserver authors"
try:
    from importlib.metadata import version as _version

    release = _version("scserver")
except Exception:  # not installed: read it from setup.cfg
    import configparser

    _cfg = configparser.ConfigParser()
    _cfg.read(os.path.join(os.path.dirname(__file__), "..", "setup.cfg"))
    release = _cfg.get("metadata", "version", fallback="0")
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

# No intersphinx: the build must not need the network.
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
templates_path = []

autodoc_member_order = "bysource"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_typehints = "none"
# Modules that may not be importable while the docs build (none today).
autodoc_mock_imports = []

nitpicky = False


# --- epytext → reST ------------------------------------------------------

_FIELDS = {
    "param": "param",
    "type": "type",
    "keyword": "keyword",
    "kwarg": "keyword",
    "return": "returns",
    "returns": "returns",
    "rtype": "rtype",
    "returntype": "rtype",
    "raise": "raises",
    "raises": "raises",
    "exception": "raises",
    "ivar": "ivar",
    "cvar": "cvar",
    "var": "var",
    "note": "note",
    "see": "see",
    "since": "since",
    "author": "author",
    "todo": "todo",
    "warning": "warning",
    "precondition": "precondition",
    "postcondition": "postcondition",
}

# "@param name: text", "@return: text", "@raise Error: text"
_FIELD_LINE = re.compile(r"^(?P<indent>\s*)@(?P<tag>[A-Za-z]+)(?P<arg>\s+[^:]+?)?\s*:(?P<rest>.*)$")

_INLINE = {
    "L": "ref",
    "C": "literal",
    "I": "emphasis",
    "B": "strong",
    "M": "literal",
    "U": "url",
    "E": "escape",
}


def _convert_inline(text):
    """
    Convert epytext inline markup (C{L{...}}, C{C{...}} ...) in one string,
    matching nested braces.
    """
    out = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in _INLINE and i + 1 < n and text[i + 1] == "{" and not (i > 0 and text[i - 1].isalnum()):
            depth = 0
            j = i + 1
            while j < n:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j < n:
                body = text[i + 2:j]
                kind = _INLINE[c]
                if kind in ("ref", "emphasis", "strong", "url"):
                    body = _convert_inline(body)
                out.append(_render(kind, body, text[i - 1] if i > 0 else " ",
                                   text[j + 1] if j + 1 < n else " "))
                i = j + 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _render(kind, body, before, after):
    """
    One converted inline element; escaped spaces keep it apart from the
    letters around it, as reST requires.
    """
    body = " ".join(body.split())
    if kind == "escape":
        return {"lb": "{", "rb": "}"}.get(body, body)
    if not body:
        return ""
    if kind == "literal":
        if "``" in body:
            result = ":code:`{}`".format(body.replace("`", "\\`"))
        else:
            result = "``{}``".format(body)
    elif kind == "ref":
        match = re.match(r"^(.*?)\s*<([^<>]+)>$", body)
        if match and match.group(1):
            result = ":py:obj:`{} <{}>`".format(match.group(1), match.group(2))
        else:
            result = ":py:obj:`{}`".format(body)
    elif kind == "emphasis":
        result = "*{}*".format(body)
    elif kind == "strong":
        result = "**{}**".format(body)
    else:  # url
        result = "`{0} <{0}>`_".format(body) if "://" in body else body
    if before.isalnum() or before in "`*":
        result = "\\ " + result
    if after.isalnum() or after in "`*_":
        result = result + "\\ "
    return result


def _indent(line):
    return len(line) - len(line.lstrip())


def epytext_to_rest(lines):
    """
    Convert the epytext of a docstring, given as its lines, to reST, in
    place.

    Inline markup is converted over the whole text (a C{C{...}} may span
    lines).  Fields become reST info fields, with a blank line before the
    first.  A line indented less than the line before it starts a new
    paragraph, as in epytext (reST would otherwise warn that a definition
    list or block quote "ends without a blank line").

    @param lines: the docstring's lines (autodoc's list, changed in place).
    """
    text = _convert_inline("\n".join(lines))
    out = []
    in_fields = False
    for line in text.split("\n"):
        match = _FIELD_LINE.match(line)
        previous = out[-1] if out else ""
        if match and match.group("tag").lower() in _FIELDS:
            tag = _FIELDS[match.group("tag").lower()]
            arg = (match.group("arg") or "").strip()
            if previous.strip() and not in_fields:
                out.append("")
            head = ":{}{}:".format(tag, " " + arg if arg else "")
            line = "{}{}{}".format(match.group("indent"), head, match.group("rest"))
            in_fields = True
        elif not line.strip():
            in_fields = False
        elif (previous.strip() and _indent(line) < _indent(previous)
              and not (in_fields and _indent(line) > 0)):
            out.append("")
            in_fields = False
        out.append(line)
    lines[:] = out


def _process_docstring(app, what, name, obj, options, lines):
    epytext_to_rest(lines)


# --- zope interfaces ------------------------------------------------------

from sphinx.ext.autodoc import ClassDocumenter  # noqa: E402


class InterfaceDocumenter(ClassDocumenter):
    """
    Documents a zope ``Interface`` as a class with its declared methods and
    attributes (``autointerface``).
    """

    objtype = "interface"
    directivetype = "class"
    member_order = 20
    priority = ClassDocumenter.priority + 10

    @classmethod
    def can_document_member(cls, member, membername, isattr, parent):
        try:
            from zope.interface.interface import InterfaceClass
        except ImportError:
            return False
        return isinstance(member, InterfaceClass)

    def import_object(self, raiseerror=False):
        ok = super().import_object(raiseerror)
        self.doc_as_attr = False
        return ok

    def format_args(self, **kwargs):
        return ""

    def format_signature(self, **kwargs):
        return ""

    def get_object_members(self, want_all):
        return False, []

    def document_members(self, all_members=False):
        from zope.interface.interface import Method

        sourcename = self.get_sourcename()
        for name, description in self.object.namesAndDescriptions(all=False):
            self.add_line("", sourcename)
            doc = (description.getDoc() or "").expandtabs()
            if isinstance(description, Method):
                signature = description.getSignatureString()
                self.add_line(".. py:method:: {}{}".format(name, signature), sourcename)
            else:
                self.add_line(".. py:attribute:: {}".format(name), sourcename)
            self.add_line("", sourcename)
            body = _dedent_docstring(doc)
            epytext_to_rest(body)
            for line in body:
                self.add_line("   " + line if line else "", sourcename)


def _dedent_docstring(doc):
    """The lines of C{doc}, dedented as C{inspect.cleandoc} does."""
    import inspect

    return inspect.cleandoc(doc).splitlines() if doc else []


# --- the option table ------------------------------------------------------

from docutils import nodes  # noqa: E402
from docutils.statemachine import StringList  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402


def _default_text(option):
    """The default of an option, as the table shows it."""
    if option.name == "codec_engine":
        return "JSONCodec()"
    if option.name == "broker":
        return "None (in-process)"
    if option.name in ("auth_key",):
        return "None (random per process)"
    return repr(option.default)


def options_table_rows():
    """
    The rows of the option table: (option, flag, default, meaning), from
    L{scserver.options.OPTIONS}.
    """
    from scserver.options import OPTIONS

    return [(option.name, "--" + option.flag, _default_text(option), option.doc)
            for option in OPTIONS]


class OptionsTableDirective(SphinxDirective):
    """
    C{.. scserver-options::}, the table of every server option, generated
    from L{scserver.options.OPTIONS} so it cannot fall out of date.
    """

    has_content = False

    def run(self):
        def literal(text):
            return "``{}``".format(text)

        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 25 25 20 40",
            "",
            "   * - option",
            "     - twistd flag",
            "     - default",
            "     - meaning",
        ]
        for name, flag, default, doc in options_table_rows():
            lines += [
                "   * - " + literal(name),
                "     - " + literal(flag),
                "     - " + literal(default),
                "     - " + doc.replace("*", "\\*").replace("|", "\\|"),
            ]
        container = StringList(lines, source="scserver.options.OPTIONS")
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(container, self.content_offset, node)
        return node.children


def setup(app):
    app.connect("autodoc-process-docstring", _process_docstring)
    app.add_autodocumenter(InterfaceDocumenter)
    app.add_directive("scserver-options", OptionsTableDirective)
    return {"parallel_read_safe": True}
