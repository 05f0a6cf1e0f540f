"""What several commands print: the resolved config as a tree, the score tables."""

from __future__ import annotations

from typing import Any

import orjson
from rich.markup import escape
from rich.tree import Tree

from arcdiff.config import Config, config_to_dict
from arcdiff.console import console


def config_tree(cfg: Config) -> Tree:
    tree = Tree(f"[bold]config[/] {escape(cfg.name)}")
    for section, values in config_to_dict(cfg).items():
        if isinstance(values, dict):
            branch = tree.add(f"[bold cyan]{section}[/]")
            for key, value in values.items():
                branch.add(f"{key} = [green]{escape(orjson.dumps(value).decode())}[/]")
    return tree


def show_scores(scores: dict[str, Any], stats: bool) -> None:
    from arcdiff.report import per_task_table, summary_table

    console.print(summary_table(scores))
    if stats:
        console.print(per_task_table(scores))
