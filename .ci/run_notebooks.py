"""Executes every notebook under notebooks/ and fails if any cell raises."""
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

failed = 0
for path in sorted(pathlib.Path("notebooks").glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        print(f"ok   {path}")
    except Exception as e:  # report every notebook, then fail
        failed += 1
        print(f"FAIL {path}: {e}")
sys.exit(1 if failed else 0)
