"""Code-size targets of issue 12: DreamerV3's own lines, file sizes, function lengths, generation branches.

    python benchmarks/code_size.py

Prints (1) the lines of DreamerV3's own code: functional + nets + rssm + modules + its three losses with
what they share + optim + the replay glue, without the files only DreamerV1/V2 use (target <= 2,500);
(2) the package files over 300 lines (target: none); (3) the functions over 60 lines (target: none);
(4) the branches on a generation option left in DreamerV3's loss classes (target: 0). Lines are counted
twice: physical lines (``wc -l``, docstrings and comments included) and code lines (without them).
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "torchrl_dreamerv3"
V3_PARTS = ("functional", "nets", "rssm", "modules", "optim.py", "replay.py")
#: The loss files of DreamerV3: its three losses and what they share with V1/V2.
V3_LOSSES = ("objectives/__init__.py", "objectives/common.py", "objectives/imagination.py",
             "objectives/world_model_base.py", "objectives/world_model_loss.py", "objectives/actor_loss.py",
             "objectives/value_loss.py")
#: Files that only DreamerV1/V2 use (their cells, CNN, dense RSSM and MLPs, Gaussian latents and policies, math).
V1V2_ONLY = ("functional/returns_v1v2.py", "functional/kl_balance.py", "functional/gaussian.py",
             "functional/actor_dists.py", "nets/cells.py", "nets/dense.py", "nets/conv_k4s2.py", "rssm/dense.py")
#: The files whose branches are counted: DreamerV3's three loss classes.
V3_LOSS_CLASSES = ("objectives/world_model_loss.py", "objectives/actor_loss.py", "objectives/value_loss.py")
#: Names and values of the former generation switches; a branch on any of them is a generation branch.
GENERATION_WORDS = ("kl", "latent", "rec_loss", "head_dist", "gamma", "stop_grad_heads", "reward_transform",
                    "return_indexing", "imag_includes_start", "first_discount", "actor_grad", "critic_for_targets",
                    "return_norm", "slow_critic", "generation", "gaussian", "normal", "reward_at_state", "dyn_rep",
                    "balanced", "joint", "twohot", "v1", "v2", "free_avg", "target_critic")
FILE_LIMIT, FUNCTION_LIMIT, V3_TARGET = 300, 60, 2500


def lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def code_lines(path: Path) -> int:
    """Lines with code: without blank lines, comment-only lines and docstrings."""
    source = path.read_text()
    doc = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            doc.update(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(1 for i, line in enumerate(source.splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and i not in doc)


def v3_files() -> list[Path]:
    files = []
    for part in V3_PARTS:
        path = PACKAGE / part
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    files += [PACKAGE / f for f in V3_LOSSES]
    skip = {PACKAGE / f for f in V1V2_ONLY}
    return [f for f in files if f not in skip]


def long_functions(paths) -> list[tuple[str, int]]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LIMIT:
                    found.append((f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", length))
    return sorted(found, key=lambda item: -item[1])


def generation_branches(path: Path) -> list[str]:
    """``if``/``elif``/conditional expressions whose test compares with a string or names a generation option."""
    words = re.compile(r"\b(" + "|".join(GENERATION_WORDS) + r")\b", re.IGNORECASE)
    source = path.read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.If, ast.IfExp, ast.While)):
            test = ast.get_source_segment(source, node.test)
            strings = any(isinstance(n, ast.Constant) and isinstance(n.value, str) for n in ast.walk(node.test))
            if strings or words.search(test):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} if {test}")
    return found


def main() -> int:
    files = v3_files()
    total = sum(lines(f) for f in files)
    code = sum(code_lines(f) for f in files)
    print(f"1. DreamerV3's own code: {total} lines in {len(files)} files, {code} without docstrings, comments and "
          f"blank lines (target <= {V3_TARGET})")
    for group in (*V3_PARTS, "objectives"):
        group_files = [f for f in files if str(f.relative_to(PACKAGE)).startswith(group)]
        print(f"     {group:<12} {sum(lines(f) for f in group_files):>5} {sum(code_lines(f) for f in group_files):>5}")
    print(f"   excluded as V1/V2-only: {', '.join(V1V2_ONLY)} (+ objectives/v1v2.py, dreamerv1.py, dreamerv2.py)")
    package = sorted(PACKAGE.rglob("*.py"), key=lines, reverse=True)
    over = [f for f in package if lines(f) > FILE_LIMIT]
    print(f"2. package files over {FILE_LIMIT} lines: {len(over)} (target 0)")
    for f in package[:8]:
        print(f"     {lines(f):>4}  {f.relative_to(ROOT)}{'  <-- over' if f in over else ''}")
    functions = long_functions(package)
    print(f"3. functions over {FUNCTION_LIMIT} lines: {len(functions)} (target 0)")
    for name, length in functions:
        print(f"     {length:>4}  {name}")
    branches = [b for f in V3_LOSS_CLASSES for b in generation_branches(PACKAGE / f)]
    print(f"4. generation branches in DreamerV3's loss classes: {len(branches)} (target 0)")
    for branch in branches:
        print(f"     {branch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
