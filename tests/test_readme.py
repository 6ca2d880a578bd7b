"""The README stays the user's door: every make target `make help` lists has its line in the
README's table, and the README stays short enough to read in two minutes."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_make_target_has_its_line_in_the_readme():
    targets = re.findall(r"^([a-z0-9-]+):.*## ", (ROOT / "Makefile").read_text(), re.M)
    readme = (ROOT / "README.md").read_text()
    assert len(targets) > 10
    assert [t for t in targets if f"`make {t}`" not in readme] == []


def test_the_readme_is_under_a_thousand_words():
    assert len((ROOT / "README.md").read_text().split()) < 1000
