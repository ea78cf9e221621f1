"""What a step notebook's parameters mean: papermill's and JupyterLab's conventions.

Every step notebook has one papermill ``parameters`` cell (its text is
:func:`parameters_cell_source`, checked by the tests) declaring:

- ``params_path``: a params YAML (``None``: the demo's ``params/demo.yaml``);
- ``output_dir``: the report folder (``None``: ``reports/<name>/`` of the project);
- every key of a params file (:data:`hmlib.params.KEYS`), ``None`` by default.

So a params YAML is also a papermill parameters file, and any key can be
given on its own::

    papermill notebooks/01_diagnose.ipynb out.ipynb -f params/brandsma.yaml
    papermill notebooks/01_diagnose.ipynb out.ipynb -p focus sbp
    papermill notebooks/01_diagnose.ipynb out.ipynb -p params_path params/brandsma.yaml -p seed 7

How the values combine (:func:`params_from_parameters`):

- keys given (not ``None``) are merged over the file at ``params_path``
  (mappings such as ``privacy`` key by key); a new ``data`` file drops the
  file's ``truth`` (the truth belongs to the data it was simulated with)
  unless ``truth`` is given too;
- keys that include ``data`` with no ``params_path`` are a params file of
  their own (this is what ``-f params/x.yaml`` passes): nothing is taken
  from the demo, and ``name`` is required (a file's name defaults to its
  file name, which papermill does not pass on);
- a text value of a list or mapping key is read as YAML (``-p predictors
  "[age, sex]"``, ``-p privacy "{min_cell: 5}"``).

Relative paths (``params_path``, ``data``, ``truth``, ``output_dir``) are
resolved against the notebook's folder (:func:`notebook_folder`), so a
notebook gives the same result run from the repository root, from
``notebooks/`` or in JupyterLab (whose kernels start in the notebook's
folder); an input file found only relative to the working directory is read
from there. Paths inside a params file stay relative to that file, as
everywhere else.

An unknown parameter is an error, not ignored: papermill injects any name it
is given (``-p foccus sbp`` would otherwise run silently with the default
focus). :func:`injected_names` reads the names papermill's injected cell
assigned from the kernel's input history, and :func:`check_parameter_names`
refuses the unknown ones, naming the close match.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Mapping
from pathlib import Path

import yaml

from hmlib.exceptions import ParamsError
from hmlib.params import KEYS, Params, load_params, params_from_mapping
from hmlib.steps.base import notebook_dir

__all__ = ["NOTEBOOK_PARAMETERS", "parameter_names", "parameters_cell_source", "injected_names",
           "check_parameter_names", "notebook_folder", "params_from_parameters", "resolve_output_dir",
           "resolve_input"]

#: The parameters a step notebook has beyond the params keys, with their meaning.
NOTEBOOK_PARAMETERS: dict[str, str] = {
    "params_path": "a params YAML; None: the demo (../params/demo.yaml) unless data is given",
    "output_dir": "the report folder; None: ../reports/<name>",
}
#: The comment line papermill (``PythonTranslator.codify``) puts first in the cell it injects.
PAPERMILL_INJECTED_HEADER = "# Parameters"
#: The demo's params file, relative to the notebooks folder.
DEMO_PARAMS = "../params/demo.yaml"
_YAML_KEYS = ("predictors", "categorical", "higher_levels", "cluster_covariates", "missing_codes",
              "privacy", "diagnose", "joint_model", "effect_units", "sensitivity", "ordinal")
_MAPPING_KEYS = ("privacy", "diagnose", "joint_model", "effect_units", "sensitivity")


def parameter_names() -> list[str]:
    """Every parameter of a step notebook: ``params_path``, ``output_dir``, then the params keys."""
    return [*NOTEBOOK_PARAMETERS, *KEYS]


def parameters_cell_source() -> str:
    """The text of every step notebook's ``parameters`` cell.

    One ``name = None`` line per parameter with its meaning as papermill's
    help comment (``papermill --help-notebook``); a help text never holds
    ``=``, which papermill's parser would take for a second assignment.
    """
    lines = ["# Parameters: papermill -f params/x.yaml or -p key value (a relative path: from notebooks/);",
             "# None keeps the params file's value (hmlib.report.parameters)."]
    helps = {**NOTEBOOK_PARAMETERS, **KEYS}
    for name in parameter_names():
        lines.append(f"{name} = None  # {helps[name].replace('=', ':')}")
    return "\n".join(lines)


def injected_names(history) -> list[str]:
    """Names assigned by the last cell papermill injected, read from the kernel's input history.

    Parameters
    ----------
    history : sequence of str
        IPython's input history (the notebook's ``_ih``), oldest first.

    Returns
    -------
    list of str
        In the order assigned; empty when no papermill cell ran.
    """
    for source in reversed(list(history or ())):
        if not isinstance(source, str) or source.splitlines()[:1] != [PAPERMILL_INJECTED_HEADER]:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return []
        names = []
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            names.extend(t.id for t in targets if isinstance(t, ast.Name))
        return names
    return []


def check_parameter_names(names, notebook: str) -> None:
    """ParamsError for the first name that is not a parameter of the step notebooks."""
    known = parameter_names()
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ParamsError(
                f"unknown parameter '{name}' given to {notebook}.{hint} The parameters are params_path, "
                f"output_dir and the keys of a params file: {', '.join(KEYS)}."
            )


def notebook_folder(notebook: str) -> Path:
    """The folder of a running step notebook, which the kernel is not told.

    The working directory when it holds the notebook (JupyterLab starts
    kernels there; papermill run from ``notebooks/``), else its
    ``notebooks/`` subfolder when that holds it (papermill run from a
    project's root), else :func:`hmlib.steps.base.notebook_dir`.
    """
    cwd = Path.cwd()
    for folder in (cwd, cwd / "notebooks"):
        if (folder / notebook).is_file():
            return folder.resolve()
    return notebook_dir()


def _locate(text: str, what: str, folder: Path) -> tuple[Path, Path]:
    """``(file, folder it was found relative to)`` for an input path (:func:`resolve_input`)."""
    path = Path(str(text)).expanduser()
    if path.is_absolute():
        if not path.is_file():
            raise ParamsError(f"{what} not found: {path}. Check the path.")
        return path.resolve(), folder
    for base in (folder, Path.cwd()):
        if (base / path).is_file():
            return (base / path).resolve(), base
    raise ParamsError(
        f"{what} not found: {text!r} is neither in the notebook's folder ({(folder / path).resolve()}) nor in "
        f"the working directory ({(Path.cwd() / path).resolve()}). Give a path relative to either, or an "
        "absolute one."
    )


def resolve_input(text: str, what: str, folder: Path) -> Path:
    """An input file named in a parameter: relative to the notebook's folder, else to the working directory.

    Parameters
    ----------
    text : str
        The path as given.
    what : str
        What the file is, for the message (``"params file"``).
    folder : pathlib.Path
        The notebook's folder (:func:`notebook_folder`).

    Raises
    ------
    ParamsError
        The file is in neither place; the message names both.
    """
    return _locate(text, what, folder)[0]


def _read_value(key: str, value, origin: str):
    """A parameter's value as a params file would hold it (YAML text of a list or mapping key is read)."""
    if key in _YAML_KEYS and isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ParamsError(f"{origin}: '{key}' is not valid YAML: {value!r}; write e.g. "
                              f"{key} \"[a, b]\" or {key} \"{{key: value}}\".") from None
    if key == "missing_codes" and not isinstance(value, list):
        value = [value]
    return value


def _merge(base: dict, given: dict) -> dict:
    """``given`` over ``base``: mappings key by key; a new data file drops the base's truth."""
    merged = dict(base)
    if "data" in given and "truth" not in given:
        merged.pop("truth", None)
    for key, value in given.items():
        if key in _MAPPING_KEYS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def params_from_parameters(values: Mapping, *, notebook: str, folder: Path | None = None) -> Params:
    """The params a step notebook runs with, from its parameters (module docstring for the rules).

    Parameters
    ----------
    values : mapping
        The notebook's parameters by name (the notebook's namespace will do:
        other names are ignored).
    notebook : str
        The notebook's file name, for messages.
    folder : pathlib.Path, optional
        The notebook's folder; default :func:`notebook_folder`.

    Returns
    -------
    hmlib.params.Params

    Raises
    ------
    ParamsError
        A file not found, a bad value, or a params set without its required keys.
    """
    folder = notebook_folder(notebook) if folder is None else Path(folder)
    origin = f"the parameters of {notebook}"
    given = {key: _read_value(key, values[key], origin) for key in KEYS if values.get(key) is not None}
    params_path = values.get("params_path")
    if params_path is None and "data" in given:
        if "name" not in given:
            raise ParamsError(
                f"{origin} name a data file but no 'name' (the report folder reports/<name>/): add "
                "'name: <name>' to the params file given with -f, or -p name <name>.")
        base_dir = _locate(given["data"], "data file", folder)[1]
        return params_from_mapping(given, source=folder / notebook, origin=origin, base_dir=base_dir)
    source = resolve_input(params_path if params_path is not None else DEMO_PARAMS, "params file", folder)
    base = load_params(source)  # the file is checked on its own first: its errors name it
    if not given:
        return base
    base_dir = source.parent
    if "data" in given:
        base_dir = _locate(given["data"], "data file", folder)[1]
    elif "truth" in given:
        given["truth"] = str(resolve_input(given["truth"], "truth file", folder))
    return params_from_mapping(_merge(base.raw, given), source=source, base_dir=base_dir,
                               origin=f"{source} with the parameters {', '.join(given)} of {notebook}")


def resolve_output_dir(output_dir, params: Params, folder: Path) -> Path:
    """The report folder: ``output_dir`` relative to the notebook's ``folder``, or ``../reports/<name>``."""
    if output_dir is None:
        return (folder.parent / "reports" / params.name).resolve()
    path = Path(str(output_dir)).expanduser()
    return (path if path.is_absolute() else folder / path).resolve()
