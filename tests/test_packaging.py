"""pyproject.toml states its license the way setuptools will keep building: an SPDX string
(PEP 639), with a build requirement that understands it. The table form warns on every install
and stops building after 2027-02-18."""

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_string_and_setuptools_is_new_enough_for_it():
    doc = tomllib.loads(PYPROJECT.read_text())
    assert doc["project"]["license"] == "Apache-2.0"          # not {text = ...}
    # PEP 639: an SPDX expression and a License :: classifier together are an error
    assert not any(c.startswith("License ::") for c in doc["project"].get("classifiers", []))
    (setuptools,) = [r for r in doc["build-system"]["requires"] if r.startswith("setuptools")]
    low = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools.replace(" ", ""))
    assert low and int(low.group(1)) >= 77, setuptools      # 77 reads `license` as SPDX
