"""The Slicer extension's files agree with each other and with the code.

Checks without Slicer: the CMake lists name every LowDoseDenoiseLib script and
resource on disk; the extension metadata and the Extensions Index entry agree; the
.ui binds exactly the parameter node's fields with widgets that can represent them;
the module and the library parse as Python 3.9; torch is not imported at load time.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "LowDoseDenoise"
LIB_DIR = MODULE_DIR / "LowDoseDenoiseLib"
MODULE_FILE = MODULE_DIR / "LowDoseDenoise.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "LowDoseDenoise.ui"

#: Parameter-node fields that no .ui widget binds, and why.
UNBOUND_FIELDS = {
    "device": "the device combo box is filled at run time (one entry per GPU) and synced by hand",
    "model": "the model combo box is filled at run time from the bundled-model registry and synced by hand",
    "modelFile": "a str synced by hand: a Path-bound ctkPathLineEdit shows '.' for no file",
}
#: Widget class in the .ui -> annotation names it can represent (slicer.parameterNodeWrapper.guiConnectors).
WIDGET_TYPES = {
    "qMRMLNodeComboBox": lambda annotation: annotation.startswith("vtkMRML"),
    "QCheckBox": lambda annotation: annotation == "bool",
    "ctkPathLineEdit": lambda annotation: annotation == "Path",
    "ctkSliderWidget": lambda annotation: annotation.startswith("Annotated[float") and "WithinRange" in annotation,
    "QComboBox": lambda annotation: annotation in ENUM_NAMES or "Choice" in annotation,
}
ENUM_NAMES: set = set()


def cmake_list(path: Path, variable: str) -> list:
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found in {path}"
    items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [item.replace("${MODULE_NAME}", "LowDoseDenoise") for item in items if item]


def cmake_set(path: Path, variable: str) -> str:
    match = re.search(rf'set\(\s*{variable}\s+"([^"]*)"\s*\)', path.read_text(encoding="utf-8"))
    assert match, f"{variable} not set in {path}"
    return match.group(1)


# -- CMake lists ---------------------------------------------------------------------------------


def test_cmake_lists_every_lib_script():
    listed = cmake_list(MODULE_DIR / "CMakeLists.txt", "MODULE_PYTHON_SCRIPTS")
    on_disk = {"LowDoseDenoise.py"} | {
        str(path.relative_to(MODULE_DIR)) for path in LIB_DIR.rglob("*.py") if "__pycache__" not in path.parts
    }
    assert len(listed) == len(set(listed)), "a script is listed twice"
    missing = sorted(on_disk - set(listed))
    assert not missing, f"add to MODULE_PYTHON_SCRIPTS in LowDoseDenoise/CMakeLists.txt: {missing}"
    absent = sorted(set(listed) - on_disk)
    assert not absent, f"listed in LowDoseDenoise/CMakeLists.txt but not on disk: {absent}"


def test_cmake_lists_every_resource():
    listed = cmake_list(MODULE_DIR / "CMakeLists.txt", "MODULE_PYTHON_RESOURCES")
    absent = [item for item in listed if not (MODULE_DIR / item).is_file()]
    assert not absent, f"listed resources missing on disk: {absent}"
    resources = MODULE_DIR / "Resources"
    needed = {
        str(path.relative_to(MODULE_DIR))
        for folder, pattern in (("Icons", "*"), ("UI", "*.ui"), ("Models", "*.pt"), ("Models", "*.md"),
                                ("Models", "*.json"), ("Models", "*.npz"))
        for path in (resources / folder).glob(pattern)
        if path.is_file()
    }
    # the training configs are read by `lowdose-denoise train` from the installed library
    needed |= {str(path.relative_to(MODULE_DIR)) for path in (LIB_DIR / "training" / "configs").glob("*.yaml")}
    missing = sorted(needed - set(listed))
    assert not missing, f"add to MODULE_PYTHON_RESOURCES in LowDoseDenoise/CMakeLists.txt: {missing}"


def test_module_cmake_builds_scripted_module_with_tests():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"set\(MODULE_NAME LowDoseDenoise\)", text)
    assert re.search(r"slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)
    assert not re.search(r"file\s*\(\s*GLOB", text, re.I), "Slicer extensions list files explicitly"


def test_extension_metadata_and_catalog_entry_agree():
    top = REPO / "CMakeLists.txt"
    text = top.read_text(encoding="utf-8")
    project = re.search(r"project\((\w+)\)", text).group(1)
    assert project == "LowDoseDenoise"
    assert "add_subdirectory(LowDoseDenoise)" in text
    assert not re.search(r"set\(\s*EXTENSION_CATEGORY", text), "obsolete: the category lives in the catalog entry (JSON)"
    assert cmake_set(top, "EXTENSION_DEPENDS").split() == ["PyTorch"]
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION"):
        assert cmake_set(top, variable).strip(), variable
    for variable in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in cmake_set(top, variable).split():
            relative = url.split("/main/", 1)[1]
            assert (REPO / relative).is_file(), f"{variable} points at {relative}, which is not in the repository"

    entry_path = REPO / f"{project}.json"
    entry = json.loads(entry_path.read_text(encoding="utf-8"))
    allowed = {
        "$schema",
        "build_dependencies",
        "build_subdirectory",
        "category",
        "scm_revision",
        "scm_type",
        "scm_url",
        "tier",
    }
    assert set(entry) <= allowed, f"the catalog schema forbids {set(entry) - allowed}"
    assert entry["category"] == "Filtering"
    description = cmake_set(top, "EXTENSION_DESCRIPTION")
    assert description.count(". ") <= 2 and len(description) < 300, "one or two plain sentences"
    assert entry["build_dependencies"] == ["PyTorch"]
    homepage = cmake_set(top, "EXTENSION_HOMEPAGE").split("#")[0].rstrip("/")
    assert entry["scm_url"].removesuffix(".git") == homepage


def test_the_s4ext_entry_for_the_slicer_5_6_index_agrees_with_the_json_entry_and_cmake():
    """The index's 5.6 branch reads LowDoseDenoise.s4ext (key, space, value per line); same source,
    dependency, category and texts as LowDoseDenoise.json and the top-level CMakeLists.txt."""
    top = REPO / "CMakeLists.txt"
    entry = json.loads((REPO / "LowDoseDenoise.json").read_text(encoding="utf-8"))
    fields = {}
    for line in (REPO / "LowDoseDenoise.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            assert key not in fields, f"{key} given twice"
            fields[key] = value.strip()
    known = {"scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage", "contributors",
             "category", "iconurl", "status", "description", "screenshoturls", "enabled"}
    assert set(fields) == known, (set(fields) ^ known)
    assert (fields["scm"], fields["scmurl"], fields["scmrevision"]) == (
        entry["scm_type"], entry["scm_url"], entry["scm_revision"])
    assert fields["depends"].split() == entry["build_dependencies"] == cmake_set(top, "EXTENSION_DEPENDS").split()
    assert (fields["build_subdirectory"], fields["category"]) == (entry["build_subdirectory"], entry["category"])
    for key, variable in (("homepage", "EXTENSION_HOMEPAGE"), ("contributors", "EXTENSION_CONTRIBUTORS"),
                          ("description", "EXTENSION_DESCRIPTION"), ("iconurl", "EXTENSION_ICONURL"),
                          ("screenshoturls", "EXTENSION_SCREENSHOTURLS")):
        assert fields[key] == cmake_set(top, variable).strip(), key
    assert fields["enabled"] == "1"


# -- icons and screenshot ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["LowDoseDenoise/Resources/Icons/LowDoseDenoise.png", "Resources/Icons/LowDoseDenoise.png"]
)
def test_icons_are_128_rgba_png(path):
    import matplotlib.image

    image = matplotlib.image.imread(REPO / path)
    assert image.shape == (128, 128, 4)


def test_screenshot_exists():
    assert (REPO / "Resources" / "Screenshots" / "LowDoseDenoise-comparison.png").is_file()


# -- .ui and parameter node -----------------------------------------------------------------------


def parameter_node_fields() -> dict:
    """Field name -> annotation source of the @parameterNodeWrapper class in LowDoseDenoise.py."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    ENUM_NAMES.update(
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef) and any(ast.unparse(base) == "enum.Enum" for base in node.bases)
    )
    wrappers = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list)
    ]
    assert len(wrappers) == 1, "expected one @parameterNodeWrapper class"
    return {
        item.target.id: ast.unparse(item.annotation)
        for item in wrappers[0].body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }


