"""Code-size targets of issues 12 and 24: DreamerV3's own lines, file sizes, function lengths, generation
branches, and the structure of the training glue.

    python benchmarks/code_size.py [--repo DIR]

Prints (1) the lines of DreamerV3's own code: functional + nets + rssm + modules + its three losses with
what they share + optim + the replay layout, without the files only DreamerV1/V2 use (target <= 2,500);
(2) the package files over 300 lines (target: none); (3) the functions over 60 lines (target: none);
(4) the branches on a generation option left in DreamerV3's loss classes (target: 0); (5) the training
glue's structure (issue 24): its files, their import floors (target <= 6), what ``training/run.py``
imports, and the files with a function that takes the Hydra config. Lines are counted twice: physical
lines (``wc -l``, docstrings and comments included) and code lines (without them). ``--repo`` measures
another checkout (e.g. an older commit unpacked with ``git archive``).
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[sys.argv.index("--repo") + 1]).resolve() if "--repo" in sys.argv else Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "torchrl_dreamerv3"
V3_PARTS = ("functional", "nets", "rssm", "modules", "optim.py",
            "replay/context.py" if (PACKAGE / "replay").is_dir() else "replay.py")
#: The training glue and the packages split out of it (issue 24).
GLUE = ("training", "agent", "replay")
FLOOR_TARGET = 6
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


def _imports(path: Path) -> set[Path]:
    """The package files ``path`` imports (relative and absolute imports of this package, lazy ones too)."""
    found = set()
    here = path.parent
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for n in ast.walk(block)}  # annotations only: no import at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in typing_only:
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.parent
            elif (node.module or "").startswith(PACKAGE.name):
                base, node_module = ROOT, node.module
            else:
                continue
            module = base.joinpath(*(node.module or "").split(".")) if node.level else ROOT.joinpath(*node_module.split("."))
            for alias in node.names:  # ``from .pkg import module`` imports the module itself
                if (module / f"{alias.name}.py").is_file():
                    found.add(module / f"{alias.name}.py")
                elif (module / alias.name / "__init__.py").is_file():
                    found.add(module / alias.name / "__init__.py")
            if module.with_suffix(".py").is_file():
                found.add(module.with_suffix(".py"))
            elif (module / "__init__.py").is_file():
                found.add(module / "__init__.py")
    return found - {path}


def glue_structure() -> None:
    files = sorted(f for part in GLUE if (PACKAGE / part).is_dir() for f in (PACKAGE / part).rglob("*.py"))
    glue = set(files)
    deps = {f: _imports(f) & glue for f in files}
    floors: dict[Path, int] = {}

    def floor(f, seen=()):
        if f not in floors:
            if f in seen:  # an import circle: counted once
                return 0
            floors[f] = 1 + max((floor(d, (*seen, f)) for d in deps[f]), default=0)
        return floors[f]

    top = max(floor(f) for f in files)
    print(f"5. the training glue ({', '.join(p + '/' for p in GLUE if (PACKAGE / p).is_dir())}): {len(files)} files, "
          f"{sum(lines(f) for f in files)} lines, {top} import floors (target <= {FLOOR_TARGET}), "
          f"{sum(len(d) for d in deps.values())} imports between them")
    for level in range(top, 0, -1):
        names = [str(f.relative_to(PACKAGE)) for f in files if floors[f] == level]
        print(f"     floor {level}: {', '.join(names)}")
    run = PACKAGE / "training" / "run.py"
    siblings = sorted(str(f.relative_to(PACKAGE)) for f in deps.get(run, ()) if f.parent.is_relative_to(run.parent))
    print(f"   training/run.py imports {len(siblings)} glue files: {', '.join(siblings)}")
    def hydra_config(arg) -> bool:  # ``cfg`` is also the ModelConfig's name in modules/
        note = ast.unparse(arg.annotation) if arg.annotation is not None else ""
        return "DictConfig" in note or (arg.arg == "cfg" and "ModelConfig" not in note and "modules" not in str(f))

    takes_cfg = set()
    for f in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    hydra_config(a) for a in node.args.args + node.args.kwonlyargs):
                takes_cfg.add(str(f.relative_to(PACKAGE)))
    takes_cfg = sorted(takes_cfg)
    print(f"   files with a function that takes the Hydra config (a DictConfig or `cfg` parameter): {len(takes_cfg)}")
    print(f"     {', '.join(takes_cfg)}")


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
    glue_structure()
    return 0


if __name__ == "__main__":
    sys.exit(main())
