"""The reading module's files agree with each other, with the extension and with the library.

Checks without Slicer: its CMake lists name every script and resource on disk; the
extension builds it; the .ui has a score box for every criterion and image, binds
exactly the parameter node's fields, and holds every widget the module uses; the
module parses as Python 3.9, imports neither torch nor the library at load time, and
runs every GUI action through tryWithErrorDisplay.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from LowDoseDenoiseLib.readerstudy import protocol as p

REPO = Path(__file__).resolve().parents[2]
MODULE = "LowDoseReaderStudy"
MODULE_DIR = REPO / MODULE
MODULE_FILE = MODULE_DIR / f"{MODULE}.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / f"{MODULE}.ui"


def cmake_list(variable: str) -> list:
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found"
    items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [item.replace("${MODULE_NAME}", MODULE) for item in items if item]


def ui_widgets() -> dict:
    root = ET.parse(UI_FILE).getroot()
    widgets = {}
    for widget in root.iter("widget"):
        parameter = None
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameter = prop.findtext("string")
        widgets[widget.get("name")] = (widget.get("class"), parameter)
    return widgets


def test_cmake_lists_every_file_and_the_extension_builds_it():
    scripts, resources = cmake_list("MODULE_PYTHON_SCRIPTS"), cmake_list("MODULE_PYTHON_RESOURCES")
    on_disk = {str(path.relative_to(MODULE_DIR)) for path in MODULE_DIR.rglob("*")
               if path.is_file() and "__pycache__" not in path.parts and path.name != "CMakeLists.txt"}
    assert set(scripts) | set(resources) == on_disk, (sorted(on_disk - set(scripts) - set(resources)),
                                                      sorted(set(scripts) | set(resources) - on_disk))
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert f"set(MODULE_NAME {MODULE})" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert not re.search(r"file\s*\(\s*GLOB", text, re.I)
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert f"add_subdirectory({MODULE})" in top


def test_icon_is_128_rgba_png():
    import matplotlib.image

    assert matplotlib.image.imread(MODULE_DIR / "Resources" / "Icons" / f"{MODULE}.png").shape == (128, 128, 4)


def test_ui_scores_every_criterion_of_both_images():
    widgets = ui_widgets()
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    keys = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, "id", "") == "CRITERION_KEYS" for t in node.targets))
    assert tuple(keys) == p.CRITERION_KEYS, "the module's CRITERION_KEYS must follow the library's protocol"
    for key in p.CRITERION_KEYS:
        for side in p.SIDES:
            assert widgets.get(f"score{side}_{key}", (None,))[0] == "QSpinBox", f"score{side}_{key}"
    score_boxes = {name for name, (cls, _) in widgets.items() if name.startswith("score") and cls == "QSpinBox"}
    assert len(score_boxes) == len(p.CRITERION_KEYS) * len(p.SIDES)
    assert {"preferAButton", "preferBButton", "preferEqualButton", "commentEdit"} <= set(widgets)


def test_ui_binds_the_parameter_node_and_holds_every_used_widget():
    source = MODULE_FILE.read_text(encoding="utf-8")
    tree = ast.parse(source)
    wrapper = next(node for node in tree.body if isinstance(node, ast.ClassDef)
                   and any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list))
    fields = {item.target.id: ast.unparse(item.annotation) for item in wrapper.body if isinstance(item, ast.AnnAssign)}
    bound = {parameter: cls for cls, parameter in ui_widgets().values() if parameter}
    assert set(bound) == set(fields)
    fits = {"Path": "ctkPathLineEdit", "str": "QLineEdit"}
    for name, annotation in fields.items():
        expected = "QSpinBox" if annotation.startswith("Annotated[int") else fits.get(annotation, "QDoubleSpinBox")
        assert bound[name] == expected, (name, annotation, bound[name])
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert not used - set(ui_widgets()), sorted(used - set(ui_widgets()))


def test_plan_section_offers_the_cli_plan():
    """The "Plan a study" section: scene volumes to tick, the CLI's options, a Plan button through the library."""
    root = ET.parse(UI_FILE).getroot()
    section = next(w for w in root.iter("widget") if w.get("name") == "planCollapsibleButton")
    inside = {w.get("name"): w for w in section.iter("widget")}
    combo = inside["planCasesComboBox"]
    assert combo.get("class") == "qMRMLCheckableNodeComboBox"
    properties = {prop.get("name"): [s.text for s in prop.iter("string")] for prop in combo.findall("property")}
    assert properties["nodeTypes"] == ["vtkMRMLScalarVolumeNode"]
    assert properties["hideChildNodeTypes"] == ["vtkMRMLLabelMapVolumeNode"]
    bound = {name: parameter for name, (cls, parameter) in ui_widgets().items() if name in inside and parameter}
    assert set(bound.values()) == {"planMethods", "planReaders", "planSeed", "planFolder"}
    assert {"planButton", "planStatusLabel"} <= set(inside)
    declared = {w.findtext("class") for w in root.iter("customwidget")}
    assert {"qMRMLCheckableNodeComboBox", "qMRMLNodeComboBox", "ctkPathLineEdit"} <= declared

    source = MODULE_FILE.read_text(encoding="utf-8")
    tree = ast.parse(source)
    wrapper = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name.endswith("ParameterNode"))
    defaults = {item.target.id: ast.literal_eval(item.value) for item in wrapper.body
                if isinstance(item, ast.AnnAssign) and item.value is not None
                and isinstance(item.value, ast.Constant)}
    assert defaults["planMethods"] == "original,model,cad" and defaults["planSeed"] == 0
    from LowDoseDenoiseLib.readerstudy.plan import parse_readers

    assert parse_readers(defaults["planReaders"]) == 2
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{MODULE}Logic")
    plan = ast.unparse(next(m for m in logic.body if isinstance(m, ast.FunctionDef) and m.name == "planStudy"))
    assert "plan_study_from_nodes" in plan and "parse_readers" in plan and "scene=slicer.mrmlScene" in plan
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{MODULE}Widget")
    on_plan = ast.unparse(next(m for m in widget.body if isinstance(m, ast.FunctionDef) and m.name == "onPlanButton"))
    assert "checkedNodes()" in on_plan and "self.logic.planStudy" in on_plan and "KEY_DIR" in on_plan