def ui_widgets() -> dict:
    """objectName -> (class, SlicerParameterName or None) of every widget in the .ui."""
    root = ET.parse(UI_FILE).getroot()
    widgets = {}
    for widget in root.iter("widget"):
        name = None
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                name = prop.findtext("string")
        widgets[widget.get("name")] = (widget.get("class"), name)
    return widgets


def test_ui_binds_every_parameter_with_a_fitting_widget():
    fields = parameter_node_fields()
    bound = {parameter: (object_name, cls) for object_name, (cls, parameter) in ui_widgets().items() if parameter}
    assert set(bound) == set(fields) - set(UNBOUND_FIELDS), (
        f"unbound fields: {sorted(set(fields) - set(bound) - set(UNBOUND_FIELDS))}, "
        f"unknown parameters in the .ui: {sorted(set(bound) - set(fields))}"
    )
    for parameter, (object_name, cls) in bound.items():
        assert cls in WIDGET_TYPES, f"{object_name}: no parameter-node connector for {cls}"
        assert WIDGET_TYPES[cls](fields[parameter]), f"{object_name} ({cls}) cannot represent {fields[parameter]}"


def module_enum(name: str):
    """The enum class ``name`` of LowDoseDenoise.py, built on its own (``_`` as identity: no Slicer needed)."""
    import enum
    from typing import Optional

    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    namespace: dict = {"enum": enum, "Optional": Optional, "_": lambda text: text}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(MODULE_FILE), "exec"), namespace)
    return namespace[name]


