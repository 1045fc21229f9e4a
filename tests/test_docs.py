"""The README and the pages of docs/ point only at what the checkout holds: every relative link (and its #anchor) and
every path under jobs/, dadf/, configs/, slurm/, docs/ or tests/ that they name exists. The README stays short."""
import itertools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 160

# A markdown link: [text](target) or ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# A path of the checkout named in the text: a top-level folder, then path characters. Not preceded by a path
# character, so /scratch/me/dadf/runs or ~/venvs/dadf/bin is not read as dadf/...
PATH = re.compile(r"(?<![\w./~-])((?:jobs|dadf|configs|slurm|docs|tests)/[\w.*{},<>/-]*)")
EXTERNAL = ("http://", "https://", "mailto:", "ftp://")


def _expand_braces(path: str) -> list[str]:
    """`a/{b,c}.yaml` -> [`a/b.yaml`, `a/c.yaml`]."""
    parts = re.split(r"(\{[^{}]*\})", path)
    options = [p[1:-1].split(",") if p.startswith("{") and p.endswith("}") else [p] for p in parts]
    return ["".join(combo) for combo in itertools.product(*options)]


def _exists(path: str) -> bool:
    """A file or folder of the checkout. A placeholder (`<name>`) stands for any name: the folder before it must
    exist. A glob (`bench_*.py`) must match something."""
    if "<" in path:
        path = path[: path.index("<")].rsplit("/", 1)[0] + "/"
    path = path.rstrip(".,;:")
    if any(c in path for c in "*?["):
        return any(REPO.glob(path.rstrip("/")))
    return (REPO / path).exists()


def named_paths(text: str) -> set[str]:
    found = set()
    for match in PATH.finditer(text):
        raw = match.group(1).rstrip(".,;:")
        if raw.count("{") != raw.count("}"):  # a brace that is prose, not an expansion
            raw = raw[: raw.index("{")] if "{" in raw else raw
        found.update(_expand_braces(raw))
    return found


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, code marks, links and punctuation but - and _ dropped, spaces as
    hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        m = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_there_are_pages_to_check():
    names = {p.name for p in PAGES}
    assert "README.md" in names and len(PAGES) > 5, names


def test_the_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the detail to a page of docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_anchor_of_the_checkout(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(EXTERNAL):
            continue
        where, _, anchor = target.partition("#")
        dest = (page.parent / where).resolve() if where else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_named_exists_in_the_checkout(page):
    missing = sorted(p for p in named_paths(page.read_text(encoding="utf-8")) if not _exists(p))
    assert not missing, f"{page.relative_to(REPO)} names paths the checkout lacks: {missing}"


@pytest.mark.parametrize("text, paths", [
    ("see `jobs/launch_grid.py` and docs/data.md.", {"jobs/launch_grid.py", "docs/data.md"}),
    ("`configs/grid/omasgan_{mnist_loo,cifar_loo}.yaml`",
     {"configs/grid/omasgan_mnist_loo.yaml", "configs/grid/omasgan_cifar_loo.yaml"}),
    ("runs_dir=/scratch/me/dadf/runs and ~/venvs/dadf/bin/activate", set()),
])
def test_paths_are_read_from_the_text_as_written(text, paths):
    assert named_paths(text) == paths


@pytest.mark.parametrize("heading, anchor", [
    ("Choosing `time_min`", "choosing-time_min"),
    ("Measured: tabular (simplex paper Table 2, 5 seeds)", "measured-tabular-simplex-paper-table-2-5-seeds"),
    ("A cluster on your machine (`slurm/`)", "a-cluster-on-your-machine-slurm"),
])
def test_anchors_are_githubs(heading, anchor):
    assert _slug(heading) == anchor


def test_placeholders_and_globs_stand_for_files_of_the_folder():
    assert _exists("dadf/methods/<name>.py") and _exists("jobs/bench_*.py")
    assert not _exists("dadf/nope/<name>.py") and not _exists("jobs/nope_*.py")
