"""Compiled templates (template_compiler.py) render exactly what pystache renders."""

import re
from pathlib import Path

import pystache
import pytest

from fcgi_backend.views import ViewCache, split_pragma

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = sorted(p for folder in ("examples", "bench", "tests", "docs") for p in (REPO / folder).rglob("*.mustache"))


class Person:
    """An object on the context stack: attributes, and a method pystache calls."""

    def __init__(self, name):
        self.name = name

    def greeting(self):
        return f"Hi <{self.name}>"


class Marked(str):
    """A str subclass (as markupsafe's Markup is): escaped by the renderer's own rule."""


def stock_render(template: str, values, partials: dict | None = None) -> str:
    return pystache.Renderer(missing_tags="ignore", partials=partials or {}).render(template, values)


def compiled_render(tmp_path: Path, template: str, values, partials: dict | None = None) -> str:
    webroot = tmp_path / "webroot"
    webroot.mkdir(exist_ok=True)
    for name, text in (partials or {}).items():
        (webroot / f"{name}.mustache").write_text(text)
    (webroot / "t.mustache").write_text(template)
    views = ViewCache(webroot)
    return views.render(views.locate("/t"), values)


CASES = {
    "text only": ("just text\n", {}),
    "escaped and raw": ("{{a}} {{{a}}} {{&a}}", {"a": "<b> & \"q\" 'x'"}),
    "missing tags": ("[{{nope}}][{{#nope}}x{{/nope}}][{{^nope}}none{{/nope}}]", {}),
    "non-strings": ("{{n}} {{f}} {{t}} {{none}} {{lst}}", {"n": 0, "f": 1.5, "t": True, "none": None, "lst": [1, 2]}),
    "list section with dot": ("{{#items}}<{{.}}>{{/items}}", {"items": ["a", "<b>", 3]}),
    "dict and truthy sections": ("{{#d}}{{k}}{{/d}}|{{#s}}{{.}}{{/s}}|{{#t}}yes{{/t}}|{{#z}}no{{/z}}",
                                 {"d": {"k": "v"}, "s": "str", "t": 1, "z": 0}),
    "outer names from inside": ("{{#rows}}{{x}}-{{title}};{{/rows}}", {"title": "T", "rows": [{"x": 1}, {"x": 2, "title": "own"}]}),
    "builtins on the stack are skipped": ("{{#items}}{{title}}{{/items}}", {"title": "T", "items": [1, "s", [0]]}),
    "dotted names": ("{{a.b.c}} {{#a}}{{b.c}}{{/a}} {{a.x.y}}", {"a": {"b": {"c": "deep"}}}),
    "objects and methods": ("{{#p}}{{name}}: {{greeting}}{{/p}} {{p.name}} {{name}}", {"p": Person("Ann"), "name": "outer"}),
    "inverted": ("{{^e}}empty{{/e}}{{^l}}no list{{/l}}{{^v}}hidden{{/v}}", {"e": "", "l": [], "v": "x"}),
    "lambda value": ("{{f}}|{{{f}}}", {"f": lambda: "<{{x}}>", "x": "X"}),
    "lambda section": ("{{#wrap}}Hi {{name}}{{/wrap}}", {"wrap": lambda text: f"<b>{text}</b>", "name": "N"}),
    "delimiters changed": ("{{=<% %>=}}<% a %> {{a}} <%={{ }}=%>{{a}}", {"a": "A"}),
    "comments": ("a{{! a comment }}b", {}),
    "str subclass": ("{{m}}", {"m": Marked("<i>")}),
    "nested lists": ("{{#outer}}[{{#inner}}{{.}}{{/inner}}]{{/outer}}", {"outer": [{"inner": [1, 2]}, {"inner": []}]}),
    "unicode": ("{{a}} ü €", {"a": "é<>"}),
    # What the generated function must spell right: any key or text, loops within loops.
    "keys that are no Python names": ("{{class}} {{a-b}} {{1x}} {{a'b}} {{#for}}{{in}}{{/for}}",
                                      {"class": "c", "a-b": "h", "1x": "d", "a'b": "q", "for": [{"in": "i"}]}),
    "text with quotes, backslashes and line ends": ("'\"\\n\\\\ {{a}}\n'''\"\"\"\n", {"a": "\\"}),
    "tuple, range and truthy object sections": (
        "{{#t}}{{.}}{{/t}}|{{#g}}{{.}}{{/g}}|{{#o}}{{name}}{{/o}}|{{#n}}{{.}}{{/n}}",
        {"t": ("a", "b"), "g": range(2, 4), "o": Person("P"), "n": 7}),
    "lambdas among a list's items": ("{{#items}}[{{.}}]{{/items}}", {"items": ["a", lambda text: "L" + text, "b"]}),
    "the same name nested three deep": ("{{#a}}({{#a}}({{#a}}{{v}}{{/a}}){{/a}}){{/a}}",
                                        {"a": [{"a": [{"a": [{"v": 1}, {"v": 2}], "v": 0}]}]}),
    "sibling and empty sections": ("{{#x}}{{/x}}{{#x}}1{{/x}}{{#y}}2{{/y}}{{^x}}{{/x}}{{^y}}{{#x}}3{{/x}}{{/y}}",
                                   {"x": [1, 2], "y": []}),
}