def test_neighbouring_slices_choice_is_the_clis_and_sits_in_the_strength_section():
    """The Neighbouring slices combo offers the CLI's --neighbours auto|on|off as the engine's None/True/False,
    is remembered, reaches prepare(), and lies in the strength section (disabled while a job runs)."""
    from LowDoseDenoiseLib.cli import NEIGHBOURS

    choice = module_enum("NeighbourSlices")
    assert {member.value: member.setting() for member in choice} == NEIGHBOURS
    assert [member.label() for member in choice] == [
        "Automatic (by slice spacing)", "Always use", "Never (each slice alone)"]
    assert parameter_node_fields()["neighbours"] == "NeighbourSlices"
    source = MODULE_FILE.read_text(encoding="utf-8")
    remembered = re.search(r"^REMEMBERED = \((.*?)\)", source, re.S | re.M)
    assert remembered and '"neighbours"' in remembered.group(1)
    assert "neighbours=node.neighbours.setting()" in source
    root = ET.parse(UI_FILE).getroot()
    (section,) = [w for w in root.iter("widget") if w.get("name") == "strengthSection"]
    inside = {w.get("name"): w for w in section.iter("widget")}
    assert {"neighboursLabel", "neighboursComboBox"} <= set(inside)
    assert inside["neighboursLabel"].findtext("property/string") == "Neighbouring slices:"
    tooltip = [p.findtext("string") for p in inside["neighboursComboBox"].findall("property")
               if p.get("name") == "toolTip"]
    assert tooltip and "farther apart than in the model's training" in tooltip[0]


