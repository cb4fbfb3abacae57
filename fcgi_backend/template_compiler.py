"""A pystache parse tree compiled into one Python function, once per template.

pystache renders by walking its parse tree on every render: each node's ``render`` method looks up
the engine's functions and returns its piece, and ``ParsedTemplate.render`` maps a nested function
over the nodes. Here the tree becomes the source of one function that appends each piece to one
list, sections as loops within it, and the engine's functions (context lookup, missing tags,
escaping, lambdas, partials) are bound once as its globals: the steps are pystache's, in its order,
without the walk or a call per tag. A node type this module does not know is rendered by pystache.

Nothing from a template is written into the generated source: names, text and nodes are passed
as values (``_c0``, ``_c1``, ...), so any key or text compiles to the same few lines.
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
    return _Generator(engine).function(parsed)


def find(items: list, key: str, stack, resolve_context):
    """The value of a plain name: found in a dict on the stack, the top first, as pystache's
    ContextStack does (it skips other builtin values). An object on the way (attributes, methods
    called) or a name found nowhere (the missing-tags rule) is the engine's to resolve."""
    for item in reversed(items):
        kind = type(item)
        if kind is dict:
            if key in item:
                return item[key]
        elif kind.__module__ != "builtins":
            break
    return resolve_context(stack, key)


def section_items(data) -> list | object:
    """A section's truthy value as the items it repeats over (RenderEngine.fetch_section_data): a
    str, a dict or anything not iterable once; anything else item by item."""
    if isinstance(data, (str, dict)):
        return [data]
    try:
        iter(data)
    except TypeError:
        return [data]
    return data


class _Generator:
    """Writes one template's function: ``lines`` of source, ``values`` its globals."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.lines: list[str] = []
        self.values: dict[str, object] = {
            "_find": find, "_section_items": section_items, "_resolve_context": engine.resolve_context,
            "_render_value": engine._render_value, "_to_str": engine.to_str, "_str": str,
            "_callable": callable, "_escape": engine.escape, "_literal": engine.literal,
        }
        self.constants = 0
        self.depth = 0  # sections open around the line being written: each has its own item name

    def function(self, parsed: ParsedTemplate) -> Render:
        texts = [node for node in parsed._parse_tree if type(node) is str or type(node) in _SILENT]
        if len(texts) == len(parsed._parse_tree):  # text only: the text itself, joined once
            text = "".join(node for node in texts if type(node) is str)
            return lambda stack: text
        self.lines = ["def render(stack):", " items = stack._stack", " out = []", " _a = out.append"]
        self.block(parsed._parse_tree, " ")
        self.lines.append(" return ''.join(out)")
        namespace = dict(self.values)
        exec(compile("\n".join(self.lines), "<mustache template>", "exec"), namespace)
        return namespace["render"]

    def value(self, obj) -> str:
        """The name the generated source knows ``obj`` by."""
        name = f"_c{self.constants}"
        self.constants += 1
        self.values[name] = obj
        return name

    def lookup(self, key: str) -> str:
        """An expression for the value of ``key`` on the stack."""
        if key == ".":
            return "(items[-1] if items else _resolve_context(stack, '.'))"
        if "." in key:
            return f"_resolve_context(stack, {self.value(key)})"
        return f"_find(items, {self.value(key)}, stack, _resolve_context)"

    def block(self, tree, pad: str) -> None:
        text = []  # neighbouring text (and tags that render nothing) appended once
        for node in tree:
            kind = type(node)
            if kind is str:
                text.append(node)
                continue
            if kind in _SILENT:
                continue
            if text and "".join(text):
                self.lines.append(f"{pad}_a({self.value(''.join(text))})")
            text = []
            self.node(node, kind, pad)
        if text and "".join(text):
            self.lines.append(f"{pad}_a({self.value(''.join(text))})")

    def node(self, node, kind, pad: str) -> None:
        add = self.lines.append
        if kind is nodes._EscapeNode or kind is nodes._LiteralNode:
            # RenderEngine.fetch_string, then escape ({{key}}) or literal ({{{key}}}).
            finish = "_escape" if kind is nodes._EscapeNode else "_literal"
            add(f"{pad}v = {self.lookup(node.key)}")
            add(f"{pad}if v.__class__ is not _str:")
            add(f"{pad} v = _render_value(v(), stack) if _callable(v) else v if isinstance(v, _str) else _to_str(v)")
            add(f"{pad}_a({finish}(v))")
        elif kind is nodes._SectionNode:
            self.section(node, pad)
        elif kind is nodes._InvertedNode:  # rendered when the value is falsy (a lambda counts as truthy)
            add(f"{pad}if not {self.lookup(node.key)}:")
            add(f"{pad} pass")
            self.block(node.parsed_section._parse_tree, pad + " ")
        elif kind is nodes._PartialNode:
            add(f"{pad}_a({self.value(_partial(node.key, node.indent, self.engine))}(stack))")
        else:
            add(f"{pad}_a({self.value(node)}.render({self.value(self.engine)}, stack))")

    def section(self, node, pad: str) -> None:
        """{{#key}}...{{/key}}: once per item of the section's data, a lambda given the raw text;
        each item pushed on the stack in place (ContextStack.push and pop, without their calls)."""
        add = self.lines.append
        self.depth += 1
        data, item = f"d{self.depth}", f"i{self.depth}"
        raw = self.value(node.template[node.index_begin:node.index_end])
        delimiters = self.value(node.delimiters)
        add(f"{pad}{data} = {self.lookup(node.key)}")
        add(f"{pad}if {data}:")
        add(f"{pad} for {item} in ({data} if {data}.__class__ is list else _section_items({data})):")
        inner = pad + "  "
        add(f"{inner}if _callable({item}):")
        add(f"{inner} _a(_render_value({item}({raw}), stack, delimiters={delimiters}))")
        add(f"{inner} continue")
        add(f"{inner}items.append({item})")
        self.block(node.parsed._parse_tree, inner)
        add(f"{inner}items.pop()")
        self.depth -= 1


_SILENT = (nodes._CommentNode, nodes._ChangeNode)  # (delimiters change while parsing)


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
