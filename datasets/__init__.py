"""Built-in dataset adapters (installed as ``bench.datasets``), one file each.

Why the guard below: this folder sits at the repository root, so whenever Python runs from the root
(``python -m bench``, ``pytest``) the working directory is on ``sys.path`` and a plain
``import datasets`` would find this folder before Hugging Face's ``datasets``. When that happens the
module is imported under the top-level name ``datasets``; it then removes itself, imports the real
package with the repository root hidden from the search path, and puts that package in its place
(``importlib`` returns whatever ``sys.modules`` holds after execution). Imported as ``bench.datasets``
it is a plain package. ``tests/test_packaging.py`` checks both ways.
"""

if __name__ == "datasets":
    import importlib as _importlib
    import os as _os
    import sys as _sys

    _root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))

    def _is_root(entry: str) -> bool:
        return _os.path.abspath(entry or _os.getcwd()) == _root

    del _sys.modules["datasets"]
    _saved_path = list(_sys.path)
    _sys.path[:] = [p for p in _sys.path if not _is_root(p)]
    try:
        _real = _importlib.import_module("datasets")
    finally:
        _sys.path[:] = _saved_path
    _sys.modules["datasets"] = _real