def test_passes_choice_is_the_engines_self_ensemble_and_sits_in_the_strength_section():
    """The Passes combo offers the engine's self-ensemble sizes (the CLI's --ensemble), defaults to the engine's
    default although the module does not import the library, is remembered, reaches prepare(), and lies in the
    strength section below Neighbouring slices."""
    from LowDoseDenoiseLib import engine

    choice = module_enum("SelfEnsemble")
    assert [member.size() for member in choice] == sorted(engine.ENSEMBLES)
    assert all(member.value == str(member.size()) for member in choice)  # hashable text, as QSettings stores it
    assert [member.label() for member in choice] == [
        "One pass (fastest)", "2 passes: slice and transpose (default)", "4 passes", "8 passes (best, for a GPU)"]
    assert parameter_node_fields()["ensemble"] == "SelfEnsemble"
    source = MODULE_FILE.read_text(encoding="utf-8")
    tree = ast.parse(source)
    (constant,) = [ast.unparse(n.value) for n in tree.body if isinstance(n, ast.Assign)
                   and [ast.unparse(t) for t in n.targets] == ["DEFAULT_SELF_ENSEMBLE"]]
    assert constant.startswith("SelfEnsemble.")
    assert choice[constant.split(".", 1)[1]].size() == engine.DEFAULT_ENSEMBLE  # written out, as the engine says
    (wrapper,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LowDoseDenoiseParameterNode"]
    (default,) = [ast.unparse(item.value) for item in wrapper.body
                  if isinstance(item, ast.AnnAssign) and ast.unparse(item.target) == "ensemble"]
    assert default == "DEFAULT_SELF_ENSEMBLE"
    # the logic's process() for scripts has the same default
    (logic,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LowDoseDenoiseLogic"]
    (process,) = [n for n in logic.body if isinstance(n, ast.FunctionDef) and n.name == "process"]
    defaults = dict(zip([a.arg for a in process.args.args][-len(process.args.defaults):], process.args.defaults))
    assert ast.unparse(defaults["ensemble"]) == "None"
    assert "ensemble=DEFAULT_SELF_ENSEMBLE.size() if ensemble is None else ensemble" in ast.unparse(process)
    remembered = re.search(r"^REMEMBERED = \((.*?)\)", source, re.S | re.M)
    assert remembered and '"ensemble"' in remembered.group(1)
    assert "value = SelfEnsemble(str(value))" in source  # restored from QSettings
    assert "ensemble=node.ensemble.size()" in source
    root = ET.parse(UI_FILE).getroot()
    (section,) = [w for w in root.iter("widget") if w.get("name") == "strengthSection"]
    order = [w.get("name") for w in section.iter("widget")]
    assert {"ensembleLabel", "ensembleComboBox"} <= set(order)
    assert order.index("neighboursComboBox") < order.index("ensembleLabel") < order.index("ensembleComboBox")
    inside = {w.get("name"): w for w in section.iter("widget")}
    assert inside["ensembleLabel"].findtext("property/string") == "Passes:"
    tooltips = [[p.findtext("string") for p in inside[name].findall("property") if p.get("name") == "toolTip"]
                for name in ("ensembleLabel", "ensembleComboBox")]
    assert tooltips[0] and tooltips[0] == tooltips[1]
    assert all(word in tooltips[1][0] for word in ("more noise", "sharp kernels", "detail", "GPU"))


def test_module_uses_only_widgets_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text(encoding="utf-8")))
    missing = sorted(used - set(ui_widgets()))
    assert not missing, f"LowDoseDenoise.py uses widgets the .ui lacks: {missing}"


def test_ui_custom_widgets_are_declared():
    root = ET.parse(UI_FILE).getroot()
    declared = {item.findtext("class") for item in root.iter("customwidget")}
    qt_classes = {"QWidget", "QLabel", "QPushButton", "QCheckBox", "QComboBox", "QProgressBar", "QPlainTextEdit"}
    used = {cls for cls, _ in ui_widgets().values()}
    assert used - qt_classes <= declared


# -- Python level ------------------------------------------------------------------------------------


def test_module_and_lib_parse_as_python_39():
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(vermin).exists():
        pytest.skip("vermin is not installed (pip install vermin)")
    # tomllib is imported inside try/except ImportError with tomli as the 3.9/3.10 fallback
    result = subprocess.run(
        [vermin, "-t=3.9-", "--no-tips", "--violations", "--exclude", "tomllib", str(MODULE_FILE), str(LIB_DIR)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_module_file_imports_no_torch_and_wraps_callbacks():
    source = MODULE_FILE.read_text(encoding="utf-8")
    tree = ast.parse(source)
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module.split(".")[0])
    assert "torch" not in top_level and "LowDoseDenoiseLib" not in top_level
    assert 'pip_install("torch' not in source and "pip_install('torch" not in source
    assert "PyTorchUtils" in source and "installTorch" in source
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"LowDoseDenoise", "LowDoseDenoiseWidget", "LowDoseDenoiseLogic", "LowDoseDenoiseTest"} <= classes
    # every GUI action (on... methods) runs its work through tryWithErrorDisplay
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LowDoseDenoiseWidget")
    for method in widget.body:
        if isinstance(method, ast.FunctionDef) and method.name in (
            "onApplyButton",
            "onPreviewButton",
            "onShowComparison",
            "onEndComparison",
            "onExportFile",
            "onExportDicom",
            "onCheckEnvironment",
        ):
            assert "tryWithErrorDisplay" in ast.unparse(method), method.name