@pytest.mark.parametrize("name", CASES)
def test_each_kind_of_tag_renders_as_pystache_renders_it(tmp_path, name):
    template, values = CASES[name]
    assert compiled_render(tmp_path, template, values) == stock_render(template, values)


def test_partials_render_with_their_indentation(tmp_path):
    partials = {"row": "<li>{{.}}</li>\n<li>again</li>\n", "empty": ""}
    template = "<ul>\n  {{>row}}\n{{#items}}{{>row}}{{/items}}{{>empty}}{{>missing}}</ul>\n"
    values = {"items": ["a", "b"]}
    assert compiled_render(tmp_path, template, values, partials) == stock_render(template, values, partials)


def values_for(template: str) -> dict:
    """A value for every name a template uses: text that needs escaping, or a list of two items
    holding the same names for a section."""
    names = set(re.findall(r"\{\{\{?[&#^]?\s*([\w.]+)", template))
    item = {name: f"<{name}> & 'x'" for name in names}
    sections = set(re.findall(r"\{\{[#^]\s*([\w.]+)", template))
    values = dict(item)
    for name in sections:
        values[name] = [dict(item), dict(item, **{name: ""})]
    return values


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_template_in_the_repository_renders_as_pystache_renders_it(path):
    webroot = next(parent for parent in path.parents if parent.name == "webroot")
    views = ViewCache(webroot)
    view = views.load_name(str(path.relative_to(webroot)))
    _, source = split_pragma(path.read_text())
    partials = {p.relative_to(webroot).as_posix()[:-len(".mustache")]: split_pragma(p.read_text())[1]
                for p in webroot.rglob("*.mustache")}
    values = values_for(source + "".join(partials.values()))
    assert views.render(view, values) == stock_render(source, values, partials)


def test_the_repository_has_templates_to_compare():
    assert len(TEMPLATES) >= 10


def random_template(rng, depth: int = 0) -> str:
    """Text and tags of every kind, sections nesting up to three deep, over a few names."""
    pieces = []
    for _ in range(rng.randint(0, 6)):
        name = rng.choice(["a", "b", "list", ".", "a.b", "obj", "f", "gone"])
        kind = rng.randrange(7 if depth < 3 else 4)
        if kind == 0:
            pieces.append(rng.choice(["x", " <&> ", "\n", "'\"\\", "ü"]))
        elif kind == 1:
            pieces.append(f"{{{{{name}}}}}")
        elif kind == 2:
            pieces.append(f"{{{{{{{name}}}}}}}")
        elif kind == 3:
            pieces.append("{{! note }}")
        else:
            name = name if name != "." else "list"
            sigil = "^" if kind == 6 else "#"
            pieces.append(f"{{{{{sigil}{name}}}}}{random_template(rng, depth + 1)}{{{{/{name}}}}}")
    return "".join(pieces)


