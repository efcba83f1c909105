"""Writes tasks.jsonl: drawing instructions on the hexgrid foundation, each with a reference program
written on the foundation alone and the board state it produces, split into train/dev/test.

    python resources/libgen/hexgrid/make_tasks.py      (deterministic: same file every time)
"""

from __future__ import annotations

import json
import random
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hexgrid  # noqa: E402

COLORS = [c for c in hexgrid.COLORS if c != "white"]
DIR_WORDS = {"right": "to the right", "left": "to the left", "up_right": "up and to the right",
             "up_left": "up and to the left", "down_right": "down and to the right",
             "down_left": "down and to the left"}
HEADER = "from hexgrid import Game, Tile, Shape\n\nwith Game() as game:\n"


def program(body: str) -> str:
    return HEADER + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")


def single(rng):
    r, c, color = rng.randrange(10), rng.randrange(10), rng.choice(COLORS)
    text = rng.choice([f"Color the tile at row {r}, column {c} {color}.",
                       f"Paint tile ({r}, {c}) {color}.",
                       f"Make the hexagon in row {r} and column {c} {color}."])
    return text, program(f'Tile({r}, {c}).draw("{color}")')


def line(rng):
    r, c, n = rng.randrange(10), rng.randrange(10), rng.randint(3, 7)
    d, color = rng.choice(hexgrid.DIRECTIONS), rng.choice(COLORS)
    text = rng.choice([f"Starting at tile ({r}, {c}), draw a {color} line of {n} tiles going {DIR_WORDS[d]}.",
                       f"Draw a straight {color} line {n} tiles long from row {r}, column {c}, heading {DIR_WORDS[d]}.",
                       f"From ({r}, {c}) paint {n} tiles in a row {DIR_WORDS[d]} in {color}."])
    return text, program(f"""
        tile = Tile({r}, {c})
        for _ in range({n}):
            tile.draw("{color}")
            tile = tile.neighbor("{d}")
    """)


def row(rng):
    r, color = rng.randrange(10), rng.choice(COLORS)
    text = rng.choice([f"Paint the whole row {r} {color}.", f"Fill every tile of row {r} with {color}.",
                       f"Color row {r} entirely {color}."])
    return text, program(f"""
        for col in range(10):
            Tile({r}, col).draw("{color}")
    """)


def column(rng):
    c, color = rng.randrange(10), rng.choice(COLORS)
    text = rng.choice([f"Paint column {c} {color} from top to bottom.", f"Fill every tile of column {c} with {color}.",
                       f"Color the entire column {c} {color}."])
    return text, program(f"""
        for row in range(10):
            Tile(row, {c}).draw("{color}")
    """)


def ring(rng):
    r, c, k, color = rng.randint(2, 7), rng.randint(2, 7), rng.randint(1, 3), rng.choice(COLORS)
    text = rng.choice([f"Draw a {color} ring of radius {k} around tile ({r}, {c}).",
                       f"Outline a hexagon of radius {k} centered on row {r}, column {c} in {color}, leaving the inside empty.",
                       f"Color every tile exactly {k} steps away from ({r}, {c}) {color}."])
    return text, program(f"""
        center = Tile({r}, {c})
        for tile in game.tiles():
            if tile.distance_to(center) == {k}:
                tile.draw("{color}")
    """)


def disk(rng):
    r, c, k, color = rng.randint(2, 7), rng.randint(2, 7), rng.randint(1, 3), rng.choice(COLORS)
    text = rng.choice([f"Fill a {color} hexagon of radius {k} centered at ({r}, {c}).",
                       f"Paint every tile within {k} steps of tile ({r}, {c}) {color}.",
                       f"Draw a solid {color} hexagon around row {r}, column {c} with radius {k}."])
    return text, program(f"""
        center = Tile({r}, {c})
        for tile in game.tiles():
            if tile.distance_to(center) <= {k}:
                tile.draw("{color}")
    """)


def border(rng):
    color = rng.choice(COLORS)
    text = rng.choice([f"Draw a {color} border around the edge of the board.",
                       f"Color all the tiles on the edge of the board {color}.",
                       f"Frame the board with {color} tiles along its outer edge."])
    return text, program(f"""
        for tile in game.tiles():
            if tile.row in (0, 9) or tile.col in (0, 9):
                tile.draw("{color}")
    """)


def alternate(rng):
    r, a, b = rng.randrange(10), *rng.sample(COLORS, 2)
    text = rng.choice([f"Alternate {a} and {b} along row {r}, starting with {a}.",
                       f"Paint row {r} in a {a}-{b} alternating pattern, beginning with {a} in column 0.",
                       f"Make row {r} a checkered stripe of {a} and {b}, {a} first."])
    return text, program(f"""
        for col in range(10):
            Tile({r}, col).draw("{a}" if col % 2 == 0 else "{b}")
    """)


