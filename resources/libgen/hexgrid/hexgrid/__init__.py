"""hexgrid: a minimal drawing foundation on a board of hexagonal tiles.

The board has HEIGHT rows and WIDTH columns of pointy-top hexagons in "odd-r" offset layout: row 0 is
at the top, and every odd row is shifted half a tile to the right. Everything is drawn inside a game:

    from hexgrid import Game, Tile

    with Game() as game:
        tile = Tile(2, 3)
        tile.draw("red")
        tile.neighbor("right").draw("blue")

Drawing a tile that lies off the board does nothing (shapes may run over the edge). The board state a
game leaves behind is the list of its colored tiles, `[row, col, color]`, sorted.
"""

from __future__ import annotations

WIDTH = 10
HEIGHT = 10
COLORS = ("white", "black", "red", "green", "blue", "yellow", "purple", "orange")
DIRECTIONS = ("right", "up_right", "up_left", "left", "down_left", "down_right")

# (row, col) steps per direction, for even and for odd rows (odd-r offset coordinates).
_STEPS = {
    0: {"right": (0, 1), "up_right": (-1, 0), "up_left": (-1, -1), "left": (0, -1), "down_left": (1, -1),
        "down_right": (1, 0)},
    1: {"right": (0, 1), "up_right": (-1, 1), "up_left": (-1, 0), "left": (0, -1), "down_left": (1, 0),
        "down_right": (1, 1)},
}

_current: "Game | None" = None
_last_state: list = []


class Game:
    """The board being drawn on; use it as a context manager (`with Game() as game:`)."""

    def __init__(self):
        self._colors: dict[tuple[int, int], str] = {}

    def __enter__(self) -> "Game":
        global _current
        if _current is not None:
            raise RuntimeError("a game is already running: games do not nest")
        _current = self
        return self

    def __exit__(self, *exc) -> None:
        global _current, _last_state
        _current = None
        _last_state = self.board_state()

    def tiles(self) -> list["Tile"]:
        """Every tile of the board, row by row."""
        return [Tile(r, c) for r in range(HEIGHT) for c in range(WIDTH)]

    def color_of(self, row: int, col: int) -> str | None:
        """The color drawn at (row, col), or None."""
        return self._colors.get((row, col))

    def board_state(self) -> list[list]:
        """The colored tiles as sorted [row, col, color] triples."""
        return [[r, c, color] for (r, c), color in sorted(self._colors.items())]

    def _paint(self, row: int, col: int, color: str) -> None:
        if color not in COLORS:
            raise ValueError(f"unknown color {color!r}; the colors are {', '.join(COLORS)}")
        if 0 <= row < HEIGHT and 0 <= col < WIDTH:
            self._colors[(row, col)] = color


def current_game() -> Game:
    """The running game (inside `with Game():`)."""
    if _current is None:
        raise RuntimeError("no game is running: draw inside `with Game() as game:`")
    return _current


def last_board_state() -> list[list]:
    """The board state of the game that finished last."""
    return list(_last_state)


class Tile:
    """One hexagon at (row, col); it may lie off the board."""

    __slots__ = ("row", "col")

    def __init__(self, row: int, col: int):
        self.row = int(row)
        self.col = int(col)

    def __repr__(self) -> str:
        return f"Tile({self.row}, {self.col})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Tile) and (self.row, self.col) == (other.row, other.col)

    def __hash__(self) -> int:
        return hash((self.row, self.col))

    @property
    def on_board(self) -> bool:
        return 0 <= self.row < HEIGHT and 0 <= self.col < WIDTH

    @property
    def color(self) -> str | None:
        """The color drawn on this tile in the running game, or None."""
        return current_game().color_of(self.row, self.col)

    def draw(self, color: str) -> None:
        """Paint this tile (nothing happens off the board)."""
        current_game()._paint(self.row, self.col, color)

    def neighbor(self, direction: str) -> "Tile":
        """The adjacent tile in one of DIRECTIONS."""
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}; the directions are {', '.join(DIRECTIONS)}")
        dr, dc = _STEPS[self.row % 2][direction]
        return Tile(self.row + dr, self.col + dc)

    def neighbors(self) -> list["Tile"]:
        """The six adjacent tiles, in the order of DIRECTIONS."""
        return [self.neighbor(d) for d in DIRECTIONS]

    def distance_to(self, other: "Tile") -> int:
        """Number of steps between two tiles on the hexagonal grid."""
        (x1, y1, z1), (x2, y2, z2) = _cube(self), _cube(other)
        return max(abs(x1 - x2), abs(y1 - y2), abs(z1 - z2))


def _cube(tile: Tile) -> tuple[int, int, int]:
    x = tile.col - (tile.row - (tile.row & 1)) // 2
    z = tile.row
    return x, -x - z, z


class Shape:
    """A set of tiles that is drawn together."""

    def __init__(self, tiles=()):
        self.tiles: list[Tile] = []
        for tile in tiles:
            if tile not in self.tiles:
                self.tiles.append(tile)

    def __iter__(self):
        return iter(self.tiles)

    def __len__(self) -> int:
        return len(self.tiles)

    def __contains__(self, tile) -> bool:
        return tile in self.tiles

    def __or__(self, other: "Shape") -> "Shape":
        return Shape(list(self.tiles) + list(other.tiles))

    def add(self, tile: Tile) -> None:
        if tile not in self.tiles:
            self.tiles.append(tile)

    def draw(self, color: str) -> None:
        for tile in self.tiles:
            tile.draw(color)


__all__ = ["WIDTH", "HEIGHT", "COLORS", "DIRECTIONS", "Game", "Tile", "Shape", "current_game", "last_board_state"]
