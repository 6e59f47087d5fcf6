# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""One source for the views of every series: they are written for 18.0+ and adapted as they are stored.

- 18.0 renamed list views ``<tree>`` to ``<list>``: older series get ``<tree>`` back (and ``tree`` in an
  action's ``view_mode``).
- 17.0 replaced ``attrs="{'invisible': [domain]}"`` by ``invisible="<python expression>"`` (also
  ``required``, ``readonly``, ``column_invisible``): before 17.0 each expression becomes its domain. Only the
  expressions our views use are understood (``a``, ``not a``, ``a == v``, ``a != v``, ``a in (..)``, ``and``,
  ``or``); anything else fails loudly at install instead of hiding a field wrongly. A comparison with a
  value those series lack (``smtp_authentication == 'cli'``) is a constant there.
- An element marked ``mail_graph_api_since="15"`` exists from that series on (14.0 has no
  ``smtp_authentication``, for one); one marked ``mail_graph_api_until="14"`` only up to it. The marker never
  reaches Odoo.
"""

from __future__ import annotations

import ast
from typing import Dict, List, Union

from lxml import etree

MODIFIERS = ("invisible", "required", "readonly", "column_invisible")
CONSTANTS = ("0", "1", "True", "False", "true", "false")
SINCE, UNTIL = "mail_graph_api_since", "mail_graph_api_until"
# Selection values that do not exist before 17.0: a comparison with one is a constant there.
VALUES_SINCE_17 = {("smtp_authentication", "cli")}


class ViewAdaptationError(ValueError):
    pass


def adapt(arch: str, series: int) -> str:
    if not arch or (series >= 18 and SINCE not in arch and UNTIL not in arch):
        return arch
    root = etree.fromstring(arch.encode() if isinstance(arch, str) else arch)
    _keep_series(root, series)  # every series: a marked element must go where it does not belong (18.0+ too)
    if series >= 18:
        return etree.tostring(root, encoding="unicode")
    for node in root.iter("list"):
        node.tag = "tree"
    if series < 17:
        for node in list(root.iter()):
            if isinstance(node.tag, str):
                _modifiers_to_attrs(node)
    return etree.tostring(root, encoding="unicode")


def view_mode(mode: str, series: int) -> str:
    if series >= 18 or not mode:
        return mode
    return ",".join("tree" if part == "list" else part for part in mode.split(","))


def _keep_series(root, series: int) -> None:
    for node in list(root.iter()):
        if not isinstance(node.tag, str):
            continue
        since, until = node.attrib.pop(SINCE, None), node.attrib.pop(UNTIL, None)
        if (since and series < int(since)) or (until and series > int(until)):
            node.getparent().remove(node)


def _modifiers_to_attrs(node) -> None:
    attrs: Dict[str, list] = {}
    # <field invisible="expr"/>
    for name in MODIFIERS:
        value = node.get(name)
        if value is not None and value.strip() not in CONSTANTS:
            condition = to_domain(value)
            if isinstance(condition, bool):
                node.set(name, "1" if condition else "0")
            else:
                attrs[name] = condition
                del node.attrib[name]
    if attrs:
        node.set("attrs", repr(attrs))
    # <field position="attributes"><attribute name="invisible">expr</attribute></field>
    if node.get("position") == "attributes":
        changes = [child for child in node if child.tag == "attribute" and child.get("name") in MODIFIERS]
        domains = {}
        for child in changes:
            if (child.text or "").strip() in CONSTANTS:
                continue
            condition = to_domain(child.text)
            if isinstance(condition, bool):
                child.text = "1" if condition else "0"
            else:
                domains[child.get("name")] = condition
                node.remove(child)
        if domains:
            attribute = etree.SubElement(node, "attribute", name="attrs")
            attribute.text = repr(domains)


def to_domain(expression: str) -> Union[List, bool]:
    """A 17.0 modifier expression as the domain older web clients evaluate, or a constant when it is one
    before 17.0 (a value that series do not have)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError as error:
        raise ViewAdaptationError(f"cannot read view expression {expression!r}: {error}") from error
    return _domain(tree, expression)


def _domain(node, source: str) -> Union[List, bool]:
    if isinstance(node, ast.BoolOp):
        is_and = isinstance(node.op, ast.And)
        parts = []
        for value in node.values:
            part = _domain(value, source)
            if isinstance(part, bool):
                if part is not is_and:  # False in an "and", True in an "or" decides the whole
                    return part
                continue
            parts.append(part)
        if not parts:
            return is_and
        result: List = ["&" if is_and else "|"] * (len(parts) - 1)
        for part in parts:
            result.extend(part)
        return result
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not) and isinstance(node.operand, ast.Name):
        return [(node.operand.id, "=", False)]
    if isinstance(node, ast.Name):
        return [(node.id, "!=", False)]
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.left, ast.Name):
        operators = {ast.Eq: "=", ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in"}
        operator = operators.get(type(node.ops[0]))
        if operator:
            value = ast.literal_eval(node.comparators[0])
            if operator in ("=", "!=") and (node.left.id, value) in VALUES_SINCE_17:
                return operator == "!="  # the field never holds that value before 17.0
            if operator in ("in", "not in"):
                value = list(value)
            return [(node.left.id, operator, value)]
    raise ViewAdaptationError(f"view expression {source!r} has no domain form for Odoo before 17.0")
