"""The tools both τ-bench domains have: `calculate`, `think`, `transfer_to_human_agents`.

τ-bench `eval`s a `calculate` expression; so do we, with Python's own operators and errors, except that a power too
large to compute in reasonable time is an error here where τ-bench would hang (`9**9**9` would hold a rollout for
minutes)."""

from __future__ import annotations

import ast
import math
import operator
import warnings
from typing import Any

from taubench.state import BranchDB, tool

CALC_CHARS = "0123456789+-*/(). "  # a str, as in τ-bench: `in` on a non-text item fails with τ-bench's error
MAX_POW_BITS = 1_000_000  # a power beyond this is refused instead of computed for minutes


class _Calc(ast.NodeVisitor):
    """Evaluates a compiled `calculate` expression with Python's own operators (the same values and errors as
    `eval`), refusing a power whose result would need more than MAX_POW_BITS bits."""

    BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}
    UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}

    def generic_visit(self, node: ast.AST) -> Any:  # any other node (with these characters: "()"): plain eval
        code = compile(ast.fix_missing_locations(ast.Expression(node)), "<string>", "eval", dont_inherit=True)
        return eval(code, {"__builtins__": None}, {})

    def visit_Expression(self, node: ast.Expression) -> Any:
        return self.visit(node.body)

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        if type(node.op) not in self.UNARY:
            return self.generic_visit(node)
        return self.UNARY[type(node.op)](self.visit(node.operand))

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        if type(node.op) not in self.BINARY:
            return self.generic_visit(node)
        left, right = self.visit(node.left), self.visit(node.right)
        if (isinstance(node.op, ast.Pow) and type(left) is int and type(right) is int and abs(left) > 1
                and right * math.log2(abs(left)) > MAX_POW_BITS):
            raise OverflowError("int too large to convert to float")
        return self.BINARY[type(node.op)](left, right)

    def visit_Call(self, node: ast.Call) -> Any:  # "(2)(3)": Python calls the number and fails, so do we
        func = self.visit(node.func)
        args = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                return func(*self.visit(arg.value))
            args.append(self.visit(arg))
        return func(*args)


def evaluate(expression: Any) -> str:
    """The observation of `calculate(expression)`: the value rounded to 2 decimals, or `Error: ...`."""
    if not all(char in CALC_CHARS for char in expression):
        return "Error: invalid characters in expression"
    try:
        if not isinstance(expression, str):  # a list or dict of allowed characters: eval refuses it, as in τ-bench
            return str(round(float(eval(expression, {"__builtins__": None}, {})), 2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = compile(expression.lstrip(" \t"), "<string>", "eval", ast.PyCF_ONLY_AST, dont_inherit=True)
        return str(round(float(_Calc().visit(tree)), 2))
    except Exception as e:
        return f"Error: {e}"


@tool("Calculate")
def calculate(data: BranchDB, expression: str) -> str:
    """Evaluate an arithmetic expression, rounded to 2 decimals."""
    return evaluate(expression)


@tool("Think")
def think(data: BranchDB, thought: str) -> str:
    """Nothing: a place for the agent to reason."""
    return ""


@tool("TransferToHumanAgents")
def transfer_to_human_agents(data: BranchDB, summary: str) -> str:
    """Hand the conversation to a human (the env ends the episode)."""
    return "Transfer successful"
