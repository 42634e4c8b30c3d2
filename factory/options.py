"""Click options shared by several commands, so a flag means the same thing everywhere."""

from __future__ import annotations

import click

from factory.warehouse import default_path

warehouse_option = click.option(
    "-w", "--warehouse", "warehouse_path", default=default_path, show_default="$FACTORY_WAREHOUSE or ./warehouse.duckdb",
    type=click.Path(dir_okay=False), help="The DuckDB warehouse file.",
)
multiwoz_option = click.option(
    "--multiwoz", type=click.Path(), default=None,
    help="MultiWOZ folder or zip (else $FACTORY_MULTIWOZ, the cache in $FACTORY_HOME, then a download).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
semantics_option = click.option(
    "--semantics", type=click.Choice(["fixed", "parity"]), default="fixed", show_default=True,
    help="Tool and reward semantics: `fixed` (ours) or `parity` (the reference exactly).",
)
