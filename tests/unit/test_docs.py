"""The documentation: a strict MkDocs build of docs/ succeeds (a broken link, a missing anchor
or a page outside the navigation fails it), its generated pages hold every setting, metric
and command the code has, and the README stays the short front door that links into it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from actlog.launcher import StackConfig, env_name
from actlog_common.grpc_security import GrpcSecurityFields
from gateway.config import GatewaySettings
from gateway.metrics import GATEWAY_METRICS
from inference_service.config import InferenceSettings
from inference_service.metrics import CAPTURE_METRICS
from storage_service.config import StorageSettings
from storage_service.metrics import STORAGE_METRICS
from tests.unit.docs_site import DOCS, ROOT, build, hooks, rendered_pages

README_MAX_LINES = 250


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    result = build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stderr[-4000:]
    return site


def test_the_site_builds_in_strict_mode(site: Path) -> None:
    for page in ("index.html", "configuration/index.html", "metrics/index.html",
                 "cli/index.html", "architecture/index.html", "benchmarks/index.html"):  # fmt: skip
        assert (site / page).is_file(), page


@pytest.mark.parametrize(
    ("link", "named"),
    [("no-such-page.md", "no-such-page.md"), ("capture.md#no-such-section", "no-such-section")],
    ids=["missing page", "missing anchor"],
)
def test_a_broken_link_fails_the_build(tmp_path: Path, link: str, named: str) -> None:
    copy = tmp_path / "project"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    index = copy / "docs" / "index.md"
    index.write_text(index.read_text() + f"\nSee [this]({link}).\n")
    result = build(copy / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert named in result.stderr


def test_every_page_is_in_the_navigation() -> None:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(node) -> set[str]:
        if isinstance(node, str):
            return {node}
        if isinstance(node, list):
            return set().union(*(pages(n) for n in node))
        return set().union(*(pages(v) for v in node.values()))

    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages(nav) == on_disk


@pytest.mark.parametrize(
    "settings", [GatewaySettings, InferenceSettings, StorageSettings, GrpcSecurityFields]
)
def test_the_configuration_page_lists_every_setting_of_the_code(settings) -> None:
    page = rendered_pages()["configuration.md"]
    for name, field in settings.model_fields.items():
        assert f"`{name.upper()}`" in page, name
        assert field.description, f"{settings.__name__}.{name} needs a description"


def test_the_configuration_page_lists_every_option_of_actlog_up() -> None:
    page = rendered_pages()["configuration.md"]
    for f in StackConfig.options():
        assert f"`{env_name(f)}`" in page and f"`--{f.name.replace('_', '-')}`" in page


@pytest.mark.parametrize("table", [GATEWAY_METRICS, CAPTURE_METRICS, STORAGE_METRICS])
def test_the_metrics_page_lists_every_metric_served(table) -> None:
    page = rendered_pages()["metrics.md"]
    for spec in table:
        assert f"`{spec.scraped_name}`" in page, spec.name


def test_the_cli_page_lists_every_command_and_option() -> None:
    import typer.main

    from actlog.cli import app

    page = rendered_pages()["cli.md"]

    def walk(prefix: str, group) -> None:
        for name, command in group.commands.items():
            if command.hidden:
                continue
            if hasattr(command, "commands"):
                walk(f"{prefix}{name} ", command)
                continue
            assert f"### `actlog {prefix}{name}`" in page
            for param in command.params:
                if param.param_type_name == "option" and not param.hidden:
                    assert f"`{param.opts[0]}`" in page, (name, param.opts)
                    assert param.help, f"actlog {prefix}{name} {param.opts[0]} needs a help text"

    walk("", typer.main.get_command(app))


def test_a_marker_naming_nothing_fails_the_generation() -> None:
    render = hooks().render
    with pytest.raises(ValueError, match="cannot import"):
        render("<!-- generated: settings gateway.config:NoSuchSettings -->")
    with pytest.raises(ValueError, match="no metrics table"):
        render("<!-- generated: metrics nowhere -->")


def test_the_readme_is_a_short_front_door_whose_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    for command in ("make up", "make test"):
        assert command in readme
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert {"docs/architecture.md", "docs/configuration.md"} <= set(local)
    for link in local:
        assert (ROOT / link).exists(), link