def random_values(rng, depth: int = 0):
    """A dict of the names random_template uses: text, numbers, lists of dicts and of plain
    values, an object, lambdas, falsy values."""
    def value(level):
        choice = rng.randrange(8 if level < 3 else 4)
        if choice == 0:
            return rng.choice(["", "<b>", "t&t", "plain"])
        if choice == 1:
            return rng.choice([0, 1, 2.5, None, True, False])
        if choice == 2:
            return Person(rng.choice(["Ann", "<Bo>"]))
        if choice == 3:
            return rng.choice([lambda: "{{a}}!", lambda text: f"<{text}>"])
        if choice in (4, 5):
            return [entry(level + 1) for _ in range(rng.randint(0, 3))]
        if choice == 6:
            return [rng.choice(["i", 3, None]) for _ in range(rng.randint(0, 3))]
        return entry(level + 1)

    def entry(level):
        return {name: value(level) for name in ["a", "b", "list", "obj", "f"] if rng.random() < 0.7}
    return entry(depth)


def test_random_templates_render_as_pystache_renders_them(tmp_path):
    """Many templates made at random (fixed seed), each rendered by both with values made at
    random: the same text, or the same kind of error."""
    import random
    rng = random.Random(20261207)
    compared = 0
    for _ in range(600):
        template, values = random_template(rng), random_values(rng)
        try:
            expected = stock_render(template, values)
        except Exception as exc:  # (a lambda's result of the wrong kind, say): the compiled one fails alike
            with pytest.raises(type(exc)):
                compiled_render(tmp_path, template, values)
            continue
        assert compiled_render(tmp_path, template, values) == expected, template
        compared += 1
    assert compared > 400


PARTIALS = {"p1": "<{{a}}>\n", "p2": "{{#list}}[{{.}}]{{/list}}\n", "p3": "  {{>p1}}\n{{ b }}", "p4": ""}


def random_lines(rng, depth: int = 0) -> str:
    """Templates in lines: tags alone on a line (the spec's standalone rule), partials at any
    indentation, spaces inside tags, {{&name}}."""
    pieces = []
    for _ in range(rng.randint(0, 5)):
        name = rng.choice(["a", "b", "list", ".", "obj", "f", "gone"])
        indent = " " * rng.choice([0, 0, 2, 4])
        kind = rng.randrange(6 if depth < 2 else 4)
        if kind == 0:
            pieces.append(rng.choice(["x", "\n", "\r\n", " <&> ", "\t"]))
        elif kind == 1:
            pieces.append(rng.choice([f"{{{{ {name} }}}}", f"{{{{&{name}}}}}", f"{{{{{{ {name} }}}}}}"]))
        elif kind == 2:
            pieces.append(f"\n{indent}{{{{>{rng.choice(list(PARTIALS) + ['none'])}}}}}\n")
        elif kind == 3:
            pieces.append(f"\n{indent}{{{{! alone }}}}\n")
        else:
            name = name if name != "." else "list"
            sigil = "^" if kind == 5 else "#"
            pieces.append(f"\n{indent}{{{{{sigil}{name}}}}}\n{random_lines(rng, depth + 1)}\n{indent}{{{{/{name}}}}}\n")
    return "".join(pieces)


def with_delimiters_changed(rng, template: str) -> str:
    """The template with its tags from some point on written <% %>, after {{=<% %>=}} there."""
    template = re.sub(r"\{\{\{ ?([^}]*?) ?\}\}\}", r"{{&\1}}", template)  # (triple braces are for {{ }} only)
    tags = [m.start() for m in re.finditer(r"\{\{", template)]
    if not tags:
        return template
    cut = rng.choice(tags)
    rest = template[cut:].replace("{{", "<%").replace("}}", "%>")
    return template[:cut] + "{{=<% %>=}}" + rest


def test_random_templates_with_partials_standalone_lines_and_delimiters(tmp_path):
    """As above, with what the first generator leaves out: standalone lines, partials at an
    indentation (one within another), spaces inside tags, and delimiters changed part way."""
    import random
    rng = random.Random(20261223)
    compared = 0
    for number in range(400):
        template, values = random_lines(rng), random_values(rng)
        if number % 2:
            template = with_delimiters_changed(rng, template)
        try:
            expected = stock_render(template, values, PARTIALS)
        except Exception as exc:
            with pytest.raises(type(exc)):
                compiled_render(tmp_path, template, values, PARTIALS)
            continue
        assert compiled_render(tmp_path, template, values, PARTIALS) == expected, template
        compared += 1
    assert compared > 250