def test_mrml_calls_of_the_scene_plan_exist_in_slicer_core():
    """Every CamelCase (VTK/MRML) method the scene plan calls on a node exists on a slicer-core MRML class."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    vtk = pytest.importorskip("vtk")
    classes = [getattr(slicer, name) for name in dir(slicer) if name.startswith("vtkMRML")] + [vtk.vtkImageData]
    path = REPO / "LowDoseDenoise" / "LowDoseDenoiseLib" / "readerstudy" / "sceneplan.py"
    calls = {node.func.attr for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr[:1].isupper()
             and node.func.attr not in ("InputError", "Volume", "CaseSource")}
    assert {"IsA", "GetImageData", "GetScene"} <= calls
    missing = sorted(call for call in calls if not any(hasattr(cls, call) for cls in classes))
    assert not missing, missing
    assert all(hasattr(slicer, name) for name in ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode",
                                                  "vtkMRMLVectorVolumeNode"))


def test_module_file_is_glue_only():
    source = MODULE_FILE.read_text(encoding="utf-8")
    tree = ast.parse(source)
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module.split(".")[0])
    assert "torch" not in top_level and "LowDoseDenoiseLib" not in top_level
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {MODULE, f"{MODULE}Widget", f"{MODULE}Logic", f"{MODULE}Test"} <= classes
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{MODULE}Widget")
    actions = [m for m in widget.body if isinstance(m, ast.FunctionDef) and m.name.startswith("on")
               and m.name not in ("onSceneStartClose", "onResetWindow")]
    assert len(actions) >= 4
    for method in actions:
        assert "tryWithErrorDisplay" in ast.unparse(method), method.name


def test_module_parses_as_python_39():
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(vermin).exists():
        pytest.skip("vermin is not installed (pip install vermin)")
    lib = REPO / "LowDoseDenoise" / "LowDoseDenoiseLib" / "readerstudy"
    result = subprocess.run([vermin, "-t=3.9-", "--no-tips", "--violations", str(MODULE_FILE), str(lib)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