def rectangle(rng):
    r1, c1 = rng.randrange(7), rng.randrange(7)
    r2, c2, color = rng.randint(r1 + 1, 9), rng.randint(c1 + 1, 9), rng.choice(COLORS)
    text = rng.choice([f"Fill rows {r1} to {r2} and columns {c1} to {c2} with {color}.",
                       f"Paint the block of tiles from row {r1}, column {c1} to row {r2}, column {c2} {color}.",
                       f"Color a {color} rectangle covering rows {r1}-{r2} and columns {c1}-{c2}."])
    return text, program(f"""
        for row in range({r1}, {r2 + 1}):
            for col in range({c1}, {c2 + 1}):
                Tile(row, col).draw("{color}")
    """)


def flower(rng):
    r, c, a, b = rng.randint(1, 8), rng.randint(1, 8), *rng.sample(COLORS, 2)
    text = rng.choice([f"Color tile ({r}, {c}) {a} and all six of its neighbours {b}.",
                       f"Draw a flower: a {a} center at row {r}, column {c} with {b} petals on every side.",
                       f"Paint the neighbours of tile ({r}, {c}) {b} and the tile itself {a}."])
    return text, program(f"""
        center = Tile({r}, {c})
        for tile in center.neighbors():
            tile.draw("{b}")
        center.draw("{a}")
    """)


def stripes(rng):
    k, start, color = rng.randint(2, 3), rng.randint(0, 1), rng.choice(COLORS)
    axis = rng.choice(["row", "col"])
    word = "row" if axis == "row" else "column"
    text = rng.choice([f"Color every {'other' if k == 2 else 'third'} {word} {color}, starting with {word} {start}.",
                       f"Paint {word}s {start}, {start + k}, {start + 2 * k} and so on {color}."])
    return text, program(f"""
        for tile in game.tiles():
            if (tile.{axis} - {start}) % {k} == 0 and tile.{axis} >= {start}:
                tile.draw("{color}")
    """)


def fill(rng):
    color = rng.choice(COLORS + ["white"])
    text = rng.choice([f"Paint the entire board {color}.", f"Fill every tile on the board with {color}.",
                       f"Make all tiles {color}."])
    return text, program(f"""
        for tile in game.tiles():
            tile.draw("{color}")
    """)


def line_and_ring(rng):
    r, c, n, d, a = rng.randrange(10), rng.randrange(10), rng.randint(3, 6), rng.choice(hexgrid.DIRECTIONS), rng.choice(COLORS)
    rr, rc, k, b = rng.randint(2, 7), rng.randint(2, 7), rng.randint(1, 2), rng.choice(COLORS)
    text = (f"Draw a {b} ring of radius {k} around ({rr}, {rc}), then a {a} line of {n} tiles "
            f"from ({r}, {c}) going {DIR_WORDS[d]} on top of it.")
    return text, program(f"""
        center = Tile({rr}, {rc})
        for tile in game.tiles():
            if tile.distance_to(center) == {k}:
                tile.draw("{b}")
        tile = Tile({r}, {c})
        for _ in range({n}):
            tile.draw("{a}")
            tile = tile.neighbor("{d}")
    """)


def two_rows(rng):
    r1, r2 = rng.sample(range(10), 2)
    a, b = rng.sample(COLORS, 2)
    text = rng.choice([f"Paint row {r1} {a} and row {r2} {b}.", f"Make row {r1} {a} and row {r2} {b}."])
    return text, program(f"""
        for col in range(10):
            Tile({r1}, col).draw("{a}")
            Tile({r2}, col).draw("{b}")
    """)


def diagonal_cross(rng):
    r, c, n, color = rng.randint(3, 6), rng.randint(3, 6), rng.randint(2, 3), rng.choice(COLORS)
    text = (f"Draw a {color} star centered at ({r}, {c}): from the center, a line of {n} tiles "
            f"in each of the six directions.")
    return text, program(f"""
        center = Tile({r}, {c})
        center.draw("{color}")
        for direction in ("right", "up_right", "up_left", "left", "down_left", "down_right"):
            tile = center
            for _ in range({n}):
                tile = tile.neighbor(direction)
                tile.draw("{color}")
    """)


FAMILIES = [single, line, row, column, ring, disk, border, alternate, rectangle, flower, stripes, fill,
            line_and_ring, two_rows, diagonal_cross]
PER_FAMILY = 12  # 15 families x 12 = 180 tasks


def board_state(source: str) -> list:
    namespace = {"__name__": "__main__"}
    exec(compile(source, "<reference>", "exec"), namespace)
    return hexgrid.last_board_state()


def main() -> None:
    rng = random.Random(20261201)
    tasks, seen = [], set()
    for family in FAMILIES:
        made = 0
        while made < PER_FAMILY:
            text, source = family(rng)
            if text in seen:
                continue
            seen.add(text)
            made += 1
            tasks.append({"family": family.__name__, "instruction": text, "solution": source,
                          "state": board_state(source)})
    rng.shuffle(tasks)
    for i, task in enumerate(tasks):
        split = "train" if i < 120 else "dev" if i < 150 else "test"
        task.update(id=f"hex-{i:03d}", split=split)
    with open(HERE / "tasks.jsonl", "w") as f:
        for task in tasks:
            f.write(json.dumps({k: task[k] for k in ("id", "split", "family", "instruction", "solution", "state")}) + "\n")
    print(f"wrote {len(tasks)} tasks to {HERE / 'tasks.jsonl'}")


if __name__ == "__main__":
    main()
