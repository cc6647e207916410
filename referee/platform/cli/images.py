"""``referee images``: build and list the base images."""

from __future__ import annotations

import json

import click

from referee.platform.runtime.images import (
    BASE_IMAGES,
    DEFAULT_MIRROR,
    _recipe,
    client_or_error,
    ensure_base_image,
    image_recipe,
    local_images,
)


@click.group()
def images() -> None:
    """Build and list referee's base images (built locally from Debian packages)."""


@images.command("build")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even when a current image exists.")
@click.option("--mirror", default=DEFAULT_MIRROR, show_default=True, help="Debian mirror for debootstrap.")
def images_build(names: tuple[str, ...], force: bool, mirror: str) -> None:
    """Build base images (default: all of them); cached by tag and recipe."""
    client = client_or_error()
    for name in names or tuple(BASE_IMAGES):
        recipe = _recipe(name)
        if not force and image_recipe(client, recipe.tag) == recipe.recipe_hash:
            click.echo(f"{recipe.tag}: up to date (use --force to rebuild)")
            continue
        tag = ensure_base_image(client, name, force=force, mirror=mirror,
                                log=lambda m: click.echo(f"  {m}", err=True))
        click.echo(f"{tag}: built")


@images.command("list")
@click.option("--json", "as_json", is_flag=True)
def images_list(as_json: bool) -> None:
    """List base images (with their recipe) and built submission images."""
    client = client_or_error()
    rows = local_images(client)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for name, recipe in BASE_IMAGES.items():
        state = image_recipe(client, recipe.tag)
        status = "missing" if state is None else ("current" if state == recipe.recipe_hash else "outdated")
        click.echo(f"{recipe.tag:36} {status:9} {recipe.description}")
    subs = [r for r in rows if r["tag"].startswith("referee-sub/")]
    click.echo(f"{len(subs)} submission image(s) (referee-sub/*)")




@images.group("build-engine")
def build_engine() -> None:
    """The dedicated engine Dockerfile submissions build on (a second dockerd; starting it needs root)."""


@build_engine.command("start")
def build_engine_start() -> None:
    """Start the build engine (or find it running) and say where its socket is."""
    from referee.platform.runtime.build_engine import ensure_build_engine, socket_path
    client = ensure_build_engine()
    info = client.info()
    click.echo(f"build engine answers at {socket_path()} (Docker {info.get('ServerVersion')}, "
               f"{len(client.api.images(all=True, quiet=True))} image(s) held)")


@build_engine.command("stop")
def build_engine_stop() -> None:
    """Stop the build engine started from this machine's build-engine directory."""
    from referee.platform.runtime.build_engine import engine_dir, stop_build_engine
    click.echo("stopped" if stop_build_engine() else f"no build engine was running from {engine_dir()}")


@build_engine.command("status")
@click.option("--json", "as_json", is_flag=True)
def build_engine_status(as_json: bool) -> None:
    """Whether the build engine answers, and what starting it would need."""
    from referee.platform.runtime.build_engine import (
        BuildEngineUnavailable,
        ensure_build_engine,
        missing_for_start,
        socket_path,
    )
    try:
        ensure_build_engine(start=False)
        running = True
    except BuildEngineUnavailable:
        running = False
    missing = missing_for_start()
    state = {"running": running, "socket": str(socket_path()), "missing_to_start": missing}
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    click.echo(f"build engine: {'running' if running else 'not running'} ({state['socket']})")
    if not running and missing:
        click.echo("to start it this process lacks: " + "; ".join(missing))