def test_slicer_imports_the_lib_without_torch():
    code = (
        f"import sys; sys.path.insert(0, {str(MODULE_DIR)!r})\n"
        "import LowDoseDenoiseLib.slicer.scene, LowDoseDenoiseLib.modelfile, LowDoseDenoiseLib.errors\n"
        "from LowDoseDenoiseLib.slicer import dicomexport, dependencies, modelchoice, messages, compat\n"
        "assert 'torch' not in sys.modules, 'torch imported at load time'\n"
        "# what the panel does when it opens: status from metadata, the model menu, no torch\n"
        "assert dependencies.torch_status().installed\n"
        "assert len(modelchoice.model_choices()) >= 2\n"
        "modelchoice.model_details(modelchoice.model_choices()[0].path)\n"
        "assert 'torch' not in sys.modules, 'opening the panel imported torch'\n"
    )
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# -- conventions (issue 13 items 14-17) --------------------------------------------------------------


def test_module_follows_slicer_conventions():
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert "getDefaultModuleDocumentationLink" not in source, "it links a Slicer core page; link the homepage"
    homepage = cmake_set(REPO / "CMakeLists.txt", "EXTENSION_HOMEPAGE")
    assert f'HOMEPAGE = "{homepage}"' in source
    assert "registerCustomSampleDataSource" not in source, "SampleData already has CTLiver"
    assert "slicer.packaging" not in source and "pip_install" not in source, "pydicom ships with Slicer"
    assert "testingEnabled()" in source, "nothing may be installed in testing mode"
    assert "def onReload" in source and "forget_library_modules" in source


# -- every Slicer/MRML API called exists in the slicer-core wheel ---------------------------------------

#: Files whose MRML/VTK calls are checked.
#: The scripted-module files (application-level slicer attributes such as slicer.mrmlScene are theirs).
MODULE_FILES = [MODULE_FILE, MODULE_FILE.parents[1] / "LowDoseReaderStudy" / "LowDoseReaderStudy.py"]
API_FILES = (
    MODULE_FILES
    + [LIB_DIR / "slicer" / f"{name}.py" for name in ("scene", "preview", "dicomexport", "compat", "headless")]
    + [LIB_DIR / "readerstudy" / f"{name}.py" for name in ("views", "sceneplan")]
)
#: Receiver names whose type is known -> the MRML/VTK class a call on them must exist on.
RECEIVER_CLASSES = {
    "sh": "vtkMRMLSubjectHierarchyNode",
    "shNode": "vtkMRMLSubjectHierarchyNode",
    "constants": "vtkMRMLSubjectHierarchyConstants",
    "layout_node": "vtkMRMLLayoutNode",
    "composite": "vtkMRMLSliceCompositeNode",
    "red": "vtkMRMLSliceCompositeNode",
    "yellow": "vtkMRMLSliceCompositeNode",
    "slice_node": "vtkMRMLSliceNode",
    "slice_logic": "vtkMRMLSliceLogic",
    "storage": "vtkMRMLVolumeArchetypeStorageNode",
    "display": "vtkMRMLScalarVolumeDisplayNode",
    "src": "vtkMRMLScalarVolumeDisplayNode",
    "dst": "vtkMRMLScalarVolumeDisplayNode",
    "input_node": "vtkMRMLScalarVolumeNode",
    "output_node": "vtkMRMLScalarVolumeNode",
    "inputVolume": "vtkMRMLScalarVolumeNode",
    "outputVolume": "vtkMRMLScalarVolumeNode",
    "volumeNode": "vtkMRMLScalarVolumeNode",
    "image": "vtkImageData",
    "new_image": "vtkImageData",
    "matrix": "vtkMatrix4x4",
}
#: Calls on objects of Qt, CTK, Slicer's Python modules or the application: not in the wheel.
NOT_MRML = {"qt", "ctk", "combo", "widget", "settings", "exporter", "exportable", "database", "layoutManager",
            "PyTorchUtils", "DICOMScalarVolumePlugin", "DICOMUtils", "SampleData", "torch", "np", "self",
            "tempfile", "threading"}
