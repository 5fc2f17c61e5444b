"""One source for the exit-code contract: the wrapper's table (wrapper/contract.py) against every
place that must agree with it: the errors, the result line, the Deadline plugin's own constants and
CheckExitCode (read with ast: the plugin imports only the standard library and Deadline), the test
stand-in and docs/contract.md."""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from atomic_publish.wrapper import contract, errors
from atomic_publish.wrapper.outcome import DECISIONS, Outcome

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "deadline_plugin" / "AtomicPublish" / "AtomicPublish.py"
CONTRACT_DOC = REPO / "docs" / "contract.md"


def _constant_name(cls: contract.FailureClass) -> str:
    return "EXIT_" + cls.name.upper().replace("-", "_")


def _plugin_constants(tree: ast.Module) -> dict[str, int]:
    found = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.startswith("EXIT_") and isinstance(node.value, ast.Constant)):
            found[node.targets[0].id] = node.value.value
    return found


def _branch_action(body: list[ast.stmt]) -> str:
    """What one branch of CheckExitCode does: "deny-list", "fail", "requeue" or "success"."""
    calls = {n.func.attr for stmt in body for n in ast.walk(stmt)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    texts = " ".join(n.value for stmt in body for n in ast.walk(stmt)
                     if isinstance(n, ast.Constant) and isinstance(n.value, str))
    if "DenyListThisWorker" in calls:
        return "deny-list"
    if "FailPermanently" in calls:
        return "fail"
    if "requeues" in texts:
        return "requeue"
    if any(isinstance(stmt, ast.Return) for stmt in body):
        return "success"
    raise AssertionError(f"CheckExitCode branch with no known action: {ast.dump(body[0])[:200]}")


def _check_exit_code_mapping(tree: ast.Module, constants: dict[str, int]) -> dict[int, str]:
    """exit code -> action, from the if/elif chain on ``exitCode`` in CheckExitCode."""
    [func] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "CheckExitCode"]
    mapping: dict[int, str] = {}
    for node in ast.walk(func):
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "exitCode"):
            continue
        [right] = node.test.comparators
        names = [e.id for e in right.elts] if isinstance(right, ast.Tuple) else [right.id]
        action = _branch_action(node.body)
        for name in names:
            mapping[constants[name]] = action
    return mapping


@pytest.fixture(scope="module")
def plugin_tree() -> ast.Module:
    return ast.parse(PLUGIN.read_text(encoding="utf-8"))


def test_plugin_exit_constants_are_the_wrappers(plugin_tree):
    constants = _plugin_constants(plugin_tree)
    expected = {"EXIT_SUCCESS": contract.EXIT_OK, **{_constant_name(c): c.exit_code for c in contract.CLASSES}}
    assert constants == expected


def test_plugin_check_exit_code_does_what_the_table_says(plugin_tree):
    mapping = _check_exit_code_mapping(plugin_tree, _plugin_constants(plugin_tree))
    assert mapping == {contract.EXIT_OK: "success", **{c.exit_code: c.plugin for c in contract.CLASSES}}


def test_errors_and_outcome_use_the_table():
    assert {errors.TRANSIENT, errors.BUSY, errors.WORKER_LOCAL, errors.PERMANENT} == set(contract.BY_NAME)
    assert DECISIONS == contract.FARM_ACTIONS
    for exc_type in (errors.TransientError, errors.BusyError, errors.WorkerLocalError, errors.PermanentError):
        outcome = Outcome.from_error(exc_type("something failed"))
        row = contract.BY_NAME[exc_type.failure_class]
        assert (outcome.exit_code, outcome.outcome, outcome.failure_class) == (row.exit_code, row.name, row.name)
        assert row.farm_action in outcome.message


def test_exit_codes_are_distinct_and_outside_the_usual_ones():
    codes = [c.exit_code for c in contract.CLASSES]
    assert len(set(codes)) == len(codes)
    assert all(64 <= c <= 113 for c in codes)  # sysexits range: never 0, 1 (crash) or 2 (usage)


def test_deadline_stand_in_uses_the_table():
    spec = importlib.util.spec_from_file_location("deadline_conftest", REPO / "tests" / "deadline" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    script = module.STANDIN.format(python="python")
    outcomes = ast.literal_eval(re.search(r"^outcome = (\{.*?\})\.get", script, re.M).group(1))
    classes = ast.literal_eval(re.search(r"^klass = (\{.*?\})\.get", script, re.M).group(1))
    assert outcomes == contract.OUTCOME_OF_EXIT
    assert classes == {0: "-", **{c.exit_code: c.name for c in contract.CLASSES}}


def _doc_exit_rows() -> dict[str, list[str]]:
    text = CONTRACT_DOC.read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            rows[cells[0]] = cells
    return rows


PLUGIN_WORDS = {"requeue": "requeue", "deny-list": "deny-list", "fail": "FailJob"}


def test_contract_doc_lists_every_class_as_the_table_does():
    rows = _doc_exit_rows()
    assert set(rows) == {"0", *(str(c.exit_code) for c in contract.CLASSES)}
    for c in contract.CLASSES:
        code, outcome, klass, action = rows[str(c.exit_code)][:4]
        assert outcome == f"`{c.name}`" and klass == c.name, rows[code]
        assert PLUGIN_WORDS[c.plugin] in action, rows[code]
