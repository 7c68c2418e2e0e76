"""
Sphinx configuration of the scserver documentation.

Build it as ``scripts/test.sh`` does, with warnings as errors::

    .venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

The guide is reStructuredText, except ``reliability.md``, which is Markdown
(MyST, read by ``myst_parser``; a role is written {doc}`name` there, and
definition lists are on); the API reference is made by pydoctor, which
reads scserver's epytext docstrings and zope interfaces as they are.
``pydoctor.sphinx_ext.build_apidocs`` runs pydoctor when the HTML build
starts, writing into ``docs/_build/html/api/``, and hands its ``objects.inv``
(a local file: the build needs no network) to intersphinx, so that the guide's
``:class:`` and ``:func:`` roles link into the API pages.  Every line pydoctor
prints is a Sphinx warning, so ``-W`` makes a pydoctor warning fail the build.
To check the docstrings alone (exit status 2 or 3 on a problem)::

    .venv/bin/pydoctor --docformat=epytext --html-output=/tmp/apidocs -q -W scserver

The option table of the server page, ``.. scserver-options::``, is made from
``scserver.options.OPTIONS`` at build time.
"""

import os
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
    "sphinx.ext.intersphinx",
    "pydoctor.sphinx_ext.build_apidocs",
    # Markdown pages (reliability.md), in MyST.
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["deflist"]

exclude_patterns = ["_build"]
# furo: wide tables scroll sideways instead of running off the page.
html_theme = "furo"
html_title = "scserver " + release
html_static_path = []
templates_path = []
# Keep quotes as typed: '' (an empty message) is protocol, not prose.
smartquotes = False

# The API reference: pydoctor's HTML in api/ of the Sphinx output.
_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
pydoctor_args = [
    "--project-name=scserver",
    "--project-version=" + release,
    "--project-url=../index.html",  # the API pages link back to the guide
    "--project-base-dir=" + _ROOT,
    "--docformat=epytext",
    "--html-output={outdir}/api",
    # Sets pydoctor's exit status, which the extension ignores: it is
    # sphinx-build -W that fails on the warnings pydoctor prints.
    "--warnings-as-errors",
    os.path.join(_ROOT, "scserver"),
]
pydoctor_url_path = "api/"

# intersphinx only for pydoctor's inventory, which the extension adds as a
# local file: no inventory is fetched from the network.
intersphinx_mapping = {}

# A :class: or :func: that names nothing is a warning, hence an error;
# except names of Twisted, autobahn and zope, whose inventories would have to
# come from the network.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(twisted|autobahn|zope)(\..*)?")]


# --- the option table ------------------------------------------------------

from docutils import nodes  # noqa: E402
from docutils.statemachine import StringList  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402

# Defaults that the table shows in words rather than as the Python value.
_DEFAULT_TEXT = {
    "codec_engine": "None (JSONCodec)",
    "broker": "None (in-process)",
    "auth_key": "None (random per process)",
}


class OptionsTableDirective(SphinxDirective):
    """
    C{.. scserver-options::}: a table of every server option (name and
    twistd flag, default, meaning), made from L{scserver.options.OPTIONS}.
    """

    def run(self):
        from scserver.options import OPTIONS

        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "",
            "   * - option / twistd flag",
            "     - default",
            "     - meaning",
        ]
        for option in OPTIONS:
            default = _DEFAULT_TEXT.get(option.name, repr(option.default))
            lines += [
                "   * - ``{}``".format(option.name),
                "",
                "       ``--{}``".format(option.flag),
                "     - ``{}``".format(default),
                "     - " + option.doc.replace("*", "\\*").replace("|", "\\|"),
            ]
        node = nodes.container()
        self.state.nested_parse(StringList(lines, source="scserver.options.OPTIONS"),
                                self.content_offset, node)
        return node.children


def _make_api_dir(app, exception):
    """
    Create C{api/} in the output if Sphinx put nothing there: at the end of
    the build, C{build_apidocs} moves that directory aside before it moves
    pydoctor's output in, and fails if it is missing.
    """
    if app.builder.name == "html":
        os.makedirs(os.path.join(app.outdir, "api"), exist_ok=True)


def setup(app):
    app.add_directive("scserver-options", OptionsTableDirective)
    app.connect("build-finished", _make_api_dir, priority=400)
    return {"parallel_read_safe": True}