#: Slicer's Python API (not in the wheel): checked against the Slicer sources, see docs/slicer-api-versions.md.
PYTHON_API_PREFIXES = ("slicer.util", "slicer.app", "slicer.modules")


def _mrml_calls(path: Path):
    """(receiver, method) of every CamelCase method call (the VTK convention) in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method, value = node.func.attr, node.func.value
            if not method[:1].isupper() or method.startswith(("vtk", "Q", "ctk")):
                continue
            receiver = value.id if isinstance(value, ast.Name) else ast.unparse(value)
            yield receiver, method


def test_every_mrml_api_called_exists_in_slicer_core():
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    vtk = pytest.importorskip("vtk")
    classes = [getattr(slicer, name) for name in dir(slicer) if name.startswith("vtk")]
    classes += [vtk.vtkMatrix4x4, vtk.vtkImageData, vtk.vtkCollection, vtk.vtkPointData, vtk.vtkDataArray]
    missing, checked = [], 0
    for path in API_FILES:
        for receiver, method in _mrml_calls(path):
            head = receiver.split(".")[0].split("(")[0]
            if (head in NOT_MRML and receiver not in ("self.scene",)) or receiver.startswith(PYTHON_API_PREFIXES):
                continue
            checked += 1
            if receiver in RECEIVER_CLASSES:
                owner = getattr(slicer, RECEIVER_CLASSES[receiver], None) or getattr(vtk, RECEIVER_CLASSES[receiver])
                if not hasattr(owner, method):
                    missing.append(f"{path.name}: {receiver}.{method} ({owner.__name__})")
            elif not any(hasattr(cls, method) for cls in classes):
                missing.append(f"{path.name}: {receiver}.{method}")
    assert checked > 80, f"only {checked} MRML calls found: the collector is broken"
    assert not missing, f"not in slicer-core (misspelt or removed API): {missing}"


def test_slicer_attributes_used_by_the_logic_exist():
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    for path in API_FILES[len(MODULE_FILES):]:  # the library's MRML code: no application attributes
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer":
                assert hasattr(slicer, node.attr), f"{path.name}: slicer.{node.attr}"
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "slicer"
            ):
                assert hasattr(getattr(slicer, node.value.attr), node.attr), f"{path.name}: {ast.unparse(node)}"


def test_newer_apis_are_listed_in_the_docs_and_exist():
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    import sys

    sys.path.insert(0, str(MODULE_DIR))
    from LowDoseDenoiseLib.slicer import compat

    doc = (REPO / "docs" / "slicer-api-versions.md").read_text(encoding="utf-8")
    minimum = f"{compat.MINIMUM_SLICER[0]}.{compat.MINIMUM_SLICER[1]}"
    assert f"Slicer {minimum}" in doc
    for api in compat.NEWER_APIS:
        label = f"{api.owner}.{api.name}" if api.name else api.owner
        assert f"`{label}`" in doc and api.since in doc, f"{label} is not in docs/slicer-api-versions.md"
        if api.owner.startswith("vtk"):
            assert hasattr(getattr(slicer, api.owner), api.name), label
    # the newer APIs are only called through compat's feature tests
    for path in API_FILES:
        if path.name == "compat.py":
            continue
        calls = {method for _, method in _mrml_calls(path)}
        newer = {api.name for api in compat.NEWER_APIS if api.owner.startswith("vtk")}
        assert not calls & newer, f"{path.name} calls {calls & newer} directly; use compat"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"Slicer {minimum}" in readme
