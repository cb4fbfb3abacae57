"""A pystache parse tree compiled into closures, once per template.

pystache renders by walking its parse tree on every render: each node's ``render`` method looks up
the engine's functions and returns its piece, and ``ParsedTemplate.render`` maps a nested function
over the nodes. The closures here take the same steps, in the same order, with the same engine
functions (context lookup, missing tags, escaping, lambdas, partials), bound once: the output is
pystache's own, without the walk. A node type this module does not know is rendered by pystache.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable

from pystache import parser as nodes
from pystache.parsed import ParsedTemplate

Render = Callable[[object], str]  # a ContextStack in, the rendered text out


def compile_template(parsed: ParsedTemplate, engine) -> Render:
    """A function of a context stack that renders ``parsed`` as ``parsed.render(engine, stack)`` does."""
    pieces: list[str | Render] = []
    for node in parsed._parse_tree:
        piece = _compile_node(node, engine)
        if isinstance(piece, str) and pieces and isinstance(pieces[-1], str):
            pieces[-1] += piece  # neighbouring text, and tags that render nothing, joined once
        elif piece != "":
            pieces.append(piece)
    if not pieces:
        return lambda stack: ""
    if len(pieces) == 1:
        only = pieces[0]
        return (lambda stack: only) if isinstance(only, str) else only
    parts = tuple(pieces)

    def render(stack) -> str:
        return "".join([part if part.__class__ is str else part(stack) for part in parts])
    return render


def _compile_node(node, engine) -> str | Render:
    kind = type(node)
    if kind is str:
        return node
    if kind in (nodes._CommentNode, nodes._ChangeNode):  # (delimiters change while parsing)
        return ""
    if kind is nodes._EscapeNode:
        return _interpolation(node.key, engine, engine.escape)
    if kind is nodes._LiteralNode:
        return _interpolation(node.key, engine, engine.literal)
    if kind is nodes._SectionNode:
        return _section(node, engine)
    if kind is nodes._InvertedNode:
        return _inverted(node.key, compile_template(node.parsed_section, engine), engine)
    if kind is nodes._PartialNode:
        return _partial(node.key, node.indent, engine)
    return lambda stack: node.render(engine, stack)


def _resolver(key: str, engine) -> Callable[[object], object]:
    """The engine's context lookup for ``key``, walking plain dicts itself: a plain name found in
    a dict on the stack, the top first, as pystache's ContextStack does (it skips other builtin
    values). An object on the way (attributes, methods called), a dotted name or a name found
    nowhere (the missing-tags rule) is the engine's to resolve."""
    full = engine.resolve_context
    if key == ".":
        return lambda stack: stack._stack[-1] if stack._stack else full(stack, key)
    if "." in key:
        return lambda stack: full(stack, key)

    def resolve(stack):
        for item in reversed(stack._stack):
            kind = type(item)
            if kind is dict:
                if key in item:
                    return item[key]
            elif kind.__module__ != "builtins":
                break
        return full(stack, key)
    return resolve


def _interpolation(key: str, engine, finish) -> Render:
    """{{key}} (finish = escape) or {{{key}}} (finish = literal): RenderEngine.fetch_string, then finish."""
    resolve, to_str, render_value = _resolver(key, engine), engine.to_str, engine._render_value

    def tag(stack) -> str:
        value = resolve(stack)
        if callable(value):
            return finish(render_value(value(), stack))
        if not isinstance(value, str):
            value = to_str(value)
        return finish(value)
    return tag


def _section(node, engine) -> Render:
    """{{#key}}...{{/key}}: once per item of the section's data, a lambda given the raw text."""
    resolve, inner, render_value = _resolver(node.key, engine), compile_template(node.parsed, engine), \
        engine._render_value
    raw, delimiters = node.template[node.index_begin:node.index_end], node.delimiters

    def section(stack) -> str:
        data = resolve(stack)  # then as RenderEngine.fetch_section_data: falsy, one item, or a list
        if not data:
            return ""
        if isinstance(data, (str, dict)):
            data = [data]
        else:
            try:
                iter(data)
            except TypeError:
                data = [data]
        parts = []
        items = stack._stack  # (pushed and popped in place: ContextStack.push and pop, without their calls)
        for value in data:
            if callable(value):
                parts.append(render_value(value(raw), stack, delimiters=delimiters))
                continue
            items.append(value)
            parts.append(inner(stack))
            items.pop()
        return "".join(parts)
    return section


def _inverted(key: str, inner: Render, engine) -> Render:
    """{{^key}}...{{/key}}: rendered when the value is falsy (a lambda counts as truthy)."""
    resolve = _resolver(key, engine)

    def inverted(stack) -> str:
        return "" if resolve(stack) else inner(stack)
    return inverted


def _partial(key: str, indent: str, engine) -> Render:
    """{{>key}}: the partial's text, looked up at each render (it may change), indented as the tag."""
    resolve_partial, render = engine.resolve_partial, engine.render

    def partial(stack) -> str:
        template = resolve_partial(key)
        return render(_indented(template, indent) if indent else template, stack)
    return partial


@lru_cache(maxsize=256)
def _indented(template: str, indent: str) -> str:
    return re.sub(nodes.NON_BLANK_RE, indent + r"\1", template)
